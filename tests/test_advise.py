"""The advisor: each branch of the decision tree by flags, and evidence from a fake run directory."""

from __future__ import annotations

import json

import pytest

from adaptladder import cli
from adaptladder.advise import Answers, advise, load_evidence


def _cli(argv: list[str]) -> None:
    """Run the CLI in-process; success exits 0."""
    with pytest.raises(SystemExit) as ex:
        cli.main(argv)
    assert ex.value.code == 0


def _rung(name, family, rank, score, ci, *, status="done", meets=None, cost=0.001, reason=None, params=None):
    val = None if score is None else {"n": 500, "macro_f1": score, "macro_f1_ci": ci, "accuracy": score}
    return {"name": name, "family": family, "cost_rank": rank, "status": status, "reason": reason,
            "params": params or {}, "validation": val, "test": val, "fit_seconds": 1.0,
            "predict": {"throughput_per_s": 100, "latency_ms_p50": 5.0}, "cost_per_1k_usd": cost,
            "meets_bar": meets}


def _run(tmp_path, rungs, *, bar=0.9, n_train=4000, audit_findings=()):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "schema_version": 1, "task": {"name": "t"}, "config": {}, "bar": bar, "metric": "macro_f1",
        "rungs": rungs, "recommendation": {"rung": None, "reasons": []}, "audit": None}))
    (run / "audit.json").write_text(json.dumps({
        "stats": {"size": {"n": n_train + 1000, "n_train": n_train, "n_validation": 500}},
        "findings": list(audit_findings), "family_support": {"finetune": {"supported": n_train >= 50}}}))
    return run


@pytest.mark.parametrize("answers,strategy", [
    (Answers(needs_facts=True, needs_style=True), "rag"),
    (Answers(n_examples=20, needs_style=True), "collect-data"),
    (Answers(has_eval_set=False, needs_style=True), "build-eval-set"),
    (Answers(prompting_ok=True, needs_style=True), "prompting"),
    (Answers(requirements_change=True, needs_style=True), "prompting"),
    (Answers(needs_scale=True), "small-model-or-distill"),
    (Answers(needs_style=True, n_examples=2000, has_eval_set=True), "fine-tune-lora"),
    (Answers(), "measure"),
])
def test_tree_by_flags(answers, strategy):
    adv = advise(answers)
    assert adv.strategy == strategy
    assert adv.reasons and adv.next_step
    assert len(adv.checklist) == 6


def test_lora_advice_carries_an_estimate():
    adv = advise(Answers(needs_style=True), model="7B", seq_len=512, batch=4)
    assert adv.estimate["qlora"]["peak_gib"] < adv.estimate["lora"]["peak_gib"]
    assert any("QLoRA" in r for r in adv.reasons)


def test_evidence_prompting_clears_the_bar(tmp_path):
    run = _run(tmp_path, [
        _rung("majority", "floor", 0, 0.30, [0.28, 0.32], meets=False),
        _rung("tfidf", "floor", 10, 0.82, [0.79, 0.85], meets=False),
        _rung("few-shot", "prompting", 30, 0.92, [0.90, 0.94], meets=True, cost=0.05),
    ])
    adv = advise(Answers(needs_style=True), run)
    assert adv.strategy == "prompting"
    assert any("few-shot macro_f1 0.920" in r and "clears the bar 0.9" in r for r in adv.reasons)
    few = next(c for c in adv.checklist if c.check.startswith("few-shot"))
    assert few.triggered is True and "0.920" in few.evidence
    assert next(c for c in adv.checklist if c.check == "no evaluation set").triggered is False


def test_evidence_fine_tuning_no_better_and_qlora_skipped(tmp_path):
    run = _run(tmp_path, [
        _rung("tfidf", "floor", 10, 0.84, [0.81, 0.87], meets=False),
        _rung("few-shot", "prompting", 30, 0.80, [0.76, 0.84], meets=False),
        _rung("lora", "finetune", 70, 0.855, [0.82, 0.89], meets=False, params={"model": "smollm2"}),
        _rung("qlora", "finetune", 75, None, None, status="skipped", reason="needs CUDA (bitsandbytes 4-bit)"),
    ])
    adv = advise(Answers(needs_style=True), run)
    no_gain = next(c for c in adv.checklist if c.check == "no improvement in evaluation")
    assert no_gain.triggered is True and "+0.015" in no_gain.evidence
    assert adv.strategy != "fine-tune-lora"
    assert any("did not improve" in r for r in adv.reasons)
    assert adv.estimate and adv.estimate["model"] == "smollm2"
    assert any("qlora rung was skipped" in r for r in adv.reasons)


def test_evidence_fine_tuning_clearly_better(tmp_path):
    run = _run(tmp_path, [
        _rung("tfidf", "floor", 10, 0.70, [0.67, 0.73], meets=False),
        _rung("few-shot", "prompting", 30, 0.72, [0.69, 0.75], meets=False),
        _rung("lora", "finetune", 70, 0.88, [0.86, 0.90], meets=False),
    ])
    adv = advise(Answers(), run)
    assert adv.strategy == "fine-tune-lora"
    assert next(c for c in adv.checklist if c.check == "no improvement in evaluation").triggered is False


def test_audit_size_says_too_little_data(tmp_path):
    finding = {"severity": "warning", "code": "size_below_minimum", "message": "40 labelled examples is below "
               "the 200 a classification task needs", "count": 40}
    run = _run(tmp_path, [_rung("tfidf", "floor", 10, 0.6, [0.5, 0.7], meets=False)], n_train=40,
               audit_findings=[finding])
    ev = load_evidence(run)
    assert ev["n_train"] == 40
    adv = advise(Answers(needs_style=True), run)
    assert adv.strategy == "collect-data"
    assert any("audit: 40 labelled examples" in r for r in adv.reasons)


def test_cli_flags_json(capsys, tmp_path):
    _cli(["advise", "--facts", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert d["strategy"] == "rag" and d["checklist"][0]["triggered"] is True
    run = _run(tmp_path, [_rung("few-shot", "prompting", 30, 0.95, [0.93, 0.97], meets=True)])
    _cli(["advise", str(run), "--no-interactive"])
    out = capsys.readouterr().out
    assert "Stop at prompting" in out and "checklist" in out


@pytest.mark.parametrize("setup,needle", [("missing", "not found"), ("no_results", "results.json is missing"),
                                          ("bad_json", "is not valid JSON")])
def test_bad_run_dir_is_one_line_exit_2(setup, needle, tmp_path, capsys):
    run = tmp_path / "run"
    if setup != "missing":
        run.mkdir()
    if setup == "bad_json":
        (run / "results.json").write_text("{oops")
    with pytest.raises(SystemExit) as ex:
        cli.main(["advise", "--run", str(run), "--json"])
    assert ex.value.code == 2
    assert needle in capsys.readouterr().err


def test_interactive_needs_a_terminal(capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["advise", "--interactive"])
    assert ex.value.code == 2
    assert "terminal" in capsys.readouterr().err


def test_answers_from_a_terminal(monkeypatch, capsys):
    """The interactive path: questions answered y/n/? as a user would type them."""
    import io
    import sys

    replies = iter(["n", "y", "?", "n", "n", "y", "y", "800"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("rich.prompt.Prompt.ask", lambda *a, **k: next(replies))
    monkeypatch.setattr("rich.prompt.Confirm.ask", lambda *a, **k: next(replies) == "y")
    monkeypatch.setattr("rich.prompt.IntPrompt.ask", lambda *a, **k: int(next(replies)))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    _cli(["advise"])
    out = capsys.readouterr().out
    assert "Fine-tune with LoRA" in out
