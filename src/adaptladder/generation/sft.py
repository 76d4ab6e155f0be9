"""LoRA supervised fine-tuning of the causal LM on (prompt, target) pairs.

Each example is the chat-formatted prompt (:meth:`Generator.build_prompt`, the same prompt
the prompting rungs use) followed by the target and the stop token; the loss covers the
target and stop tokens only (prompt positions are labelled -100). PEFT LoRA adapters are
trained with AdamW within a time budget; every ``eval_every`` steps (or every epoch when an
epoch is shorter) the adapters generate greedily for a fixed seeded subset of the validation
inputs, sized so one check takes at most ``eval_share`` of the budget, and are scored with the
given metric; training stops after ``patience`` evaluations without improvement, or when the
budget left cannot hold another step and check, and the best adapters are restored. Adapters
are saved with PEFT as ``adapter_model.safetensors``.

:func:`train_sft` is the shared loop of the ``lora-sft``, ``qlora-sft``, ``full-sft`` and
``distill`` rungs (:mod:`adaptladder.generation.rungs.sft`): ``method="full"`` trains every
weight instead of adapters, ``method="qlora"`` adds LoRA over a 4-bit base (CUDA only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError
from adaptladder.generation.decode import Generator
from adaptladder.precision import training_precision
from adaptladder.rungs.finetune import start_training


@dataclass
class SFTConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: q_proj, v_proj (Llama-style attention)
    lr: float = 2e-4
    batch_size: int = 8
    max_epochs: int = 3
    max_steps: int | None = None
    budget_minutes: float = 10.0
    eval_every: int = 50
    patience: int = 3
    max_length: int = 512
    max_new_tokens: int = 64
    seed: int = 0
    #: the most of the budget one validation check may take: its subset is sized to it
    eval_share: float = 0.2
    #: generations the caller's evaluation needs after training (the ladder's minimal evaluation): their
    #: time, at the seconds per pair the first check measured, is kept out of the training budget
    reserve_generations: float = 0.0
    #: forward passes under bf16 autocast (fp32 master weights): auto = where bf16 is native
    precision: str = "auto"
    #: batches of similar length (shuffled batch order), so little compute goes to padding
    bucket_by_length: bool = True


@dataclass
class SFTResult:
    best_score: float
    best_step: int
    steps: int
    seconds: float
    stopped: str  # "epochs", "max_steps", "budget", "early_stopping"
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)  # the trained model (PEFT wrapper for lora/qlora)
    #: how the validation check was sized: pairs used (a fixed seeded subset of ``val``), seconds per check
    val_check: dict[str, Any] = field(default_factory=dict)


#: the clock of the budget bookkeeping (tests replace it with a fake one)
_clock = time.perf_counter


def build_example(tokenizer: Any, prompt_ids: Sequence[int], target: str, stop_id: int,
                  max_length: int) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: prompt + target + stop, labels -100 on the prompt. A too-long
    example loses prompt tokens from the left (the target is kept; a target longer than
    ``max_length`` is cut)."""
    t_ids = [*tokenizer(target, add_special_tokens=False)["input_ids"], int(stop_id)]
    t_ids = t_ids[:max_length]
    keep = max(0, max_length - len(t_ids))
    p_ids = list(prompt_ids)[-keep:] if keep else []
    return p_ids + t_ids, [-100] * len(p_ids) + t_ids


def length_batches(lengths: Sequence[int], batch_size: int, rng: Any, bucket: bool = True) -> list[list[int]]:
    """One epoch's batches: a seeded shuffle; with ``bucket``, rows sorted by length within windows of
    50 batches and cut into batches whose order is shuffled again, so a batch pads little while
    every epoch still sees the rows in a new order."""
    import torch

    order = torch.randperm(len(lengths), generator=rng).tolist()
    if not bucket:
        return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    window = 50 * batch_size
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        part = sorted(order[w:w + window], key=lambda i: lengths[i])
        batches += [part[s:s + batch_size] for s in range(0, len(part), batch_size)]
    perm = torch.randperm(len(batches), generator=rng).tolist()
    return [batches[i] for i in perm]


