"""The generation ladder loop (adaptladder.generation.ladder) on tiny fake rungs and a synthetic task."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptladder.config import RunConfig
from adaptladder.errors import BudgetExceeded
from adaptladder.generation import ladder as gl
from adaptladder.generation.rungs import GEN_RUNGS, GenRung, GenSpec
from adaptladder.generation.task import GenTask
from adaptladder.rungs.settings import RungSettings, setting

FITS: dict[str, int] = {}


@dataclass
class _FakeSettings(RungSettings):
    lm: str | None = setting(None, help="the LM")
    seed: int | None = setting(None, help="the seed")
    tag: Any = setting(None, help="a tag")


@dataclass
class _BudgetedSettings(RungSettings):
    lm: str | None = setting(None, help="the LM")
    seed: int | None = setting(None, help="the seed")
    budget_minutes: float | None = setting(None, help="the budget")


class _Fake(GenRung):
    Settings = _FakeSettings

    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> GenRung:
        FITS[self.name] = FITS.get(self.name, 0) + 1
        assert val_inputs is not None and len(val_inputs) == len(val_targets or [])
        self.spec_ = spec
        return self

    def out(self, x: str) -> str:
        raise NotImplementedError

    def generate(self, inputs: Sequence[str]) -> list[str]:
        self._check_fitted()
        outs = [self.out(x) for x in inputs]
        self.last_usage = {"new_tokens": sum(len(o.split()) for o in outs), "prompt_tokens": 3 * len(outs),
                           "seconds": 1e-3 * len(outs)}
        return outs

    def prompts_used(self, inputs: Sequence[str]) -> list[str]:
        return [f"Rewrite: {x}" for x in inputs]

    def _save(self, path: Path) -> None:
        (path / "state.json").write_text(json.dumps({"name": self.name}))

    def extra_info(self) -> dict[str, Any]:
        return {"decoding": {"decoding": "greedy", "max_new_tokens": 8}}


class ConstantGen(_Fake):
    name, family, cost_rank = "constant", "prompting", 5

    def out(self, x: str) -> str:
        return "nothing useful here"


class EchoGen(_Fake):
    name, family, cost_rank = "echo", "prompting", 10

    def out(self, x: str) -> str:
        return x


class NeedsSchemaGen(EchoGen):
    name, family, cost_rank = "schema-only", "structured", 12
    needs_schema = True


class CudaGen(EchoGen):
    name, family, cost_rank = "cuda-only", "finetune", 15

    @classmethod
    def unavailable_reason(cls, params: dict[str, Any], spec: GenSpec | None = None) -> str | None:
        return "needs CUDA (no GPU here)"

    @classmethod
    def skip_details(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {"memory_gb": 1.5, "minutes": 12}


class BrokenGen(EchoGen):
    name, family, cost_rank = "broken", "finetune", 20

    def fit(self, *a: Any, **k: Any) -> GenRung:
        raise RuntimeError("boom in fit")


class CostlyEchoGen(EchoGen):
    name, family, cost_rank = "costly-echo", "finetune", 50
    Settings = _BudgetedSettings


FAKES = [ConstantGen, EchoGen, NeedsSchemaGen, CudaGen, BrokenGen, CostlyEchoGen]


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    import adaptladder.report as report

    # drawing the report is the report's own business (and seconds of matplotlib here); the loop only
    # has to call it and survive its failure (test_report_failure_is_only_a_warning)
    monkeypatch.setattr(report, "write_report", lambda run_dir, doc: None)
    if request.node.name.startswith("test_real_"):
        return
    for k in list(GEN_RUNGS):
        monkeypatch.delitem(GEN_RUNGS, k)
    for cls in FAKES:
        monkeypatch.setitem(GEN_RUNGS, cls.name, f"{__name__}:{cls.__name__}")
    FITS.clear()

    def fake_encode(cfg: Any, log: Any) -> Any:  # bag of letters: cheap, deterministic
        def enc(texts: list[str]) -> np.ndarray:
            out = np.zeros((len(texts), 26))
            for i, t in enumerate(texts):
                for ch in t.lower():
                    if "a" <= ch <= "z":
                        out[i, ord(ch) - 97] += 1
            return out
        return enc

    monkeypatch.setattr(gl, "make_encode", fake_encode)


WORDS = ["river", "stone", "cloud", "apple", "garden", "window", "silver", "forest", "candle", "harbor"]


def text_task(n: int = 60) -> GenTask:
    rng = np.random.default_rng(0)
    inputs = [" ".join(rng.choice(WORDS, 4)) + f" {i}" for i in range(n)]
    split = np.array(["train"] * (n // 2) + ["validation"] * (n // 4) + ["test"] * (n - n // 2 - n // 4), dtype=object)
    return GenTask("toy-rewrite", inputs, list(inputs), split, kind="rewrite", instruction="Copy the text.")


def json_task(n: int = 40) -> GenTask:
    inputs = [json.dumps({"city": WORDS[i % 10], "pop": i}) for i in range(n)]
    split = np.array(["train"] * (n // 2) + ["validation"] * (n // 4) + ["test"] * (n - n // 2 - n // 4), dtype=object)
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "pop": {"type": "integer"}},
              "required": ["city", "pop"]}
    return GenTask("toy-json", inputs, list(inputs), split, kind="extraction", instruction="Copy.", schema=schema)


def cfg_for(tmp_path: Path, **kw: Any) -> RunConfig:
    return RunConfig(out=str(tmp_path / "run"), no_audit=True, **kw)


def test_order_bar_stop_and_record_format(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, rungs=["costly-echo", "echo", "constant"], bar=0.9)
    res = gl.run_generation(cfg, text_task())
    assert [r["name"] for r in res.results] == ["constant", "echo"]  # cost order, stopped at the bar
    assert res.stopped_at == "echo" and res.recommendation["rung"] == "echo"
    assert res.recommendation["not_run"] == ["costly-echo"]
    assert res.recommendation["metric"] == "chrf"  # the rewrite default (cfg.metric left at macro_f1)
    const, echo = res.results
    assert const["meets_bar"] is False and echo["meets_bar"] is True
    for key in ("name", "family", "cost_rank", "description", "params", "params_hash", "status", "reason",
                "meets_bar", "fit_seconds", "peak_memory_mb", "cost_per_1k_usd", "finished_at", "extra",
                "validation", "test", "predict", "decoding", "prompts"):
        assert key in echo, key
    assert echo["task"] == "generation" and echo["status"] == "done"
    v = echo["validation"]
    assert v["n"] == 15 and v["sampled"] is False and len(v["indices"]) == len(v["outputs"]) == 15
    for m in ("exact_match", "token_f1", "rouge_l", "chrf", "embedding_sim"):
        assert v[m] == pytest.approx(1.0) and len(v[m + "_ci"]) == 2 and len(v["per_example"][m]) == 15
    assert const["validation"]["exact_match"] == 0.0
    task = text_task()
    assert v["outputs"] == [task.inputs[i] for i in v["indices"]]
    assert set(v["indices"]) == set(task.indices("validation").tolist())
    p = echo["predict"]
    for k in ("latency_ms_p50", "latency_ms_p95", "throughput_per_s", "tokens_per_s", "new_tokens_mean"):
        assert p[k] is not None and p[k] > 0, k
    assert set(echo["peak_memory_mb"]) >= {"fit", "predict"}
    assert echo["cost_per_1k_usd"] > 0
    assert echo["prompts"][0].startswith("Rewrite: ") and len(echo["prompts"]) == 3
    assert echo["decoding"]["decoding"] == "greedy"
    assert (res.run_dir / "rungs" / "echo" / "model" / "rung.json").is_file()
    doc = json.loads((res.run_dir / "results.json").read_text())
    assert doc["task"]["task"] == "generation" and doc["metric"] == "chrf" and doc["bar"] == 0.9
    assert doc["recommendation"]["rung"] == "echo" and set(doc["comparisons"]) >= {"validation", "test"}
    assert json.loads((res.run_dir / "task.json").read_text())["kind"] == "rewrite"
    assert (res.run_dir / "split.csv").is_file()
    summary = (res.run_dir / "summary.md").read_text()
    assert "Recommendation: echo" in summary and "chrf" in summary


def test_params_get_run_wide_values_they_declare(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, lm="tiny-lm", budget_minutes=3, rung_params={"echo": {"tag": "x", "budget_minutes": 2}})
    p = gl.gen_rung_params("echo", cfg)
    assert p == {"lm": "tiny-lm", "seed": 13, "tag": "x"}  # no encoder / budget_minutes: echo does not declare them
    assert gl.rung_budget_s("echo", cfg) == 120  # but its budget still sizes its evaluation
    assert gl.gen_rung_params("costly-echo", cfg) == {"lm": "tiny-lm", "budget_minutes": 3, "seed": 13}
    with pytest.raises(Exception, match="unknown generation rung"):
        gl.gen_climbing_order(cfg_for(tmp_path, rungs=["tfidf"]))
    assert gl.gen_climbing_order(cfg_for(tmp_path, rungs=["echo", "constant"], order=["echo"])) == ["echo", "constant"]


def test_skips_failures_and_decision_with_paired_cis(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, rungs=["constant", "echo", "schema-only", "cuda-only", "broken", "costly-echo"])
    res = gl.run_generation(cfg, text_task())
    by = {r["name"]: r for r in res.results}
    assert by["schema-only"]["status"] == "skipped" and "schema" in by["schema-only"]["reason"]
    assert by["cuda-only"]["status"] == "skipped" and by["cuda-only"]["skip_details"] == {"memory_gb": 1.5,
                                                                                          "minutes": 12}
    assert by["broken"]["status"] == "failed" and "boom in fit" in by["broken"]["reason"]
    assert by["costly-echo"]["status"] == "done"  # after the failure: not lost
    rec = res.recommendation
    # no bar: echo beats constant significantly; costly-echo ties echo, so the cheaper echo is chosen
    assert rec["rung"] == "echo" and rec["rule"] == "tradeoff"
    text = " ".join(rec["reasons"])
    assert "constant is cheaper, but echo is significantly better" in text
    assert "costly-echo vs echo: +0.000" in text and "broken failed" in text
    doc = json.loads((res.run_dir / "results.json").read_text())
    val = {(c["a"], c["b"]): c for c in doc["comparisons"]["validation"]}
    assert set(val) == {("constant", "echo"), ("echo", "costly-echo")}  # consecutive + vs the recommended
    c = val[("constant", "echo")]
    assert c["diff"] > 0.5 and c["excludes_zero"] and c["significant"] and c["n"] == 15
    for k in ("a", "b", "metric", "diff", "ci", "excludes_zero", "p_value", "n"):
        assert k in c
    assert not val[("echo", "costly-echo")]["excludes_zero"]
    assert len(doc["comparisons"]["decision"]) == 3 and all("p_holm" in x for x in doc["comparisons"]["decision"])
    assert {x["b"] for x in doc["comparisons"]["test"]} == {"echo", "costly-echo"}


def test_no_rung_meets_bar_recommends_best_with_reasons(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, rungs=["constant", "echo"], bar=0.99, metric="exact_match")
    task = text_task()
    task.targets = [t + " extra words" for t in task.targets]  # echo now misses exact match everywhere
    res = gl.run_generation(cfg, task)
    rec = res.recommendation
    assert rec["bar_met"] is False and rec["reasons"][0].startswith("no rung met the bar 0.99 on exact_match")
    assert rec["rung"] == "constant"  # both 0 exact match: no costlier rung is significantly better
    assert all(r["meets_bar"] is False for r in res.results)


def test_resume_reuses_finished_rungs_and_fresh_starts_over(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, rungs=["constant", "echo"], run_all=True)
    first = gl.run_generation(cfg, text_task())
    assert FITS == {"constant": 1, "echo": 1}
    again = gl.run_generation(cfg, text_task())
    assert FITS == {"constant": 1, "echo": 1} and all(r.get("resumed") for r in again.results)
    assert again.results[1]["validation"] == first.results[1]["validation"]
    cfg2 = cfg_for(tmp_path, rungs=["constant", "echo"], run_all=True, rung_params={"echo": {"tag": "new"}})
    gl.run_generation(cfg2, text_task())
    assert FITS == {"constant": 1, "echo": 2}  # other settings: redone; the rest reused
    # one rung per command into one directory: the results and recommendation cover both
    only = gl.run_generation(cfg_for(tmp_path, rungs=["constant"], rung_params={"echo": {"tag": "new"}}), text_task())
    assert [r["name"] for r in only.results] == ["constant", "echo"] and only.results[1]["from_earlier_command"]
    fresh = gl.run_generation(cfg_for(tmp_path, rungs=["constant"], fresh=True), text_task())
    assert [r["name"] for r in fresh.results] == ["constant"] and FITS["constant"] == 2
    assert (tmp_path / "run.old1").is_dir()


def test_json_task_scores_fields_and_schema(tmp_path: Path) -> None:
    res = gl.run_generation(cfg_for(tmp_path, rungs=["echo", "schema-only"], run_all=True), json_task())
    echo, structured = res.results
    assert res.recommendation["metric"] == "field_f1"
    assert structured["status"] == "done"  # the task has a schema
    t = echo["test"]
    for m in ("json_parse", "schema_valid", "field_f1", "json_exact_match"):
        assert t[m] == 1.0
    assert set(t["per_field_exact_match"]) == {"city", "pop"} and t["per_field_exact_match"]["pop"]["mean"] == 1.0
    assert "embedding_sim" not in t


def test_budget_sizes_evaluation_to_a_seeded_sample(tmp_path: Path) -> None:
    task = text_task(400)  # 100 validation, 100 test
    rung = EchoGen()
    rung.fit([], [], spec=GenSpec(), val_inputs=[], val_targets=[])
    ticks = iter([0.0, 4.0])  # the probe: 4 generations in 4 s
    plan = gl.plan_evaluation(rung, task, 13, budget_s=100, clock=lambda: next(ticks))
    assert plan.seconds_per_example == pytest.approx(1.0)
    n_val, n_test = plan.caps["validation"], plan.caps["test"]
    assert n_val and n_test and n_val + n_test + plan.n_single + 1 <= 100 and n_val >= gl.MIN_EVAL_N
    idx, sampled = gl.eval_indices(task, "validation", n_val, 13)
    assert sampled and len(idx) == n_val and set(idx) <= set(task.indices("validation").tolist())
    small, _ = gl.eval_indices(task, "validation", 25, 13)
    assert set(small) <= set(idx)  # nested samples: rungs sized differently still pair up
    ticks = iter([0.0, 40.0])
    with pytest.raises(BudgetExceeded, match="over budget"):
        gl.plan_evaluation(rung, task, 13, budget_s=100, clock=lambda: next(ticks))
    ticks = iter([0.0, 0.004])
    assert gl.plan_evaluation(rung, task, 13, budget_s=100, clock=lambda: next(ticks)).caps == {
        "validation": None, "test": None}


def test_report_failure_is_only_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptladder.report as report

    def broken(*a: Any, **k: Any) -> None:
        raise KeyError("macro_f1")

    monkeypatch.setattr(report, "write_report", broken)
    logs: list[str] = []
    res = gl.run_generation(cfg_for(tmp_path, rungs=["echo"]), text_task(), logs.append)
    assert (res.run_dir / "results.json").is_file() and any("could not draw the report" in s for s in logs)


def test_terminal_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.commands.run import print_generation_results

    res = gl.run_generation(cfg_for(tmp_path, rungs=["constant", "echo", "cuda-only"], run_all=True), text_task())
    print_generation_results(res.results, "chrf", None, "echo")
    out = capsys.readouterr().out
    assert "echo *" in out and "needs CUDA" in out and "tokens/s" in out
    assert "echo: validation exact_match 1.000" in gl.on_rung_line(res.results[1])


@pytest.mark.slow  # a random-weight Llama, but ~1.5 min of generation on a busy 2-core machine
def test_real_prompting_rungs_on_a_tiny_lm(tmp_path: Path, tiny_causal_lm_dir: str) -> None:
    """The real zero-shot / few-shot / structured rungs through the loop (a random-weight Llama):
    structured output is always schema-valid, and a saved rung reloads to identical generations."""
    from adaptladder.generation.rungs import load_gen_rung

    common = {"max_new_tokens": 10, "threads": 1}
    cfg = cfg_for(tmp_path, rungs=["zero-shot", "few-shot", "structured"], run_all=True, lm=tiny_causal_lm_dir,
                  rung_params={n: dict(common) for n in ("zero-shot", "few-shot", "structured")})
    task = json_task(24)  # 12 train, 6 validation, 6 test
    res = gl.run_generation(cfg, task)
    by = {r["name"]: r for r in res.results}
    assert all(r["status"] == "done" for r in res.results), [r.get("reason") for r in res.results]
    assert by["structured"]["test"]["schema_valid"] == 1.0 and by["structured"]["validation"]["json_parse"] == 1.0
    assert "unconstrained_schema_valid" in json.dumps(by["structured"]["extra"])
    assert by["few-shot"]["decoding"]["max_new_tokens"] == 10 and by["few-shot"]["prompts"]
    assert by["zero-shot"]["params"]["lm"] == tiny_causal_lm_dir
    rung = load_gen_rung(res.run_dir / "rungs" / "structured" / "model")
    t = by["structured"]["test"]
    assert rung.generate([task.inputs[i] for i in t["indices"]]) == t["outputs"]
    assert res.recommendation["rung"] in by and res.recommendation["metric"] == "field_f1"


def test_killed_run_is_assembled_from_its_finished_rungs(tmp_path: Path) -> None:
    from adaptladder.ladder import ensure_results

    res = gl.run_generation(cfg_for(tmp_path, rungs=["constant", "echo", "costly-echo"], run_all=True), text_task())
    (res.run_dir / "results.json").unlink()
    (res.run_dir / "rungs" / "costly-echo" / "result.json").unlink()  # as if killed while it ran
    doc = ensure_results(res.run_dir)
    assert doc["partial"] and doc["metric"] == "chrf" and [r["name"] for r in doc["rungs"]] == ["constant", "echo"]
    assert doc["recommendation"]["rung"] == "echo" and "did not finish" in doc["recommendation"]["reasons"][-1]
    assert "Recommendation: echo" in (res.run_dir / "summary.md").read_text()


def test_llm_judge_is_off_by_default_and_scores_test_outputs_when_on(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.generation import judge

    res = gl.run_generation(cfg_for(tmp_path, rungs=["echo"]), text_task())
    assert "llm_judge" not in res.results[0]["test"]

    class FakeJudge:
        model = "fake-judge"

        def chat_generate(self, convs: list[list[dict[str, str]]], *, max_tokens: int) -> list[dict[str, Any]]:
            assert "Grade the OUTPUT from 1 to 5" in convs[0][0]["content"]
            out = []
            for c in convs:
                user = c[1]["content"]
                ref = user.split("REFERENCE:\n")[1].split("\n\nOUTPUT:")[0]
                got = user.split("OUTPUT:\n")[1].split("\n\nGrade")[0]
                out.append({"text": "5" if got == ref else "Grade: 1"})
            out[0] = {"text": "I cannot tell"}
            return out

    monkeypatch.setenv("ADAPTLADDER_JUDGE_MODEL", "fake-judge")
    monkeypatch.setattr(judge, "make_backend", lambda settings: FakeJudge())
    res = gl.run_generation(cfg_for(tmp_path / "j", rungs=["constant", "echo"], run_all=True), text_task())
    const, echo = res.results
    t = echo["test"]
    assert t["judge"]["unparsed"] == 1 and t["judge"]["model"] == "fake-judge"
    assert t["llm_judge"] == pytest.approx((t["n"] - 1) / t["n"]) and const["test"]["llm_judge"] == 0.0
    assert "llm_judge" not in echo["validation"]  # test only: the judge never decides
    assert res.recommendation["metric"] == "chrf"
    assert "llm_judge" in (res.run_dir / "summary.md").read_text()


def test_the_primary_metric_reaches_the_rungs_spec(tmp_path: Path) -> None:
    """--metric is what fine-tuning rungs early-stop on: it travels in spec.extra["metric"]."""
    cfg = cfg_for(tmp_path, rungs=["echo"], metric="token_f1")
    gl.run_generation(cfg, text_task())
    from adaptladder.generation.rungs import load_gen_rung

    saved = load_gen_rung(tmp_path / "run" / "rungs" / "echo" / "model")
    assert saved.spec_ is not None and saved.spec_.extra["metric"] == "token_f1"


def test_sweep_on_a_generation_task_is_refused(tmp_path: Path) -> None:
    from adaptladder.errors import AdaptError
    from adaptladder.ladder import run

    data = tmp_path / "pairs.csv"
    rows = [f'"{w} {i} went to the {WORDS[(i + 3) % 10]}","the {w} number {i} is here now"'
            for i, w in enumerate(WORDS * 3)]
    data.write_text("input,output\n" + "\n".join(rows) + "\n")
    cfg = RunConfig(data=str(data), task="generation", target_col="output", text_col="input", no_audit=True,
                    out=str(tmp_path / "run"), sweep={"tfidf": {"C": [0.1, 1.0]}})
    with pytest.raises(AdaptError, match="--sweep is not supported for generation"):
        run(cfg)


def test_ray_predict_refuses_a_generation_run(tmp_path: Path) -> None:
    from adaptladder.errors import AdaptError
    from adaptladder.ray_data import predict_file_ray

    cfg = cfg_for(tmp_path, rungs=["echo"])
    gl.run_generation(cfg, text_task())
    (tmp_path / "in.csv").write_text("text\nhello there\n")
    with pytest.raises(AdaptError, match="generation run"):
        predict_file_ray(tmp_path / "run", tmp_path / "in.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_a_too_slow_prompting_rung_is_shortened_before_it_is_skipped(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The timing probe finds the rung too slow: its prompts are halved and the probe repeated (the rung
    is evaluated), and a rung that cannot shorten any more is skipped as over budget."""
    windows: list[int] = []
    monkeypatch.setattr(EchoGen, "shorten_prompts", lambda self, why: (windows.append(1024 // 2 ** len(windows))
                                                                      or windows[-1]) if len(windows) < 2 else None)
    real = gl.plan_evaluation

    def slow_until_short(rung: GenRung, *a: Any, **k: Any) -> Any:
        if rung.name == "echo" and len(windows) < 2:
            raise BudgetExceeded("over budget: too slow")
        return real(rung, *a, **k)

    monkeypatch.setattr(gl, "plan_evaluation", slow_until_short)
    logs: list[str] = []
    res = gl.run_generation(cfg_for(tmp_path, rungs=["echo"], budget_minutes=5), text_task(), logs.append)
    assert res.result("echo")["status"] == "done" and windows == [1024, 512]
    assert sum("prompts shortened to" in m for m in logs) == 2

    def always_slow(rung: GenRung, *a: Any, **k: Any) -> Any:
        raise BudgetExceeded("over budget: too slow")

    monkeypatch.setattr(gl, "plan_evaluation", always_slow)
    res = gl.run_generation(cfg_for(tmp_path, rungs=["constant"], budget_minutes=5, fresh=True), text_task())
    assert res.result("constant")["status"] == "skipped" and "over budget" in res.result("constant")["reason"]


class SlowsDownGen(EchoGen):
    """2 s per example (on a fake clock) for the timing probe, then 4x slower: a machine that got busy."""

    name, family, cost_rank = "slows-down", "prompting", 11
    calls = 0
    now = 0.0

    def generate(self, inputs: Sequence[str]) -> list[str]:
        type(self).calls += 1
        type(self).now += (2.0 if type(self).calls == 1 else 8.0) * len(inputs)
        return super().generate(inputs)


def test_a_rung_slowed_4x_after_the_probe_ends_within_its_budget(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    monkeypatch.setitem(GEN_RUNGS, "slows-down", f"{__name__}:SlowsDownGen")
    SlowsDownGen.calls, SlowsDownGen.now = 0, 0.0
    import time

    fake = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    fake.perf_counter = lambda: SlowsDownGen.now
    monkeypatch.setattr(gl, "time", fake)
    budget_s = 120.0  # the probe says the full splits (15 + 15) fit: ~68 s at 2 s each; at 8 s they need 240 s
    logs: list[str] = []
    res = gl.run_generation(cfg_for(tmp_path, rungs=["slows-down"], budget_minutes=budget_s / 60), text_task(),
                            logs.append)
    r = res.result("slows-down")
    assert r["status"] == "done", r.get("reason")
    took = SlowsDownGen.now  # the rung's whole time on the fake clock: fit, probe, generation, latency calls
    assert took <= budget_s * 1.1, took
    n = r["validation"]["n"] + r["test"]["n"]
    assert 2 <= n < 30 and r["test"]["n"] >= 1 and r["validation"]["n"] >= 1
    assert any("stopped at its share of the budget" in m for m in logs)
    for part in ("validation", "test"):
        rec = r[part]
        assert rec["indices"] == sorted(rec["indices"])  # the record keeps row order
        assert rec["sampled"] and rec["stopped_early"]["planned"] == 15 and rec["n"] < 15
