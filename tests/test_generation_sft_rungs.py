"""The fine-tuning / distillation generation rungs (lora-sft, full-sft, qlora-sft, distill) on a
tiny random-weight Llama saved as a local checkpoint: fit, generate, save/load identical
generations, the CPU skip of qlora-sft with the estimator's figures, distillation from a fake
teacher, and the loss covering the target tokens only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pytest

from adaptladder.errors import AdaptError
from adaptladder.generation.decode import Generator
from adaptladder.generation.rungs import GEN_RUNGS, GenRung, GenSpec, load_gen_rung, make_gen_rung
from adaptladder.generation.rungs.sft import DistillSFT, FullSFT, LoraSFT, QloraSFT, cuda_available
from test_generation_decode import _byte_bpe_tokenizer, _tiny_lm

WORDS = ["fox", "dog", "city", "line", "reply", "quick", "lazy", "brown", "time", "zone", "population", "the"]
# the random LM needs a larger init than 0.02 for LoRA on q/v to make it confident (see test_generation_sft)
FAST = {"lr": 5e-2, "dropout": 0.0, "batch_size": 8, "max_epochs": 12, "eval_every": 4, "patience": 4,
        "max_length": 64, "budget_minutes": 5, "threads": 1}


def _inputs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 3)) for _ in range(n)]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A tiny Llama + byte-BPE tokenizer saved as a checkpoint folder (what ``lm=`` takes)."""
    tok = _byte_bpe_tokenizer()
    path = tmp_path_factory.mktemp("tiny-llama")
    _tiny_lm(tok, init=0.5).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


def _spec(**extra: Any) -> GenSpec:
    return GenSpec(kind="rewrite", instruction="Reply.", max_new_tokens=4, extra={"metric": "exact_match", **extra})


def test_registry_names_and_cost_order():
    assert [make_gen_rung(n).cost_rank for n in ("lora-sft", "qlora-sft", "full-sft", "distill")] == [60, 65, 70, 80]
    assert {GEN_RUNGS[n].split(":")[1] for n in ("lora-sft", "qlora-sft", "full-sft", "distill")} == {
        "LoraSFT", "QloraSFT", "FullSFT", "DistillSFT"}
    with pytest.raises(AdaptError, match="unknown setting rank for the lora-sft rung"):
        LoraSFT(rank=4)
    with pytest.raises(AdaptError, match=r"lora-sft setting r=0 is invalid: use an integer >= 1"):
        LoraSFT(r=0)


def test_lora_sft_fits_saves_and_reloads_identically(lm_dir, tmp_path):
    rung = LoraSFT(lm=lm_dir, r=8, alpha=16, **FAST)
    val = _inputs(8, 1)
    base = Generator(lm_dir, threads=1)
    before = base.generate([base.build_prompt(x, "Reply.") for x in val], max_new_tokens=4).texts
    assert before != ["yes"] * 8 and rung.run_settings(_spec())["seed"] == 13
    rung.fit(_inputs(32, 0), ["yes"] * 32, spec=_spec(), val_inputs=val, val_targets=["yes"] * 8)
    out = rung.generate(val)
    assert out == ["yes"] * 8
    assert rung.last_usage["n"] == 8 and rung.last_usage["new_tokens"] >= 8 and rung.last_usage["seconds"] > 0
    info = rung.extra_info()
    tr = info["training"]
    assert tr["metric"] == "exact_match" and tr["best_val_score"] == 1.0 and tr["best_step"] > 0
    assert tr["stopped"] in ("early_stopping", "epochs") and tr["trainable_params"] < tr["total_params"]
    losses = [h["loss"] for h in tr["history"] if "loss" in h]
    assert losses[-1] < losses[0] / 4 and tr["history"][0]["step"] == 0 and "val_score" in tr["history"][0]
    assert info["decoding"]["decoding"] == "greedy" and info["decoding"]["max_new_tokens"] == 4
    # the prompt is the zero-shot prompt of the prompting rungs
    assert rung.prompts_used(val[:1]) == [rung.gen_.build_prompt(val[0], "Reply.")]
    rung.save(tmp_path / "m")
    assert (tmp_path / "m" / "adapter" / "adapter_model.safetensors").is_file()
    again = load_gen_rung(tmp_path / "m")
    assert isinstance(again, LoraSFT) and again.generate(val) == out
    assert again.spec_.max_new_tokens == 4 and again.extra_info()["training"]["best_step"] == tr["best_step"]