def padding_share(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """The share of a padded batch's positions that are padding, over ``batches``."""
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1 - sum(lengths[i] for b in batches for i in b) / total if total else 0.0


def check_order(n: int, seed: int) -> list[int]:
    """The seeded order of ``n`` validation pairs whose prefixes are the checks' subsets (:func:`train_sft`)."""
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).tolist()


def timed_prefix(order: Sequence[int], run: Callable[[list[int]], list[Any]], limit_s: float,
                 batch: int) -> tuple[list[int], list[Any], float]:
    """``run`` on a prefix of ``order`` that fits ``limit_s`` seconds: one row as a probe, then batches of
    ``batch`` rows while the next one still fits at the seconds per row measured so far (the probe always
    runs). Returns ``(rows, outputs, seconds)``."""
    rows: list[int] = []
    outs: list[Any] = []
    spent, chunk = 0.0, 1
    while len(rows) < len(order):
        part = list(order[len(rows):len(rows) + chunk])
        t = _clock()
        outs += run(part)
        spent += _clock() - t
        rows += part
        chunk = min(max(1, int(batch)), len(order) - len(rows))
        if spent + spent / len(rows) * chunk > limit_s:
            break
    return rows, outs, spent


def train_lora_sft(gen: Generator, train: Sequence[tuple[str, str]], val: Sequence[tuple[str, str]],
                   instruction: str, score: Callable[[list[str], list[str]], float], *,
                   config: SFTConfig | None = None, out_dir: str | Path | None = None,
                   log: Callable[[str], None] | None = None) -> SFTResult:
    """Train LoRA adapters on ``gen``'s model in place (the Generator then generates with them).

    ``score(predictions, references)`` is the validation metric (higher is better), e.g. the
    mean of the task's primary metric from :mod:`adaptladder.generation.metrics`.
    """
    return train_sft(gen, train, val, instruction, score, config=config, method="lora", out_dir=out_dir, log=log)


def _attach(model: Any, method: str, cfg: SFTConfig) -> tuple[Any, Callable[[], dict[str, Any]],
                                                               Callable[[dict[str, Any]], None]]:
    """Make ``model`` trainable for ``method``: ``(trainable model, snapshot(), restore(state))``.

    ``lora``: PEFT LoRA layers injected into ``model`` in place (base weights frozen); ``qlora``:
    the same over a 4-bit base, after PEFT's k-bit preparation; ``full``: every weight trains.
    """
    if method == "full":
        for prm in model.parameters():
            prm.requires_grad_(True)

        def snap_full() -> dict[str, Any]:
            return {k: v.detach().clone() for k, v in model.state_dict().items()}

        return model, snap_full, lambda st: model.load_state_dict(st)
    if method not in ("lora", "qlora"):
        raise AdaptError(f"unknown SFT method {method!r}: use lora, qlora or full.")
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    targets = cfg.target_modules or ["q_proj", "v_proj"]
    lcfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=targets)
    try:
        peft_model = get_peft_model(model, lcfg)  # injects LoRA layers into ``model`` in place
    except ValueError as e:
        raise AdaptError(f"LoRA cannot find the target modules {targets} in {model.config.model_type} "
                         f"({str(e).splitlines()[0]}); pass target_modules naming its attention projections.") from e

    def snap_lora() -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}

    return peft_model, snap_lora, lambda st: set_peft_model_state_dict(peft_model, st)


