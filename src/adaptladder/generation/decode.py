"""Batched greedy generation with the local causal LM, optionally constrained to a JSON Schema.

The model is loaded through :class:`adaptladder.backends.hf.HFBackend` (the packaged SmolLM2
alias, a local path, an HF id, or a ready ``(model, tokenizer)`` pair). Prompts go through the
tokenizer's chat template (instruction + optional few-shot turns), are left-padded into
batches of similar length and decoded greedily with ``model.generate`` (KV cache on), so a
batched call returns what one-at-a-time calls return (tested).

Constrained decoding uses **xgrammar** (``xgrammar==0.2.9``, chosen over outlines and
lm-format-enforcer by the measurements in BENCHMARKS.md): the schema is compiled once into a
grammar over the tokenizer's vocabulary, and at every step a per-row matcher masks every token
that would leave the grammar; a row ends only with a stop token once the JSON is complete.
So any output that finishes is schema-valid. To make "finishes" a guarantee,
:func:`bound_schema` caps what the schema leaves unbounded (string lengths, array sizes,
integer ranges; the caps are derived from the training targets), and the token budget of a
constrained call is at least :func:`schema_char_bound` of the capped schema (every token
spells at least one character). Schemas with free-form ``number`` fields have no finite bound:
their rows can still hit the budget, and are then reported as truncated.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.models import DEFAULT_LM

XGRAMMAR_SPEC = "xgrammar==0.2.9"


@dataclass
class GenerationOutput:
    texts: list[str]
    new_tokens: list[int]  # generated tokens per row, up to (not counting) the stop token
    prompt_tokens: list[int]
    truncated: list[bool]  # hit max_new_tokens before a stop token
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else float("nan")


# ------------------------------------------------------------------ budgets
def max_new_tokens_for(targets: Sequence[str], count_tokens: Any, *, percentile: float = 95.0,
                       margin: float = 1.25, floor: int = 8, cap: int = 1024) -> int:
    """Token budget from the training targets: ``margin`` x their ``percentile`` length, + 2, clipped."""
    if not targets:
        return floor
    n = np.percentile([count_tokens(t) for t in targets], percentile)
    return int(min(cap, max(floor, math.ceil(n * margin) + 2)))


def string_cap_from_targets(targets: Sequence[str], default: int = 256) -> int:
    """A string-length cap for :func:`bound_schema`: twice the longest string leaf in the targets (>= 16)."""
    longest = 0

    def walk(v: Any) -> None:
        nonlocal longest
        if isinstance(v, str):
            longest = max(longest, len(v))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    seen = False
    for t in targets:
        try:
            walk(json.loads(t))
            seen = True
        except (json.JSONDecodeError, TypeError):
            continue
    return max(16, 2 * longest) if seen else default


def bound_schema(schema: dict[str, Any], *, max_string: int = 256, max_items: int = 32,
                 int_range: tuple[int, int] = (-(10**12), 10**12)) -> dict[str, Any]:
    """A copy of ``schema`` with caps where it leaves sizes open (a stricter schema: anything
    valid under it is valid under the original)."""

    def walk(s: Any) -> Any:
        if isinstance(s, list):
            return [walk(x) for x in s]
        if not isinstance(s, dict):
            return s
        s = {k: walk(v) for k, v in s.items()}
        types = s.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types and "enum" not in s and "const" not in s and "format" not in s and "pattern" not in s:
            s["maxLength"] = min(int(s.get("maxLength", max_string)), max_string)
        if "array" in types:
            s["maxItems"] = min(int(s.get("maxItems", max_items)), max_items)
        if "integer" in types:
            s.setdefault("minimum", int_range[0])
            s.setdefault("maximum", int_range[1])
        return s

    return walk(copy.deepcopy(schema))


def schema_char_bound(schema: Any) -> int | None:
    """An upper bound on the characters of compact JSON matching ``schema`` (``None``: unbounded)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return len(json.dumps(schema["const"]))
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = [schema_char_bound(x) for x in schema[key]]
            return None if any(p is None for p in parts) else max(parts)
    types = schema.get("type")
    if isinstance(types, list):
        parts = [schema_char_bound({**schema, "type": t}) for t in types]
        return None if any(p is None for p in parts) else max(parts)
    if types == "string":
        if "format" in schema:
            return None
        if "pattern" in schema:  # the grammar follows the pattern alone (xgrammar ignores maxLength with it)
            n = _pattern_max_len(schema["pattern"])
            return None if n is None else n * 6 + 2
        if "maxLength" not in schema:
            return None
        return int(schema["maxLength"]) * 6 + 2  # \uXXXX escapes, quotes
    if types == "integer":
        if "minimum" not in schema or "maximum" not in schema:
            return None
        return max(len(str(int(schema["minimum"]))), len(str(int(schema["maximum"]))))
    if types == "boolean":
        return 5
    if types == "null":
        return 4
    if types == "array":
        item = schema_char_bound(schema.get("items", {}))
        if item is None or "maxItems" not in schema:
            return None
        return 2 + int(schema["maxItems"]) * (item + 2)
    if types == "object":
        props = schema.get("properties", {})
        total = 2
        for k, v in props.items():
            b = schema_char_bound(v)
            if b is None:
                return None
            total += len(json.dumps(k)) + 4 + b  # key, ": ", ", "
        return total
    return None


