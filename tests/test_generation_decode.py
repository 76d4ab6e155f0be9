"""Batched greedy generation and JSON-Schema-constrained decoding on tiny random-weight LMs."""

from __future__ import annotations

import json

import pytest

from adaptladder.errors import AdaptError
from adaptladder.generation.decode import (
    Generator,
    bound_schema,
    max_new_tokens_for,
    schema_char_bound,
    string_cap_from_targets,
)
from adaptladder.generation.metrics import schema_validator

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ['{"city": "Kelso", "state": "WA", "population": 11901, "elevation_m": 23, "ok": true}',
          "Kelso, Washington: population 11,901, elevation 23 m, time zone America/Los_Angeles.",
          "the quick brown fox jumps over the lazy dog", "reply to the line with the next line",
          '[1, 2, 3] {"a": null, "b": false, "c": -4.5e3} \\" \\n \\u00e9'] * 5

SCHEMA = {"type": "object",
          "properties": {"city": {"type": "string"}, "state": {"type": "string", "pattern": "^[A-Z]{2}$"},
                         "population": {"type": "integer", "minimum": 0},
                         "elevation_m": {"type": ["integer", "null"]},
                         "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                         "ok": {"type": "boolean"}},
          "required": ["city", "state", "population", "elevation_m", "ok"], "additionalProperties": False}


def _byte_bpe_tokenizer():
    """A byte-level BPE tokenizer (the SmolLM2/GPT-2 kind) trained in memory, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = CHAT
    return tok


def _tiny_lm(tok, seed: int = 0, init: float = 0.02):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      initializer_range=init)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tiny_gen():
    tok = _byte_bpe_tokenizer()
    return Generator((_tiny_lm(tok), tok), batch_size=4, threads=1)


INPUTS = ["Kelso, Washington: population 11,901.", "the quick brown fox", "a", "reply to the line",
          "elevation 23 m, time zone America/Los_Angeles, the lazy dog jumps", "fox"]


def test_prompt_uses_chat_template_and_shots(tiny_gen):
    p = tiny_gen.build_prompt("the fox", "Reply.", shots=[("a dog", "a cat")])
    assert p == ("<|im_start|>user\nReply.\n\na dog<|im_end|>\n<|im_start|>assistant\na cat<|im_end|>\n"
                 "<|im_start|>user\nReply.\n\nthe fox<|im_end|>\n<|im_start|>assistant\n")


def test_batched_equals_one_at_a_time(tiny_gen):
    prompts = [tiny_gen.build_prompt(x, "Reply.") for x in INPUTS]
    batched = tiny_gen.generate(prompts, max_new_tokens=12, batch_size=4)
    single = tiny_gen.generate(prompts, max_new_tokens=12, batch_size=1)
    assert batched.texts == single.texts and batched.new_tokens == single.new_tokens
    assert any(batched.texts) and len(set(batched.prompt_tokens)) > 1  # padding really happened
    assert batched.settings["decoding"] == "greedy" and batched.settings["constrained"] is None
    assert all(n <= 12 for n in batched.new_tokens)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_outputs_always_schema_valid(seed):
    tok = _byte_bpe_tokenizer()
    gen = Generator((_tiny_lm(tok, seed), tok), batch_size=3, threads=1)
    schema = bound_schema(SCHEMA, max_string=12, max_items=3, int_range=(-999, 99999))
    prompts = [gen.build_prompt(x, "Extract JSON.") for x in INPUTS]
    out = gen.generate(prompts, max_new_tokens=8, schema=schema)  # budget raised to the schema's bound
    assert out.settings["max_new_tokens"] >= schema_char_bound(schema) + 1
    assert not any(out.truncated)
    v = schema_validator(SCHEMA)
    for t in out.texts:
        assert v.is_valid(json.loads(t)), t
    # the same prompts unconstrained are (with random weights) not JSON at all
    free = gen.generate(prompts, max_new_tokens=20)
    assert not all(_parses(t) for t in free.texts)
    # batched constrained == one at a time
    one = gen.generate(prompts[:3], max_new_tokens=8, schema=schema, batch_size=1)
    assert one.texts == out.texts[:3]


def _parses(t: str) -> bool:
    try:
        json.loads(t)
        return True
    except json.JSONDecodeError:
        return False


def test_bound_schema_and_char_bound():
    b = bound_schema(SCHEMA, max_string=10, max_items=2, int_range=(-5, 100))
    assert b["properties"]["city"]["maxLength"] == 10 and "maxLength" not in b["properties"]["state"]
    assert b["properties"]["population"] == {"type": "integer", "minimum": 0, "maximum": 100}
    assert b["properties"]["tags"]["maxItems"] == 2 and SCHEMA["properties"]["city"] == {"type": "string"}
    # city 10*6+2, state 2*6+2, population 3, elevation max(3, 4 for null), tags 2+2*(3+2), ok 5; keys+4 each, braces 2
    keys = sum(len(json.dumps(k)) + 4 for k in SCHEMA["properties"])
    assert schema_char_bound(b) == 2 + keys + 62 + 14 + 3 + 4 + 12 + 5
    assert schema_char_bound(SCHEMA) is None  # open strings: no bound
    assert schema_char_bound({"type": "number"}) is None


def test_budgets_from_targets():
    targets = ['{"city": "Kelso"}', '{"city": "Bellingham"}', "x" * 40]
    assert string_cap_from_targets(targets) == 20  # 2 x "Bellingham", at least 16
    assert string_cap_from_targets(["not json"]) == 256
    n = max_new_tokens_for(["a b", "a b c d"], lambda s: len(s.split()), percentile=100, margin=1.5, floor=1)
    assert n == 6 + 2
    assert max_new_tokens_for([], len) == 8


def test_bad_schema_and_context_overflow_are_one_line_errors(tiny_gen):
    with pytest.raises(AdaptError, match="not a valid JSON Schema"):
        tiny_gen.generate(["x"], max_new_tokens=4, schema={"type": 5})
    with pytest.raises(AdaptError, match="exceeds the model's context"):
        tiny_gen.generate(["word " * 3000], max_new_tokens=4)


@pytest.mark.slow
def test_constrained_valid_with_smollm2_tokenizer():
    """SmolLM2's own 49,152-token tokenizer (read from the packaged GGUF) on a random tiny Llama:
    the extraction schema's outputs are always valid, batched equals one at a time."""
    from transformers import AutoTokenizer

    from adaptladder.generation.datasets import CITY_SCHEMA
    from adaptladder.models import LM_ALIASES, packaged_path

    dist, folder, gguf, spec = LM_ALIASES["smollm2"]
    tok = AutoTokenizer.from_pretrained(str(packaged_path(dist, folder, spec)), gguf_file=gguf)
    gen = Generator((_tiny_lm(tok, seed=3), tok), batch_size=3, threads=1)
    schema = bound_schema(CITY_SCHEMA, max_string=10, int_range=(0, 10**6))
    prompts = [gen.build_prompt(x, "Extract JSON.") for x in INPUTS[:3]]
    out = gen.generate(prompts, max_new_tokens=8, schema=schema)
    v = schema_validator(CITY_SCHEMA)
    assert not any(out.truncated) and all(v.is_valid(json.loads(t)) for t in out.texts), out.texts
    assert gen.generate(prompts, max_new_tokens=8, schema=schema, batch_size=1).texts == out.texts


def test_shared_prefix_length() -> None:
    from adaptladder.generation.decode import shared_prefix_length

    a, b = [*list(range(40)), 1, 2], [*list(range(40)), 3]
    assert shared_prefix_length([a, b]) == 40
    assert shared_prefix_length([a]) == 0  # one prompt: nothing to share
    assert shared_prefix_length([a, a]) == 41  # identical prompts keep one token each to compute
    assert shared_prefix_length([[*a[:10], 7], a]) == 0  # under the minimum: not worth a pass
    assert shared_prefix_length([[5, *a], a]) == 0


@pytest.mark.parametrize("schema", [None, SCHEMA])
def test_shared_prefix_cache_changes_no_output(schema) -> None:
    tok = _byte_bpe_tokenizer()
    gen = Generator((_tiny_lm(tok, seed=3, init=0.3), tok), batch_size=3, threads=1)
    shots = [("the quick brown fox", CORPUS[0]), ("Kelso, Washington: population", CORPUS[0])]
    prompts = [gen.build_prompt(x, "Reply to the message in one line.", shots) for x in INPUTS]
    bound = bound_schema(SCHEMA, max_string=8) if schema else None
    cached = gen.generate(prompts, max_new_tokens=8, schema=bound)
    gen.backend.prefix_cache = False
    plain = gen.generate(prompts, max_new_tokens=8, schema=bound)
    assert cached.texts == plain.texts and cached.new_tokens == plain.new_tokens
    pc, pp = cached.settings["prefix_cache"], plain.settings["prefix_cache"]
    assert pc["shared_prefix_tokens"] > 50 and pp["shared_prefix_tokens"] == 0
    assert pc["prompt_tokens_served"] == pp["prompt_tokens_served"] == pp["prompt_tokens_computed"]
    assert pc["prompt_tokens_computed"] < pc["prompt_tokens_served"] / 2
