"""Prompting rungs for generation tasks: zero-shot, few-shot, k-NN few-shot and structured (JSON).

All four send one chat prompt per input: the task's instruction (``GenSpec.instruction``, or a
default per task kind) in the user turn with the input, preceded by k (input, target) training
pairs as user/assistant turns. Decoding is greedy with a token budget taken from the training
targets (``decode.max_new_tokens_for``: 1.25 x their 95th-percentile length, capped by
``max_new_tokens_cap``) unless ``max_new_tokens`` is set.

* ``zero-shot`` -- no examples.
* ``few-shot`` -- k seeded random training pairs, the same for every input (``shot_pick=shortest``
  takes the k shortest pairs instead; the default is random, not measured against it).
* ``knn-few-shot`` -- per input, the k training pairs whose inputs are nearest by the cached
  sentence encoder (``adaptladder.encode.get_encoder``, as the classification k-NN rung), the
  nearest last; a pool row whose input equals the query is skipped (no leak on training data).
* ``structured`` -- the few-shot prompt, decoded under xgrammar's JSON-Schema constraint
  (``decode.bound_schema`` caps from the training targets so every row finishes), so every output
  is schema-valid; at fit time the same prompt is also decoded *unconstrained* on a seeded sample
  of the validation inputs, and that schema-valid rate is reported beside the constrained one.

Prompts fit the context: each shot's input (and target) is cut to ``shot_tokens`` tokens; if prompt + budget
still exceeds the window, shots are dropped (farthest/first first), and only then is the query
itself cut (counted in ``extra_info()['prompt_fitting']``).

Backends: ``backend=hf`` (alias ``local``; :class:`~adaptladder.generation.decode.Generator` on the
local causal LM ``lm``, default the packaged SmolLM2) or ``backend=openai`` (any
OpenAI-compatible server; ``lm`` is the server's model name; structured uses ``response_format``
``json_schema``). Nothing but JSON is saved: the shots / pool (+ its embeddings as ``.npy``) and
the fitted settings; the LM is referenced by its alias/path/id, so a reload generates the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.generation.rungs.base import GenRung, GenSpec
from adaptladder.models import DEFAULT_LM
from adaptladder.precision import DTYPE as PRECISION_DTYPE
from adaptladder.precision import GENERATION_CHECK_PAIRS as PRECISION_CHECK_PAIRS
from adaptladder.rungs.settings import RungSettings, SettingError, positive_int, positive_number, setting

STATE_FILE = "prompting_state.json"

DEFAULT_INSTRUCTIONS = {
    "summarisation": "Summarise the text. Answer with the summary only.",
    "rewrite": "Rewrite the text as asked. Answer with the rewritten text only.",
    "dialogue": "Reply to the message. Answer with the reply only.",
    "extraction": "Extract the information from the text. Answer with the result only.",
}

@dataclass
class GenPromptingSettings(RungSettings):
    """Settings of the four generation prompting rungs (zero-shot, few-shot, knn-few-shot, structured)."""

    run_values: ClassVar[dict[str, str]] = {"lm": "lm", "seed": "seed", "encoder": "encoder",
                                            "budget_minutes": "budget_minutes"}

    backend: Literal["hf", "local", "openai"] = setting("hf", help="hf (alias local): a local causal LM; openai: an "
                                                                   "OpenAI-compatible server")
    lm: str = setting(DEFAULT_LM, help="the LM: packaged alias, local folder or HF id; with openai: the server's "
                                       "model name (the run's --lm)")
    k: int | None = setting(None, help="examples per prompt; unset: 0 for zero-shot, 3 otherwise")
    batch_size: int = setting(8, help="prompts per batch (backend hf)")
    max_new_tokens: int | None = setting(None, help="output budget in tokens; unset: 1.25 x the 95th percentile "
                                                    "of the training targets' token lengths")
    max_new_tokens_cap: int = setting(512, help="upper limit of the derived output budget")
    shot_tokens: int = setting(256, help="tokens kept of each example's input (and target)")
    shot_pick: Literal["random", "shortest"] = setting("random", help="few-shot / structured: random (seeded) or "
                                                                      "the shortest pairs")
    max_context: int | None = setting(None, help="cap of the context window in tokens (the model's own limit "
                                                 "applies)")
    encoder: str = setting("minilm", help="knn-few-shot's sentence encoder (the run's --encoder)")
    pool_max: int = setting(5000, help="knn-few-shot: training pairs kept in the retrieval pool (seeded sample)")
    unconstrained_check: int = setting(32, help="structured: validation inputs also decoded without the "
                                                "constraint (0: off; at most a quarter of the budget)")
    seed: int | None = setting(None, help="seed of the example choice; unset: the run's --seed")
    threads: int | Literal["auto"] = setting("auto", help="torch CPU threads: auto or an integer")
    device: str = setting("auto", help="torch device: auto, cpu or cuda")
    precision: Literal["auto", "fp32", "bf16"] = setting("auto", help="LM weights (backend hf): auto (bf16 where "
                                                                      "native and faithful on validation), fp32, "
                                                                      "bf16")
    base_url: str | None = setting(None, help="OpenAI-compatible server URL (backend openai)")
    api_key_env: str | None = setting("OPENAI_API_KEY", help="environment variable holding the API key (backend "
                                                             "openai); the key itself is never stored")
    timeout: float | None = setting(None, help="seconds per request (backend openai)")
    retries: int | None = setting(None, help="retries of a failed request (backend openai)")
    concurrency: int | None = setting(None, help="requests in flight (backend openai)")
    model: str | None = setting(None, help="alias of lm (the classification rungs' name)")
    budget_minutes: float | None = setting(None, help="the rung's time budget (the run's --budget-minutes); no "
                                                      "training loop here: it sizes the evaluation")

    def check(self) -> None:
        positive_int(self, "k", minimum=0, allow_none=True)
        positive_int(self, "batch_size", "max_new_tokens_cap", "shot_tokens", "pool_max")
        positive_int(self, "max_new_tokens", allow_none=True)
        positive_int(self, "max_context", minimum=16, allow_none=True)
        positive_int(self, "unconstrained_check", minimum=0)
        positive_int(self, "retries", minimum=0, allow_none=True)
        positive_int(self, "concurrency", allow_none=True)
        positive_number(self, "timeout", "budget_minutes", allow_none=True)
        if self.threads != "auto":
            positive_int(self, "threads")
        if not self.lm and not self.model:
            raise SettingError("lm", self.lm, "an LM: a packaged alias, a folder or a model name")


#: loaded local generators by (lm, device, threads, dtype), so the prompting rungs of one run share one model
_GENERATORS: dict[tuple[str, str, str, str], Any] = {}


def local_generator(lm: str, *, batch_size: int = 8, threads: Any = "auto", device: str = "auto",
                    dtype: str = "float32") -> Any:
    """A :class:`Generator` for ``lm``, shared between rungs (the last two kept loaded)."""
    from adaptladder.generation.decode import Generator

    key = (str(lm), str(device), str(threads), str(dtype))
    if key not in _GENERATORS:
        while len(_GENERATORS) >= 2:
            _GENERATORS.pop(next(iter(_GENERATORS)))
        _GENERATORS[key] = Generator(lm, batch_size=batch_size, threads=threads, device=device, dtype=dtype)
    return _GENERATORS[key]


class _PromptGen(GenRung):
    """Shared machinery: prompt building and fitting, both backends, budgets, save/load."""

    family: ClassVar[str] = "prompting"
    default_k: ClassVar[int] = 3
    constrained: ClassVar[bool] = False
    Settings = GenPromptingSettings

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._backend: Any = None
        self.precision_ = "fp32"  # decided at fit (see _choose_precision)
        self.precision_record_: dict[str, Any] | None = None
        self._prompt_tokens = {"served": 0, "computed": 0}
        self._fitting = {"queries": 0, "shots_dropped": 0, "queries_truncated": 0}
        self.shots_: list[tuple[str, str]] = []
        self.shot_rows_: list[int] = []

    # ------------------------------------------------------------------ params
    def p(self, key: str) -> Any:
        if key == "lm" and self.settings.model is not None and "lm" not in self.params:
            return self.settings.model  # model: the classification rungs' name of lm
        v = getattr(self.settings, key)
        if key == "k" and v is None:
            return self.default_k
        if key == "seed" and v is None:
            return self.spec_.seed if self.spec_ is not None else 13
        return v

    def _settings_changed(self) -> None:
        self._backend = None

    @property
    def is_openai(self) -> bool:
        return self.p("backend") == "openai"

    @property
    def backend(self) -> Any:
        """The local :class:`Generator` (hf) or the :class:`OpenAIBackend`."""
        if self._backend is None:
            if self.is_openai:
                from adaptladder.backends.openai import OpenAIBackend

                kw: dict[str, Any] = {"model": str(self.p("lm")), "api_key_env": self.p("api_key_env"),
                                      "scoring": "generate"}
                if self.p("base_url"):
                    kw["base_url"] = self.p("base_url")
                if self.p("max_context"):
                    kw["max_context"] = int(self.p("max_context"))
                for key, arg in (("timeout", "timeout"), ("retries", "max_retries"), ("concurrency", "concurrency")):
                    if self.p(key) is not None:
                        kw[arg] = self.p(key)
                self._backend = OpenAIBackend(**kw)
            else:
                self._backend = local_generator(str(self.p("lm")), batch_size=int(self.p("batch_size")),
                                                threads=self.p("threads"), device=str(self.p("device")),
                                                dtype=PRECISION_DTYPE[self.precision_])
        return self._backend

    def count_tokens(self, text: str) -> int:
        return int(self.backend.count_tokens(text))

    def _truncate(self, text: str, max_tokens: int) -> str:
        if self.is_openai:
            return self.backend.truncate(text, max_tokens)[0]
        tok = self.backend.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else tok.decode(ids[:max(0, max_tokens)], skip_special_tokens=True)

    def context_window(self) -> int:
        if self.is_openai:
            return int(self.backend.max_context)
        model, _ = self.backend._load()
        n = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        cap = self.p("max_context")
        n = min(n, int(cap)) if cap else n
        short = getattr(self, "prompt_window_", None)  # shortened to fit a time budget (shorten_prompts)
        return min(n, int(short)) if short else n

    #: prompts are never shortened below this many tokens by the budget
    MIN_PROMPT_WINDOW: ClassVar[int] = 256

    def shorten_prompts(self, why: str) -> int | None:
        """Halve the prompt window (shots dropped first, then the input cut, as :meth:`_fit_prompt` does)
        when the ladder's timing probe finds the rung too slow for a minimal evaluation in its budget
        (``why``): no shorter than the frame + 64 tokens of input + the output budget, nor
        :attr:`MIN_PROMPT_WINDOW`. Returns the new window in tokens, or ``None`` when it cannot shrink."""
        if self.is_openai or self.spec_ is None:
            return None
        window = self.context_window()
        frame = self.count_tokens(self._render("", [])) + 64 + self._budget()
        shorter = max(window // 2, frame, self.MIN_PROMPT_WINDOW)
        if shorter >= window:
            return None
        self.prompt_window_ = shorter
        self.prompt_window_reason_ = f"{why}; prompts shortened to {shorter} tokens"
        return shorter

    # ------------------------------------------------------------------ prompts
    def instruction(self) -> str:
        spec = self.spec_
        assert spec is not None
        if spec.instruction:
            return spec.instruction
        base = DEFAULT_INSTRUCTIONS.get(spec.kind, DEFAULT_INSTRUCTIONS["rewrite"])
        if spec.schema is not None:
            base = ("Extract the information from the text as one JSON object matching this JSON Schema: "
                    f"{json.dumps(spec.schema, separators=(',', ':'))}. Answer with the JSON object only.")
        return base

    def _messages(self, text: str, shots: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        ins = self.instruction()

        def user(x: str) -> str:
            return f"{ins}\n\n{x}" if ins else x

        msgs: list[dict[str, str]] = []
        for x, y in shots:
            msgs += [{"role": "user", "content": user(x)}, {"role": "assistant", "content": y}]
        msgs.append({"role": "user", "content": user(text)})
        return msgs

    def _render(self, text: str, shots: Sequence[tuple[str, str]]) -> str:
        if self.is_openai:
            return json.dumps(self._messages(text, shots), ensure_ascii=False)
        return self.backend.build_prompt(text, self.instruction(), shots)

    def _budget(self) -> int:
        """New tokens a prompt must leave room for (a constrained call's budget is the schema's bound)."""
        n = int(self.max_new_tokens_)
        if self.constrained and not self.is_openai:
            from adaptladder.generation.decode import schema_char_bound

            bound = schema_char_bound(self.bounded_schema_)
            if bound is not None:
                n = max(n, bound + 1)
        return n

    def _shots_for(self, inputs: Sequence[str]) -> list[list[tuple[str, str]]]:
        return [list(self.shots_) for _ in inputs]

    def _fit_prompt(self, text: str, shots: list[tuple[str, str]], stats: dict[str, int]) -> str:
        """The prompt for ``text``: shots dropped (first first), then the query cut, until it fits."""
        window, need = self.context_window(), self._budget()
        stats["queries"] += 1
        shots = list(shots)
        truncated = False
        for _ in range(64):
            prompt = self._render(text, shots)
            over = self.count_tokens(prompt) + 1 + need - window  # + 1: a BOS the encoder may add
            if over <= 0:
                break
            if shots:
                shots.pop(0)
                stats["shots_dropped"] += 1
                continue
            n = self.count_tokens(text)
            if n <= over:
                raise AdaptError(f"the {self.name} prompt leaves no room for the input within the context of "
                                 f"{window} tokens ({need} reserved for the output): lower max_new_tokens or "
                                 "raise max_context.")
            text = self._truncate(text, n - over - 2)
            truncated = True
        stats["queries_truncated"] += int(truncated)
        return prompt

    def _prompt_list(self, inputs: Sequence[str], stats: dict[str, int] | None = None) -> list[str]:
        stats = stats if stats is not None else {"queries": 0, "shots_dropped": 0, "queries_truncated": 0}
        return [self._fit_prompt(x, s, stats) for x, s in zip(inputs, self._shots_for(inputs), strict=True)]

    def prompts_used(self, inputs: Sequence[str]) -> list[str]:
        """The exact prompts sent for ``inputs`` (openai: the JSON list of chat messages)."""
        self._check_fitted()
        return self._prompt_list(list(inputs))

    # ------------------------------------------------------------------ fit
    def _shot_target(self, y: str) -> str:
        """An example's target, kept whole up to ``shot_tokens`` tokens (as its input)."""
        return self._truncate(y, int(self.p("shot_tokens")))

    def _select(self, inputs: list[str], targets: list[str]) -> None:
        """Choose the shots (zero-shot: none)."""

    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> _PromptGen:
        inputs, targets = list(inputs), list(targets)
        if len(inputs) != len(targets):
            raise AdaptError(f"{len(inputs)} inputs but {len(targets)} targets: give one target per input.")
        reason = self.unavailable_reason(self.params, spec)
        if reason:
            raise AdaptError(f"the {self.name} rung cannot run: {reason}.")
        self.spec_ = spec
        from adaptladder.generation.decode import max_new_tokens_for

        fixed = self.p("max_new_tokens") or spec.max_new_tokens
        cap = int(self.p("max_new_tokens_cap"))
        self.max_new_tokens_ = int(fixed) if fixed else max_new_tokens_for(targets, self.count_tokens, cap=cap)
        self.bounded_schema_ = None
        if spec.schema is not None:
            from adaptladder.generation.decode import bound_schema, string_cap_from_targets

            self.bounded_schema_ = bound_schema(spec.schema, max_string=string_cap_from_targets(targets))
        if int(self.p("k")) > 0 and inputs:
            self._select(inputs, targets)
        self._choose_precision(list(val_inputs or []), list(val_targets or []))
        self._after_fit(list(val_inputs or []), list(val_targets or []))
        return self

    def _device(self) -> str:
        dev = str(self.p("device"))
        if dev == "auto":
            import torch

            dev = "cuda" if torch.cuda.is_available() else "cpu"
        return dev

    def _choose_precision(self, val_inputs: list[str], val_targets: list[str]) -> None:
        """fp32 or bf16 weights (:mod:`adaptladder.precision`): ``auto`` generates a seeded sample of
        validation pairs with both and keeps bf16 only where it is native and passes the rule."""
        if self.is_openai:
            self.precision_, self.precision_record_ = "fp32", {"requested": self.p("precision"), "used": "server"}
            return
        assert self.spec_ is not None
        spec = self.spec_

        def check() -> dict[str, Any]:
            from adaptladder.generation.metrics import PRIMARY_METRIC, per_example_scores
            from adaptladder.precision import generation_fidelity, sample_rows

            rows = sample_rows(len(val_inputs), PRECISION_CHECK_PAIRS, int(self.p("seed")))
            xs, refs = [val_inputs[i] for i in rows], [val_targets[i] for i in rows]
            kind = "json" if spec.schema is not None else "text"
            metric = str(spec.extra.get("metric") or ("field_f1" if kind == "json" else
                                                       PRIMARY_METRIC.get(spec.kind, "chrf")))
            saved = dict(self._fitting)
            outs: dict[str, list[str]] = {}
            for prec in ("fp32", "bf16"):
                self.precision_, self._backend = prec, None
                outs[prec] = self.generate(xs)
            self._fitting = saved
            refs_k: list[Any] = refs
            if kind == "json":
                from adaptladder.generation.metrics import parse_json

                refs_k = [parse_json(r)[1] for r in refs]
            sc = {p: per_example_scores(outs[p], refs_k, kind=kind, schema=spec.schema, metrics=[metric])[0]
                  for p in outs}
            if metric not in sc["fp32"]:
                raise AdaptError(f"metric {metric!r} is not scored for this task")
            return generation_fidelity(outs["fp32"], outs["bf16"], sc["fp32"][metric], sc["bf16"][metric],
                                       metric, seed=int(self.p("seed")))

        from adaptladder.precision import decide

        rec = decide(str(self.p("precision")), self._device(), check if val_inputs else None)
        self.precision_, self._backend, self.precision_record_ = rec["used"], None, rec

    def _after_fit(self, val_inputs: list[str], val_targets: list[str]) -> None:
        pass

    # ------------------------------------------------------------------ generate
    def _decode(self, prompts: list[str], schema: dict[str, Any] | None,
                conversations: list[list[dict[str, str]]] | None = None) -> dict[str, Any]:
        """Texts and token/time accounting of one batch of prompts, either backend."""
        if self.is_openai:
            assert conversations is not None
            t0 = time.perf_counter()
            rows = self.backend.chat_generate(conversations, max_tokens=int(self.max_new_tokens_), schema=schema)
            return {"texts": [r["text"].strip() for r in rows], "new_tokens": [r["completion_tokens"] for r in rows],
                    "prompt_tokens": [r["prompt_tokens"] for r in rows],
                    "truncated": [r.get("finish_reason") == "length" for r in rows],
                    "seconds": time.perf_counter() - t0}
        out = self.backend.generate(prompts, max_new_tokens=int(self.max_new_tokens_), schema=schema,
                                    batch_size=int(self.p("batch_size")))
        return {"texts": out.texts, "new_tokens": out.new_tokens, "prompt_tokens": out.prompt_tokens,
                "truncated": out.truncated, "seconds": out.seconds, "prefix_cache": out.settings.get("prefix_cache")}

    def _generate(self, inputs: list[str], schema: dict[str, Any] | None) -> list[str]:
        stats = self._fitting
        prompts = self._prompt_list(inputs, stats)
        convs = [json.loads(p) for p in prompts] if self.is_openai else None
        r = self._decode(prompts, schema, convs)
        self.last_usage = {"new_tokens": int(sum(r["new_tokens"])), "prompt_tokens": int(sum(r["prompt_tokens"])),
                           "seconds": float(r["seconds"]), "requests": len(inputs),
                           "new_tokens_per_example": [int(n) for n in r["new_tokens"]],
                           "hit_max_new_tokens": int(sum(bool(t) for t in r["truncated"]))}
        pc = r.get("prefix_cache")
        if pc:  # prompt tokens the shared-prefix cache saved computing, over this rung's calls
            self._prompt_tokens["served"] += int(pc["prompt_tokens_served"])
            self._prompt_tokens["computed"] += int(pc["prompt_tokens_computed"])
        return list(r["texts"])

    def generate(self, inputs: Sequence[str]) -> list[str]:
        self._check_fitted()
        inputs = list(inputs)
        if not inputs:
            self.last_usage = {"new_tokens": 0, "prompt_tokens": 0, "seconds": 0.0, "requests": 0,
                               "new_tokens_per_example": [], "hit_max_new_tokens": 0}
            return []
        return self._generate(inputs, self._schema() if self.constrained else None)

    def _schema(self) -> dict[str, Any] | None:
        """The schema a constrained call sends: the capped copy locally, the task's own to a server."""
        assert self.spec_ is not None
        return self.spec_.schema if self.is_openai else self.bounded_schema_

    # ------------------------------------------------------------------ reporting
    def decoding(self) -> dict[str, Any]:
        """The decoding settings (the record's ``decoding``)."""
        if self.is_openai:
            return {"decoding": "greedy (temperature 0)", "max_new_tokens": int(self.max_new_tokens_),
                    "batch_size": 1, "constrained": "response_format json_schema" if self.constrained else None,
                    "chat_template": True}
        tok = self.backend.tokenizer
        return {"decoding": "greedy", "max_new_tokens": self._budget(), "batch_size": int(self.p("batch_size")),
                "constrained": "xgrammar" if self.constrained else None,
                "chat_template": bool(getattr(tok, "chat_template", None)), "kv_cache": True}

    def extra_info(self) -> dict[str, Any]:
        if self.spec_ is None:
            return {}
        info: dict[str, Any] = {
            "decoding": self.decoding(),
            "max_new_tokens_source": ("set" if (self.p("max_new_tokens") or self.spec_.max_new_tokens) else
                                      "1.25 x the 95th percentile of the training targets' token lengths + 2, "
                                      f"capped at {self.p('max_new_tokens_cap')}"),
            "backend": ({"backend": "openai", "model": str(self.p("lm")), "base_url": self.backend.base_url,
                         "api_key_env": self.backend.api_key_env} if self.is_openai else
                        {"backend": "hf", "lm": str(self.p("lm")), "device": getattr(self.backend.backend, "device",
                                                                                      None)}),
            "k": int(self.p("k")), "instruction": self.instruction(),
            "context_window": self.context_window(), "shot_tokens": int(self.p("shot_tokens")),
            "prompt_fitting": dict(self._fitting),
            "prompt_window_tokens": getattr(self, "prompt_window_", None),
            "prompt_window_reason": getattr(self, "prompt_window_reason_", None),
            "precision": self.precision_record_ or {"used": self.precision_},
        }
        if self._prompt_tokens["served"]:
            info["prompt_tokens"] = dict(self._prompt_tokens, note="computed < served: the prompts' shared prefix "
                                                                   "(instruction, examples) was run once per call")
        info.update(self._shot_info())
        if self.is_openai:
            from adaptladder.pricing import api_price

            price = api_price(str(self.p("lm")))
            u = self.backend.usage
            if price is not None and u.requests:
                info["cost_per_1k_usd"] = round((u.prompt_tokens * price["input"] + u.completion_tokens
                                                 * price["output"]) / 1e6 / u.requests * 1000, 6)
        return info

    def _shot_info(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ save / load
    def _state(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens_, "bounded_schema": self.bounded_schema_,
                "shots": [list(s) for s in self.shots_], "shot_rows": self.shot_rows_,
                "prompt_fitting": self._fitting, "precision": self.precision_,
                "prompt_window": getattr(self, "prompt_window_", None),
                "precision_record": self.precision_record_}

    def _save(self, path: Path) -> None:
        self._check_fitted()
        (path / STATE_FILE).write_text(json.dumps(self._state(), indent=2, ensure_ascii=False))

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> _PromptGen:
        rung = cls(**meta.get("params", {}))
        rung.spec_ = GenSpec(**meta["spec"]) if meta.get("spec") else None
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        rung.max_new_tokens_ = int(state["max_new_tokens"])
        rung.bounded_schema_ = state.get("bounded_schema")
        rung.shots_ = [(str(x), str(y)) for x, y in state.get("shots", [])]
        rung.shot_rows_ = [int(i) for i in state.get("shot_rows", [])]
        precision = state.get("precision", "fp32")  # runs saved before bf16 existed: fp32
        if precision not in PRECISION_DTYPE:
            raise AdaptError(f"{path / STATE_FILE}: precision {precision!r} is not one of fp32, bf16; re-run the "
                             "ladder for this rung.")
        rung.precision_ = precision
        window = state.get("prompt_window")
        rung.prompt_window_ = int(window) if isinstance(window, int) and window > 0 else None
        rung.precision_record_ = state.get("precision_record") if isinstance(state.get("precision_record"),
                                                                             dict) else None
        # the counts of shots dropped / queries cut so far (reported in extra_info), as saved
        rung._fitting.update({k: int(v) for k, v in (state.get("prompt_fitting") or {}).items()
                              if k in rung._fitting})
        rung._load_state(path, state)
        return rung

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        pass


class ZeroShotGen(_PromptGen):
    """The instruction and the input, nothing else."""

    name = "zero-shot"
    cost_rank = 10
    description = "local LM (or API) prompted with the instruction only; greedy decoding"
    default_k = 0

    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> _PromptGen:
        if int(self.p("k")) != 0:
            raise AdaptError(f"zero-shot uses no examples: k={self.p('k')} is not valid (use few-shot).")
        return super().fit(inputs, targets, spec=spec, val_inputs=val_inputs, val_targets=val_targets)


class FewShotGen(_PromptGen):
    """k training pairs (seeded random, or the shortest) as user/assistant turns before every input."""

    name = "few-shot"
    cost_rank = 20
    description = "local LM (or API) prompted with k training pairs as chat turns; greedy decoding"

    def _select(self, inputs: list[str], targets: list[str]) -> None:
        k = min(int(self.p("k")), len(inputs))
        if self.p("shot_pick") == "shortest":
            order = sorted(range(len(inputs)), key=lambda i: (len(inputs[i]) + len(targets[i]), i))
            rows = order[:k][::-1]  # the shortest last, next to the query
        else:
            rng = np.random.default_rng(int(self.p("seed")))
            rows = [int(i) for i in rng.choice(len(inputs), size=k, replace=False)]
        limit = int(self.p("shot_tokens"))
        self.shot_rows_ = rows
        self.shots_ = [(self._truncate(inputs[i], limit), self._shot_target(targets[i])) for i in rows]

    def _shot_info(self) -> dict[str, Any]:
        return {"shots": len(self.shots_), "shot_train_rows": self.shot_rows_,
                "shot_pick": (f"seeded random (seed {self.p('seed')}; not compared with shortest-first on "
                              "validation)" if self.p("shot_pick") == "random" else "the k shortest pairs")}


class KnnFewShotGen(_PromptGen):
    """Per input, the k training pairs with the nearest inputs (encoder cosine), nearest last."""

    name = "knn-few-shot"
    cost_rank = 30
    description = "local LM (or API) prompted with the k nearest training pairs (by embedding) as chat turns"

    def _encoder(self) -> Any:
        from adaptladder.encode import get_encoder

        return get_encoder(str(self.p("encoder")))

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings (cached by the encoder), keeping the LM's torch thread count: the encoder sets
        one thread per core, and oversubscribed threads spin on a loaded machine (see HFBackend)."""
        import torch

        threads = torch.get_num_threads()
        try:
            return np.asarray(self._encoder().encode(texts), dtype=np.float32)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    def _select(self, inputs: list[str], targets: list[str]) -> None:
        rows = np.arange(len(inputs))
        cap = int(self.p("pool_max"))
        if len(rows) > cap:
            rows = np.sort(np.random.default_rng(int(self.p("seed"))).choice(rows, cap, replace=False))
        self.pool_rows_ = [int(i) for i in rows]
        self.pool_inputs_ = [inputs[i] for i in rows]
        self.pool_targets_ = [targets[i] for i in rows]
        self.pool_emb_ = self._encode(self.pool_inputs_)

    def neighbours(self, inputs: Sequence[str]) -> list[list[int]]:
        """Pool positions of the k nearest pairs per input, nearest last (identical inputs skipped)."""
        k = int(self.p("k"))
        if k == 0 or not inputs or not getattr(self, "pool_inputs_", None):
            return [[] for _ in inputs]
        q = self._encode(list(inputs))
        sims = q @ self.pool_emb_.T
        out = []
        for i, text in enumerate(inputs):
            m = min(k + 3, sims.shape[1])
            cand = np.argpartition(-sims[i], m - 1)[:m]
            cand = cand[np.lexsort((cand, -sims[i, cand]))]  # by similarity, ties by row: deterministic
            rows = [int(j) for j in cand if self.pool_inputs_[j] != text][:k]
            out.append(rows[::-1])
        return out

    def _shots_for(self, inputs: Sequence[str]) -> list[list[tuple[str, str]]]:
        limit = int(self.p("shot_tokens"))
        memo: dict[int, tuple[str, str]] = {}

        def shot(j: int) -> tuple[str, str]:
            if j not in memo:
                memo[j] = (self._truncate(self.pool_inputs_[j], limit), self._shot_target(self.pool_targets_[j]))
            return memo[j]

        return [[shot(j) for j in rows] for rows in self.neighbours(inputs)]

    def _shot_info(self) -> dict[str, Any]:
        enc = self._encoder()
        return {"pool_size": len(getattr(self, "pool_inputs_", [])), "pool_max": int(self.p("pool_max")),
                "encoder": enc.info() if hasattr(enc, "info") else str(self.p("encoder"))}

    def _save(self, path: Path) -> None:
        super()._save(path)
        (path / "pool.json").write_text(json.dumps({"rows": getattr(self, "pool_rows_", []),
                                                    "inputs": getattr(self, "pool_inputs_", []),
                                                    "targets": getattr(self, "pool_targets_", [])},
                                                   ensure_ascii=False))
        np.save(path / "pool_embeddings.npy", getattr(self, "pool_emb_", np.zeros((0, 1), dtype=np.float32)),
                allow_pickle=False)

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        pool = json.loads((path / "pool.json").read_text(encoding="utf-8"))
        self.pool_rows_ = [int(i) for i in pool["rows"]]
        self.pool_inputs_ = list(pool["inputs"])
        self.pool_targets_ = list(pool["targets"])
        self.pool_emb_ = np.load(path / "pool_embeddings.npy", allow_pickle=False)


class StructuredGen(FewShotGen):
    """The few-shot prompt decoded under the task's JSON Schema (xgrammar; openai: response_format)."""

    name = "structured"
    family = "structured"
    cost_rank = 35
    description = "few-shot prompt with JSON-Schema-constrained decoding (always schema-valid JSON)"
    needs_schema = True
    constrained = True

    def _after_fit(self, val_inputs: list[str], val_targets: list[str]) -> None:
        """The same prompt unconstrained on a seeded sample of the validation inputs (for the report)."""
        self.unconstrained_: dict[str, Any] | None = None
        n = min(int(self.p("unconstrained_check")), len(val_inputs))
        if n == 0:
            return
        from adaptladder.generation.metrics import parse_json, schema_validator

        rows = sorted(np.random.default_rng(int(self.p("seed"))).choice(len(val_inputs), n, replace=False).tolist())
        # at most a quarter of the rung's budget (its own budget_minutes, else the run's), batch by batch
        minutes = self.p("budget_minutes") or (self.spec_.extra or {}).get("budget_minutes")
        limit = float(minutes) * 60 * 0.25 if minutes else None
        saved = self._fitting
        self._fitting = {"queries": 0, "shots_dropped": 0, "queries_truncated": 0}  # not the rung's own calls
        texts: list[str] = []
        tokens, seconds, t0 = 0, 0.0, time.perf_counter()
        step = int(self.p("batch_size"))
        try:
            for s in range(0, len(rows), step):
                if limit is not None and s and time.perf_counter() - t0 > limit:
                    break
                texts += self._generate([val_inputs[i] for i in rows[s:s + step]], None)
                tokens += self.last_usage["new_tokens"]
                seconds += self.last_usage["seconds"]
        finally:
            self._fitting = saved
        rows = rows[:len(texts)]
        validator = schema_validator(self.spec_.schema)
        parsed = [parse_json(t) for t in texts]
        self.unconstrained_ = {
            "n": len(texts), "validation_rows": rows, "stopped_by_budget": len(texts) < n,
            "json_parse": float(np.mean([ok for ok, _ in parsed])),
            "schema_valid": float(np.mean([ok and validator.is_valid(v) for ok, v in parsed])),
            "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None,
            "outputs": texts[:3],
        }
        self.last_usage = {}

    def extra_info(self) -> dict[str, Any]:
        info = super().extra_info()
        if not info:
            return info
        u = getattr(self, "unconstrained_", None)
        info["unconstrained_schema_valid"] = None if u is None else u["schema_valid"]
        info["unconstrained"] = u
        info["bounded_schema"] = self.bounded_schema_
        if self.is_openai:
            info["constraint"] = {"library": "server response_format json_schema (strict)"}
        else:
            from importlib.metadata import PackageNotFoundError, version

            try:
                v = version("xgrammar")
            except PackageNotFoundError:
                v = None
            info["constraint"] = {"library": "xgrammar", "version": v}
        return info

    def _state(self) -> dict[str, Any]:
        return dict(super()._state(), unconstrained=getattr(self, "unconstrained_", None))

    def _load_state(self, path: Path, state: dict[str, Any]) -> None:
        self.unconstrained_ = state.get("unconstrained")