class _FakeClock:
    """Seconds that pass only when the test says: each clock read 0.01 s, each generated pair 1 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


def _slow_generation(monkeypatch: pytest.MonkeyPatch, seconds_per_pair: float) -> _FakeClock:
    """The SFT loop's clock replaced by a fake one on which every generated pair costs ``seconds_per_pair``."""
    from adaptladder.generation import sft as sft_mod

    clock = _FakeClock()
    monkeypatch.setattr(sft_mod, "_clock", clock)
    real = Generator.generate

    def slow_generate(self, prompts, **kw):
        clock.now += seconds_per_pair * len(prompts)
        return real(self, prompts, **kw)

    monkeypatch.setattr(Generator, "generate", slow_generate)
    return clock


def test_lora_sft_holds_out_validation_and_respects_the_budget(lm_dir, monkeypatch):
    _slow_generation(monkeypatch, 2.0)  # 2 s per generated pair: the 1-pair probe leaves < 1 s of the 3 s budget
    rung = LoraSFT(lm=lm_dir, **{**FAST, "budget_minutes": 0.05, "max_epochs": 50, "val_size": 4})
    rung.fit(_inputs(20, 0), ["yes"] * 20, spec=_spec())
    tr = rung.extra_info()["training"]
    # a budget that cannot hold one step and its check: no training, the base model (step 0) kept
    assert tr["stopped"] == "budget" and tr["steps"] == 0 and tr["best_step"] == 0 and tr["val_check_pairs"] == 1
    assert tr["train_pairs"] == 18 and tr["val_pairs"] == 2 and "held out" in tr["validation"]
    with pytest.raises(AdaptError, match="validation pairs"):
        LoraSFT(lm=lm_dir, **FAST).fit(["a"], ["b"], spec=_spec())


def test_validation_checks_are_sized_to_the_budget(lm_dir, monkeypatch):
    """A check may take at most eval_share of the budget: its seeded validation subset is sized from
    the timed first check; training stops when a step + a check no longer fit, within the budget."""
    clock = _slow_generation(monkeypatch, 1.0)
    # 60 s budget, 20% per check: 12 s; a 1-pair probe (1 s) + one batch of 8 (9 s) fits, another would not
    params = {**FAST, "budget_minutes": 1.0, "max_epochs": 500, "patience": 500, "eval_every": 2,
              "gen_batch_size": 8, "val_size": 32}
    rung = LoraSFT(lm=lm_dir, **params)
    val = _inputs(32, 1)
    rung.fit(_inputs(16, 0), ["yes"] * 16, spec=_spec(), val_inputs=val, val_targets=["yes"] * 32)
    tr = rung.extra_info()["training"]
    assert tr["val_pairs"] == 32 and tr["val_check_pairs"] == 9 and tr["val_check"]["pairs"] == 9
    checks = [h for h in tr["history"] if "val_score" in h]
    assert len(checks) >= 3 and all(h["n"] == 9 and h["check_seconds"] <= 0.2 * 60 for h in checks)
    assert tr["stopped"] == "budget" and tr["steps"] > 2 and tr["val_check"]["unchecked_steps"] == 0
    assert checks[-1]["step"] == tr["steps"]  # the last steps were checked
    assert checks[-1]["seconds"] <= 60  # and everything ended within the budget
    # the same seeded subset, whatever the budget: a larger budget takes a longer prefix of one order
    clock.now = 0.0
    big = LoraSFT(lm=lm_dir, **{**params, "budget_minutes": 10.0, "max_steps": 1})
    big.fit(_inputs(16, 0), ["yes"] * 16, spec=_spec(), val_inputs=val, val_targets=["yes"] * 32)
    assert big.extra_info()["training"]["val_check_pairs"] == 32
    with pytest.raises(AdaptError, match="eval_share"):
        LoraSFT(eval_share=1.5)