def _pattern_max_len(pattern: str) -> int | None:
    """The longest string a regular expression can match, or ``None`` when unbounded/unknown."""
    import re._parser as sre_parse  # the stdlib's own parser: getwidth() gives (min, max) widths

    try:
        hi = sre_parse.parse(pattern).getwidth()[1]
    except Exception:  # a pattern Python cannot parse: no bound
        return None
    return None if hi >= sre_parse.MAXREPEAT else int(hi)


# ------------------------------------------------------------------ constraint
class JsonConstraint:
    """A JSON Schema compiled by xgrammar for one tokenizer; :meth:`processor` gives a fresh
    ``transformers.LogitsProcessor`` for each ``generate`` call."""

    def __init__(self, tokenizer: Any, schema: dict[str, Any], *, vocab_size: int, stop_ids: Sequence[int]) -> None:
        try:
            import xgrammar as xgr
        except ImportError as e:
            raise AdaptError(f"constrained JSON decoding needs {XGRAMMAR_SPEC}: run `make install` "
                             f"(or pip install {XGRAMMAR_SPEC}).") from e
        from adaptladder.generation.metrics import schema_validator

        schema_validator(schema)  # a broken schema is a one-line error before compiling
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        try:
            self.grammar = xgr.GrammarCompiler(info).compile_json_schema(
                json.dumps(schema), any_whitespace=False, strict_mode=True)
        except (RuntimeError, ValueError) as e:
            raise AdaptError(f"the JSON schema uses a feature constrained decoding cannot compile ({e}); "
                             "simplify the schema.") from e
        self.schema = schema
        self.vocab_size = vocab_size
        # xgrammar's length-capped string rule lets raw control characters through, which JSON
        # forbids (they must be escaped): tokens that spell one are banned outright. Nothing
        # compact JSON needs is lost (no raw newlines/tabs between tokens).
        stop = set(stop_ids)
        self.banned = [i for i, b in enumerate(info.decoded_vocab)
                       if i not in stop and any(c < 0x20 or c == 0x7F for c in b)]

    def processor(self) -> Any:
        return _XGrammarLogits(self.grammar, self.vocab_size, self.banned)


class _XGrammarLogits:
    """Per-row grammar matchers masking the logits; rows already terminated are left alone."""

    def __init__(self, grammar: Any, vocab_size: int, banned: Sequence[int] = ()) -> None:
        self.grammar = grammar
        self.vocab_size = vocab_size
        self.banned = list(banned)
        self.matchers: list[Any] = []
        self.bitmask: Any = None
        self.started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import xgrammar as xgr

        b = input_ids.shape[0]
        if not self.matchers:
            self.matchers = [xgr.GrammarMatcher(self.grammar) for _ in range(b)]
            self.bitmask = xgr.allocate_token_bitmask(b, self.vocab_size)
        if self.started:
            for i, m in enumerate(self.matchers):
                if not m.is_terminated() and not m.accept_token(int(input_ids[i, -1])):
                    raise AdaptError("constrained decoding produced a token outside the grammar (internal error).")
        self.started = True
        for i, m in enumerate(self.matchers):
            if not m.is_terminated():
                m.fill_next_token_bitmask(self.bitmask, i)
        device = scores.device
        s = scores.to("cpu") if device.type != "cpu" else scores
        if s.shape[-1] != self.vocab_size:
            raise AdaptError(f"the model's logits have {s.shape[-1]} entries, the grammar {self.vocab_size}.")
        xgr.apply_token_bitmask_inplace(s, self.bitmask)
        if self.banned:
            s[:, self.banned] = float("-inf")
        return s.to(device) if device.type != "cpu" else s


