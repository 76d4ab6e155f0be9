"""The ladder's outputs: paired comparisons, recommendation, resume after a kill, the report,
`predict` and `evaluate` (tiny data, floor rungs only: seconds, not minutes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import adaptladder
from adaptladder.cli import main
from adaptladder.compare import compare_pair, mcnemar_exact, paired_bootstrap_diff
from adaptladder.decide import recommend
from adaptladder.errors import AdaptError
from adaptladder.ladder import RunConfig

SPAM_WORDS = ["win", "free", "prize", "cash", "claim", "urgent", "offer", "reward", "lottery", "now"]
HAM_WORDS = ["lunch", "meeting", "dinner", "kids", "park", "report", "home", "friday", "cat", "game"]
HOSTILE = "<script>alert('x')</script>"


def make_csv(path: Path, n: int = 160, spam_label: str = "spam", seed: int = 0, hostile_row: bool = False,
             noise: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        spam = i % 2 == 0
        words = rng.choice(SPAM_WORDS if spam else HAM_WORDS, 5)
        label = spam != (rng.random() < noise)  # ``noise``: share of wrong labels no model can learn
        rows.append({"text": " ".join(words) + f" #{i}", "label": spam_label if label else "ham"})
    if hostile_row:
        rows[0]["text"] = f"{HOSTILE} free prize"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run (majority + tfidf) shared by the predict / evaluate / report tests."""
    d = tmp_path_factory.mktemp("saved")
    data = make_csv(d / "data.csv")
    out = d / "run"
    adaptladder.run(data=str(data), rungs=["majority", "tfidf"], out=str(out), run_all=True)
    return out


# ------------------------------------------------------------------ comparisons
def test_mcnemar_counts_discordant_pairs_and_is_exact() -> None:
    a = np.array([1] * 10 + [0] * 10 + [1] * 30, dtype=bool)
    b = np.array([0] * 10 + [1] * 10 + [1] * 30, dtype=bool)
    res = mcnemar_exact(a, b)
    assert (res["only_a_correct"], res["only_b_correct"]) == (10, 10)
    assert res["p_value"] == pytest.approx(1.0)
    res = mcnemar_exact(np.zeros(12, bool), np.ones(12, bool))  # 0 vs 12 discordant: 2 * 0.5**12
    assert res["p_value"] == pytest.approx(2 * 0.5**12)
    assert mcnemar_exact(np.ones(5, bool), np.ones(5, bool))["p_value"] == 1.0


def test_paired_bootstrap_ci_contains_the_difference() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    a = np.where(rng.random(300) < 0.7, y, 1 - y)
    b = np.where(rng.random(300) < 0.9, y, 1 - y)
    res = paired_bootstrap_diff(y, a, b, 2, "accuracy", seed=0)
    assert res["diff"] == pytest.approx((b == y).mean() - (a == y).mean())
    assert res["diff_ci"][0] <= res["diff"] <= res["diff_ci"][1]
    assert res["diff_ci"][0] > 0  # a 20-point gap on 300 examples is clearly significant


def _fake(name: str, idx: list[int], preds: list[int], labels: list[int]) -> dict:
    part = {"indices": idx, "predictions": preds, "labels": labels, "label_names": ["a", "b"],
            "macro_f1": 0.0, "macro_f1_ci": [0.0, 0.0], "accuracy": 0.0, "accuracy_ci": [0.0, 0.0]}
    return {"name": name, "status": "done", "cost_rank": 0, "validation": part, "test": part}


def test_describe_names_the_test_that_decided() -> None:
    from adaptladder.compare import describe

    cmp = {"metric": "macro_f1", "diff_ci": (0.002, 0.05), "diff": 0.02, "n_common": 300, "part": "validation",
           "subset": False, "mcnemar": {"p_value": 0.15}, "significant": True, "a": "lora", "b": "full-ft"}
    text = describe(cmp)
    assert "significantly better" in text and "95% CI [+0.002, +0.050], the test used" in text
    assert "on accuracy McNemar p=0.15" in text  # reported, but it tests accuracy, not macro-F1
    acc = dict(cmp, metric="accuracy", significant=False)
    assert "no evidence of a difference at n=300" in describe(acc) and "McNemar p=0.15, the test used" in describe(acc)


