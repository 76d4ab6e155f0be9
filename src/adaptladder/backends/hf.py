"""The transformers backend: a causal LM on CPU (or CUDA when present).

Label scoring is the hot path, and its prompts share a long prefix (instruction + few-shot
block) followed by a short per-query tail and a handful of label verbalizations. So
:meth:`HFBackend.score_choices` runs the prefix once and keeps its key/value cache
(``DynamicCache``), expands it to a batch of query tails, scores the first token of every
label from one forward pass, and only runs extra (tiny) passes for the remaining tokens of
multi-token labels. Only the hidden states that are needed go through the LM head (the
vocabulary projection is a fifth of a small model's compute). Scores equal a plain full
forward pass over the same token ids to float tolerance (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptladder.backends.base import ChoiceScores, LMBackend
from adaptladder.errors import AdaptError
from adaptladder.models import DEFAULT_LM

log = logging.getLogger(__name__)


class HFBackend(LMBackend):
    """A transformers causal LM. ``model``: an alias (``smollm2``), a local path or an HF id.

    ``model`` may also be an already loaded ``(model, tokenizer)`` pair (tests, notebooks).
    ``prefix_cache=False`` disables the shared-prefix KV cache (for benchmarks and checks).
    ``threads``: torch CPU threads; ``auto`` uses one thread when the machine is already busier
    than its cores (oversubscribed intra-op threads spin and ran ~5x slower on a loaded 2-core box).
    """

    name = "hf"

    def __init__(self, model: Any = DEFAULT_LM, device: str = "auto", dtype: str = "float32",
                 batch_size: int = 8, prefix_cache: bool = True, use_chat_template: bool | None = None,
                 max_context: int | None = None, threads: int | str = "auto") -> None:
        super().__init__()
        self.threads = threads
        self.model_name = model if isinstance(model, str) else type(model[0]).__name__
        self._given = None if isinstance(model, str) else model
        self.device_req = device
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.prefix_cache = bool(prefix_cache)
        self.use_chat_template = use_chat_template
        self._max_context = max_context
        self._model: Any = None
        self._tok: Any = None
        self._prefix_memo: tuple[tuple[int, ...], Any, Any] | None = None

    def _set_batch_threads(self) -> None:
        """Re-decide torch's threads before a batch (the machine's load changes during a run)."""
        _set_threads(self.threads)

    # ------------------------------------------------------------------ loading
    def _load(self) -> tuple[Any, Any]:
        if self._model is not None:
            return self._model, self._tok
        import torch

        _set_threads(self.threads)
        if self._given is not None:
            model, tok = self._given
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from adaptladder.models import resolve_lm

            path = resolve_lm(self.model_name)
            dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.dtype)
            if dtype is None:
                raise AdaptError(f"unknown dtype {self.dtype!r} for the hf backend: use float32, bfloat16 or float16.")
            try:
                tok = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            except OSError as e:
                raise AdaptError(f"could not load language model {self.model_name!r} ({str(e).splitlines()[0]}); "
                                 "pass the packaged alias smollm2, a local folder or a reachable HF id.") from e
        device = self.device_req
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device).eval()
        self.device = device
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._model, self._tok = model, tok
        if self.use_chat_template is None:
            self.use_chat_template = bool(getattr(tok, "chat_template", None))
        return model, tok

    @property
    def max_context(self) -> int:
        model, _ = self._load()
        n = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        return min(n, self._max_context) if self._max_context else n

    def describe(self) -> dict[str, Any]:
        self._load()
        return {"backend": self.name, "model": self.model_name, "device": self.device, "dtype": self.dtype,
                "chat_template": bool(self.use_chat_template), "prefix_cache": self.prefix_cache,
                "batch_size": self.batch_size}

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str, *, first: bool) -> list[int]:
        """Token ids of one prompt piece; only the first piece of a plain (non-chat) prompt gets BOS."""
        _, tok = self._load()
        special = first and not self.use_chat_template
        return list(tok(text, add_special_tokens=special)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text, first=False))

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        _, tok = self._load()
        ids = self.encode(text, first=False)
        if len(ids) <= max_tokens:
            return text, False
        return tok.decode(ids[:max(max_tokens, 0)], skip_special_tokens=True), True

    def has_chat_template(self) -> bool:
        _, tok = self._load()
        return bool(getattr(tok, "chat_template", None))

    def format_chat(self, system: str, user: str) -> str:
        _, tok = self._load()
        if not self.use_chat_template:
            return super().format_chat(system, user)
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    # ------------------------------------------------------------------ forward helpers
    def _hidden(self, ids: Any, mask: Any, position_ids: Any = None, past: Any = None) -> tuple[Any, Any]:
        """Last hidden states (no LM head) and the updated cache."""
        model, _ = self._load()
        out = model.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                               past_key_values=past, use_cache=past is not None)
        return out.last_hidden_state, getattr(out, "past_key_values", None)

    def _logprobs(self, hidden: Any) -> Any:
        """log-softmax over the vocabulary for selected hidden states ``(..., d)``."""
        import torch

        model, _ = self._load()
        logits = model.get_output_embeddings()(hidden).float()
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, dim=-1)

    def _score_rows(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
        """Full forward passes (no cache) over ``context ids + continuation ids`` rows, batched."""
        import torch

        _, tok = self._load()
        out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            seqs = [rows[i][0] + rows[i][1] for i in idx]
            width = max(len(q) for q in seqs)
            ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, q in enumerate(seqs):
                ids[r, :len(q)] = torch.tensor(q)
                mask[r, :len(q)] = 1
            with torch.inference_mode():
                hidden, _ = self._hidden(ids.to(self.device), mask.to(self.device))
                for r, i in enumerate(idx):
                    ctx, cont = rows[i]
                    if not cont:
                        out[i] = (0.0, 0)
                        continue
                    if not ctx:
                        raise AdaptError("loglikelihood needs a non-empty context (the first token has no prediction).")
                    pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=self.device)
                    lp = self._logprobs(hidden[r, pos])
                    tgt = torch.tensor(cont, device=self.device)
                    out[i] = (float(lp.gather(1, tgt[:, None]).sum()), len(cont))
        return out

    # ------------------------------------------------------------------ requests
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        import time

        rows = [(self.encode(c, first=True), self.encode(x, first=False)) for c, x in requests]
        _set_threads(self.threads)
        t0 = time.perf_counter()
        out = self._score_rows(rows)
        n = sum(len(a) + len(b) for a, b in rows)
        self.usage.add(requests=len(rows), prompt=n, computed=n, seconds=time.perf_counter() - t0)
        return out

    def score_choices(self, prefix: str, tails: Sequence[str], choices: Sequence[str],
                      batch_size: int | None = None) -> ChoiceScores:
        """Every choice after ``prefix + tail``, for every tail; the prefix is run once (KV cache)."""
        import time

        p_ids = self.encode(prefix, first=True)
        # Token ids of prefix + tail exactly as the whole prompt tokenizes; a tail whose joint
        # tokenization does not start with the prefix's ids (a merge across the boundary) is
        # scored without the cache, so caching never changes a score.
        t_ids: list[list[int]] = []
        odd: list[int] = []
        for i, t in enumerate(tails):
            joint = self.encode(prefix + t, first=True)
            if joint[:len(p_ids)] == p_ids:
                t_ids.append(joint[len(p_ids):])
            else:
                t_ids.append(joint)
                odd.append(i)
        c_ids = [self.encode(c, first=False) for c in choices]
        if any(not c for c in c_ids):
            raise AdaptError("a label verbalization is empty after tokenization; give every label a non-empty name.")
        n_tok = np.array([len(c) for c in c_ids], dtype=np.int64)
        _set_threads(self.threads)
        t0 = time.perf_counter()
        if self.prefix_cache and p_ids:
            ok = [i for i in range(len(tails)) if i not in set(odd)]
            lp = np.zeros((len(tails), len(choices)), dtype=np.float64)
            lp[ok], computed = self._score_cached(p_ids, [t_ids[i] for i in ok], c_ids, batch_size or self.batch_size)
            if odd:
                flat = self._score_rows([(t_ids[i], c) for i in odd for c in c_ids])
                lp[odd] = np.array([f[0] for f in flat]).reshape(len(odd), len(c_ids))
                computed += sum(len(t_ids[i]) + len(c) for i in odd for c in c_ids)
            t_ids = [t if i not in set(odd) else t[len(p_ids):] for i, t in enumerate(t_ids)]
        else:
            t_ids = [p_ids + t if i not in set(odd) else t for i, t in enumerate(t_ids)]
            p_ids = []
            rows = [(t, c) for t in t_ids for c in c_ids]
            flat = self._score_rows(rows)
            lp = np.array([f[0] for f in flat], dtype=np.float64).reshape(len(tails), len(choices))
            computed = sum(len(a) + len(b) for a, b in rows)
        dt = time.perf_counter() - t0
        # what per-label scoring reads (and an echo-style API would bill): prefix + tail + label, every label
        logical = sum(len(c_ids) * (len(p_ids) + len(t)) + int(n_tok.sum()) for t in t_ids)
        self.usage.add(requests=len(tails), prompt=logical, computed=computed, seconds=dt)
        return ChoiceScores(lp, np.broadcast_to(n_tok, lp.shape).copy(), exact=True, method="loglikelihood")

    def _prefix_state(self, p_ids: list[int]) -> tuple[Any, Any, int]:
        """The prefix's KV cache and last hidden state, memoised for the last prefix seen."""
        import torch

        key = tuple(p_ids)
        if self._prefix_memo is not None and self._prefix_memo[0] == key:
            return self._prefix_memo[1], self._prefix_memo[2], 0
        ids = torch.tensor([p_ids], device=self.device)
        with torch.inference_mode():
            hidden, cache = self._hidden(ids, torch.ones_like(ids), past=self._new_cache())
        self._prefix_memo = (key, cache, hidden[0, -1])
        return cache, hidden[0, -1], len(p_ids)

    def _new_cache(self, layers: list[tuple[Any, Any]] | None = None) -> Any:
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()

    def _score_cached(self, p_ids: list[int], t_ids: list[list[int]], c_ids: list[list[int]],
                      batch_size: int) -> tuple[np.ndarray, int]:
        import torch

        _, tok = self._load()
        prefix_cache, prefix_last, computed = self._prefix_state(p_ids)
        lp_ = len(p_ids)
        base = [(layer.keys, layer.values) for layer in prefix_cache.layers]
        out = np.zeros((len(t_ids), len(c_ids)), dtype=np.float64)
        first = torch.tensor([c[0] for c in c_ids], device=self.device)
        order = sorted(range(len(t_ids)), key=lambda i: -len(t_ids[i]))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            b = len(idx)
            lens = torch.tensor([len(t_ids[i]) for i in idx], device=self.device)
            width = int(lens.max()) if b else 0
            with torch.inference_mode():
                cache = self._new_cache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in base])
                if width and self._tree_mask_ok() and int(lens.min()) > 0:
                    scores, n = self._one_pass(cache, lp_, [t_ids[i] for i in idx], c_ids)
                    out[idx] = scores
                    computed += n
                    continue
                if width:
                    ids = torch.full((b, width), tok.pad_token_id, dtype=torch.long, device=self.device)
                    for r, i in enumerate(idx):
                        if t_ids[i]:
                            ids[r, :len(t_ids[i])] = torch.tensor(t_ids[i], device=self.device)
                    tail_mask = (torch.arange(width, device=self.device)[None, :] < lens[:, None]).long()
                    mask = torch.cat([torch.ones((b, lp_), dtype=torch.long, device=self.device), tail_mask], 1)
                    pos = (lp_ + torch.arange(width, device=self.device))[None, :].expand(b, -1)
                    hidden, cache = self._hidden(ids, mask, pos, cache)
                    computed += int(lens.sum())
                    last = torch.stack([hidden[r, int(lens[r]) - 1] if lens[r] > 0 else prefix_last
                                        for r in range(b)])
                else:
                    mask = torch.ones((b, lp_), dtype=torch.long, device=self.device)
                    last = prefix_last[None, :].expand(b, -1)
                lp_first = self._logprobs(last)[:, first]  # (b, C): every label's first token
                scores = lp_first.double().cpu().numpy()
                # remaining tokens of multi-token labels: one small pass per label, cache restored after
                saved = [(layer.keys, layer.values) for layer in cache.layers]
                for j, c in enumerate(c_ids):
                    if len(c) < 2:
                        continue
                    rest = torch.tensor(c[:-1], device=self.device)[None, :].expand(b, -1)
                    m = torch.cat([mask, torch.ones((b, len(c) - 1), dtype=torch.long, device=self.device)], 1)
                    p = (lp_ + lens)[:, None] + torch.arange(len(c) - 1, device=self.device)[None, :]
                    h, cache = self._hidden(rest, m, p, cache)
                    computed += b * (len(c) - 1)
                    tgt = torch.tensor(c[1:], device=self.device)
                    lp = self._logprobs(h).gather(2, tgt[None, :, None].expand(b, -1, 1)).squeeze(-1)
                    scores[:, j] += lp.sum(1).double().cpu().numpy()
                    for layer, (k, v) in zip(cache.layers, saved, strict=True):
                        layer.keys, layer.values = k, v
            out[idx] = scores
        return out, computed

    def _tree_mask_ok(self) -> bool:
        model, _ = self._load()
        return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")

    def _one_pass(self, cache: Any, lp_: int, tails: list[list[int]], c_ids: list[list[int]]) -> tuple[np.ndarray, int]:
        """Score all labels of a batch of tails in ONE forward pass over the prefix cache.

        Each row holds its tail followed by the non-final tokens of every multi-token label; a
        custom 4D attention mask lets a label token see the prefix, its row's real tail tokens
        and the earlier tokens of its own label only, with positions as if it followed the tail
        directly. So the prefix cache is copied once per batch, not once per label.
        """
        import torch

        _, tok = self._load()
        dev = self.device
        b = len(tails)
        lens = torch.tensor([len(t) for t in tails], device=dev)
        width = int(lens.max())
        seg = [(j, t) for j, c in enumerate(c_ids) for t in range(len(c) - 1)]  # label j, offset t
        q_len = width + len(seg)
        ids = torch.full((b, q_len), tok.pad_token_id, dtype=torch.long, device=dev)
        for r, t in enumerate(tails):
            ids[r, :len(t)] = torch.tensor(t, device=dev)
        for s_i, (j, t) in enumerate(seg):
            ids[:, width + s_i] = c_ids[j][t]
        pos = torch.empty((b, q_len), dtype=torch.long, device=dev)
        pos[:, :width] = lp_ + torch.arange(width, device=dev)
        seg_off = torch.tensor([t for _, t in seg], device=dev, dtype=torch.long)
        pos[:, width:] = lp_ + lens[:, None] + seg_off[None, :]
        # allowed[b, q, k] over keys = prefix (lp_) + this pass's q_len tokens
        allowed = torch.zeros((b, q_len, lp_ + q_len), dtype=torch.bool, device=dev)
        allowed[:, :, :lp_] = True
        ar = torch.arange(width, device=dev)
        valid = ar[None, :] < lens[:, None]  # (b, width)
        causal = ar[:, None] >= ar[None, :]  # (width, width)
        allowed[:, :width, lp_:lp_ + width] = causal[None] & valid[:, None, :]
        allowed[:, width:, lp_:lp_ + width] = valid[:, None, :]
        seg_lab = torch.tensor([j for j, _ in seg], device=dev, dtype=torch.long)
        same = (seg_lab[:, None] == seg_lab[None, :]) & (seg_off[:, None] >= seg_off[None, :])
        allowed[:, width:, lp_ + width:] = same[None]
        model, _ = self._load()
        if model.config._attn_implementation == "eager":
            mask = torch.zeros(allowed.shape, dtype=model.dtype, device=dev)
            mask.masked_fill_(~allowed, torch.finfo(model.dtype).min)
            mask = mask[:, None]
        else:
            mask = allowed[:, None]
        hidden, _ = self._hidden(ids, mask, pos, cache)
        rows = torch.arange(b, device=dev)
        last = hidden[rows, (lens - 1).clamp(min=0)]
        first = torch.tensor([c[0] for c in c_ids], device=dev)
        scores = self._logprobs(last)[:, first].double()
        if seg:
            lp = self._logprobs(hidden[:, width:])  # (b, S, V)
            tgt = torch.tensor([c_ids[j][t + 1] for j, t in seg], device=dev)
            got = lp.gather(2, tgt[None, :, None].expand(b, -1, 1)).squeeze(-1).double()  # (b, S)
            for s_i, (j, _) in enumerate(seg):
                scores[:, j] += got[:, s_i]
        return scores.cpu().numpy(), int(lens.sum()) * 1 + b * len(seg)

    def generate_until(self, contexts: Sequence[str], stop: Sequence[str] = ("\n",),
                       max_tokens: int = 16) -> list[str]:
        import time

        import torch

        model, tok = self._load()
        outs: list[str] = []
        for s in range(0, len(contexts), self.batch_size):
            _set_threads(self.threads)  # the load may have changed since the last batch
            chunk = [self.encode(c, first=True) for c in contexts[s:s + self.batch_size]]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, c in enumerate(chunk):  # left padding for generation
                ids[r, width - len(c):] = torch.tensor(c)
                mask[r, width - len(c):] = 1
            t0 = time.perf_counter()
            with torch.inference_mode():
                gen = model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                     max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            dt = time.perf_counter() - t0
            new_tokens = 0
            for r in range(len(chunk)):
                toks = gen[r, width:].tolist()
                if tok.eos_token_id in toks:
                    toks = toks[:toks.index(tok.eos_token_id)]
                new_tokens += len(toks)
                text = tok.decode(toks, skip_special_tokens=True)
                outs.append(cut_at_stop(text, stop))
            n_prompt = sum(len(c) for c in chunk)
            self.usage.add(requests=len(chunk), prompt=n_prompt, completion=new_tokens,
                           computed=n_prompt + new_tokens, seconds=dt)
        return outs


def _set_threads(threads: int | str) -> None:
    """Torch threads for the next batch, from the one policy (:mod:`adaptladder.threads`)."""
    from adaptladder import threads as thread_policy

    thread_policy.apply(threads)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop sequence."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