# ------------------------------------------------------------------ generator
def render_prompt(tok: Any, text: str, instruction: str, shots: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt for one input: the chat template when the tokenizer has one (each shot a
    user/assistant turn pair), else a plain ``instruction / Input: / Output:`` layout."""

    def user(x: str) -> str:
        return f"{instruction}\n\n{x}" if instruction else x

    if getattr(tok, "chat_template", None):
        msgs: list[dict[str, str]] = []
        for x, y in shots:
            msgs += [{"role": "user", "content": user(x)}, {"role": "assistant", "content": y}]
        msgs.append({"role": "user", "content": user(text)})
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    parts = [instruction] if instruction else []
    parts += [f"Input: {x}\nOutput: {y}" for x, y in shots]
    parts.append(f"Input: {text}\nOutput:")
    return "\n\n".join(parts)


#: a shared prefix shorter than this is not worth a separate forward pass
MIN_SHARED_PREFIX = 16


def shared_prefix_length(encoded: Sequence[Sequence[int]], minimum: int = MIN_SHARED_PREFIX) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (0: fewer than
    two prompts, or a shared part shorter than ``minimum``)."""
    if len(encoded) < 2:
        return 0
    first = encoded[0]
    n = min(len(e) for e in encoded) - 1
    for k in range(max(0, n)):
        t = first[k]
        if any(e[k] != t for e in encoded):
            n = k
            break
    return n if n >= minimum else 0


class Generator:
    """Greedy batched generation. ``model``: an LM alias/path/id, a ``(model, tokenizer)`` pair or an HFBackend."""

    def __init__(self, model: Any = DEFAULT_LM, *, batch_size: int = 8, threads: int | str = "auto",
                 device: str = "auto", dtype: str = "float32") -> None:
        from adaptladder.backends.hf import HFBackend

        self.backend = model if isinstance(model, HFBackend) else HFBackend(
            model, batch_size=batch_size, threads=threads, device=device, dtype=dtype)
        self.batch_size = int(batch_size)
        self._constraints: dict[str, JsonConstraint] = {}

    def _load(self) -> tuple[Any, Any]:
        return self.backend._load()

    @property
    def tokenizer(self) -> Any:
        return self._load()[1]

    def stop_ids(self) -> list[int]:
        model, tok = self._load()
        ids: list[int] = []
        for v in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None),
                  tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else None):
            for x in (v if isinstance(v, list) else [v]):
                if x is not None and int(x) not in ids:
                    ids.append(int(x))
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -------------------------------------------------------------- prompts
    def build_prompt(self, text: str, instruction: str, shots: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt for one input (:func:`render_prompt` with this LM's tokenizer)."""
        return render_prompt(self.tokenizer, text, instruction, shots)

    def constraint(self, schema: dict[str, Any]) -> JsonConstraint:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._constraints:
            model, tok = self._load()
            vocab = int(model.get_output_embeddings().weight.shape[0])
            self._constraints[key] = JsonConstraint(tok, schema, vocab_size=vocab, stop_ids=self.stop_ids())
        return self._constraints[key]

    def _prefix_layers(self, prefix: list[int]) -> list[tuple[Any, Any]]:
        """The KV cache of ``prefix`` as (keys, values) per layer (batch 1). Computed per call, never kept:
        the weights may change between calls (SFT generates for its validation checks while it trains)."""
        import torch

        model, _ = self._load()
        dev = getattr(self.backend, "device", "cpu")
        ids = torch.tensor([prefix], device=dev)
        with torch.inference_mode():
            cache = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values
        return [(layer.keys, layer.values) for layer in cache.layers]

    # -------------------------------------------------------------- decoding
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, schema: dict[str, Any] | None = None,
                 batch_size: int | None = None, processor_factory: Any = None) -> GenerationOutput:
        """Greedy continuations of ``prompts`` (left-padded batches, longest first, order restored).

        With ``schema``, decoding is constrained to it (pass a :func:`bound_schema` for the
        always-finishes guarantee; the budget is raised to its :func:`schema_char_bound`).
        ``processor_factory``: a callable giving a fresh ``LogitsProcessor`` per batch instead of
        the xgrammar one (used by the benchmark that compares constrained-decoding libraries).
        """
        import torch

        model, tok = self._load()
        bs = int(batch_size or self.batch_size)
        if bs < 1:
            raise AdaptError(f"batch size must be at least 1, got {bs}.")
        budget = int(max_new_tokens)
        constraint = None
        if schema is not None:
            constraint = self.constraint(schema)
            bound = schema_char_bound(schema)
            if bound is not None:
                budget = max(budget, bound + 1)
        stop = self.stop_ids()
        pad = tok.pad_token_id if tok.pad_token_id is not None else stop[0]
        max_ctx = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        encoded = [self.backend.encode(p, first=True) for p in prompts]
        for i, ids in enumerate(encoded):
            if max_ctx and len(ids) + budget > max_ctx:
                raise AdaptError(f"prompt {i} has {len(ids)} tokens; with {budget} new tokens it exceeds the model's "
                                 f"context of {max_ctx}: shorten the input or the few-shot examples.")
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        texts = [""] * len(encoded)
        new_tokens = [0] * len(encoded)
        truncated = [False] * len(encoded)
        dev = getattr(self.backend, "device", "cpu")
        t0 = time.perf_counter()
        # the prompts' shared token prefix (instruction, few-shot examples) is run once; each batch
        # continues from a copy of its KV cache and computes only the rest of its prompts
        n_shared = shared_prefix_length(encoded) if getattr(self.backend, "prefix_cache", True) else 0
        prefix_layers = self._prefix_layers(encoded[0][:n_shared]) if n_shared else None
        for s in range(0, len(order), bs):
            self.backend._set_batch_threads()  # the load may have changed since the last batch
            idx = order[s:s + bs]
            width = max(len(encoded[i]) - n_shared for i in idx)
            ids = torch.full((len(idx), n_shared + width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            if n_shared:  # [shared prefix][left padding][the rest of the prompt]
                ids[:, :n_shared] = torch.tensor(encoded[idx[0]][:n_shared])
                mask[:, :n_shared] = 1
            for r, i in enumerate(idx):
                rest = encoded[i][n_shared:]
                ids[r, n_shared + width - len(rest):] = torch.tensor(rest)
                mask[r, n_shared + width - len(rest):] = 1
            width += n_shared
            kwargs: dict[str, Any] = {}
            if prefix_layers is not None:
                kwargs["past_key_values"] = self.backend._new_cache(
                    [(k.expand(len(idx), -1, -1, -1), v.expand(len(idx), -1, -1, -1)) for k, v in prefix_layers])
            if constraint is not None or processor_factory is not None:
                from transformers import LogitsProcessorList

                proc = processor_factory() if processor_factory is not None else constraint.processor()
                kwargs["logits_processor"] = LogitsProcessorList([proc])
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=budget,
                                     do_sample=False, num_beams=1, eos_token_id=stop, pad_token_id=pad,
                                     use_cache=True, **kwargs)
            for r, i in enumerate(idx):
                gen = out[r, width:].tolist()
                cut = next((k for k, t in enumerate(gen) if t in stop), None)
                truncated[i] = cut is None
                gen = gen if cut is None else gen[:cut]
                new_tokens[i] = len(gen)
                texts[i] = tok.decode(gen, skip_special_tokens=True).strip()
        dt = time.perf_counter() - t0
        n_prompt = [len(e) for e in encoded]
        computed = sum(n_prompt) - n_shared * (len(encoded) - 1) if n_shared else sum(n_prompt)
        self.backend.usage.add(requests=len(encoded), prompt=sum(n_prompt), completion=sum(new_tokens),
                               computed=computed + sum(new_tokens), seconds=dt)
        return GenerationOutput(texts, new_tokens, n_prompt, truncated, dt, settings={
            "prefix_cache": {"shared_prefix_tokens": n_shared, "prompt_tokens_served": sum(n_prompt),
                             "prompt_tokens_computed": computed},
            "decoding": "greedy", "max_new_tokens": budget, "batch_size": bs,
            "constrained": ("custom" if processor_factory is not None else
                            None if constraint is None else XGRAMMAR_SPEC.split("==")[0]),
            "chat_template": bool(getattr(tok, "chat_template", None))})
