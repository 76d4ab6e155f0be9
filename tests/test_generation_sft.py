"""LoRA SFT on (prompt, target) pairs with a tiny random-weight LM: loss masking, learning,
early stopping, safetensors adapters that reload to identical generations."""

from __future__ import annotations

import numpy as np
import pytest

from adaptladder.errors import AdaptError
from adaptladder.generation.decode import Generator
from adaptladder.generation.sft import SFTConfig, build_example, load_lora_adapters, train_lora_sft
from test_generation_decode import _byte_bpe_tokenizer, _tiny_lm

WORDS = ["fox", "dog", "city", "line", "reply", "quick", "lazy", "brown", "time", "zone", "population", "the"]


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(" ".join(rng.choice(WORDS, 3)), "yes") for _ in range(n)]


def _em(preds, refs):
    return float(np.mean([p.strip() == r for p, r in zip(preds, refs, strict=True)]))


def test_build_example_masks_the_prompt():
    tok = _byte_bpe_tokenizer()
    ids, labels = build_example(tok, [5, 6, 7], "fox", stop_id=2, max_length=64)
    t = tok("fox", add_special_tokens=False)["input_ids"]
    assert ids == [5, 6, 7, *t, 2] and labels == [-100, -100, -100, *t, 2]
    ids, labels = build_example(tok, list(range(10, 30)), "fox", stop_id=2, max_length=len(t) + 3)
    assert ids == [28, 29, *t, 2] and labels[:2] == [-100, -100]  # the prompt loses tokens from the left


def test_lora_sft_learns_saves_and_reloads(tmp_path):
    tok = _byte_bpe_tokenizer()
    # a random LM with the usual 0.02 init has a frozen LM head too weak to become confident
    # through LoRA on q/v (its loss floors near ln(vocab)); a larger init makes learning visible
    gen = Generator((_tiny_lm(tok, init=0.5), tok), batch_size=8, threads=1)
    train, val = _pairs(32, 0), _pairs(8, 1)
    cfg = SFTConfig(r=8, alpha=16, dropout=0.0, lr=5e-2, batch_size=8, max_epochs=12, eval_every=4, patience=4,
                    max_new_tokens=4, budget_minutes=5, max_length=64)
    res = train_lora_sft(gen, train, val, "Reply.", _em, config=cfg, out_dir=tmp_path / "adapters")
    losses = [h["loss"] for h in res.history if "loss" in h]
    scores = [h["val_score"] for h in res.history if "val_score" in h]
    assert scores[0] == 0.0 and res.best_score == 1.0 and res.best_step > 0  # base model: never "yes"
    assert losses[-1] < losses[0] / 4
    assert (tmp_path / "adapters" / "adapter_model.safetensors").is_file()
    prompts = [gen.build_prompt(x, "Reply.") for x, _ in val]
    trained = gen.generate(prompts, max_new_tokens=4).texts
    assert trained == ["yes"] * len(val)
    # a fresh copy of the same base model + the saved adapters generates the same
    fresh = Generator((_tiny_lm(tok, init=0.5), tok), batch_size=8, threads=1)
    assert fresh.generate(prompts, max_new_tokens=4).texts != trained
    load_lora_adapters(fresh, tmp_path / "adapters")
    assert fresh.generate(prompts, max_new_tokens=4).texts == trained


def test_early_stopping_and_bad_inputs(tmp_path):
    tok = _byte_bpe_tokenizer()
    gen = Generator((_tiny_lm(tok), tok), batch_size=8, threads=1)
    cfg = SFTConfig(r=2, lr=1e-6, batch_size=4, max_epochs=50, eval_every=2, patience=2, max_new_tokens=2)
    res = train_lora_sft(gen, _pairs(8, 0), _pairs(4, 1), "Reply.", lambda p, r: 0.0, config=cfg)
    assert res.stopped == "early_stopping" and res.best_step == 0 and res.steps == 4
    with pytest.raises(AdaptError, match="validation pairs"):
        train_lora_sft(gen, _pairs(2, 0), [], "Reply.", _em)
    with pytest.raises(AdaptError, match=r"adapter_model\.safetensors"):
        load_lora_adapters(gen, tmp_path)