def test_sampled_rung_is_compared_on_common_examples_only() -> None:
    y = [0, 1] * 50
    full = _fake("cheap", list(range(100)), y, y)
    sub_idx = list(range(0, 100, 4))  # an eval_cap'd rung saw 25 of the 100 examples
    capped = _fake("slow", sub_idx, [1 - y[i] for i in sub_idx], [y[i] for i in sub_idx])
    cmp = compare_pair(full, capped, "test", "accuracy")
    assert cmp["n_common"] == 25 and cmp["subset"] is True
    assert cmp["a_accuracy"] == 1.0 and cmp["b_accuracy"] == 0.0
    assert cmp["significant"] and cmp["verdict"] == "cheap better"


def test_no_bar_recommends_the_cheapest_not_significantly_worse() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).tolist()

    def noisy(acc: float, seed: int) -> list[int]:
        r = np.random.default_rng(seed)
        return [t if r.random() < acc else 1 - t for t in y]

    def res(name: str, preds: list[int]) -> dict:
        r = _fake(name, list(range(200)), preds, y)
        r["validation"]["accuracy"] = float(np.mean(np.array(preds) == np.array(y)))
        return r

    cfg = RunConfig(metric="accuracy")
    chance = res("chance", noisy(0.5, 1))
    close = res("close", noisy(0.90, 2))
    best = res("best", noisy(0.92, 3))
    rec = recommend([chance, close, best], cfg)
    assert rec["rung"] == "close", rec
    assert any("no evidence of a difference at n=200" in r for r in rec["reasons"])
    rec = recommend([chance, best], cfg)
    assert rec["rung"] == "best" and any("best is significantly better by" in r for r in rec["reasons"])