def train_sft(gen: Generator, train: Sequence[tuple[str, str]], val: Sequence[tuple[str, str]],
              instruction: str, score: Callable[[list[str], list[str]], float], *,
              config: SFTConfig | None = None, method: str = "lora", out_dir: str | Path | None = None,
              log: Callable[[str], None] | None = None) -> SFTResult:
    """Supervised fine-tuning of ``gen``'s model in place: ``method`` lora | qlora | full.

    The wall-clock budget covers training and the validation checks. A check generates for a fixed
    seeded subset of ``val`` sized so that it takes at most ``eval_share`` of the budget: the first
    check (step 0, the untouched model) generates one pair as a probe, then batch after batch while
    the next batch still fits the share at the measured seconds per pair, and those pairs are the
    subset of every later check (at least one pair, even when one alone exceeds the share). After
    each step training stops ("budget") when what is left cannot hold another step and a check (the
    longest step so far + the last check's seconds), so the last steps are still checked and the run
    ends within the budget; a last check that no longer fits is skipped (``unchecked_steps``). The
    best weights (by validation score; step 0 counts) are restored at the end. With
    ``reserve_generations``, the time of that many generations (at the first check's seconds per pair)
    is kept out of the training budget for the caller's evaluation (the ladder's minimal evaluation),
    so a rung that trains to its budget can still be evaluated within it. ``SFTResult.model`` is
    the trained model (the PEFT wrapper for lora/qlora) for saving.
    """
    import torch

    cfg = config or SFTConfig()
    if not train:
        raise AdaptError("SFT needs at least one training pair.")
    if not val:
        raise AdaptError("SFT needs validation pairs for early stopping.")
    if not 0 < cfg.eval_share <= 1:
        raise AdaptError(f"eval_share must be in (0, 1], got {cfg.eval_share!r}.")
    model, tok = gen._load()
    torch.manual_seed(cfg.seed)
    trained, snapshot, restore = _attach(model, method, cfg)
    stop = gen.stop_ids()[0]
    pad = tok.pad_token_id if tok.pad_token_id is not None else stop
    dev = getattr(gen.backend, "device", "cpu")
    amp_used, amp_why = training_precision(cfg.precision, str(dev))
    dev_type = str(dev).split(":")[0]

    def autocast() -> Any:
        import contextlib

        if amp_used == "bf16":
            return torch.autocast(device_type=dev_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    examples = [build_example(tok, gen.backend.encode(gen.build_prompt(x, instruction), first=True), y, stop,
                              cfg.max_length) for x, y in train]
    val_prompts = [gen.build_prompt(x, instruction) for x, _ in val]
    val_refs = [y for _, y in val]
    # the check's subset is a prefix of this seeded order (its length is set by the first check)
    val_order = check_order(len(val), cfg.seed)
    check_rows: list[int] = []
    # AdamW with torch's default weight decay (0.01) on every trainable tensor; the budget starts now
    run = start_training(trained, lr=cfg.lr, weight_decay=0.01, decay_vectors=True, who=f"{method} SFT",
                         budget_minutes=cfg.budget_minutes, clock=_clock)
    opt = run.opt
    rng = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    budget = run.budget_s
    share_s = cfg.eval_share * budget
    best = (-math.inf, 0, snapshot())
    bad, step, stopped = 0, 0, "epochs"
    check_s, step_s = 0.0, 0.0  # seconds of the last check, of the longest step
    reserve_s = 0.0  # the caller's evaluation after training (set from the first check's seconds per pair)

    def left() -> float:
        return run.left() - reserve_s

    def generate(rows: list[int]) -> list[str]:
        return gen.generate([val_prompts[i] for i in rows], max_new_tokens=cfg.max_new_tokens).texts

    def first_check() -> list[str]:
        """Step 0: a one-pair probe, then batches while the next one fits the share; fixes the subset."""
        rows, preds, _ = timed_prefix(val_order, generate, share_s, gen.batch_size)
        check_rows.extend(rows)
        return preds

    def evaluate() -> bool:
        """Score the current weights; True when early stopping should end training."""
        nonlocal best, bad, check_s
        trained.eval()
        t = _clock()
        preds = generate(check_rows) if check_rows else first_check()
        check_s = _clock() - t
        trained.train()
        s = float(score(preds, [val_refs[i] for i in check_rows]))
        history.append({"step": step, "val_score": s, "seconds": round(run.elapsed(), 3),
                        "check_seconds": round(check_s, 3), "n": len(check_rows)})
        if log:
            log(f"step {step}: validation {s:.4f} ({len(check_rows)} pairs, {check_s:.1f} s)")
        if s > best[0]:
            best = (s, step, snapshot())
            bad = 0
            return False
        bad += 1
        return bad >= cfg.patience

    evaluate()  # step 0: the base model (so "no improvement" keeps the base behaviour)
    trained.train()
    if cfg.reserve_generations > 0 and check_rows:
        reserve_s = cfg.reserve_generations * check_s / len(check_rows)
        if log:
            log(f"keeping {reserve_s:.1f} s of the budget for the evaluation after training "
                f"({cfg.reserve_generations:g} generations at {check_s / len(check_rows):.2f} s each)")
    done = left() < check_s  # no room for even one step and its check (the step's length is not known yet)
    if done:
        stopped = "budget"
    # evaluate every ``eval_every`` steps, or every epoch when an epoch is shorter (small data
    # sets): never both, so ``patience`` counts evaluations at a steady pace
    every = max(1, min(cfg.eval_every, math.ceil(len(examples) / cfg.batch_size)))
    lengths = [len(ids) for ids, _ in examples]
    pad_positions = real_positions = seen = 0
    train_s = 0.0  # seconds in training steps (checks excluded)
    for _epoch in range(cfg.max_epochs):
        if done:
            break
        for rows in length_batches(lengths, cfg.batch_size, rng, cfg.bucket_by_length):
            t_step = _clock()
            batch = [examples[i] for i in rows]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (x, y) in enumerate(batch):  # right padding for training
                ids[r, :len(x)] = torch.tensor(x)
                labels[r, :len(y)] = torch.tensor(y)
                mask[r, :len(x)] = 1
            pad_positions += len(batch) * width
            real_positions += sum(len(x) for x, _ in batch)
            with autocast():
                out = trained(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev))
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            dt_step = _clock() - t_step
            step_s, train_s, seen = max(step_s, dt_step), train_s + dt_step, seen + len(batch)
            history.append({"step": step, "loss": round(float(out.loss.detach()), 5)})
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stopped, done = "max_steps", True
            elif step % every == 0 and evaluate():  # fits: the last step was taken only with room for it
                stopped, done = "early_stopping", True
            elif left() < step_s + check_s:  # another step would leave no room for its check
                stopped, done = "budget", True
            if done:
                break
    unchecked = 0
    if history and history[-1].get("step") == step and "val_score" not in history[-1]:
        if left() >= check_s:
            evaluate()  # the last steps since an evaluation (also when the budget ended training)
        else:  # the budget cannot hold the check: the best checked weights stand
            unchecked = step - max(int(h["step"]) for h in history if "val_score" in h)
    restore(best[2])
    trained.eval()
    if out_dir is not None:
        trained.save_pretrained(str(out_dir), safe_serialization=True)
    val_check = {"pairs": len(check_rows), "of": len(val), "seconds": round(check_s, 3),
                 "share_limit_s": round(share_s, 3), "eval_share": cfg.eval_share,
                 "longest_step_s": round(step_s, 3), "unchecked_steps": unchecked,
                 "reserved_for_evaluation_s": round(reserve_s, 3)}
    trained_tokens = real_positions
    throughput = {"precision": amp_used, "precision_reason": amp_why, "bucket_by_length": cfg.bucket_by_length,
                  "training_tokens": trained_tokens, "examples_seen": seen,
                  "epochs": round(seen / len(examples), 4), "training_seconds": round(train_s, 3),
                  "tokens_per_s": round(trained_tokens / train_s, 2) if train_s > 0 else None,
                  "examples_per_min": round(seen / train_s * 60, 2) if train_s > 0 else None,
                  "padding_share": round(1 - real_positions / pad_positions, 4) if pad_positions else 0.0}
    val_check["throughput"] = throughput
    return SFTResult(best_score=best[0], best_step=best[1], steps=step, seconds=run.elapsed(),
                     stopped=stopped, history=history, config=asdict(cfg), model=trained, val_check=val_check)


def load_lora_adapters(gen: Generator, adapter_dir: str | Path) -> Any:
    """Put saved adapters onto ``gen``'s base model (in place) for generation."""
    from peft import PeftModel

    model, _ = gen._load()
    path = Path(adapter_dir)
    if not (path / "adapter_model.safetensors").is_file():
        raise AdaptError(f"{path} holds no adapter_model.safetensors: pass the folder train_lora_sft saved.")
    peft_model = PeftModel.from_pretrained(model, str(path))
    peft_model.eval()
    return peft_model
