"""The report, predict, evaluate and export-jsonl of generation runs (issue #17 item 6).

The report tests build a generation run document by hand, following the record format
(README "Generation runs"); the CLI tests run predict / evaluate on a tiny run directory
holding a saved fake rung registered in ``GEN_RUNGS`` (no language model: milliseconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from adaptladder.cli import main
from adaptladder.generation.metrics import per_example_scores, summarise
from adaptladder.generation.rungs import GEN_RUNGS, GenRung, GenSpec
from adaptladder.generation.task import GenTask
from adaptladder.report import write_report

HOSTILE = "<script>alert('x')</script>"


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ a hand-built run document
def _part(task: GenTask, part: str, outputs_of: Any, sampled_n: int | None = None) -> dict[str, Any]:
    idx = task.indices(part)
    if sampled_n is not None:
        idx = idx[:sampled_n]
    outs = [outputs_of(task.inputs[i], task.targets[i]) for i in idx]
    refs = task.refs([task.targets[i] for i in idx])
    per, per_field = per_example_scores(outs, refs, kind=task.output, schema=task.schema)
    rec: dict[str, Any] = {"n": len(idx), "sampled": sampled_n is not None, "indices": [int(i) for i in idx],
                           "outputs": outs, "per_example": {m: v.tolist() for m, v in per.items()}}
    for m, v in per.items():
        s = summarise(v)
        rec[m], rec[m + "_ci"] = s["mean"], s["ci"]
    if per_field:
        rec["per_field_exact_match"] = {f: {"mean": (s := summarise(v))["mean"], "ci": s["ci"]}
                                        for f, v in per_field.items()}
    return rec


def _rung(name: str, rank: int, task: GenTask, outputs_of: Any, *, family: str = "prompting",
          extra: dict[str, Any] | None = None, prompts: list[str] | None = None, meets_bar: bool = False,
          sampled_n: int | None = None) -> dict[str, Any]:
    return {"name": name, "task": "generation", "family": family, "cost_rank": rank, "description": f"{name} rung",
            "params": {}, "params_hash": "x", "status": "done", "reason": None, "meets_bar": meets_bar,
            "fit_seconds": 1.5, "peak_memory_mb": {"fit": 10.0, "predict": 5.0}, "cost_per_1k_usd": 0.004 * rank,
            "finished_at": "2026-11-30T18:00:00+0000",
            "validation": _part(task, "validation", outputs_of), "test": _part(task, "test", outputs_of, sampled_n),
            "predict": {"latency_ms_p50": 40.0 * rank, "latency_ms_p95": 55.0 * rank, "throughput_per_s": 3.0,
                        "tokens_per_s": 120.5, "new_tokens_mean": 12.0},
            "decoding": {"greedy": True, "max_new_tokens": 32, "batch_size": 8, "constrained": family == "structured",
                         "chat_template": True},
            "prompts": prompts or [], "extra": extra or {}}


def text_task(n: int = 30) -> GenTask:
    inputs = [f"please rewrite sentence number {i} politely" for i in range(n)]
    targets = [f"Could you kindly rewrite sentence {i}?" for i in range(n)]
    inputs[n - 1] = f"{HOSTILE} hostile input"  # lands in the test split below
    targets[n - 1] = f"{HOSTILE} hostile reference"
    split = np.array(["train"] * (n - 12) + ["validation"] * 6 + ["test"] * 6, dtype=object)
    return GenTask("polite", inputs, targets, split, kind="rewrite", instruction=f"Rewrite politely. {HOSTILE}",
                   source={"builtin": "polite"})


def _compare(a: dict[str, Any], b: dict[str, Any], part: str, metric: str) -> dict[str, Any]:
    from adaptladder.generation.metrics import paired_compare

    ia, ib = a[part]["indices"], b[part]["indices"]
    common = sorted(set(ia) & set(ib))
    va = [a[part]["per_example"][metric][ia.index(i)] for i in common]
    vb = [b[part]["per_example"][metric][ib.index(i)] for i in common]
    c = paired_compare(vb, va)
    return {"a": a["name"], "b": b["name"], "part": part, "metric": metric, "diff": c["diff"], "ci": c["ci"],
            "excludes_zero": c["excludes_zero"], "p_value": c["p_value"], "n": c["n"], "n_common": c["n"],
            "subset": len(common) < max(len(ia), len(ib)), "a_score": c["mean_b"], "b_score": c["mean_a"]}


def gen_doc(task: GenTask, rungs: list[dict[str, Any]], metric: str, audit: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """A results.json of a generation run as the record format describes it (recommendation: the best
    validation score; comparisons: every pair, Holm-corrected per split)."""
    from adaptladder.compare import holm

    done = [r for r in rungs if r["status"] == "done"]
    best = max(done, key=lambda r: r["validation"][metric])
    comparisons = {part: holm([_compare(a, b, part, metric) for k, a in enumerate(done) for b in done[k + 1:]])
                   for part in ("validation", "test")}
    comparisons["decision"] = comparisons["validation"]
    rec = {"rung": best["name"], "reasons": [f"{best['name']} has the best validation {metric} <i>here</i>."],
           "bar_met": True, "stopped_at": None, "not_run": []}
    from adaptladder.store import SCHEMA_VERSION

    return {"schema_version": SCHEMA_VERSION, "task": task.summary(), "config": {"seed": 0, "sample": None}, "bar": 0.5,
            "metric": metric, "rungs": rungs, "recommendation": rec, "audit": audit,
            "comparisons": comparisons, "written_at": "2026-11-30T18:00:00+0000"}


def text_doc() -> tuple[GenTask, dict[str, Any]]:
    task = text_task()
    zero = _rung("zero-shot", 10, task, lambda x, y: f"{x} <b>bold</b>",
                 prompts=[f"<|im_start|>system\nRewrite politely. {HOSTILE}<|im_end|>", "second prompt"])
    few = _rung("few-shot", 20, task, lambda x, y: y if not x.endswith("3 politely") else "", prompts=["few prompt"])
    skipped = {"name": "qlora-sft", "task": "generation", "family": "finetune", "cost_rank": 65,
               "description": "QLoRA", "params": {}, "status": "skipped", "reason": "needs CUDA",
               "skip_details": {"estimate": {"gpu_memory_gb": 1.234, "train_hours": 0.02, "train_cost_usd": 0.05,
                                             "device_assumed": "T4", "smallest_gpu": "T4 16GB"}}}
    return task, gen_doc(task, [zero, few, skipped], "chrf")


def json_doc() -> tuple[GenTask, dict[str, Any]]:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "pop": {"type": "integer"}},
              "required": ["city", "pop"]}
    n = 24
    inputs = [f"City {i} has {1000 + i} people" for i in range(n)]
    targets = [json.dumps({"city": f"City {i}", "pop": 1000 + i}) for i in range(n)]
    split = np.array(["train"] * 12 + ["validation"] * 6 + ["test"] * 6, dtype=object)
    task = GenTask("cities", inputs, targets, split, kind="extraction", instruction="Extract.", schema=schema)

    def loose(x: str, y: str) -> str:
        d = json.loads(y)
        return f"Sure! {{\"city\": \"{d['city']}\"}}" if d["pop"] % 2 else y

    zero = _rung("zero-shot", 10, task, loose)
    structured = _rung("structured", 35, task, lambda x, y: y, family="structured",
                       extra={"unconstrained_schema_valid": 0.4,
                              "unconstrained": {"n": 5, "json_parse": 0.8, "schema_valid": 0.4}})
    return task, gen_doc(task, [zero, structured], "field_f1")


# ------------------------------------------------------------------ report
def test_text_report_has_table_sample_prompts_and_comparisons(tmp_path: Path) -> None:
    _, doc = text_doc()
    paths = write_report(tmp_path, doc)
    html = paths["html"].read_text()
    md = paths["md"].read_text()
    # the primary metric stated, with why it is the default
    assert "Primary metric: chrf" in html and "the default for a rewrite task" in md
    # the ladder table: both rungs with their validation/test primary metric, tokens/s, $ per 1k, the skip estimate
    assert "<h2>The ladder</h2>" in html and "$ per 1,000 generations" in html
    zero = doc["rungs"][0]
    assert f"{zero['test']['chrf']:.3f}" in html and f"{zero['validation']['chrf']:.3f}" in md
    assert "120.5" in html and "needs CUDA" in html and "~1.23 GB GPU memory" in html and "T4 16GB" in md
    assert "token_f1" in html  # the other metrics
    # every text escaped: instruction, inputs, references, outputs, prompts
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "\\<script\\>" in md or HOSTILE not in md.replace("```", "")
    # the side-by-side sample: input, reference, each rung's output for the same test row
    assert "Side by side" in html and "hostile reference" in html and "Could you kindly rewrite sentence" in html
    row = doc["rungs"][1]["test"]["indices"][0]
    assert f"row {row}" in md
    # prompts, exact; comparisons (validation and test)
    assert "&lt;|im_start|&gt;system" in html and "few prompt" in md
    assert "Paired comparisons that decided (validation)" in html and "few-shot" in md
    assert doc["comparisons"]["test"] and "Paired comparisons on the test split" in md
    # the recommendation with its reasons
    assert doc["recommendation"]["rung"] in html
    assert "has the best validation chrf &lt;i&gt;here&lt;/i&gt;" in html


def test_markdown_fences_hostile_text_and_escapes_cells(tmp_path: Path) -> None:
    _, doc = text_doc()
    md = write_report(tmp_path, doc)["md"].read_text()
    # in tables and lines, markup is neutralised; full texts sit in fences that their content cannot close
    for line in md.splitlines():
        if line.startswith("|") or line.startswith("- "):
            assert "<script>" not in line
    assert "```text\n" in md


def test_json_report_shows_constrained_vs_unconstrained_and_per_field(tmp_path: Path) -> None:
    _, doc = json_doc()
    paths = write_report(tmp_path, doc)
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert "constrained vs unconstrained" in html
    structured = doc["rungs"][1]
    assert structured["test"]["schema_valid"] == 1.0
    assert "0.400" in html and "n=5" in md  # the unconstrained rate beside it
    assert "Per-field exact match" in html and "<code>city</code>" in html and "| pop |" in md
    assert "Primary metric: field_f1" in md and "field F1 scores each extracted field" in md
    assert "JSON Schema" in html


def test_sampled_rung_shows_missing_outputs_and_missing_inputs(tmp_path: Path) -> None:
    task = text_task()
    a = _rung("zero-shot", 10, task, lambda x, y: "a")
    b = _rung("few-shot", 20, task, lambda x, y: y, sampled_n=3)
    doc = gen_doc(task, [a, b], "chrf")
    html = write_report(tmp_path, doc)["html"].read_text()
    # the sample is drawn from the rows both rungs generated for
    assert "(not generated" not in html and "evaluated on a seeded random sample" in html
    # no inputs in the record: said, not hidden (the report never reads the data again)
    assert "(not in the record)" in html and "the report reads only the run directory" in html


def test_inputs_and_references_from_the_record(tmp_path: Path) -> None:
    task, doc = text_doc()
    for r in doc["rungs"]:
        if r["status"] == "done":
            idx = r["test"]["indices"]
            r["test"]["inputs"] = [task.inputs[i] for i in idx]
            r["test"]["references"] = [task.targets[i] for i in idx]
    html = write_report(tmp_path, doc)["html"].read_text()
    assert "(not in the record)" not in html and "please rewrite sentence number" in html


def test_generation_audit_section_uses_its_renderer(tmp_path: Path) -> None:
    from adaptladder.audit.generation import audit_generation

    task = text_task(60)
    audit = audit_generation(task, None, None)
    _, doc = text_doc()
    doc["audit"] = audit
    html = write_report(tmp_path, doc)["html"].read_text()
    assert "Data audit (generation)" in html


def test_classification_report_unchanged_by_dispatch(tmp_path: Path) -> None:
    from conftest import toy_run

    run = toy_run(tmp_path)
    html = (run / "report.html").read_text()
    assert "Per-class scores" in (run / "report.md").read_text() and "(generation)" not in html


# ------------------------------------------------------------------ predict / evaluate / export on a tiny run
class EchoGen(GenRung):
    """Fake rung: answers with the input upper-cased (or the JSON the input names)."""

    name = "zero-shot"
    family = "prompting"
    cost_rank = 10

    def fit(self, inputs: Any, targets: Any, *, spec: GenSpec, val_inputs: Any = None, val_targets: Any = None
            ) -> EchoGen:
        self.spec_ = spec
        return self

    def generate(self, inputs: Any) -> list[str]:
        self._check_fitted()
        self.last_usage = {"new_tokens": len(inputs), "prompt_tokens": 0, "seconds": 0.001}
        return [x.upper() for x in inputs]

    def _save(self, path: Path) -> None:
        (path / "echo.json").write_text(json.dumps({"upper": True}))


@pytest.fixture
def echo_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GEN_RUNGS, "zero-shot", f"{__name__}:EchoGen")


def tiny_gen_run(tmp_path: Path) -> Path:
    """A generation run directory with a saved EchoGen as its recommended rung."""
    task = GenTask("echo", [f"word {i}" for i in range(12)], [f"WORD {i}" for i in range(12)],
                   np.array(["train"] * 6 + ["validation"] * 3 + ["test"] * 3, dtype=object), kind="rewrite",
                   instruction="Shout.", source={"text_col": "input", "target_col": "target"})
    rung = EchoGen().fit(*task.part("train"), spec=GenSpec.of(task))
    run = tmp_path / "run"
    rung.save(run / "rungs" / "zero-shot" / "model")
    rec = _rung("zero-shot", 10, task, lambda x, y: x.upper())
    doc = gen_doc(task, [rec], "chrf")
    (run / "results.json").write_text(json.dumps(doc))
    (run / "task.json").write_text(json.dumps(task.summary()))
    return run


def test_predict_writes_one_generation_per_row_in_order(tmp_path: Path, echo_registered: None,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_gen_run(tmp_path)
    pd.DataFrame({"input": ["b two", "a one", HOSTILE], "other": [1, 2, 3]}).to_csv(tmp_path / "new.csv", index=False)
    code, out, err = cli(["predict", str(run), "-i", str(tmp_path / "new.csv"), "-o", str(tmp_path / "out.jsonl")],
                         capsys)
    assert code == 0, err
    assert "generated for 3 rows" in out
    out = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert out["generation"].tolist() == ["B TWO", "A ONE", HOSTILE.upper()]
    assert out["other"].tolist() == [1, 2, 3]
    # the library call too
    from adaptladder.winner import predict

    assert predict(run, ["x y"])["generation"].tolist() == ["X Y"]


def test_evaluate_scores_new_pairs_with_cis(tmp_path: Path, echo_registered: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_gen_run(tmp_path)
    pd.DataFrame({"src": [f"w {i}" for i in range(8)], "ref": [f"W {i}" if i % 2 else "other" for i in range(8)]}
                 ).to_csv(tmp_path / "pairs.csv", index=False)
    code, out, err = cli(["evaluate", str(run), "--data", str(tmp_path / "pairs.csv"), "--text-col", "src",
                          "--target-col", "ref", "--json"], capsys)
    assert code in (0, 1), err
    doc = json.loads(out)
    ev = doc["evaluations"][0]
    assert ev["metric"] == "chrf" and ev["n_new"] == 8
    assert ev["new"]["exact_match"] == pytest.approx(0.5)
    assert len(ev["new"]["chrf_ci"]) == 2 and len(ev["diff_ci"]) == 2
    assert list((run / "evaluations").glob("*.json"))
    # a missing target column: one line, exit 2
    code, out, err = cli(["evaluate", str(run), "--data", str(tmp_path / "pairs.csv"), "--text-col", "src",
                          "--target-col", "nope"], capsys)
    assert code == 2 and "nope" in err and "Traceback" not in err


def test_export_jsonl_generation_target_is_the_assistant_turn(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"input": f"sentence {i} to rewrite", "output": f"Rewritten sentence number {i}."} for i in range(30)]
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "train.jsonl"
    code, _, err = cli(["export-jsonl", str(tmp_path / "pairs.csv"), "--target-col", "output",
                        "--system", "Rewrite it.", "-o", str(out)], capsys)
    assert code == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines and all([m["role"] for m in x["messages"]] == ["system", "user", "assistant"] for x in lines)
    pairs = {x["messages"][1]["content"]: x["messages"][2]["content"] for x in lines}
    for inp, tgt in pairs.items():
        assert tgt == f"Rewritten sentence number {inp.split()[1]}."
    assert len(lines) < 30  # validation and test held out


def test_ladder_run_records_test_texts_and_report_shows_them(tmp_path: Path, echo_registered: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The real loop: the test record carries inputs/references for the side-by-side sample; predict
    and evaluate then work on the run directory it wrote."""
    from adaptladder.config import RunConfig
    from adaptladder.generation.ladder import run_generation

    task = text_task(40)
    cfg = RunConfig(out=str(tmp_path / "run"), no_audit=True, rungs=["zero-shot"], run_all=True)
    res = run_generation(cfg, task)
    rec = res.results[0]
    assert rec["status"] == "done", rec.get("reason")
    t = rec["test"]
    assert t["inputs"] == [task.inputs[i] for i in t["indices"]]
    assert t["references"] == [task.targets[i] for i in t["indices"]]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "(generation)" in html and "(not in the record)" not in html and "hostile reference" in html
    assert HOSTILE not in html
    pd.DataFrame({"input": ["abc"]}).to_csv(tmp_path / "x.csv", index=False)
    code, _, err = cli(["predict", str(tmp_path / "run"), "-i", str(tmp_path / "x.csv"), "-o",
                        str(tmp_path / "x.out.csv")], capsys)
    assert code == 0, err
    assert pd.read_csv(tmp_path / "x.out.csv")["generation"].tolist() == ["ABC"]