# ------------------------------------------------------------------ stopping rule + report
def test_floor_meeting_the_bar_stops_and_report_says_so(tmp_path: Path) -> None:
    data = make_csv(tmp_path / "d.csv")
    res = adaptladder.run(data=str(data), rungs=["majority", "tfidf"], out=str(tmp_path / "r"), bar=0.3,
                          metric="accuracy")
    assert res.stopped_at == "majority" and [r["name"] for r in res.results] == ["majority"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "stopped at majority" in md and "tfidf not run" in md and "Recommendation: majority" in md
    assert "stopped at" in (tmp_path / "r" / "report.html").read_text()


def test_impossible_bar_runs_all_and_report_says_none_met(tmp_path: Path) -> None:
    data = make_csv(tmp_path / "d.csv", noise=0.2)
    res = adaptladder.run(data=str(data), rungs=["majority", "tfidf"], out=str(tmp_path / "r"), bar=1.0,
                          require_lower_bound=True)
    assert res.stopped_at is None and len(res.results) == 2
    assert res.recommendation["bar_met"] is False
    assert all(r["meets_bar"] is False for r in res.results)
    assert "no rung met the bar 1.00" in (tmp_path / "r" / "report.md").read_text()
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert {(c["a"], c["b"]) for c in doc["comparisons"]["test"]} == {("majority", "tfidf")}


def test_report_escapes_hostile_text(tmp_path: Path) -> None:
    data = make_csv(tmp_path / "d.csv", spam_label=HOSTILE, hostile_row=True)
    out = tmp_path / "r"
    adaptladder.run(data=str(data), rungs=["majority", "tfidf"], out=str(out))
    doc = json.loads((out / "results.json").read_text())
    assert HOSTILE in doc["task"]["label_names"]
    # text from rung outputs and the audit reaches the report too: a prompt quoting the hostile row
    doc["rungs"][1]["extra"]["example_prompt"] = f"Message: {HOSTILE} free prize\nLabel:"
    doc["rungs"][1]["extra"]["note"] = HOSTILE
    doc["rungs"][1]["extra"]["prompt_choices"] = {"validation_examples": {"screening": 60, "final": 180},
                                                  "candidates": [
        {"prompt": "plain", "answer_words": f"ham → {HOSTILE}", "calibrated": True, "screening_macro_f1": 0.5,
         "macro_f1": 0.61, "chosen": True},
        {"prompt": "chat", "answer_words": "label names", "calibrated": False, "screening_macro_f1": 0.2,
         "macro_f1": None, "chosen": False}]}
    doc["audit"] = {"findings": [{"severity": "warning", "message": f"duplicate text {HOSTILE}", "count": 2}]}
    (out / "results.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit) as ex:
        main(["report", str(out)])
    assert ex.value.code == 0
    html = (out / "report.html").read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert html.count("&lt;script&gt;") >= 4  # label (header, table, winner), prompt, audit, details
    assert "Prompts used" in html and "example_prompt" in html and "Data audit" in html
    assert "the two best prompt / answer-word pairs compared on 180" in html and "<b>chosen</b>" in html
    assert "prompt_choices" not in html  # a table, not a JSON blob in the details
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched to view it
    assert html.count("data:image/png;base64,") == 4
    md = (out / "report.md").read_text()
    assert "<script>" not in md.replace(f"Message: {HOSTILE}", "")  # only inside the fenced prompt block
    assert "| plain | ham → " in md and "| 0.610 | **chosen** |" in md


def test_skipped_rung_reason_and_details_are_reported(tmp_path: Path, saved_run: Path) -> None:
    doc = json.loads((saved_run / "results.json").read_text())
    doc["rungs"].append({"name": "qlora", "family": "finetune", "cost_rank": 75, "status": "skipped",
                         "reason": "needs CUDA (bitsandbytes 4-bit kernels)", "params": {},
                         "skip_details": {"estimated_gpu_memory_gb": 5.2, "estimated_cost_usd": 0.8}})
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(saved_run, copy)
    (copy / "results.json").write_text(json.dumps(doc))
    from adaptladder.report import rebuild

    rebuild(copy)
    html = (copy / "report.html").read_text()
    assert "Skipped and failed rungs" in html and "needs CUDA" in html and "estimated_gpu_memory_gb" in html
    assert "needs CUDA" in (copy / "report.md").read_text()


# ------------------------------------------------------------------ resume after a kill
SLOW_RUNG = '''
import os, time
from pathlib import Path
from adaptladder.rungs.classical import MajorityRung

class SlowRung(MajorityRung):
    name = "slowpoke"
    cost_rank = 15
    description = "test-only: a rung that takes its time"

    def fit(self, texts, y, **kw):
        Path(os.environ["SLOW_MARKER"]).write_text("fitting")
        time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        return super().fit(texts, y, **kw)
'''

DRIVER = '''
import sys
sys.path.insert(0, sys.argv[1])
from adaptladder.rungs import RUNGS
RUNGS["slowpoke"] = "slowrung:SlowRung"
from adaptladder.cli import main
main(sys.argv[2:])
'''


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_killed_run_resumes_without_recomputing(tmp_path: Path, sig: int) -> None:
    (tmp_path / "slowrung.py").write_text(textwrap.dedent(SLOW_RUNG))
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    data = make_csv(tmp_path / "d.csv")
    out = tmp_path / "run"
    marker = tmp_path / "marker"
    cmd = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path), "run", str(data),
           "--rungs", "majority,tfidf,slowpoke", "--all", "--out", str(out)]
    env = dict(os.environ, SLOW_MARKER=str(marker), SLOW_SECONDS="120")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow rung never started"
            time.sleep(0.1)
        proc.send_signal(sig)  # mid-rung: majority and tfidf finished, slowpoke is fitting
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "a re-run resumes" in err
        assert json.loads((out / "results.json").read_text())["partial"] is True  # written on the way out
        assert "PARTIAL" in (out / "report.html").read_text()
    else:
        assert proc.returncode == -signal.SIGKILL
    before = {n: (out / "rungs" / n / "result.json").read_bytes() for n in ("majority", "tfidf")}
    for raw in before.values():
        assert json.loads(raw)["status"] == "done"  # complete, parseable: never half a file
    assert not (out / "rungs" / "slowpoke" / "result.json").exists()
    assert not list(out.rglob("*.tmp")), "a temporary file was left where a reader could take it"

    if sig == signal.SIGKILL:  # the evidence so far can be read before resuming: a partial report
        with pytest.raises(SystemExit) as ex:
            main(["report", str(out)])
        assert ex.value.code == 0
        assert "PARTIAL" in (out / "report.html").read_text()
        assert json.loads((out / "results.json").read_text())["partial"] is True

    marker.unlink()
    env["SLOW_SECONDS"] = "0"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "majority: finished earlier, reusing" in again.stderr and "tfidf: finished earlier, reusing" in again.stderr
    assert "slowpoke: running" in again.stderr and marker.exists()  # only the killed rung ran again
    for n, raw in before.items():
        assert (out / "rungs" / n / "result.json").read_bytes() == raw  # reused as they were, not recomputed
    doc = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in doc["rungs"]] == ["done"] * 3 and not doc.get("partial")
    assert (out / "report.html").is_file()