def test_training_keeps_time_for_the_ladders_evaluation(lm_dir, monkeypatch):
    """With the ladder's ``eval_reserve_generations`` in the spec, training stops early enough that
    that many generations (at the first check's rate) still fit the budget after it."""
    from adaptladder.generation.ladder import EVAL_RESERVE_GENERATIONS, spec_for

    _slow_generation(monkeypatch, 1.0)
    params = {**FAST, "budget_minutes": 1.0, "max_epochs": 500, "patience": 500, "eval_every": 2,
              "gen_batch_size": 8, "val_size": 32}
    val = _inputs(32, 1)
    rung = LoraSFT(lm=lm_dir, **params)
    rung.fit(_inputs(16, 0), ["yes"] * 16, spec=_spec(eval_reserve_generations=30), val_inputs=val,
             val_targets=["yes"] * 32)
    tr = rung.extra_info()["training"]
    assert tr["val_check"]["reserved_for_evaluation_s"] == pytest.approx(30.0, rel=0.05)  # 30 x (9 s / 9 pairs)
    assert tr["stopped"] == "budget" and tr["steps"] >= 2
    assert max(h["seconds"] for h in tr["history"] if "seconds" in h) <= 60 - 30
    # the ladder asks for it whenever the rung has a budget, and not without one
    from adaptladder.config import RunConfig

    cfg = RunConfig(budget_minutes=3.0)
    task = type("T", (), {"kind": "rewrite", "instruction": "Reply.", "schema": None})()
    assert spec_for(task, cfg, "lora-sft").extra["eval_reserve_generations"] == EVAL_RESERVE_GENERATIONS
    assert "eval_reserve_generations" not in spec_for(task, RunConfig(budget_minutes=None), "lora-sft").extra


def test_full_sft_trains_every_weight_and_reloads(lm_dir, tmp_path):
    rung = FullSFT(lm=lm_dir, **{**FAST, "lr": 3e-3})
    val = _inputs(8, 1)
    rung.fit(_inputs(32, 0), ["yes"] * 32, spec=_spec(), val_inputs=val, val_targets=["yes"] * 8)
    out = rung.generate(val)
    tr = rung.extra_info()["training"]
    assert out == ["yes"] * 8 and tr["method"] == "full" and tr["trainable_params"] == tr["total_params"]
    rung.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m" / "model").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert load_gen_rung(tmp_path / "m").generate(val) == out


@pytest.mark.skipif(cuda_available(), reason="the CPU skip path only")
def test_qlora_sft_skips_on_cpu_with_the_estimate():
    reason = QloraSFT.unavailable_reason({"lm": "smollm2"}, _spec())
    assert reason.startswith("needs CUDA (est. ") and "GB GPU" in reason
    est = QloraSFT.skip_details({"lm": "smollm2", "n_examples": 500, "max_length": 256})["estimate"]
    assert est["method"] == "qlora" and est["examples"] == 500 and est["seq_len"] == 256
    assert 0 < est["gpu_memory_gb"] < 10 and est["train_hours"] > 0 and est["trainable_params"] < est["params"]
    assert "given as n_examples" in est["data"]
    # no training data known: the assumption is stated
    assert "1000 examples at max_length 512 tokens (assumed: training size unknown)" in reason
    bad = QloraSFT.skip_details({"lm": "no-such-model-anywhere"})
    assert bad["estimate"] is None and bad["estimate_error"]  # a broken estimate is reported, never raised
    with pytest.raises(AdaptError, match="needs CUDA"):
        QloraSFT(lm="smollm2").fit(["a", "b"], ["c", "d"], spec=_spec())


