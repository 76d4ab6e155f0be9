"""Fine-tuning rungs on tiny BERT / Llama models built from configs (random weights, seconds each).

One slow test fine-tunes the packaged MiniLM on a small sample of a built-in task.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adaptladder.errors import AdaptError
from adaptladder.rungs import get_rung_class, load_rung, make_rung
from adaptladder.rungs.finetune import (
    LoraRung,
    QloraRung,
    choose_max_length,
    class_weights,
    cuda_available,
    length_buckets,
)

WORDS = [
    'good', 'great', 'fine', 'nice', 'happy', 'love', 'win', 'best', 'bad', 'awful', 'poor', 'sad',
    'hate', 'lose', 'worst', 'terrible', 'movie', 'film', 'plot', 'actor', 'the', 'a', 'is', 'was',
    'very', 'really', 'not', 'so'
]
POS, NEG = WORDS[:8], WORDS[8:16]


def _data(n: int, seed: int, imbalance: float = 0.5) -> tuple[list[str], np.ndarray]:
    """A learnable toy sentiment task: sentiment words mixed with filler words."""
    rng = np.random.default_rng(seed)
    texts, y = [], []
    for _ in range(n):
        lab = int(rng.random() < imbalance)
        pool = POS if lab else NEG
        k = int(rng.integers(3, 12))
        words = [str(rng.choice(pool)) if rng.random() < 0.5 else str(rng.choice(WORDS[16:])) for _ in range(k)]
        words[0] = str(rng.choice(pool))
        texts.append(" ".join(words))
        y.append(lab)
    return texts, np.asarray(y, dtype=np.int64)


def _tokenizer(kind: str) -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if kind == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    else:
        specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=specials[1] if kind == "bert" else "<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       model_max_length=64)
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    # no pad token on purpose: like Llama, the rung must fall back to eos
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   model_max_length=64)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = _tokenizer("bert")
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = _tokenizer("llama")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


FAST = {"max_epochs": 3, "batch_size": 8, "progress": False, "eval_every": 10, "budget_minutes": 2.0, "threads": 1}


def _fit(name: str, model: str, n: int = 96, **kw: object):
    tx, y = _data(n, 0)
    vx, vy = _data(40, 1)
    params = {**FAST, "model": model, **kw}
    if name in ("lora", "prompt-tuning"):
        params.setdefault("lr", 1e-2 if name == "lora" else 5e-2)
    else:
        params.setdefault("lr", 1e-3)
    return make_rung(name, **params).fit(tx, y, label_names=["neg", "pos"], val_texts=vx, val_y=vy)


@pytest.mark.parametrize("name", ["lora", "prompt-tuning", "full-ft"])
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_fit_predict_save_load_identical(name: str, arch: str, tiny_bert: str, tiny_llama: str,
                                         tmp_path: Path) -> None:
    rung = _fit(name, tiny_bert if arch == "bert" else tiny_llama)
    tx, _ = _data(20, 7)
    proba = rung.predict_proba(tx)
    assert proba.shape == (20, 2)
    assert np.allclose(proba.sum(1), 1.0)
    assert rung.predict(tx).shape == (20,)
    info = rung.extra_info()
    json.dumps(info)  # the report stores it
    assert 0 < info["trainable_params"] <= info["total_params"]
    assert info["stopped_by"] in ("early_stop", "budget", "max_epochs")
    assert info["history"] and all("val_macro_f1" in h for h in info["history"])
    assert info["train_tokens_per_s"] > 0 and info["peak_rss_mb"] > 0
    if name != "full-ft":
        assert info["trainable_pct"] < 100
    rung.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*")}
    if name == "full-ft":
        assert "model.safetensors" in files
    else:
        assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    back = load_rung(tmp_path / "m")
    assert np.array_equal(back.predict_proba(tx), proba)


def test_lora_learns_and_keeps_head_trainable(tiny_bert: str) -> None:
    rung = _fit("lora", tiny_bert, n=160, max_epochs=6)
    names = [n for n, p in rung.model_.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in names)
    assert any("classifier" in n for n in names)
    assert rung.extra_info()["lora"]["target_modules"] == ["query", "value"]
    vx, vy = _data(60, 3)
    assert (rung.predict_codes(vx) == vy).mean() > 0.75  # the toy task is learnable; chance is ~0.5


def test_llama_targets_and_pad_fallback(tiny_llama: str) -> None:
    rung = _fit("lora", tiny_llama, max_epochs=1)
    assert rung.extra_info()["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert rung.tokenizer_.pad_token == "</s>" and rung.tokenizer_.padding_side == "left"
    # the prediction of a text does not depend on the padding its batch needed
    short, long_ = "good movie", "bad film " * 10
    alone = rung.predict_proba([short])
    batched = rung.predict_proba([short, long_])[:1]
    assert np.allclose(alone, batched, atol=1e-5)


def test_deterministic_under_seed(tiny_bert: str) -> None:
    a = _fit("lora", tiny_bert, max_epochs=1, seed=3)
    b = _fit("lora", tiny_bert, max_epochs=1, seed=3)
    c = _fit("lora", tiny_bert, max_epochs=1, seed=4)
    tx, _ = _data(16, 9)
    assert np.array_equal(a.predict_proba(tx), b.predict_proba(tx))
    assert not np.array_equal(a.predict_proba(tx), c.predict_proba(tx))


def test_budget_stops_training(tiny_bert: str) -> None:
    # patience 10**6: early stopping can never fire, so only the budget can end training
    rung = _fit("full-ft", tiny_bert, n=400, max_epochs=50, budget_minutes=0.03, patience=10**6)  # ~2 s
    info = rung.extra_info()
    assert info["stopped_by"] == "budget"
    assert info["steps"] < info["planned_steps"]
    # the best checkpoint seen is kept and a final evaluation was made
    assert info["best_val_macro_f1"] is not None


def test_early_stopping(tiny_bert: str) -> None:
    # lr 0: nothing changes, so validation F1 never improves after the first evaluation
    rung = _fit("full-ft", tiny_bert, n=400, max_epochs=20, lr=1e-12, patience=2, eval_every=5)
    info = rung.extra_info()
    assert info["stopped_by"] == "early_stop"
    assert info["steps"] == 15  # first eval sets the best, two more without improvement
    assert info["best_step"] == 5


def test_class_weights_for_imbalanced_labels(tiny_bert: str) -> None:
    w, desc = class_weights(np.array([0] * 90 + [1] * 10), 2, "auto")
    assert w is not None and w[1] / w[0] == pytest.approx(9.0) and desc.startswith("balanced")
    assert class_weights(np.array([0] * 50 + [1] * 45), 2, "auto")[0] is None
    assert class_weights(np.array([0] * 90 + [1] * 10), 2, "none")[0] is None
    tx, y = _data(120, 0, imbalance=0.1)
    rung = make_rung("lora", model=tiny_bert, **{**FAST, "max_epochs": 1}).fit(tx, y, label_names=["neg", "pos"])
    info = rung.extra_info()
    assert info["class_weights"] is not None and info["class_weights"][1] > info["class_weights"][0]
    assert info["validation"].startswith("held out from train")


def test_max_length_from_data_and_buckets(tiny_bert: str) -> None:
    n, why = choose_max_length([5] * 95 + [60] * 5, 95, 512)
    assert n == 8 and "p95" in why
    assert choose_max_length([900] * 10, 95, 512)[0] == 512
    rung = _fit("full-ft", tiny_bert, max_epochs=1)
    assert rung.max_length_ <= 64 and "p95" in rung.extra_info()["max_length_reason"]
    lens = np.random.default_rng(0).integers(1, 100, size=1000)
    batches = length_buckets(lens, 16, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lens[b].max() - lens[b].min() for b in batches])
    assert spread < 10  # random batches would spread ~90


def test_qlora_skipped_with_reason_and_estimate() -> None:
    if cuda_available():
        pytest.skip("CUDA present: QLoRA is available here")
    cls = get_rung_class("qlora")
    assert cls is QloraRung and cls.cost_rank == 75 and cls.family == "finetune"
    reason = cls.unavailable_reason({})
    assert reason is not None and reason.startswith("needs CUDA") and "GB GPU" in reason
    est = cls.skip_details({})["estimate"]
    assert est["gpu_memory_gb"] > 0 and est["train_hours"] > 0
    # the 4-bit base takes far less memory than full fine-tuning the same model
    from adaptladder.estimate import estimate_training

    full = estimate_training("smollm2", "full", seq_len=est["seq_len"], batch=est["batch"])
    assert est["gpu_memory_gb"] < full.peak_bytes / 1e9
    # a model whose config cannot be read gives an error entry, not a crash
    assert cls.skip_details({"model": "/nonexistent/model"})["estimate"] is None
    with pytest.raises(AdaptError, match="needs CUDA"):
        QloraRung(progress=False).fit(["a", "b"], np.array([0, 1]), label_names=["x", "y"])


def test_threads_setting_is_scoped() -> None:
    import torch

    from adaptladder.rungs.finetune import _torch_threads

    before = torch.get_num_threads()
    with _torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with _torch_threads("auto") as n:
        assert n >= 1


def test_registry_and_cost_order() -> None:
    ranks = {n: get_rung_class(n).cost_rank for n in ("prompt-tuning", "lora", "qlora", "full-ft")}
    assert ranks == {"prompt-tuning": 60, "lora": 70, "qlora": 75, "full-ft": 80}
    assert get_rung_class("lora") is LoraRung


@pytest.mark.parametrize(("params", "match"), [
    ({"lr": -1}, "lr=-1"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"r": 0}, "r=0"),
    ({"target_modules": "qv"}, "target_modules"),
    ({"class_weight": "heavy"}, "class_weight"),
    ({"precision": "fp16"}, "precision"),
    ({"max_length": 2}, "max_length"),
    ({"threads": 0}, "threads"),
])
def test_bad_params_clear_error(params: dict, match: str, tiny_bert: str) -> None:
    with pytest.raises(AdaptError, match=match):
        make_rung("lora", model=tiny_bert, progress=False, **params).fit(
            ["good", "bad"], np.array([1, 0]), label_names=["neg", "pos"])


def test_bad_inputs_clear_error(tiny_bert: str) -> None:
    with pytest.raises(AdaptError, match="unknown setting"):
        make_rung("lora", epochs=3)
    with pytest.raises(AdaptError, match="cannot load model"):
        make_rung("lora", model="/nonexistent/model", progress=False).fit(
            ["good", "bad"], np.array([1, 0]), label_names=["neg", "pos"])
    with pytest.raises(AdaptError, match="target modules"):
        make_rung("lora", model=tiny_bert, progress=False, target_modules=["nope"]).fit(
            ["good", "bad"], np.array([1, 0]), label_names=["neg", "pos"])
    with pytest.raises(AdaptError, match="not fitted"):
        make_rung("full-ft").predict_proba(["x"])


@pytest.mark.slow
def test_real_minilm_lora_and_full_ft_on_trec6(tmp_path: Path) -> None:
    from adaptladder.task import load_task

    task = load_task("trec6").sample({"train": 320, "validation": 120, "test": 120}, seed=0)
    tx, y = task.part("train")
    vx, vy = task.part("validation")
    sx, sy = task.part("test")
    for name in ("lora", "full-ft"):
        rung = make_rung(name, progress=False, max_epochs=4, budget_minutes=10).fit(  # 4 epochs, not a time cut
            tx, y, label_names=task.label_names, val_texts=vx, val_y=vy)
        acc = float((rung.predict_codes(sx) == sy).mean())
        assert acc > 0.4, (name, acc)  # 6 classes: chance ~0.25 for the majority class
        rung.save(tmp_path / name)
        assert np.array_equal(load_rung(tmp_path / name).predict_proba(sx[:16]), rung.predict_proba(sx[:16]))