def test_half_written_model_is_not_taken_for_a_finished_rung(tmp_path: Path) -> None:
    data = make_csv(tmp_path / "d.csv")
    out = tmp_path / "run"
    adaptladder.run(data=str(data), rungs=["majority", "tfidf"], out=str(out))
    # a result whose model dir lost its rung.json (as if the model had been cut off mid-save)
    (out / "rungs" / "tfidf" / "model" / "rung.json").unlink()
    (out / "rungs" / "tfidf" / ".model.tmpXYZ").mkdir()  # debris of a killed save
    res = adaptladder.run(data=str(data), rungs=["majority", "tfidf"], out=str(out))
    assert res.result("majority").get("resumed") and not res.result("tfidf").get("resumed")
    assert (out / "rungs" / "tfidf" / "model" / "rung.json").is_file()
    assert not (out / "rungs" / "tfidf" / ".model.tmpXYZ").exists()


def test_changed_data_is_refused_in_the_same_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_csv(tmp_path / "d.csv")
    out = tmp_path / "run"
    adaptladder.run(data=str(data), rungs=["majority"], out=str(out))
    make_csv(data, seed=7)  # same path, other content
    with pytest.raises(SystemExit) as ex:
        main(["run", str(data), "--rungs", "majority", "--out", str(out)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "different configuration" in err
    assert len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ predict
def test_predict_api_and_cli(saved_run: Path, tmp_path: Path) -> None:
    frame = adaptladder.predict(saved_run, ["free prize cash now", "lunch meeting friday"])
    assert list(frame["label"]) == ["spam", "ham"]
    assert list(frame.columns) == ["label", "proba_ham", "proba_spam"]
    assert np.allclose(frame[["proba_ham", "proba_spam"]].sum(axis=1), 1)

    inp = tmp_path / "new.jsonl"
    pd.DataFrame({"id": [1, 2], "text": ["win free cash", "dinner at home"]}).to_json(inp, orient="records",
                                                                                     lines=True)
    outp = tmp_path / "preds.csv"
    with pytest.raises(SystemExit) as ex:
        main(["predict", str(saved_run), "--input", str(inp), "--output", str(outp)])
    assert ex.value.code == 0
    got = pd.read_csv(outp)
    assert list(got.columns) == ["id", "text", "label", "proba_ham", "proba_spam"]
    assert list(got["label"]) == ["spam", "ham"]
    with pytest.raises(SystemExit) as ex:  # --rung picks another saved rung
        main(["predict", str(saved_run), "--input", str(inp), "--output", str(tmp_path / "m.csv"),
              "--rung", "majority"])
    assert ex.value.code == 0


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        ("nocol", [], "cannot tell which column holds the text"),
        ("exists", [], "already exists; pass --overwrite"),
        ("ok", ["--rung", "telepathy"], "did not run"),
        ("ok", ["--text-col", "body"], "no column 'body'"),
    ],
)
def test_predict_bad_input_is_one_line_exit_2(saved_run: Path, tmp_path: Path, setup: str, args: list[str],
                                               expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in.csv"
    col = "message_body" if setup == "nocol" else "text"
    pd.DataFrame({col: ["hello"], "other": ["x"]}).to_csv(inp, index=False)
    outp = tmp_path / "out.csv"
    if setup == "exists":
        outp.write_text("keep me")
    with pytest.raises(SystemExit) as ex:
        main(["predict", str(saved_run), "--input", str(inp), "--output", str(outp), *args])
    err = capsys.readouterr().err
    assert ex.value.code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in " ".join(lines[0].split()), err
    assert "Traceback" not in err
    if setup == "exists":
        assert outp.read_text() == "keep me"


# ------------------------------------------------------------------ evaluate
def _labelled(path: Path, flip: bool = False, unknown: bool = False) -> Path:
    make_csv(path, n=120, seed=3)
    df = pd.read_csv(path)
    if flip:
        df["label"] = df["label"].map({"spam": "ham", "ham": "spam"})
    if unknown:
        df.loc[0, "label"] = "phishing"
    df.to_csv(path, index=False)
    return path


def test_evaluate_exit_codes(saved_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = _labelled(tmp_path / "same.csv")
    with pytest.raises(SystemExit) as ex:
        main(["evaluate", str(saved_run), "--data", str(same)])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert "no significant change" in out or "improved" in out
    assert list((saved_run / "evaluations").glob("*.json"))

    drifted = _labelled(tmp_path / "drift.csv", flip=True)  # the world changed: every label flipped
    with pytest.raises(SystemExit) as ex:
        main(["evaluate", str(saved_run), "--data", str(drifted)])
    assert ex.value.code == 1
    out = capsys.readouterr().out
    assert "degraded" in out and "FAIL" in out

    with pytest.raises(SystemExit) as ex:  # a drop within a (huge) tolerance is reported, not failed
        main(["evaluate", str(saved_run), "--data", str(drifted), "--tolerance", "1.0", "--all-rungs"])
    assert ex.value.code == 0
    assert "within the tolerance" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["report", str(saved_run)])  # the evaluations so far appear in the report
    assert "Evaluations on new data" in (saved_run / "report.html").read_text()
    assert "drift.csv" in (saved_run / "report.md").read_text()


def test_evaluate_api_and_unknown_labels(saved_run: Path, tmp_path: Path) -> None:
    evals = adaptladder.evaluate(saved_run, _labelled(tmp_path / "flip.csv", flip=True), all_rungs=True, save=False)
    by = {e.rung: e for e in evals}
    assert set(by) == {"majority", "tfidf"}
    assert by["tfidf"].verdict == "degraded" and by["tfidf"].beyond_tolerance
    assert by["tfidf"].diff_ci[1] < 0
    with pytest.raises(AdaptError, match=r"'phishing'.*not labels of this run"):
        adaptladder.evaluate(saved_run, _labelled(tmp_path / "u.csv", unknown=True))
    proc = subprocess.run([sys.executable, "-m", "adaptladder", "evaluate", str(saved_run), "--data",
                           str(tmp_path / "u.csv")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "phishing" in proc.stderr and "Traceback" not in proc.stderr  # a real process


def test_report_renders_odd_runs(saved_run: Path) -> None:
    """Nothing finished, or measurements missing: the report still renders and says so."""
    from adaptladder.report import build_view, render_html, render_markdown

    doc = json.loads((saved_run / "results.json").read_text())
    failed = {"name": "lora", "family": "finetune", "cost_rank": 70, "status": "failed", "reason": "RuntimeError: boom",
              "traceback": "Traceback ...\nRuntimeError: boom", "params": {}}
    none_done = dict(doc, rungs=[failed], recommendation={"rung": None, "reasons": ["no rung finished"]},
                     comparisons={"validation": [], "test": []})
    html = render_html(build_view(none_done, saved_run))
    assert "RuntimeError: boom" in html and "nothing to compare" in html and "data:image/png" not in html
    assert "no rung finished" in render_markdown(build_view(none_done, saved_run))

    odd = json.loads(json.dumps(doc))
    odd["rungs"][1]["cost_per_1k_usd"] = None  # e.g. an API rung without a price
    odd["rungs"][1]["predict"] = {"throughput_per_s": float("inf")}
    for where in (odd["task"], odd["rungs"][1]["test"]):  # matplotlib must not read "$" as mathtext
        where["label_names"] = ["$5 off", "50$ back"]
    odd["rungs"][1]["test"]["per_class"] = {"$5 off": {"precision": 1, "recall": 1, "f1": 1, "support": 1},
                                            "50$ back": {"precision": 1, "recall": 1, "f1": 1, "support": 1}}
    odd.pop("comparisons")
    view = build_view(odd, saved_run)
    assert len(view["comparisons"]["test"]) == 1  # recomputed for a results.json without them
    assert "<img" in render_html(view)
