"""Shared fixtures: a hermetic cache, tiny data, and a tiny sentence encoder built from a config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# CPUs differ (AVX2-only vs AVX512-BF16): the suite runs as on a CPU without native bf16, in this
# process and in the CLI processes it starts; tests of the bf16 paths patch the capability on
os.environ["ADAPTLADDER_NATIVE_BF16"] = "0"


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's cache, unless ADAPTLADDER_TEST_CACHE points at one."""
    os.environ["ADAPTLADDER_CACHE"] = os.environ.get("ADAPTLADDER_TEST_CACHE") or str(
        tmp_path_factory.mktemp("adaptladder-cache"))


@pytest.fixture(autouse=True)
def _no_leaked_trust_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's --base-url / --api-key-env / --trust-run-dir set environment variables for the rest of
    the process (so serve's workers inherit them); in-process CLI tests must not pass them on."""
    for k in ("ADAPTLADDER_BASE_URL", "ADAPTLADDER_API_KEY_ENV", "ADAPTLADDER_TRUST_RUN_DIR"):
        monkeypatch.setenv(k, "")  # recorded as absent before: undone (deleted) after the test
        monkeypatch.delenv(k)


SPAM = ["win a free prize now", "free cash click here", "claim your free reward today", "urgent prize waiting",
        "cheap loans approved instantly", "you won a lottery call now", "exclusive offer free gift",
        "limited time free money", "act now to win cash", "free entry to win a car"]
HAM = ["see you at lunch tomorrow", "can you send me the report", "meeting moved to friday",
       "thanks for dinner last night", "are we still on for the game", "call me when you get home",
       "the kids loved the park", "happy birthday to your mom", "running late be there soon",
       "did you feed the cat"]


def toy_run(tmp: Path) -> Path:
    """A finished majority + tfidf run on the toy spam/ham CSV (for tests of what reads a run directory)."""
    import pandas as pd

    import adaptladder

    rows = [{"text": f"{t} #{i}", "label": lab} for i, (t, lab) in
            enumerate([(t, "spam") for t in SPAM * 2] + [(t, "ham") for t in HAM * 2])]
    pd.DataFrame(rows).to_csv(tmp / "toy.csv", index=False)
    out = tmp / "run"
    adaptladder.run(no_audit=True, data=str(tmp / "toy.csv"), rungs=["majority", "tfidf"], out=str(out), bar=0.99,
                    run_all=True)
    return out


@pytest.fixture
def toy_texts() -> tuple[list[str], np.ndarray, list[str]]:
    texts = SPAM + HAM
    y = np.array([1] * len(SPAM) + [0] * len(HAM))
    return texts, y, ["ham", "spam"]


@pytest.fixture
def toy_csv(tmp_path: Path) -> Path:
    import pandas as pd

    rows = [{"text": t, "label": "spam"} for t in SPAM * 2] + [{"text": t, "label": "ham"} for t in HAM * 2]
    rows = [{"text": f"{r['text']} #{i}", "label": r["label"]} for i, r in enumerate(rows)]
    path = tmp_path / "toy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-dim BERT with random weights and MiniLM's tokenizer: loads in milliseconds."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from adaptladder.models import resolve_encoder

    out = tmp_path_factory.mktemp("tiny-encoder")
    tok = AutoTokenizer.from_pretrained(resolve_encoder("minilm"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama with random weights and a byte-level BPE tokenizer trained here (for prompting rungs)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = SPAM + HAM + ["Text: Label: spam ham positive negative neutral", "who wrote this book"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tiny-causal-lm")
    LlamaForCausalLM(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def tiny_ray() -> Iterator[None]:
    """A local 2-CPU Ray for the tests of a module (skipped without ray); shut down after, if started here."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
