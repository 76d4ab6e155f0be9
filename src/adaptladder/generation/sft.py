"""LoRA supervised fine-tuning of the causal LM on (prompt, target) pairs.

Each example is the chat-formatted prompt (:meth:`Generator.build_prompt`, the same prompt
the prompting rungs use) followed by the target and the stop token; the loss covers the
target and stop tokens only (prompt positions are labelled -100). PEFT LoRA adapters are
trained with AdamW within a time budget; every ``eval_every`` steps (and at the end of each
epoch) the adapters generate greedily for the validation inputs and are scored with the
given metric; training stops after ``patience`` evaluations without improvement and the best
adapters are restored. Adapters are saved with PEFT as ``adapter_model.safetensors``.

Not yet a rung: the ladder wiring (fit/predict/save/load, budgets from the estimator,
``full-sft``/``qlora-sft``) comes next.
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


@dataclass
class SFTResult:
    best_score: float
    best_step: int
    steps: int
    seconds: float
    stopped: str  # "epochs", "max_steps", "budget", "early_stopping"
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


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


def train_lora_sft(gen: Generator, train: Sequence[tuple[str, str]], val: Sequence[tuple[str, str]],
                   instruction: str, score: Callable[[list[str], list[str]], float], *,
                   config: SFTConfig | None = None, out_dir: str | Path | None = None,
                   log: Callable[[str], None] | None = None) -> SFTResult:
    """Train LoRA adapters on ``gen``'s model in place (the Generator then generates with them).

    ``score(predictions, references)`` is the validation metric (higher is better), e.g. the
    mean of the task's primary metric from :mod:`adaptladder.generation.metrics`.
    """
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    cfg = config or SFTConfig()
    if not train:
        raise AdaptError("LoRA SFT needs at least one training pair.")
    if not val:
        raise AdaptError("LoRA SFT needs validation pairs for early stopping.")
    model, tok = gen._load()
    torch.manual_seed(cfg.seed)
    targets = cfg.target_modules or ["q_proj", "v_proj"]
    lcfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=targets)
    try:
        peft_model = get_peft_model(model, lcfg)  # injects LoRA layers into ``model`` in place
    except ValueError as e:
        raise AdaptError(f"LoRA cannot find the target modules {targets} in {model.config.model_type} "
                         f"({str(e).splitlines()[0]}); pass target_modules naming its attention projections.") from e
    stop = gen.stop_ids()[0]
    pad = tok.pad_token_id if tok.pad_token_id is not None else stop
    dev = getattr(gen.backend, "device", "cpu")
    examples = [build_example(tok, gen.backend.encode(gen.build_prompt(x, instruction), first=True), y, stop,
                              cfg.max_length) for x, y in train]
    val_prompts = [gen.build_prompt(x, instruction) for x, _ in val]
    val_refs = [y for _, y in val]
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    best = (-math.inf, 0, {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()})
    bad, step, stopped = 0, 0, "epochs"

    def evaluate() -> bool:
        """Score the current adapters; True when early stopping should end training."""
        nonlocal best, bad
        peft_model.eval()
        preds = gen.generate(val_prompts, max_new_tokens=cfg.max_new_tokens).texts
        peft_model.train()
        s = float(score(preds, val_refs))
        history.append({"step": step, "val_score": s, "seconds": time.perf_counter() - t0})
        if log:
            log(f"step {step}: validation {s:.4f}")
        if s > best[0]:
            best = (s, step, {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()})
            bad = 0
            return False
        bad += 1
        return bad >= cfg.patience

    evaluate()  # step 0: the base model (so "no improvement" keeps the base behaviour)
    peft_model.train()
    done = False
    for _epoch in range(cfg.max_epochs):
        order = torch.randperm(len(examples), generator=rng).tolist()
        for s in range(0, len(order), cfg.batch_size):
            batch = [examples[i] for i in order[s:s + cfg.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (x, y) in enumerate(batch):  # right padding for training
                ids[r, :len(x)] = torch.tensor(x)
                labels[r, :len(y)] = torch.tensor(y)
                mask[r, :len(x)] = 1
            out = peft_model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev))
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            history.append({"step": step, "loss": float(out.loss.detach())})
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stopped, done = "max_steps", True
            elif time.perf_counter() - t0 > cfg.budget_minutes * 60:
                stopped, done = "budget", True
            if step % cfg.eval_every == 0 and evaluate():
                stopped, done = "early_stopping", True
            if done:
                break
        if done:
            break
        if step % cfg.eval_every and evaluate():
            stopped = "early_stopping"
            break
    if history and history[-1].get("step") == step and "val_score" not in history[-1]:
        evaluate()
    set_peft_model_state_dict(peft_model, best[2])
    peft_model.eval()
    if out_dir is not None:
        peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    return SFTResult(best_score=best[0], best_step=best[1], steps=step, seconds=time.perf_counter() - t0,
                     stopped=stopped, history=history, config=asdict(cfg))


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