@pytest.mark.skipif(cuda_available(), reason="the CPU skip path only")
def test_qlora_skip_estimates_the_tasks_own_training_pairs_and_lengths(lm_dir):
    """The estimate is for the pairs the other SFT rungs train on (count, prompt + target tokens), not 1,000."""
    from adaptladder.generation.sft import build_example

    x, y = _inputs(24, 0), ["yes indeed " * (i % 4 + 1) for i in range(24)]
    params = {"lm": lm_dir, "max_length": 64}
    shape = QloraSFT.training_shape(params, x, y, "Reply.")
    gen = Generator(lm_dir, threads=1)
    lens = [len(build_example(gen.tokenizer, gen.backend.encode(gen.build_prompt(a, "Reply."), first=True), b,
                              gen.stop_ids()[0], 64)[0]) for a, b in zip(x, y, strict=True)]
    assert shape["pairs"] == 24 and shape["example_tokens"]["max"] == max(lens)
    assert shape["example_tokens"]["mean"] == round(float(np.mean(lens)), 1)
    spec = _spec(training_shape=shape)
    est = QloraSFT.skip_details(params, spec)["estimate"]
    assert est["examples"] == 24 and est["seq_len"] == max(lens) and est["tokens_per_example"] == shape[
        "example_tokens"]["mean"]
    reason = QloraSFT.unavailable_reason(params, spec)
    assert f"the task's 24 training pairs (prompt + target {np.mean(lens):.0f} tokens mean, {max(lens)} max)" in reason
    # more data, longer estimate: the figures follow the task
    big = QloraSFT.skip_details(params, _spec(training_shape={**shape, "pairs": 2400}))["estimate"]
    assert big["train_hours"] > 50 * est["train_hours"]
    # a shape without lengths (tokenizer problem) still uses the pair count
    nolen = QloraSFT.skip_details(params, _spec(training_shape={"pairs": 24, "error": "x"}))["estimate"]
    assert nolen["examples"] == 24 and nolen["seq_len"] == 64 and "not counted" in nolen["data"]
    assert QloraSFT.training_shape({"lm": "/no/such/lm"}, x, y, "")["pairs"] == 24


class EchoTeacher(GenRung):
    """A fake teacher: answers ``yes`` to everything; remembers what it was fitted on."""

    name = "echo-teacher"
    fitted_on: ClassVar[list[int]] = []

    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> EchoTeacher:
        EchoTeacher.fitted_on.append(len(inputs))
        self.spec_ = spec
        return self

    def generate(self, inputs: Sequence[str]) -> list[str]:
        self.last_usage = {"new_tokens": len(inputs), "prompt_tokens": 50 * len(inputs), "seconds": 0.01 * len(inputs),
                           "requests": len(inputs)}
        return ["yes"] * len(inputs)


