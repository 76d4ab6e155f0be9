"""The data audit finds every problem planted in a constructed data set, with exact counts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptladder.audit import (
    AuditReport,
    audit_source,
    enforce_audit,
    load_requirements,
    near_duplicate_pairs,
    normalize_text,
    run_audit,
    write_clean_splits,
)
from adaptladder.cli import main
from adaptladder.errors import AdaptError
from adaptladder.task import Task, load_task
from fakes import TrigramEncoder, clean_task, words

# ----------------------------------------------------------------------------- a tiny encoder
# ----------------------------------------------------------------------------- planted data
RNG_SEED = 7


def _make_planted() -> tuple[pd.DataFrame, dict[str, object]]:
    """Three learnable classes (own vocabularies) plus planted problems; returns rows and the plan."""
    rng = np.random.default_rng(RNG_SEED)
    vocab = {c: words(rng, 25) for c in "ABC"}
    shared = words(rng, 60)

    def text(c: str) -> str:
        ws = list(rng.choice(vocab[c], 7, replace=False)) + list(rng.choice(shared, 4, replace=False))
        rng.shuffle(ws)
        return " ".join(ws)

    def variant(t: str, c: str) -> str:  # one word swapped for another word of the class: a near copy
        ws = t.split()
        k = next(i for i, w in enumerate(ws) if w in vocab[c])
        ws[k] = next(w for w in vocab[c] if w not in ws)
        return " ".join(ws)

    rows: list[tuple[str, str, str]] = []
    base: dict[str, list[tuple[str, str, str]]] = {}
    for c in "ABC":
        for split, n in (("train", 40), ("validation", 10), ("test", 10)):
            for _ in range(n):
                rows.append((text(c), c, split))
        base[c] = [r for r in rows if r[1] == c and r[2] == "train"]
    plan: dict[str, object] = {}
    # exact duplicates within train: 3 copies differing only in case / punctuation / spaces
    for c, (t, _, _) in zip("ABC", [base["A"][0], base["B"][0], base["C"][0]], strict=True):
        rows.append((t.upper() + " !", c, "train"))
    # near duplicates within train: 2 one-word variants
    for c, (t, _, _) in (("A", base["A"][1]), ("B", base["B"][1])):
        rows.append((variant(t, c), c, "train"))
    # test rows leaked from train: 4 exact (normalised) copies, 2 near copies
    for c, (t, _, _) in (("A", base["A"][2]), ("A", base["A"][3]), ("B", base["B"][2]), ("C", base["C"][2])):
        rows.append(("  " + t.capitalize() + ".", c, "test"))
    for c, (t, _, _) in (("B", base["B"][3]), ("C", base["C"][3])):
        rows.append((variant(t, c), c, "test"))
    # conflicting labels: 2 texts twice in train with different labels, 1 text in train (A) and test (B)
    for _ in range(2):
        t = text("A")
        rows += [(t, "A", "train"), (t + "?", "B", "train")]
    t = text("C")
    rows += [(t, "C", "train"), (t, "B", "test")]
    # flipped labels: 6 clear class-A texts labelled C in train
    flipped = [text("A") for _ in range(6)]
    rows += [(t, "C", "train") for t in flipped]
    plan["flipped"] = flipped
    # a class with a single example
    rows.append((text("A") + " zzzunique", "D", "train"))
    # hygiene: 2 empty texts, 1 URL-only, 1 mojibake, 1 very short
    rows += [("", "A", "train"), ("   ", "B", "train")]
    rows += [("https://example.com/x?y=1", "B", "train"), ("caf\u00c3\u00a9 " + text("C"), "C", "train"),
             ("ok thanks", "A", "train")]
    df = pd.DataFrame(rows, columns=["text", "label", "split"])
    return df, plan


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], Task, AuditReport]:
    df, plan = _make_planted()
    path = tmp_path_factory.mktemp("planted") / "planted.csv"
    df.to_csv(path, index=False)
    task, report = audit_source(path, split_col="split", encoder=TrigramEncoder(), near_dup_threshold=0.8)
    return path, plan, task, report


# ----------------------------------------------------------------------------- the planted problems
def test_dirty_file_gets_full_report_instead_of_one_load_error(planted) -> None:
    path, _, task, report = planted
    with pytest.raises(AdaptError, match="empty text"):
        load_task(path, split_col="split")  # strict loading stops at the first problem...
    assert report.finding("load_refused").severity == "error"  # ...the audit reports it and goes on
    empty = report.finding("empty_text")
    assert empty.count == 2 and empty.severity == "error"
    raw = pd.read_csv(path, keep_default_na=False)["text"].tolist()
    assert {e["where"] for e in empty.examples} == {f"planted.csv line {i + 2}" for i, t in enumerate(raw)
                                                  if not t.strip()}
    assert len(task.texts) == len(pd.read_csv(path)) - 2


def test_planted_counts(planted) -> None:
    _, _, _, r = planted
    assert r.count("tiny_class") == 1 and r.finding("tiny_class").severity == "error"
    # exact duplicates within a split: 3 case/punctuation copies + 2 conflicting copies (same text, other label)
    assert r.count("exact_duplicates") == 5
    assert r.stats["exact_duplicates"]["by_split"] == {"train": 5, "validation": 0, "test": 0}
    assert r.count("near_duplicates") == 2  # the two one-word variants within train
    leak = r.stats["leakage"]["test_in_train"]
    assert (leak["exact"], leak["near"]) == (5, 2)  # 4 copies + the conflicting text; 2 variants
    assert r.finding("leakage_train_test").severity == "error"
    assert r.stats["test_leak_share"] == pytest.approx(7 / leak["rows"])
    assert r.count("conflicting_labels") == 3
    assert r.count("conflicting_labels_train_test") == 1
    assert r.finding("conflicting_labels_train_test").severity == "error"
    assert r.stats["noise"] == {"URL only": 1, "encoding garbage": 1}
    assert r.count("short_texts") == 1
    assert r.has_errors


def test_flipped_labels_are_flagged_with_the_right_suggestion(planted) -> None:
    _, plan, _, r = planted
    f = r.finding("likely_label_errors")
    assert f is not None
    flagged = {e["text"]: e for e in f.examples}
    hits = [flagged[t] for t in plan["flipped"] if t in flagged]  # type: ignore[attr-defined]
    assert len(hits) >= 5, f.examples
    assert all(h["given"] == "C" and h["suggested"] == "A" for h in hits)
    assert f.count <= 20  # not everything is flagged


def test_dedupe_writes_leak_free_splits_and_leaves_input_alone(planted, tmp_path: Path) -> None:
    path, _, task, report = planted
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "clean"
    res = write_clean_splits(task, report, out)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert res["removed"] == len(pd.read_csv(out / "removed.csv"))
    # drop_from=train keeps the test rows that are not themselves duplicates or conflicts
    assert res["kept"]["test"] == (task.split == "test").sum() - 1  # only the conflicting text leaves test
    clean = load_task(train=out / "train.csv", validation=out / "validation.csv", test=out / "test.csv")
    again = run_audit(clean, encoder=TrigramEncoder(), near_dup_threshold=0.8, label_errors=False)
    assert again.finding("leakage_train_test") is None
    assert again.stats["leakage"]["test_in_train"]["exact"] == 0
    assert again.stats["leakage"]["test_in_train"]["near"] == 0
    assert again.count("exact_duplicates") == 0 and again.count("conflicting_labels") == 0
    with pytest.raises(AdaptError, match="already holds"):
        write_clean_splits(task, report, out)


def test_dedupe_from_test_keeps_training_rows(planted, tmp_path: Path) -> None:
    _, _, task, report = planted
    res = write_clean_splits(task, report, tmp_path / "c2", drop_from="test")
    # the 6 leaked test rows go (4 exact + 2 near) plus the conflicting one
    assert res["kept"]["test"] == (task.split == "test").sum() - 7


# ----------------------------------------------------------------------------- severity logic
def test_clean_data_has_no_errors_and_gate_passes() -> None:
    r = run_audit(clean_task(), encoder=TrigramEncoder(), near_dup_threshold=0.8)
    assert not r.has_errors, [f.to_dict() for f in r.errors]
    enforce_audit(r)  # no exception


def test_gate_refuses_errors_unless_forced(planted) -> None:
    *_, r = planted
    with pytest.raises(AdaptError, match="--force"):
        enforce_audit(r)
    enforce_audit(r, force=True)


def test_leak_threshold_is_configurable() -> None:
    task = clean_task()
    te = np.flatnonzero(task.split == "test")
    tr = np.flatnonzero(task.split == "train")
    texts = list(task.texts)
    texts[te[0]] = texts[tr[0]]  # one leaked test row out of 18
    t = Task("leak1", texts, task.labels, task.label_names, task.split, {})
    strict = run_audit(t, encoder=None, label_errors=False)
    assert strict.finding("leakage_train_test").severity == "error"
    lenient = run_audit(t, encoder=None, label_errors=False, max_test_leak_share=0.1)
    assert lenient.finding("leakage_train_test").severity == "warning"
    via_yaml = run_audit(t, encoder=None, label_errors=False, requirements={"audit": {"max_test_leak_share": 0.1}})
    assert via_yaml.finding("leakage_train_test").severity == "warning"


class _VecEncoder:
    """Embeds a text as a fixed vector per word set, so chosen texts are near-duplicates."""

    def __init__(self, near: dict[str, str]) -> None:
        self.near = near  # text -> the text it should nearly equal

    def encode(self, texts: list[str], progress: bool = False, desc: str = "") -> np.ndarray:
        out = []
        for t in texts:
            base = self.near.get(t, t)
            v = np.random.default_rng(abs(hash(base)) % 2**32).normal(size=32)
            if base != t:
                v = v + 0.01  # cosine ~0.9999 with its partner
            out.append(v)
        return np.array(out)


def test_cross_split_label_conflicts_are_an_error_only_when_they_can_move_the_score(planted) -> None:
    _, _, task, r = planted
    assert r.finding("conflicting_labels_train_test").severity == "error"
    lenient = run_audit(task, encoder=None, label_errors=False,
                        requirements={"audit": {"max_eval_conflict_share": 0.5}})
    f = lenient.finding("conflicting_labels_train_test")
    assert f.severity == "warning" and f.count == 1 and "within the 50.0% allowed" in f.message


def test_near_copies_in_test_are_a_warning_until_ten_percent() -> None:
    task = clean_task(n_per_class=100)  # 45 test rows: one near copy is 2.2%
    te = np.flatnonzero(task.split == "test")
    tr = np.flatnonzero(task.split == "train")
    texts = list(task.texts)
    texts[te[0]] = texts[tr[0]] + " !!! (re-sent)"  # a near copy, not an exact one
    t = Task("near1", texts, task.labels, task.label_names, task.split, {})
    r = run_audit(t, encoder=_VecEncoder({texts[te[0]]: texts[tr[0]]}), label_errors=False)
    leak = r.stats["leakage"]["test_in_train"]
    assert (leak["exact"], leak["near"]) == (0, 1) and 0.01 < leak["share"] <= 0.05
    assert r.finding("leakage_train_test").severity == "warning"
    strict = run_audit(t, encoder=_VecEncoder({texts[te[0]]: texts[tr[0]]}), label_errors=False,
                       requirements={"audit": {"max_test_near_leak_share": 0.01}})
    assert strict.finding("leakage_train_test").severity == "error"


def test_small_data_supports_prompting_and_features_only() -> None:
    r = run_audit(clean_task(n_per_class=10, labels=("A", "B")), encoder=None, label_errors=False)
    assert r.supported_families == ["floor", "prompting", "features"]
    assert "too few for fine-tuning" in r.finding("supported_families").message
    assert r.finding("size_below_minimum").severity == "warning"
    big = run_audit(clean_task(n_per_class=400), encoder=None, label_errors=False)
    assert big.supported_families == ["floor", "prompting", "features", "finetune", "distill"]


def test_requirements_table_is_editable(tmp_path: Path) -> None:
    path = tmp_path / "req.yaml"
    path.write_text("task_types:\n  text-classification:\n    minimum: 10\n    min_per_class: 5\n"
                    "families:\n  finetune: {min_train: 5, min_per_class: 1}\n")
    r = run_audit(clean_task(n_per_class=10, labels=("A", "B")), encoder=None, label_errors=False,
                  requirements=path)
    assert r.finding("size_below_minimum") is None
    assert "finetune" in r.supported_families
    assert load_requirements(path)["task_types"]["sentiment"]["minimum"] == 1000  # the rest still defaults
    bad = tmp_path / "bad.yaml"
    bad.write_text("task_types: [1, 2\n")
    with pytest.raises(AdaptError, match="not valid YAML"):
        run_audit(clean_task(), encoder=None, requirements=bad)


def test_sentiment_is_guessed_from_labels_and_balance_matters() -> None:
    task = clean_task(labels=("negative", "positive"))
    keep = np.r_[np.flatnonzero(task.labels == 0)[:20], np.flatnonzero(task.labels == 1)]
    t = Task("s", [task.texts[i] for i in keep], task.labels[keep], task.label_names, task.split[keep], {})
    r = run_audit(t, encoder=None, label_errors=False)
    assert r.task_type == "sentiment"
    assert r.finding("class_imbalance").severity == "warning"  # 40:20 is above sentiment's 1.5
    r2 = run_audit(t, encoder=None, label_errors=False, task_type="text-classification")
    assert r2.finding("class_imbalance") is None


def test_report_outputs(planted, tmp_path: Path) -> None:
    *_, r = planted
    d = json.loads(json.dumps(r.to_dict()))
    assert d["has_errors"] and d["supported_families"] == r.supported_families
    assert {f["code"] for f in d["findings"]} >= {"exact_duplicates", "leakage_train_test", "likely_label_errors"}
    md = r.to_markdown()
    assert md.startswith("## Data audit") and "| error | `leakage_train_test` |" in md
    r.write_json(tmp_path / "audit.json")
    assert json.loads((tmp_path / "audit.json").read_text())["n_errors"] == len(r.errors)
    from rich.console import Console

    console = Console(record=True, width=200)
    r.render(console)
    assert "leakage_train_test" in console.export_text()


# ----------------------------------------------------------------------------- building blocks
def test_normalize_text() -> None:
    assert normalize_text("Hello,   World!") == normalize_text("hello world") == "hello world"
    assert normalize_text("!!!") != normalize_text("???")


def test_blockwise_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(300, 16)).astype(np.float32)
    e[100] = e[5] + 0.01
    e[250] = e[5] - 0.01
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    pairs, sims, total = near_duplicate_pairs(e, 0.8, block=64)
    s = e @ e.T
    assert np.allclose(sims, s[pairs[:, 0], pairs[:, 1]], atol=1e-5)
    i, j = np.nonzero(np.triu(s >= 0.8, k=1))
    assert total == len(i) == len(pairs)
    assert set(map(tuple, pairs.tolist())) == set(zip(i.tolist(), j.tolist(), strict=True))
    assert {(5, 100), (5, 250), (100, 250)} <= set(map(tuple, pairs.tolist()))
    capped, _, total2 = near_duplicate_pairs(e, 0.8, block=64, max_pairs=1)
    assert len(capped) == 1 and total2 == total


def test_row_references_for_split_files(tmp_path: Path) -> None:
    pd.DataFrame({"text": ["alpha beta gamma", "", "delta epsilon zeta", "eta theta iota", "kappa lambda mu"],
                  "label": ["x", "y", "y", "x", "y"]}).to_csv(tmp_path / "tr.csv", index=False)
    pd.DataFrame({"text": ["alpha beta gamma", "nu xi omicron"], "label": ["x", "y"]}).to_csv(
        tmp_path / "te.csv", index=False)
    pd.DataFrame({"text": ["rho sigma tau", "upsilon phi chi"], "label": ["x", "y"]}).to_csv(
        tmp_path / "va.csv", index=False)
    _, r = audit_source(train=tmp_path / "tr.csv", validation=tmp_path / "va.csv", test=tmp_path / "te.csv",
                        encoder=None, label_errors=False)
    assert r.finding("empty_text").examples[0]["where"] == "tr.csv line 3"
    ex = r.finding("leakage_train_test").examples[0]
    assert ex["where"] == "te.csv line 2" and ex["matches"] == "tr.csv line 2"


# ----------------------------------------------------------------------------- CLI
def test_cli_exit_codes(planted, tmp_path: Path) -> None:
    path, *_ = planted
    with pytest.raises(SystemExit) as e:
        main(["audit", str(path), "--split-col", "split", "--no-near-dups", "--no-label-errors",
              "--out", str(tmp_path / "a.json"), "--dedupe", str(tmp_path / "clean")])
    assert e.value.code == 1  # errors found
    assert json.loads((tmp_path / "a.json").read_text())["has_errors"]
    assert (tmp_path / "clean" / "train.csv").exists()
    with pytest.raises(SystemExit) as e:  # refuses to overwrite, before auditing
        main(["audit", str(path), "--split-col", "split", "--no-near-dups", "--dedupe", str(tmp_path / "clean")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["audit", str(tmp_path / "missing.csv")])
    assert e.value.code == 2
    clean = tmp_path / "clean"
    with pytest.raises(SystemExit) as e:
        main(["audit", "--train", str(clean / "train.csv"), "--validation", str(clean / "validation.csv"),
              "--test", str(clean / "test.csv"), "--no-near-dups", "--no-label-errors",
              "--requirements", str(_no_tiny_yaml(tmp_path))])
    assert e.value.code == 0, "clean splits (tiny class allowed by the table) audit without errors"


def _no_tiny_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "req.yaml"
    p.write_text("audit:\n  min_class_examples: 1\n")
    return p


# ----------------------------------------------------------------------------- the real encoder
@pytest.mark.slow
def test_near_duplicates_with_packaged_minilm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.encode import Encoder

    monkeypatch.setenv("ADAPTLADDER_CACHE", str(tmp_path))
    texts = ["The film was wonderful and I loved every minute of it.",
             "The movie was wonderful and I loved every minute of it.",
             "Terrible plot, wooden acting, I walked out halfway.",
             "A dull, lifeless script that wastes a fine cast.",
             "An absolute joy from start to finish.",
             "I want my money back, this was awful."] * 1
    y = np.array([1, 1, 0, 0, 1, 0])
    split = np.array(["train", "test", "train", "train", "validation", "test"], dtype=object)
    task = Task("tiny", texts, y, ["negative", "positive"], split, {})
    enc = Encoder("minilm")
    r = run_audit(task, encoder=enc, near_dup_threshold=0.9, label_errors=False)
    assert r.stats["leakage"]["test_in_train"] == {"exact": 0, "near": 1, "rows": 2, "share": 0.5}
    assert r.stats["near_duplicates"]["pairs"] == 1
    again = run_audit(task, encoder=enc, near_dup_threshold=0.9, label_errors=False)

    def findings(stats: dict) -> dict:  # everything but the embedding counters and wall-clock timings
        return {k: findings(v) if isinstance(v, dict) else v for k, v in stats.items()
                if k != "embedding" and not k.endswith("seconds")}

    assert findings(again.stats) == findings(r.stats)
    assert again.stats["embedding"]["misses"] == 0  # the second run reads the cache
    assert again.stats["embedding"]["hits"] == len(texts)


def test_audit_for_run_gate(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from adaptladder.audit import audit_for_run

    task = clean_task()
    te, tr = np.flatnonzero(task.split == "test"), np.flatnonzero(task.split == "train")
    texts = list(task.texts)
    texts[te[0]] = texts[tr[0]]
    leaky = Task("leaky", texts, task.labels, task.label_names, task.split, {})
    lines: list[str] = []
    cfg = SimpleNamespace(no_audit=False, force=False, encoder=None, seed=13)
    with pytest.raises(AdaptError, match="--force"):
        audit_for_run(leaky, cfg, tmp_path, lines.append)
    assert json.loads((tmp_path / "audit.json").read_text())["has_errors"]  # written before stopping
    cfg.force = True
    d = audit_for_run(leaky, cfg, tmp_path, lines.append)
    assert d["has_errors"] and any("--force" in s for s in lines)
    assert AuditReport.from_dict(d).to_markdown() == run_audit(leaky, encoder=None).to_markdown()
    assert audit_for_run(leaky, SimpleNamespace(no_audit=True), tmp_path) is None


def test_emoji_and_symbol_only_texts_do_not_crash_the_label_error_model() -> None:
    """Texts with no word token gave TF-IDF an empty vocabulary (a crash); character n-grams take over."""
    rng = np.random.default_rng(0)
    happy, sad = ["😀", "👍", "🎉", "❤️", "!!!"], ["😢", "💔", "😡", "???", "…"]
    texts = [" ".join(rng.choice(sad if i % 2 else happy, 3)) + " " + "#" * (i % 9) + "*" * (i % 4) for i in range(240)]
    y = np.array([i % 2 for i in range(240)])
    split = np.array(["train"] * 160 + ["validation"] * 40 + ["test"] * 40, dtype=object)
    task = Task("emoji", texts, y, ["happy", "sad"], split, {"kind": "memory"})
    report = run_audit(task, encoder=None, requirements={"audit": {"max_test_leak_share": 1.0}})
    stats = report.stats["label_errors"]
    assert stats["rows_checked"] == 240
    assert stats["out_of_fold_accuracy"] > 0.9  # the emoji carry the label: character n-grams see them
    assert report.finding("likely_label_errors") is not None
