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


def test_length_batches_cover_every_row_once_and_pad_less():
    import torch

    from adaptladder.generation.sft import length_batches, padding_share

    lengths = [int(x) for x in np.random.default_rng(0).integers(5, 300, 200)]
    plain = length_batches(lengths, 8, torch.Generator().manual_seed(1), bucket=False)
    bucketed = length_batches(lengths, 8, torch.Generator().manual_seed(1))
    for batches in (plain, bucketed):
        assert sorted(i for b in batches for i in b) == list(range(200)) and all(len(b) <= 8 for b in batches)
    assert padding_share(bucketed, lengths) < padding_share(plain, lengths) / 4
    again = length_batches(lengths, 8, torch.Generator().manual_seed(1))
    assert again == bucketed  # seeded
    nxt = length_batches(lengths, 8, torch.Generator().manual_seed(2))
    assert nxt != bucketed  # another epoch (another draw) sees another order


def test_training_precision_follows_the_hardware(monkeypatch):
    from adaptladder.precision import training_precision

    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", "1")
    assert training_precision("auto", "cpu")[0] == "bf16"
    assert training_precision("fp32", "cpu") == ("fp32", "set")
    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", "0")
    used, why = training_precision("auto", "cpu")
    assert used == "fp32" and "no native bf16" in why
    assert training_precision("bf16", "cpu") == ("bf16", "set (emulated here: slower than fp32)")
    with pytest.raises(AdaptError, match="precision='fp16'"):
        training_precision("fp16", "cpu")


def test_bf16_autocast_training_records_its_throughput(monkeypatch):
    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", "1")
    tok = _byte_bpe_tokenizer()
    gen = Generator((_tiny_lm(tok, init=0.5), tok), batch_size=8, threads=1)
    cfg = SFTConfig(r=4, dropout=0.0, lr=5e-2, batch_size=4, max_epochs=2, eval_every=50, patience=9,
                    max_new_tokens=2, max_length=64)
    res = train_lora_sft(gen, _pairs(12, 0), _pairs(4, 1), "Reply.", _em, config=cfg)
    tp = res.val_check["throughput"]
    assert tp["precision"] == "bf16" and tp["examples_seen"] == 24 and tp["epochs"] == 2.0
    assert tp["training_tokens"] > 0 and tp["tokens_per_s"] > 0 and 0 <= tp["padding_share"] < 1
    model, _ = gen._load()
    assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype) == "torch.float32"