def test_distill_trains_a_student_on_the_teachers_outputs(lm_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(GEN_RUNGS, "echo-teacher", f"{__name__}:EchoTeacher")
    EchoTeacher.fitted_on.clear()
    rung = DistillSFT(lm=lm_dir, teacher="echo-teacher", labelled=6, max_unlabelled=30, **FAST)
    val = _inputs(8, 1)
    # the gold training targets say "no": the student must learn the teacher's "yes" instead
    rung.fit(_inputs(40, 0), ["no"] * 40, spec=_spec(), val_inputs=val, val_targets=["yes"] * 8)
    assert EchoTeacher.fitted_on == [6]
    assert rung.generate(val) == ["yes"] * 8
    d = rung.extra_info()["training"]["distill"]
    assert d["labelled_pairs"] == 6 and d["unlabelled_offered"] == 30 and d["teacher_outputs_kept"] == 30
    assert "outside the teacher's labelled subset" in d["source"]
    teacher, student = d["table"]
    assert teacher["model"] == "echo-teacher (teacher)" and teacher["val_score"] == 1.0
    assert teacher["prompt_tokens_mean"] == 50.0 and teacher["tokens_per_s"] == 100.0
    assert teacher["latency_ms_per_example_batched"] == 10.0
    assert student["val_score"] == 1.0 and student["tokens_per_s"] > 0 and student["latency_ms_per_example_batched"] > 0
    rung.save(tmp_path / "m")
    assert load_gen_rung(tmp_path / "m").generate(val) == ["yes"] * 8
    # explicit unlabelled inputs; a teacher that is not a generation rung is a one-line error
    rung2 = DistillSFT(lm=lm_dir, teacher="echo-teacher", unlabelled_inputs=_inputs(10, 5), **FAST)
    rung2.fit(_inputs(12, 0), ["no"] * 12, spec=_spec(), val_inputs=val, val_targets=["yes"] * 8)
    assert rung2.extra_info()["training"]["distill"]["source"] == "10 unlabelled_inputs given"
    # rung.json keeps their count and hash, not the inputs (the metadata must not grow with the data)
    out2 = rung2.generate(val)
    rung2.save(tmp_path / "m2")
    meta_text = (tmp_path / "m2" / "rung.json").read_text()
    assert not any(x in meta_text for x in _inputs(10, 5))
    kept = json.loads(meta_text)["params"]["unlabelled_inputs"]
    assert kept["count"] == 10 and len(kept["sha256"]) == 64
    assert rung2.params["unlabelled_inputs"] == _inputs(10, 5)  # the fitted rung's own params are untouched
    again = load_gen_rung(tmp_path / "m2")
    assert again.generate(val) == out2 and again.params["unlabelled_inputs"] == kept
    with pytest.raises(AdaptError, match="unlabelled_inputs"):
        again.fit(_inputs(12, 0), ["no"] * 12, spec=_spec(), val_inputs=val, val_targets=["yes"] * 8)
    with pytest.raises(AdaptError, match="unknown distill teacher"):
        DistillSFT(lm=lm_dir, teacher="gpt-9", **FAST).fit(["a", "b"], ["c", "d"], spec=_spec())


class SlowEchoTeacher(EchoTeacher):
    """The echo teacher taking 1 s (of the test's fake clock) per generation."""

    clock: ClassVar[Any] = None

    def generate(self, inputs: Sequence[str]) -> list[str]:
        SlowEchoTeacher.clock.now += 1.0 * len(inputs)
        return super().generate(inputs)


def test_distill_table_generations_fit_the_budget(lm_dir, monkeypatch):
    """The teacher/student table is generated on seeded validation pairs that fit eval_share of the
    budget at the teacher's measured speed (not on every validation pair), the same pairs for both."""
    from adaptladder.generation import sft as sft_mod

    clock = _FakeClock()
    monkeypatch.setattr(sft_mod, "_clock", clock)
    monkeypatch.setattr(SlowEchoTeacher, "clock", clock)
    monkeypatch.setitem(GEN_RUNGS, "slow-teacher", f"{__name__}:SlowEchoTeacher")
    # 60 s budget, 20% share: the 1-pair probe (1 s) + one batch of 8 (8 s) fit, a second batch would not
    rung = DistillSFT(lm=lm_dir, teacher="slow-teacher", labelled=6, max_unlabelled=16,
                      **{**FAST, "budget_minutes": 1.0, "gen_batch_size": 8})
    val = _inputs(24, 1)
    rung.fit(_inputs(30, 0), ["no"] * 30, spec=_spec(), val_inputs=val, val_targets=["yes"] * 24)
    d = rung.extra_info()["training"]
    teacher, student = d["distill"]["table"]
    assert d["val_pairs"] == 24 and teacher["n"] == 9 and teacher["scored_pairs"] == 9
    assert student["scored_pairs"] == 9 and student["n"] == 9 and teacher["val_score"] == 1.0
    assert teacher["seconds"] == pytest.approx(0.09)  # the teacher's own reported seconds for its 9 pairs


def test_the_training_loss_covers_the_target_tokens_only(lm_dir):
    """The loss the SFT loop optimises equals the cross-entropy over the target (+ stop) tokens alone."""
    import torch

    from adaptladder.generation.sft import build_example

    gen = Generator(lm_dir, threads=1)
    model, tok = gen._load()
    prompt = gen.backend.encode(gen.build_prompt("the quick fox", "Reply."), first=True)
    ids, labels = build_example(tok, prompt, "lazy dog", gen.stop_ids()[0], 128)
    n_target = sum(1 for x in labels if x != -100)
    assert labels[:len(prompt)] == [-100] * len(prompt) and n_target == len(ids) - len(prompt)
    x, y = torch.tensor([ids]), torch.tensor([labels])
    with torch.no_grad():
        out = model(input_ids=x, labels=y)
        logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
    nxt = x[0, 1:]
    per_token = -logp[torch.arange(len(nxt)), nxt]
    target_only = per_token[len(prompt) - 1:].mean()
    everything = per_token.mean()
    assert torch.allclose(out.loss, target_only, atol=1e-5)
    assert not torch.allclose(out.loss, everything, atol=1e-3)


@pytest.mark.slow
def test_lora_sft_on_the_packaged_lm_saves_and_reloads(tmp_path):
    """Two LoRA steps on the packaged SmolLM2 (a few us-cities-json pairs): the rung runs end to
    end on the real model, and the reloaded adapters generate exactly what the trained ones did."""
    from adaptladder.generation.task import load_generation_task

    task = load_generation_task("us-cities-json").sample({"train": 8, "validation": 2, "test": 2}, seed=0)
    spec = replace(GenSpec.of(task), max_new_tokens=12)
    rung = LoraSFT(max_steps=2, batch_size=4, eval_every=2, val_size=2, max_length=256)
    rung.fit(*task.part("train"), spec=spec, val_inputs=task.part("validation")[0],
             val_targets=task.part("validation")[1])
    x = task.part("test")[0]
    out = rung.generate(x)
    tr = rung.extra_info()["training"]
    assert tr["steps"] == 2 and tr["stopped"] == "max_steps" and tr["metric"] == "field_f1"
    rung.save(tmp_path / "m")
    assert load_gen_rung(tmp_path / "m").generate(x) == out


def test_lora_sft_and_the_qlora_skip_in_the_generation_ladder(lm_dir, tmp_path):
    """The rungs under ``generation.ladder.run_generation``: lora-sft trains, is evaluated, saved and
    reloads to the recorded outputs; qlora-sft (no CUDA) is a skip carrying the estimate."""
    from adaptladder.config import RunConfig
    from adaptladder.generation import ladder as gl
    from adaptladder.generation.task import GenTask

    n = 40
    split = np.array(["train"] * 24 + ["validation"] * 8 + ["test"] * 8, dtype=object)
    task = GenTask("yes", _inputs(n, 0), ["yes"] * n, split, kind="rewrite", instruction="Reply.")
    # batches are length-bucketed, so an epoch of 24 pairs repeats much the same 3 batches: give the
    # constant target the epochs and the patience it needs to be learnt whole
    own = {k: v for k, v in FAST.items() if k != "budget_minutes"} | {"max_epochs": 24, "patience": 8}
    cfg = RunConfig(out=str(tmp_path / "run"), no_audit=True, lm=lm_dir, rungs=["lora-sft", "qlora-sft"],
                    run_all=True, budget_minutes=5, rung_params={"lora-sft": own})
    res = gl.run_generation(cfg, task)
    by = {r["name"]: r for r in res.results}
    lora = by["lora-sft"]
    assert lora["status"] == "done", lora.get("reason")
    assert lora["params"]["lm"] == lm_dir and lora["params"]["budget_minutes"] == 5
    assert lora["test"]["outputs"] == ["yes"] * 8 and lora["extra"]["training"]["best_step"] > 0
    assert lora["decoding"]["decoding"] == "greedy"
    again = load_gen_rung(res.run_dir / "rungs" / "lora-sft" / "model")
    assert again.generate([task.inputs[i] for i in lora["test"]["indices"]]) == lora["test"]["outputs"]
    if not cuda_available():
        q = by["qlora-sft"]
        assert q["status"] == "skipped" and q["reason"].startswith("needs CUDA")
        assert q["skip_details"]["estimate"]["gpu_memory_gb"] > 0
        assert q["skip_details"]["estimate"]["examples"] == 24 and "the task's 24 training pairs" in q["reason"]


class SleepyTeacher(EchoTeacher):
    """An echo teacher that uses up a tiny real-time budget while labelling."""

    def generate(self, inputs: Sequence[str]) -> list[str]:
        import time

        time.sleep(0.5)
        return super().generate(inputs)


def test_distill_whose_teacher_spends_the_budget_is_a_budget_skip_not_a_run_error(lm_dir, monkeypatch):
    """A teacher whose labelling uses the whole budget must not stop the run (AdaptError does): the
    rung raises BudgetExceeded, which the ladder records as 'skipped: over budget' and climbs on."""
    from adaptladder.errors import BudgetExceeded

    monkeypatch.setitem(GEN_RUNGS, "sleepy-teacher", f"{__name__}:SleepyTeacher")
    rung = DistillSFT(lm=lm_dir, teacher="sleepy-teacher", labelled=6, max_unlabelled=16,
                      **{**FAST, "budget_minutes": 0.005})  # 0.3 s: gone after the teacher's first batch
    with pytest.raises(BudgetExceeded, match=r"over budget: the distill rung's budget .*distill\.budget_minutes"):
        rung.fit(_inputs(30, 0), ["no"] * 30, spec=_spec(), val_inputs=_inputs(8, 1), val_targets=["yes"] * 8)
    assert not issubclass(BudgetExceeded, AdaptError)


def test_an_untrained_rung_is_flagged_and_never_evidence_against_fine_tuning(lm_dir, tmp_path):
    """lr 1e-9: no step improves on validation, so the saved rung is the base model after a fraction of an
    epoch; the record, the table, the report and the recommendation all say so, and the recommendation
    never reads the rung as evidence against fine-tuning."""
    from adaptladder.config import RunConfig
    from adaptladder.generation import ladder as gl
    from adaptladder.generation.task import GenTask

    n = 160
    split = np.array(["train"] * 120 + ["validation"] * 20 + ["test"] * 20, dtype=object)
    task = GenTask("yes", _inputs(n, 1), ["yes"] * n, split, kind="rewrite", instruction="Reply.")
    own = {**{k: v for k, v in FAST.items() if k != "budget_minutes"}, "lr": 1e-9, "max_steps": 2}
    cfg = RunConfig(out=str(tmp_path / "run"), no_audit=True, lm=lm_dir, rungs=["nearest-target", "lora-sft"],
                    run_all=True, budget_minutes=5, rung_params={"lora-sft": own})
    res = gl.run_generation(cfg, task)
    lora = {r["name"]: r for r in res.results}["lora-sft"]
    tr = lora["extra"]["training"]
    assert tr["best_step"] == 0 and tr["base_model_outputs"] and "base model's outputs" in tr["base_model_note"]
    assert tr["under_trained"] and tr["examples_seen"] == 16 and tr["epochs"] < 1
    assert tr["fair_run"]["epoch_pairs"] == 120 and "one epoch needs" in tr["under_trained_note"]
    _headers, rows = gl.gen_ladder_table(res.results, "chrf")
    row = next(r for r in rows if r[0].startswith("lora-sft"))
    assert "base model" in row[1] and "under-trained" in row[1]
    reasons = " ".join(res.recommendation["reasons"])
    assert "lora-sft is not evidence against fine-tuning" in reasons
    assert "lora-sft vs " not in reasons  # the usual "X vs Y: no evidence of a difference" would read as evidence
    md = (tmp_path / "run" / "report.md").read_text()
    assert "under-trained, no evidence against fine-tuning" in md
