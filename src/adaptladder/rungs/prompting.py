"""Prompting rungs: zero-shot, few-shot and retrieval-augmented (k-nearest) few-shot.

A language model classifies by *comparing the log-likelihood of each label's verbalization*
after the prompt (length-normalised), never by parsing free text: a small model asked to
generate an answer mostly repeats one label, while its label likelihoods still rank well.
Optional contextual calibration (Zhao et al. 2021) divides the label probabilities by those
the model gives to content-free inputs ("N/A", "", "[MASK]"); with validation data the rung
measures both and keeps the better one. The same validation pass chooses the answer words
(verbalizer): the label names, or plainer words the model uses more naturally ("normal" for
"ham"); predictions are always the data's labels.

``fit`` only chooses examples (and calibration); nothing is trained. The user-message template
(Jinja2) and the exact system prompt are saved next to the rung (``prompt_template.j2``,
``system_prompt.txt``) so that production prompts are the evaluated prompts.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from adaptladder.backends.base import parse_label  # noqa: F401  (re-exported: it lived here)
from adaptladder.errors import AdaptError, BudgetExceeded
from adaptladder.precision import DTYPE as PRECISION_DTYPE
from adaptladder.rungs.base import Rung, check_inputs
from adaptladder.rungs.settings import RungSettings, SettingError, positive_int, positive_number, setting

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_TEMPLATE = """\
You are a text classifier. Read the text and answer with exactly one label from this list: \
{{ labels | map(attribute="name") | join(", ") }}.
{%- if labels | selectattr("description") | list %}

The labels mean:
{%- for l in labels %}
- {{ l.name }}{% if l.description %}: {{ l.description }}{% endif %}
{%- endfor %}
{%- endif %}

Answer with the label only."""

DEFAULT_TEMPLATE = """\
{% for ex in shots -%}
Text: {{ ex.text }}
Label: {{ ex.label }}

{% endfor -%}
Text: {{ text }}
Label:"""

#: Content-free inputs for contextual calibration (Zhao et al. 2021).
CONTENT_FREE = ("N/A", "", "[MASK]")

#: Well-known label sets whose names are abbreviations; used only when the user gives no descriptions.
KNOWN_LABEL_DESCRIPTIONS: dict[frozenset[str], dict[str, str]] = {
    frozenset({"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}): {  # TREC question classification, coarse classes
        "ABBR": "the question asks for an abbreviation or what an abbreviation stands for",
        "DESC": "the question asks for a description, definition, manner or reason",
        "ENTY": "the question asks for an entity: a thing, animal, color, food, product, event, term, ...",
        "HUM": "the question asks for a person, group or organization",
        "LOC": "the question asks for a place: city, country, mountain, state, ...",
        "NUM": "the question asks for a number: count, date, distance, money, percentage, ...",
    },
}

#: Alternative answer words for well-known label sets whose names a small LM rarely uses as
#: answers ("ham" for a normal message). With validation data a rung measures these against the
#: label names themselves and keeps the better (``verbalizer: auto``); never used unmeasured.
KNOWN_VERBALIZERS: dict[frozenset[str], dict[str, str]] = {
    frozenset({"ham", "spam"}): {"ham": "normal", "spam": "spam"},
    frozenset({"fresh", "rotten"}): {"fresh": "positive", "rotten": "negative"},
    frozenset({"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}): {
        "ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "person", "LOC": "location",
        "NUM": "number"},
}

_SENT_A, _SENT_B = "\x00A\x00", "\x00B\x00"


def _jinja_env() -> Any:
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


def _read_param_text(value: str | None, what: str) -> str | None:
    """A param that is either inline text or a path to a file holding it."""
    if value is None:
        return None
    p = Path(str(value)).expanduser()
    if len(str(value)) < 4096 and "\n" not in str(value) and p.suffix in (".j2", ".jinja", ".txt", ".md"):
        if not p.is_file():
            raise AdaptError(f"{what} file {p} not found; pass an existing file or the text itself.")
        return p.read_text()
    return str(value)


@dataclass
class PromptingSettings(RungSettings):
    """Settings of the three prompting rungs (zero-shot, few-shot, knn-few-shot)."""

    run_values: ClassVar[dict[str, str]] = {"encoder": "encoder", "seed": "seed", "lm": "model",
                                            "budget_minutes": "budget_minutes"}

    backend: Literal["hf", "openai"] = setting("hf", help="hf: a local Hugging Face causal LM; openai: an "
                                                          "OpenAI-compatible server")
    model: str = setting("smollm2", help="the LM: packaged alias (smollm2), local folder, or the server's model "
                                         "name (the run's --lm)")
    base_url: str | None = setting(None, help="OpenAI-compatible server URL (backend openai)")
    api_key_env: str | None = setting("OPENAI_API_KEY", help="environment variable holding the API key "
                                                             "(backend openai); the key itself is never stored")
    k: int | None = setting(None, help="examples per class in the prompt (few-shot; knn-few-shot: nearest "
                                       "examples); unset: 0 for zero-shot, 4 otherwise")
    seed: int = setting(0, help="seed of the example choice and the validation subsets (the run's --seed)")
    calibrate: bool | Literal["auto"] = setting("auto", help="contextual calibration: true, false, or auto "
                                                             "(measured on validation, the better kept)")
    label_descriptions: dict[Any, Any] | str | None = setting(None, help="label -> description, or a JSON/YAML "
                                                                        "file holding one (shown in the prompt)")
    template: str | None = setting(None, help="Jinja2 user-message template (text or a .j2 file); unset: the "
                                              "built-in one")
    system_prompt: str | None = setting(None, help="system prompt (text or a .txt file); unset: the built-in one")
    max_context: int = setting(2048, help="context window cap in tokens (the model's own limit applies too)")
    shot_max_tokens: int = setting(128, help="tokens kept of each example text in the prompt")
    min_query_tokens: int = setting(128, help="tokens always left for the text being classified")
    batch_size: int = setting(8, help="prompts scored per forward pass (backend hf)")
    prefix_cache: bool = setting(True, help="reuse the shared prompt prefix's key/value cache (backend hf)")
    scoring: str = setting("auto", help="label scoring on an OpenAI-compatible server: auto, echo, logprobs, "
                                        "generate")
    calibration_val_max: int = setting(180, help="validation examples the prompt choices are decided on")
    choice_screen: int = setting(60, help="validation examples each candidate is first screened on")
    encoder: str = setting("minilm", help="sentence encoder of knn-few-shot's retrieval (the run's --encoder)")
    device: str = setting("auto", help="torch device of the hf backend: auto, cpu, cuda, mps")
    precision: Literal["auto", "fp32", "bf16"] = setting("auto", help="LM weights (backend hf): auto = bf16 where "
                                                                      "the CPU/GPU computes it natively and >= 99% "
                                                                      "of validation label choices match fp32's")
    threads: int | Literal["auto"] = setting("auto", help="torch CPU threads (backend hf): auto or an integer")
    prompt_format: Literal["auto", "chat", "plain"] = setting("auto", help="chat template or plain text; auto: "
                                                                            "measured on validation")
    verbalizer: Any = setting("auto", help="answer words: auto, names, a mapping label -> word, a JSON/YAML "
                                           "file, or a list of these (chosen on validation)")
    budget_minutes: float | None = setting(None, help="wall-time budget of the fit's prompt choice and the evaluation "
                                                      "(the run's --budget-minutes); unset: no budget")
    timeout: float | None = setting(None, help="seconds before a request to the server times out (backend "
                                               "openai); unset: the backend's default")
    retries: int | None = setting(None, help="retries of a failed or timed-out request (backend openai); unset: "
                                             "the backend's default")
    concurrency: int | None = setting(None, help="requests in flight at once (backend openai); unset: the "
                                                 "backend's default")

    def check(self) -> None:
        positive_int(self, "k", minimum=0, allow_none=True)
        positive_int(self, "max_context", minimum=16)
        positive_int(self, "shot_max_tokens", "min_query_tokens", "batch_size", "calibration_val_max",
                     "choice_screen")
        if self.threads != "auto":
            positive_int(self, "threads")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise SettingError("precision", self.precision, "auto, fp32 or bf16")
        if self.scoring not in ("auto", "echo", "logprobs", "generate"):
            raise SettingError("scoring", self.scoring, "auto, echo, logprobs or generate")
        positive_number(self, "timeout", "budget_minutes", allow_none=True)
        positive_int(self, "retries", minimum=0, allow_none=True)
        positive_int(self, "concurrency", allow_none=True)
        if not self.model:
            raise SettingError("model", self.model, "an LM alias, a local folder or a model name")


class _PromptingRung(Rung):
    """Shared machinery of the three prompting rungs; subclasses choose the shots."""

    family: ClassVar[str] = "prompting"
    eval_cap: ClassVar[int | None] = 300
    uses_shots: ClassVar[bool] = True
    default_k: ClassVar[int] = 0

    Settings = PromptingSettings
    settings: PromptingSettings

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._backend: Any = None
        self._memo: dict[str, np.ndarray] = {}
        self._trunc = {"queries_seen": 0, "queries_truncated": 0}
        self.precision_ = "fp32"  # decided at fit (see _choose_precision)
        self.precision_record_: dict[str, Any] | None = None

    def _settings_changed(self) -> None:
        self._backend = None
        self._memo = {}

    # ------------------------------------------------------------------ params
    def _p(self, key: str) -> Any:
        shape = getattr(self, "shot_shape_", None)  # (k, tokens per shot) chosen on validation (see fit)
        if shape and key in shape:
            return shape[key]
        v = getattr(self.settings, key)
        if key == "k" and v is None:
            return self.default_k
        return v

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from adaptladder.backends.base import get_backend

            kind = self._p("backend")
            if kind == "hf":
                self._backend = get_backend("hf", model=self._p("model"), device=self._p("device"),
                                            batch_size=int(self._p("batch_size")),
                                            prefix_cache=bool(self._p("prefix_cache")),
                                            max_context=int(self._p("max_context")), threads=self._p("threads"),
                                            dtype=PRECISION_DTYPE[self.precision_])
            elif kind == "openai":
                kwargs: dict[str, Any] = {"model": self._p("model"), "api_key_env": self._p("api_key_env"),
                                          "scoring": self._p("scoring"), "max_context": int(self._p("max_context"))}
                if self._p("base_url"):
                    kwargs["base_url"] = self._p("base_url")
                # request robustness: only what the user set (the backend's own defaults otherwise)
                for key, arg in (("timeout", "timeout"), ("retries", "max_retries"), ("concurrency", "concurrency")):
                    if self._p(key) is not None:
                        kwargs[arg] = self._p(key)
                self._backend = get_backend("openai", **kwargs)
            else:
                self._backend = get_backend(str(kind))
        return self._backend

    def _context_window(self) -> int:
        window = min(int(self._p("max_context")), int(self.backend.max_context))
        cap = getattr(self, "prompt_window_", None)  # shortened to fit a time budget (see fit)
        return min(window, int(cap)) if cap else window

    # ------------------------------------------------------------------ prompt pieces
    def _setup_prompt(self, label_names: Sequence[str]) -> None:
        """Label descriptions, system prompt and template (fit and load share this)."""
        descs = self._p("label_descriptions")
        if isinstance(descs, str):
            p = Path(descs)
            if not p.is_file():
                raise AdaptError(f"label_descriptions file {p} not found; pass a mapping label -> description "
                                 "or a JSON/YAML file holding one.")
            import yaml

            descs = yaml.safe_load(p.read_text())
        source = "user" if descs else None
        if not descs:
            descs = KNOWN_LABEL_DESCRIPTIONS.get(frozenset(label_names), {})
            source = "built-in (well-known label set)" if descs else None
        if not isinstance(descs, dict):
            raise AdaptError("label_descriptions must map label names to descriptions, e.g. {spam: unwanted ads}.")
        extra = sorted(set(map(str, descs)) - set(label_names))
        if extra:
            raise AdaptError(f"label_descriptions names unknown label(s) {', '.join(extra)}; "
                             f"the labels are {', '.join(label_names)}.")
        self.label_descriptions_ = {str(k): str(v) for k, v in descs.items()}
        self.descriptions_source_ = source
        if not hasattr(self, "template_text_"):
            self.template_text_ = _read_param_text(self._p("template"), "template") or DEFAULT_TEMPLATE
        if "text" not in self.template_text_:
            raise AdaptError("the prompt template never uses {{ text }}: put {{ text }} where the example goes.")
        try:
            self._tmpl = _jinja_env().from_string(self.template_text_)
        except Exception as e:
            raise AdaptError(f"the prompt template is not valid Jinja2 ({e}); fix the template file.") from e
        if hasattr(self, "system_prompt_"):  # loaded: the saved prompt is the evaluated prompt
            self._use_verbalizer(self.verbalizer_, render=False)
        else:  # fitting: rendered per answer-word candidate (:meth:`_use_verbalizer`)
            given = _read_param_text(self._p("system_prompt"), "system_prompt")
            self._system_source = given if given is not None else DEFAULT_SYSTEM_TEMPLATE

    # ------------------------------------------------------------------ verbalizers
    def _verbalizer_candidates(self) -> list[tuple[str, dict[str, str]]]:
        """``(source, label -> answer word)`` pairs to choose from on validation, the first the
        default without validation data: ``auto`` = the label names, plus a built-in alternative
        for a well-known label set; ``names``; a mapping (labels it omits answer with their
        name); a JSON/YAML file holding one; or a list of these."""
        names = list(self.label_names_)
        spec = self._p("verbalizer")
        if isinstance(spec, str) and spec not in ("auto", "names"):
            p = Path(spec).expanduser()
            if not p.is_file():
                raise AdaptError(f"verbalizer must be auto, names, a mapping label -> answer word, or a JSON/YAML "
                                 f"file holding one; {spec!r} is none of these.")
            import yaml

            try:
                spec = yaml.safe_load(p.read_text())
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise AdaptError(f"verbalizer file {p} is not valid JSON/YAML ({type(e).__name__}); fix it.") from e
        items = spec if isinstance(spec, list) else [spec]
        out: list[tuple[str, dict[str, str]]] = []
        for item in items:
            if item == "auto":
                out.append(("label names", {n: n for n in names}))
                known = KNOWN_VERBALIZERS.get(frozenset(names))
                if known:
                    out.append(("built-in (well-known label set)", dict(known)))
            elif item == "names":
                out.append(("label names", {n: n for n in names}))
            elif isinstance(item, dict):
                given = {str(k): ("" if v is None else str(v).strip()) for k, v in item.items()}
                extra = sorted(set(given) - set(names))
                if extra:
                    raise AdaptError(f"verbalizer names unknown label(s) {', '.join(extra)}; "
                                     f"the labels are {', '.join(names)}.")
                out.append(("user", {n: given.get(n, n) for n in names}))
            else:
                raise AdaptError(f"verbalizer entries must be auto, names or a mapping label -> answer word, "
                                 f"got {item!r}.")
        if not out:
            raise AdaptError("verbalizer is an empty list; give auto, names, or mappings label -> answer word.")
        for _, words in out:
            bad = [n for n, w in words.items() if not w]
            if bad:
                raise AdaptError(f"verbalizer gives label {bad[0]!r} an empty answer word; give it a word.")
            if len(set(words.values())) < len(words):
                raise AdaptError(f"verbalizer gives two labels the same answer word ({words}); the words must differ.")
        seen: set[tuple[str, ...]] = set()
        uniq = []
        for src, words in out:
            key = tuple(words[n] for n in names)
            if key not in seen:
                seen.add(key)
                uniq.append((src, words))
        return uniq

    def _use_verbalizer(self, words: dict[str, str], source: str | None = None, render: bool = True) -> None:
        """Answer with ``words`` (label name -> answer word): in the label list the prompt shows,
        in the demonstrations and as the scored continuations."""
        self.verbalizer_ = {n: str(words.get(n, n)) for n in self.label_names_}
        if source is not None:
            self.verbalizer_source_ = source
        self.verbal_ = [self.verbalizer_[n] for n in self.label_names_]
        self.labels_ctx_ = [{"name": self.verbalizer_[n], "description": self.label_descriptions_.get(n, "")}
                            for n in self.label_names_]
        if render:
            self.system_prompt_ = self._render(self._system_source, text="", shots=[]).strip()

    def _render(self, template: str, **kw: Any) -> str:
        try:
            return _jinja_env().from_string(template).render(labels=self.labels_ctx_, **kw)
        except Exception as e:
            raise AdaptError(f"rendering the prompt template failed ({type(e).__name__}: {e}); "
                             "it may use the variables labels, shots (text, label) and text.") from e

    def _user(self, text: str, shots: list[dict[str, str]]) -> str:
        v = self.verbalizer_
        shots = [dict(s, label=v.get(s["label"], s["label"])) for s in shots]
        try:
            return self._tmpl.render(labels=self.labels_ctx_, shots=shots, text=text)
        except Exception as e:
            raise AdaptError(f"rendering the prompt template failed ({type(e).__name__}: {e}); "
                             "it may use the variables labels, shots (text, label) and text.") from e

    def _label_budget(self) -> int:
        return max(self.backend.count_tokens(" " + n) for n in self.verbal_) + 2

    # ------------------------------------------------------------------ fit
    def fit(self, texts: Sequence[str], y: np.ndarray, *, label_names: Sequence[str],
            val_texts: Sequence[str] | None = None, val_y: np.ndarray | None = None) -> _PromptingRung:
        texts, y = check_inputs(texts, y)
        assert y is not None
        if len(label_names) < 2:
            raise AdaptError("prompting needs at least two labels.")
        k = int(self._p("k"))
        if k < 0:
            raise AdaptError(f"k must be >= 0, got {k}.")
        self.label_names_ = [str(n) for n in label_names]
        self._fit_t0 = self._clock()
        self.prompt_window_ = None
        for attr in ("template_text_", "system_prompt_"):
            if hasattr(self, attr):
                delattr(self, attr)
        self._setup_prompt(self.label_names_)
        verbs = self._verbalizer_candidates()
        self._use_verbalizer(verbs[0][1], verbs[0][0])  # the default until validation chooses
        self._memo = {}
        self.shot_shape_ = None
        self.shot_choice_: dict[str, Any] | None = None
        self._select(texts, y)
        self._choose_precision(val_texts)
        self._choose_prompt(val_texts, val_y, verbs)
        self._choose_shot_shape(texts, y, val_texts, val_y)
        return self

    def _choose_precision(self, val_texts: Sequence[str] | None) -> None:
        """fp32 or bf16 LM weights (:mod:`adaptladder.precision`), decided before the prompt choice so
        that the choice runs at the chosen precision: ``auto`` scores a seeded sample of validation
        texts with the default prompt at both and keeps bf16 where native and >= 99% of the label
        choices are fp32's."""
        if self._p("backend") != "hf":
            self.precision_, self.precision_record_ = "fp32", {"requested": self._p("precision"), "used": "server"}
            return
        from adaptladder.precision import CHOICE_CHECK_TEXTS, choice_fidelity, decide, sample_rows

        vt = [str(t) for t in (val_texts or [])]

        def check() -> dict[str, Any]:
            rows = sample_rows(len(vt), CHOICE_CHECK_TEXTS, int(self._p("seed")))
            sample = [vt[i] for i in rows]
            trunc = dict(self._trunc)
            choices = {}
            for prec in ("fp32", "bf16"):
                self.precision_, self._backend, self._memo = prec, None, {}
                choices[prec] = self._raw_scores(sample).argmax(1)
            self._trunc = trunc
            return choice_fidelity(choices["fp32"], choices["bf16"])

        dev = str(self._p("device"))
        if dev == "auto":
            import torch

            dev = "cuda" if torch.cuda.is_available() else "cpu"
        rec = decide(str(self._p("precision")), dev, check if vt else None)
        self.precision_, self._backend, self._memo, self.precision_record_ = rec["used"], None, {}, rec

    # ------------------------------------------------------------------ (k, tokens per shot)
    #: Validation examples the (k, tokens per shot) candidates are compared on (at most).
    SHAPE_CHOICE_N: ClassVar[int] = 60

    def _shape_candidates(self) -> list[dict[str, int]]:
        """(k, tokens per shot) pairs to compare on validation, the configured one first: k and
        half of it (at least 1), times ``shot_max_tokens`` and half of it (at least 32); a value
        the user set explicitly (``--set RUNG.k=...`` / ``shot_max_tokens``) is kept fixed."""
        if not self.uses_shots or self.default_k == 0:
            return []
        k0, t0 = int(self._p("k")), int(self._p("shot_max_tokens"))
        if k0 == 0:
            return []
        ks = [k0] if "k" in self.params else list(dict.fromkeys([k0, max(1, k0 // 2)]))
        ts = [t0] if "shot_max_tokens" in self.params else list(dict.fromkeys([t0, max(32, t0 // 2)]))
        return [{"k": k, "shot_max_tokens": t} for k in ks for t in ts]

    def _choose_shot_shape(self, texts: list[str], y: np.ndarray, val_texts: Sequence[str] | None,
                           val_y: np.ndarray | None) -> None:
        """Choose (k, tokens per shot) on validation macro-F1, with the prompt already chosen.

        Every candidate is scored on the same stratified validation subset (at most
        :data:`SHAPE_CHOICE_N`; with a time budget, as many candidates as the fit's share of it
        affords, from the per-text cost the prompt choice measured); ties go to the shorter prompt
        (fewer shot tokens: faster predictions). The record is ``shot_choice_`` (the report shows it)."""
        cands = self._shape_candidates()
        no_room = str(self.calibration_scores_.get("reason", "")).startswith("defaults: the time budget")
        if len(cands) < 2 or val_texts is None or val_y is None or not len(val_texts) or no_room:
            return
        from sklearn.metrics import f1_score

        from adaptladder.task import stratified_subset

        vt, vy = check_inputs(val_texts, val_y)
        assert vy is not None
        seed = int(self._p("seed"))
        pos = stratified_subset(vy, min(self.SHAPE_CHOICE_N, len(vt)), seed)
        sub = [vt[i] for i in pos]
        labels = list(range(len(self.label_names_)))
        budget = self._p("budget_minutes")
        chosen_state = (self.p_cf_, self._memo)
        if budget is not None:
            per_text = (self.calibration_scores_.get("budget") or {}).get("seconds_per_text")
            spent = self._clock() - getattr(self, "_fit_t0", self._clock())
            left = self.FIT_BUDGET_SHARE * float(budget) * 60 - spent
            if per_text:
                n_more = int(left // max(per_text * (len(sub) + len(CONTENT_FREE)), 1e-9))
                if n_more < 1:
                    self.shot_choice_ = {"candidates": [dict(cands[0], chosen=True)], "n_validation": 0,
                                         "reason": "the configured shape: the time budget leaves no room to "
                                                   "compare (k, tokens per shot) on validation"}
                    return
                cands = cands[: n_more + 1]

        def score(cand: dict[str, int] | None) -> tuple[float, Any]:
            self.shot_shape_ = cand
            if cand is not None:
                self._memo = {}
                self._reselect(texts, y)
                self.p_cf_ = self._content_free_probs()
            probs = _softmax(self._raw_scores(sub, count=False))
            pred = (self._calibrate(probs) if self.calibrate_ else probs).argmax(1)
            f1 = float(f1_score(vy[pos], pred, average="macro", labels=labels, zero_division=0))
            return f1, (self.p_cf_, self._memo)

        results = []
        for i, cand in enumerate(cands):
            f1, state = score(None if i == 0 else cand)  # the first is the configured shape: memoised scores
            results.append((f1, cand, state))
        # best F1; ties: fewer shot tokens (k x tokens per shot), then the configured order
        best_i = max(range(len(results)), key=lambda i: (round(results[i][0], 6),
                                                          -results[i][1]["k"] * results[i][1]["shot_max_tokens"], -i))
        f1, cand, state = results[best_i]
        self.shot_shape_ = None if best_i == 0 else dict(cand)
        self._reselect(texts, y)
        self.p_cf_ = (state if best_i else chosen_state)[0]
        # scores are recomputed from here on, in the batches a saved-and-loaded rung would use too
        # (a memo from the comparison's batches can differ in the last bits: save -> load identity)
        self._memo = {}
        self.shot_choice_ = {
            "n_validation": len(pos), "reason": "best validation macro-F1 (ties: the shorter prompt)",
            "candidates": [dict(c, macro_f1=round(f, 4), chosen=i == best_i) for i, (f, c, _) in enumerate(results)]}

    def _reselect(self, texts: list[str], y: np.ndarray) -> None:
        """Re-pick the demonstrations for the current (k, tokens per shot)."""
        if hasattr(self, "shots_"):
            self._select(texts, y)

    def _select(self, texts: list[str], y: np.ndarray) -> None:
        """Choose the demonstration examples (none for zero-shot)."""

    def _shots_for(self, texts: list[str]) -> list[list[dict[str, str]]]:
        """The demonstrations used for each query."""
        return [[] for _ in texts]

    def _shared_user_prefix(self) -> str:
        """The start every user message shares (rendered with sentinel queries)."""
        a = self._user(_SENT_A, self._sentinel_shots(_SENT_A))
        b = self._user(_SENT_B, self._sentinel_shots(_SENT_B))
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return a[:n]

    def _sentinel_shots(self, s: str) -> list[dict[str, str]]:
        return []

    # ------------------------------------------------------------------ calibration
    def _content_free_probs(self) -> list[float]:
        raw = self._raw_scores(list(CONTENT_FREE), count=False)
        probs = _softmax(raw)
        return [float(v) for v in probs.mean(axis=0)]

    def _formats(self) -> list[str]:
        pf = str(self._p("prompt_format"))
        if pf not in ("auto", "chat", "plain"):
            raise AdaptError(f"prompt_format must be auto, chat or plain, got {pf!r}.")
        has_chat = self.backend.has_chat_template()
        if pf == "chat" and not has_chat:
            raise AdaptError(f"prompt_format=chat but model {self._p('model')!r} has no chat template; use plain.")
        if pf == "auto":
            return ["chat", "plain"] if has_chat else ["plain"]
        return [pf]

    def _set_format(self, fmt: str) -> None:
        self.prompt_format_ = fmt
        if self._p("backend") == "hf":
            self.backend.use_chat_template = fmt == "chat"

    def _choose_prompt(self, val_texts: Sequence[str] | None, val_y: np.ndarray | None,
                       verbs: list[tuple[str, dict[str, str]]]) -> None:
        """Pick the prompt format (chat template or plain), the answer words (verbalizer) and
        calibration on validation macro-F1.

        Each format x verbalizer pair costs one model pass per validation example; calibration
        is post-hoc and free. When there are more than two pairs, all are first screened on a
        stratified subset of ``choice_screen`` validation examples and the two best go on to a
        larger stratified subset (``calibration_val_max`` examples, containing the first), where
        the final choice is made (on trec6 few-shot a 60-example subset alone picked a candidate
        0.05 macro-F1 worse on a 300-example validation sample; ``benchmarks/prompt_choices.py``).
        Without validation
        data: the chat format when the model has one, the label names, calibration off unless
        asked for.
        """
        mode = self._p("calibrate")
        if isinstance(mode, str) and mode.lower() in ("true", "false"):
            mode = mode.lower() == "true"
        if mode not in (True, False, "auto"):
            raise AdaptError(f"calibrate must be true, false or auto, got {mode!r}.")
        formats = self._formats()
        have_val = val_texts is not None and val_y is not None and len(val_texts) > 0
        cals = [False, True] if mode == "auto" else [bool(mode)]
        self.calibration_scores_: dict[str, Any] = {}
        if not have_val or (len(formats) == 1 and len(cals) == 1 and len(verbs) == 1):
            fmt = formats[0]
            self._set_format(fmt)
            self.p_cf_ = self._content_free_probs()
            self.calibrate_ = bool(mode is True)
            self.prompt_choices_ = []
            self.calibration_scores_ = {
                "chosen": f"{fmt}, {'calibrated' if self.calibrate_ else 'uncalibrated'}",
                "reason": "set by parameters" if have_val else "no validation data to choose on"}
            return
        from adaptladder.task import stratified_subset

        vt, vy = check_inputs(val_texts or [], val_y)
        assert vy is not None
        seed = int(self._p("seed"))
        pos = stratified_subset(vy, int(self._p("calibration_val_max")), seed)
        pairs = [(vi, fmt) for vi in range(len(verbs)) for fmt in formats]
        memos: dict[tuple[int, str], tuple[list[float], dict[str, np.ndarray]]] = {}
        screen = int(self._p("choice_screen"))
        if self._p("budget_minutes") is not None:
            sized = self._size_choices_to_budget(pairs, verbs, vt, vy, pos, screen, memos)
            if sized is None:  # no time to compare prompts: the defaults, scored on nothing
                fmt = formats[0]
                self._set_format(fmt)
                self.p_cf_ = self._content_free_probs()
                self.calibrate_ = bool(mode is True)
                self.prompt_choices_ = []
                self.calibration_scores_.update(
                    chosen=f"{fmt}, {'calibrated' if self.calibrate_ else 'uncalibrated'}",
                    reason="defaults: the time budget leaves no room to compare prompts on validation")
                return
            pos, screen = sized
        if len(pairs) > 2 and screen < len(pos):
            first = pos[stratified_subset(vy[pos], screen, seed)]
            scores = self._score_candidates(pairs, verbs, cals, vt, vy, first, memos)
            self.calibration_scores_["screening"] = {"n_validation": len(first),
                                                     **{_choice_key(*k): round(v, 4) for k, v in scores.items()}}
            best_per_pair = {pair: max(v for (pr, _), v in scores.items() if pr == pair) for pair in pairs}
            pairs = sorted(pairs, key=lambda pr: -best_per_pair[pr])[:2]  # sort is stable: ties keep order
            pairs.sort(key=lambda pr: (pr[0], formats.index(pr[1])))
        scores = self._score_candidates(pairs, verbs, cals, vt, vy, pos, memos)
        best: tuple[float, int, str, bool] | None = None
        for ((vi, fmt), cal), f1 in scores.items():  # in candidate order; ties keep the earlier (plainer)
            self.calibration_scores_[_choice_key((vi, fmt), cal)] = round(f1, 4)
            if best is None or f1 > best[0]:
                best = (f1, vi, fmt, cal)
        assert best is not None
        _, vi, fmt, cal = best
        self._use_verbalizer(verbs[vi][1], verbs[vi][0])
        self._set_format(fmt)
        self.p_cf_, self._memo = memos[(vi, fmt)]
        self.calibrate_ = cal
        if len(verbs) > 1:
            self.calibration_scores_["verbalizers"] = {f"verbalizer{i}" if i else "names": w
                                                       for i, (_, w) in enumerate(verbs)}
        screened = self.calibration_scores_.get("screening", {})
        self.prompt_choices_ = [
            {"prompt": f, "answer_words": _words_text(verbs[v][1]), "calibrated": c,
             "screening_macro_f1": screened.get(_choice_key((v, f), c)),
             "macro_f1": self.calibration_scores_.get(_choice_key((v, f), c)),
             "chosen": (v, f, c) == (vi, fmt, cal)}
            for v in range(len(verbs)) for f in formats for c in cals]
        self.calibration_scores_.update(n_validation=len(pos), chosen=f"{fmt}, "
                                        f"{'calibrated' if cal else 'uncalibrated'}"
                                        + (f", verbalizer{vi}" if vi else ""),
                                        reason="best validation macro-F1")

    _clock = staticmethod(time.perf_counter)  # tests put a fake clock here
    #: Validation examples below which prompt choices are not compared (the defaults are used).
    MIN_CHOICE_N: ClassVar[int] = 12
    #: Share of the rung's budget its fit (the prompt choice) may use; the rest is evaluation's.
    FIT_BUDGET_SHARE: ClassVar[float] = 0.5
    #: Prompts are shortened (halved) to fit a budget down to this many tokens, no further.
    MIN_PROMPT_WINDOW: ClassVar[int] = 256
    #: Texts a minimal evaluation scores (30 validation + 30 test + a small speed measurement).
    MIN_EVAL_TEXTS: ClassVar[int] = 76

    def shorten_prompts(self, why: str) -> int | None:
        """Halve the prompt window (shots and text are cut to fit it; no shorter than the frame + 64
        tokens of text + the answer, nor :attr:`MIN_PROMPT_WINDOW`) so each prediction costs less.
        Returns the new window in tokens, or ``None`` when the prompts cannot get shorter. The fit
        does it when a minimal evaluation would not fit the budget; the ladder, when its timing
        probe finds the fitted rung too slow for one (``prompt_window_tokens`` records it)."""
        window = self._context_window()
        bk = self.backend
        floor = bk.count_tokens(bk.format_chat(self.system_prompt_, self._user("", []))) + 64 + self._label_budget()
        shorter = max(window // 2, floor, self.MIN_PROMPT_WINDOW)
        if shorter >= window:
            return None
        log.info("%s: %s; prompts shortened to %d tokens to fit the budget", self.name, why, shorter)
        self._set_window(shorter)
        return shorter

    def _set_window(self, window: int | None) -> None:
        """Cap prompts at ``window`` tokens (None: the model's context): shots re-cut, scores re-done."""
        self.prompt_window_ = window
        record = getattr(self, "calibration_scores_", {}).get("budget")
        if isinstance(record, dict):  # the report's record of the budget's effect
            record["prompt_window_tokens"] = self._context_window()
        if hasattr(self, "shots_"):
            self.shots_used_ = self._fit_shots_to_window()
        self._memo = {}
        self.p_cf_ = self._content_free_probs()

    def _size_choices_to_budget(self, pairs: list[tuple[int, str]], verbs: list[tuple[str, dict[str, str]]],
                                vt: list[str], vy: np.ndarray, pos: np.ndarray, screen: int,
                                memos: dict[tuple[int, str], tuple[list[float], dict[str, np.ndarray]]],
                                ) -> tuple[np.ndarray, int] | None:
        """Shrink the validation subsets the prompt choice scores so the fit keeps to its share of
        ``budget_minutes`` (a 4-text timing probe gives the cost per text). ``None``: not even
        :attr:`MIN_CHOICE_N` examples fit, so the defaults are used. Raises
        :class:`BudgetExceeded` when not even a minimal evaluation could fit the budget."""
        from adaptladder.budget import spread_by_length
        from adaptladder.task import stratified_subset

        budget = float(self._p("budget_minutes")) * 60
        vi, fmt = pairs[0]
        self._use_verbalizer(verbs[vi][1], verbs[vi][0])
        self._set_format(fmt)
        self._memo = {}
        self.p_cf_ = self._content_free_probs()
        # four texts spread over the subset's lengths (a random four can be all short: see spread_by_length)
        probe = [vt[i] for i in pos[spread_by_length([len(vt[i]) for i in pos], 4)]]
        before: tuple[int | None, float] | None = None  # (window, seconds per text) before the last shortening
        while True:
            t0 = self._clock()
            self._raw_scores(probe, count=False)
            per_text = (self._clock() - t0) / max(len(probe), 1)
            spent = self._clock() - getattr(self, "_fit_t0", t0)
            # the evaluation gets the share of the budget the fit leaves (the ladder keeps it for it);
            # too slow for a minimal evaluation in it: halve the prompt length and measure again
            if per_text * self.MIN_EVAL_TEXTS <= (1 - self.FIT_BUDGET_SHARE) * budget:
                break
            if before is not None and per_text > 0.9 * before[1]:  # shorter prompts did not help (e.g. an API)
                self._set_window(before[0])
                per_text = before[1]
                break
            before = (getattr(self, "prompt_window_", None), per_text)
            if self.shorten_prompts(f"{per_text:.2f} s per text") is None:
                break
        memos[(vi, fmt)] = (self.p_cf_, self._memo)
        if per_text * self.MIN_EVAL_TEXTS > budget - spent:
            raise BudgetExceeded(
                f"over budget: the timing probe measured {per_text:.2f} s per text, so even a minimal evaluation "
                f"({self.MIN_EVAL_TEXTS} texts) needs ~{per_text * self.MIN_EVAL_TEXTS / 60:.1f} min, more than the "
                f"{max(budget - spent, 0) / 60:.1f} min left of its {budget / 60:.1f} min budget; raise "
                f"--budget-minutes (or --set {self.name}.budget_minutes=...) or shorten the prompt "
                f"(--set {self.name}.max_context=...)")
        afford = (self.FIT_BUDGET_SHARE * budget - spent) / max(per_text, 1e-9) - 3 * len(pairs)
        final0 = len(pos)
        frac = min(1.0, screen / max(final0, 1))
        if len(pairs) > 2 and screen < final0:
            final = afford / (len(pairs) * frac + 2 * (1 - frac))
        else:
            final = afford / len(pairs)
        final = int(min(final0, final))
        self.calibration_scores_["budget"] = {
            "budget_minutes": budget / 60, "seconds_per_text": round(per_text, 4),
            "prompt_window_tokens": self._context_window(),
            "validation_examples": min(final, final0), "planned_validation_examples": final0}
        if final < min(self.MIN_CHOICE_N, final0):
            return None
        if final < final0:
            seed = int(self._p("seed"))
            pos = pos[stratified_subset(vy[pos], final, seed)]
            screen = max(min(screen, int(final * frac)), min(self.MIN_CHOICE_N, final))
            log.info("%s: the budget affords %d validation examples for the prompt choice", self.name, len(pos))
        return pos, screen

    def _score_candidates(self, pairs: list[tuple[int, str]], verbs: list[tuple[str, dict[str, str]]],
                          cals: list[bool], vt: list[str], vy: np.ndarray, pos: np.ndarray,
                          memos: dict[tuple[int, str], tuple[list[float], dict[str, np.ndarray]]],
                          ) -> dict[tuple[tuple[int, str], bool], float]:
        """Validation macro-F1 of every (verbalizer, format) pair x calibration on rows ``pos``;
        each pair's label scores are memoised in ``memos``, so a larger subset only scores new rows."""
        from sklearn.metrics import f1_score

        labels = list(range(len(self.label_names_)))
        sub = [vt[i] for i in pos]
        out: dict[tuple[tuple[int, str], bool], float] = {}
        for vi, fmt in pairs:
            self._use_verbalizer(verbs[vi][1], verbs[vi][0])
            self._set_format(fmt)
            if (vi, fmt) in memos:
                self.p_cf_, self._memo = memos[(vi, fmt)]
            else:
                self._memo = {}
                self.p_cf_ = self._content_free_probs()
            probs = _softmax(self._raw_scores(sub, count=False))
            memos[(vi, fmt)] = (self.p_cf_, self._memo)
            for cal in cals:
                pred = (self._calibrate(probs) if cal else probs).argmax(1)
                out[((vi, fmt), cal)] = float(f1_score(vy[pos], pred, average="macro", labels=labels,
                                                       zero_division=0))
        return out

    def _calibrate(self, probs: np.ndarray) -> np.ndarray:
        q = probs / np.maximum(np.asarray(self.p_cf_), 1e-12)[None, :]
        return q / q.sum(axis=1, keepdims=True)

    # ------------------------------------------------------------------ scoring
    def _fit_query(self, text: str, shots: list[dict[str, str]], window: int,
                   label_tokens: int) -> tuple[str, list[dict[str, str]], bool]:
        """Drop shots (farthest / last first), then truncate the query, until the prompt fits the window."""
        bk = self.backend
        shots = list(shots)
        min_q = int(self._p("min_query_tokens"))
        while shots:
            frame = bk.count_tokens(bk.format_chat(self.system_prompt_, self._user("", shots)))
            if frame + min(bk.count_tokens(text), min_q) + label_tokens <= window:
                break
            shots = self._drop_one(shots)
        frame = bk.count_tokens(bk.format_chat(self.system_prompt_, self._user("", shots)))
        budget = window - frame - label_tokens
        if budget < 1:
            raise AdaptError(f"the prompt without any example needs {frame} tokens, more than the context window "
                             f"of {window}; shorten the system prompt / template or raise max_context.")
        text2, cut = bk.truncate(text, budget)
        return text2, shots, cut

    def _drop_one(self, shots: list[dict[str, str]]) -> list[dict[str, str]]:
        """Remove the first shot of the most represented label (few-shot stays balanced; for k-NN
        shots are ordered nearest-last, so the first is the farthest)."""
        counts: dict[str, int] = {}
        for s in shots:
            counts[s["label"]] = counts.get(s["label"], 0) + 1
        top = max(counts.values())
        for i, s in enumerate(shots):
            if counts[s["label"]] == top:
                return shots[:i] + shots[i + 1:]
        return shots[1:]

    def _raw_scores(self, texts: list[str], count: bool = True) -> np.ndarray:
        """Length-normalised label log-likelihoods ``(n, K)``, memoised per text."""
        from adaptladder.encode import caching_disabled

        if caching_disabled():  # timing: measure the model, not this memo
            self._memo = {}
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            window = self._context_window()
            label_tokens = self._label_budget()
            shots_all = self._shots_for(todo)
            users, n_cut = [], 0
            for text, shots in zip(todo, shots_all, strict=True):
                t2, shots2, cut = self._fit_query(text, shots, window, label_tokens)
                n_cut += int(cut)
                users.append(self._user(t2, shots2))
            if count:
                self._trunc["queries_seen"] += len(todo)
                self._trunc["queries_truncated"] += n_cut
            if n_cut:
                msg = (f"{n_cut} of {len(todo)} texts were truncated to fit the {self.name} prompt into the "
                       f"context window of {window} tokens")
                warnings.warn(msg, stacklevel=3)
                log.warning(msg)
            prefix = self._shared_user_prefix()
            chunk = 64
            scores = []
            from adaptladder import progress

            with progress.task(f"{self.name}: scoring", len(users)) as advance:
                for s in range(0, len(users), chunk):
                    sc = self.backend.score_prompts(self.system_prompt_, users[s:s + chunk], self.verbal_,
                                                    user_prefix=prefix)
                    self.scoring_method_ = sc.method
                    scores.append(sc.normalized())
                    advance(len(users[s:s + chunk]))
            for t, row in zip(todo, np.concatenate(scores), strict=True):
                self._memo[t] = row
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, len(self.label_names_)))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts, _ = check_inputs(texts)
        if not texts:
            return np.zeros((0, len(self.label_names_)))
        probs = _softmax(self._raw_scores(texts))
        return self._calibrate(probs) if self.calibrate_ else probs

    # ------------------------------------------------------------------ report
    def example_prompt(self, text: str = "<the text to classify>") -> str:
        """The exact prompt string the model sees for ``text`` (the first query's shots for k-NN)."""
        shots = self._shots_for([text])[0]
        text, shots, _ = self._fit_query(text, shots, self._context_window(), self._label_budget())
        return self.backend.format_chat(self.system_prompt_, self._user(text, shots))

    def extra_info(self) -> dict[str, Any]:
        if not hasattr(self, "label_names_"):
            return {}
        info: dict[str, Any] = {
            "backend": self.backend.describe(),
            "scoring": getattr(self, "scoring_method_", "loglikelihood") + " of each label (length-normalised)",
            "k": int(self._p("k")),
            "prompt_format": self.prompt_format_,
            "calibration": dict(self.calibration_scores_, content_free_inputs=list(CONTENT_FREE),
                                content_free_probs=[round(v, 4) for v in self.p_cf_]),
            "label_descriptions": self.label_descriptions_, "label_descriptions_source": self.descriptions_source_,
            "verbalizer": self.verbalizer_, "verbalizer_source": self.verbalizer_source_,
            "prompt_choices": {"validation_examples": {"screening": self.calibration_scores_.get("screening", {})
                                                       .get("n_validation"),
                                                       "final": self.calibration_scores_.get("n_validation")},
                               "candidates": self.prompt_choices_},
            "system_prompt": self.system_prompt_,
            "prompt_template": self.template_text_,
            "example_prompt": self.example_prompt(),
            "context_window": self._context_window(),
            "truncation": dict(self._trunc),
            "usage": self.backend.usage.summary(),
            "precision": self.precision_record_ or {"used": self.precision_},
        }
        info.update(self._shot_info())
        if getattr(self, "shot_choice_", None):
            info["shot_max_tokens"] = int(self._p("shot_max_tokens"))
            c = self.shot_choice_
            tried = "; ".join(f"k={x['k']}, {x['shot_max_tokens']} tokens/shot: "
                              + (f"{x['macro_f1']:.3f}" if "macro_f1" in x else "-")
                              + (" (chosen)" if x.get("chosen") else "") for x in c["candidates"])
            info["shot_choice"] = f"{tried} - validation macro-F1 on {c['n_validation']} examples; {c['reason']}"
            info["shot_choice_candidates"] = c["candidates"]
        cost = self._api_cost_per_1k()
        if cost is not None:
            info["cost_per_1k_usd"] = cost
        return info

    def _shot_info(self) -> dict[str, Any]:
        return {}

    def _api_cost_per_1k(self) -> float | None:
        if self._p("backend") != "openai":
            return None
        from adaptladder.pricing import api_price

        price = api_price(str(self._p("model")))
        u = self.backend.usage
        if price is None or u.requests == 0:
            return None
        per_request = (u.prompt_tokens * price["input"] + u.completion_tokens * price["output"]) / 1e6 / u.requests
        return round(per_request * 1000, 6)

    # ------------------------------------------------------------------ save / load
    def _state(self) -> dict[str, Any]:
        return {"label_names": self.label_names_, "p_cf": self.p_cf_, "calibrate": self.calibrate_,
                "prompt_format": self.prompt_format_,
                "calibration_scores": self.calibration_scores_, "label_descriptions": self.label_descriptions_,
                "descriptions_source": self.descriptions_source_, "verbalizer": self.verbalizer_,
                "verbalizer_source": self.verbalizer_source_, "prompt_choices": self.prompt_choices_,
                "prompt_window": getattr(self, "prompt_window_", None),
                "shot_shape": getattr(self, "shot_shape_", None), "shot_choice": getattr(self, "shot_choice_", None),
                "precision": self.precision_, "precision_record": self.precision_record_}

    def _save(self, path: Path) -> None:
        self._check_fitted()
        (path / "prompt_template.j2").write_text(self.template_text_)
        (path / "system_prompt.txt").write_text(self.system_prompt_)
        (path / "prompting_state.json").write_text(json.dumps(self._state(), indent=2))
        (path / "example_prompt.txt").write_text(self.example_prompt())

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> _PromptingRung:
        rung = cls(**meta.get("params", {}))
        state = json.loads((path / "prompting_state.json").read_text())
        rung.label_names_ = list(state["label_names"])
        rung.template_text_ = (path / "prompt_template.j2").read_text()
        rung.system_prompt_ = (path / "system_prompt.txt").read_text()
        rung.params["label_descriptions"] = state["label_descriptions"] or None
        rung.verbalizer_ = state.get("verbalizer") or {n: n for n in rung.label_names_}  # older runs: names
        rung.verbalizer_source_ = state.get("verbalizer_source", "label names")
        rung._setup_prompt(rung.label_names_)
        rung.descriptions_source_ = state["descriptions_source"]
        rung.p_cf_ = [float(v) for v in state["p_cf"]]
        rung.calibrate_ = bool(state["calibrate"])
        rung.calibration_scores_ = state["calibration_scores"]
        rung.prompt_choices_ = state.get("prompt_choices", [])  # older runs: not recorded
        if state.get("prompt_window"):
            rung.prompt_window_ = int(state["prompt_window"])
        rung.shot_shape_ = state.get("shot_shape")  # older runs: the configured (k, tokens per shot)
        rung.shot_choice_ = state.get("shot_choice")
        precision = state.get("precision", "fp32")  # runs saved before bf16 existed: fp32
        if precision not in PRECISION_DTYPE:
            raise AdaptError(f"{path / 'prompting_state.json'}: precision {precision!r} is not one of fp32, bf16; "
                             "re-run the ladder for this rung.")
        rung.precision_ = precision
        record = state.get("precision_record")
        rung.precision_record_ = record if isinstance(record, dict) else None
        rung._set_format(state["prompt_format"])
        rung._load_shots(path, state)
        return rung

    def _load_shots(self, path: Path, state: dict[str, Any]) -> None:
        pass


def _words_text(words: dict[str, str]) -> str:
    changed = [f"{k} → {v}" for k, v in words.items() if k != v]
    return ", ".join(changed) if changed else "label names"


def _choice_key(pair: tuple[int, str], cal: bool) -> str:
    """``macro_f1_<format>_<calibrated|uncalibrated>[_verbalizer<i>]``: one prompt choice's score key."""
    vi, fmt = pair
    return f"macro_f1_{fmt}_{'calibrated' if cal else 'uncalibrated'}" + (f"_verbalizer{vi}" if vi else "")


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class ZeroShotRung(_PromptingRung):
    """An instruction naming the labels; the label with the highest likelihood wins."""

    name = "zero-shot"
    cost_rank = 20
    description = "LM prompt naming the labels; label chosen by log-likelihood (optionally calibrated)"
    default_k = 0


class FewShotRung(_PromptingRung):
    """k labelled training examples per class (seeded, shuffled) in every prompt."""

    name = "few-shot"
    cost_rank = 30
    description = "LM prompt with k labelled examples per class; label chosen by log-likelihood"
    default_k = 4

    def _select(self, texts: list[str], y: np.ndarray) -> None:
        rng = np.random.default_rng(int(self._p("seed")))
        k = int(self._p("k"))
        picked: list[int] = []
        for c in range(len(self.label_names_)):
            idx = np.flatnonzero(y == c)
            if len(idx):
                picked.extend(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
        picked = [picked[i] for i in rng.permutation(len(picked))]
        limit = int(self._p("shot_max_tokens"))
        self.shots_ = [{"text": self.backend.truncate(texts[i], limit)[0], "label": self.label_names_[int(y[i])]}
                       for i in picked]
        self.shot_rows_ = picked
        self.shots_used_ = self._fit_shots_to_window()

    def _fit_shots_to_window(self) -> list[dict[str, str]]:
        """The shared few-shot block, shrunk (fewer shots) until a query of min_query_tokens still fits."""
        window = self._context_window()
        bk = self.backend
        shots = list(self.shots_)
        need = int(self._p("min_query_tokens")) + self._label_budget()
        while shots and bk.count_tokens(bk.format_chat(self.system_prompt_, self._user("", shots))) + need > window:
            shots = self._drop_one(shots)
        if len(shots) < len(self.shots_):
            msg = (f"few-shot: only {len(shots)} of {len(self.shots_)} examples fit the context window of "
                   f"{window} tokens; using fewer shots")
            warnings.warn(msg, stacklevel=3)
            log.warning(msg)
        return shots

    def _shots_for(self, texts: list[str]) -> list[list[dict[str, str]]]:
        return [self.shots_used_ for _ in texts]

    def _sentinel_shots(self, s: str) -> list[dict[str, str]]:
        return self.shots_used_

    def _shot_info(self) -> dict[str, Any]:
        per: dict[str, int] = {}
        for s in self.shots_used_:
            per[s["label"]] = per.get(s["label"], 0) + 1
        return {"shots": len(self.shots_used_), "shots_selected": len(self.shots_), "shots_per_label": per,
                "shot_train_rows": self.shot_rows_, "seed": int(self._p("seed")),
                "prefix_tokens": self.backend.count_tokens(
                    self.backend.format_chat(self.system_prompt_, self._shared_user_prefix()))}

    def _state(self) -> dict[str, Any]:
        return dict(super()._state(), shots=self.shots_, shots_used=self.shots_used_, shot_rows=self.shot_rows_)

    def _load_shots(self, path: Path, state: dict[str, Any]) -> None:
        self.shots_ = state["shots"]
        self.shots_used_ = state["shots_used"]
        self.shot_rows_ = state["shot_rows"]


class KnnFewShotRung(_PromptingRung):
    """Retrieval-augmented prompting: the k training examples nearest to each query (encoder
    cosine similarity) are its demonstrations, the nearest placed last, next to the query."""

    name = "knn-few-shot"
    cost_rank = 40
    description = "LM prompt with the k nearest training examples (by embedding) as demonstrations"
    default_k = 4

    def _encoder(self) -> Any:
        from adaptladder.encode import get_encoder

        return get_encoder(str(self._p("encoder")))

    def _select(self, texts: list[str], y: np.ndarray) -> None:
        self.pool_texts_ = list(texts)
        self.pool_y_ = np.asarray(y, dtype=np.int64)
        self.pool_emb_ = self._encoder().encode(self.pool_texts_, progress=True, desc="knn-few-shot: pool")

    def neighbours(self, texts: list[str]) -> list[list[int]]:
        """Pool rows of the k nearest examples per query, nearest last; a pool row identical to the
        query (the same text) is skipped so that predicting on training data does not leak."""
        k = int(self._p("k"))
        if k == 0 or not texts:
            return [[] for _ in texts]
        q = self._encoder().encode(texts)
        sims = q @ self.pool_emb_.T
        out = []
        for i, text in enumerate(texts):
            m = min(k + 3, sims.shape[1])
            cand = np.argpartition(-sims[i], m - 1)[:m]
            cand = cand[np.lexsort((cand, -sims[i, cand]))]  # by similarity, ties by row: deterministic
            rows = [int(j) for j in cand if self.pool_texts_[j] != text][:k]
            out.append(rows[::-1])
        return out

    def _shots_for(self, texts: list[str]) -> list[list[dict[str, str]]]:
        limit = int(self._p("shot_max_tokens"))
        cache: dict[int, str] = {}

        def shot_text(j: int) -> str:
            if j not in cache:
                cache[j] = self.backend.truncate(self.pool_texts_[j], limit)[0]
            return cache[j]

        return [[{"text": shot_text(j), "label": self.label_names_[int(self.pool_y_[j])]} for j in rows]
                for rows in self.neighbours(texts)]

    def _sentinel_shots(self, s: str) -> list[dict[str, str]]:
        return [{"text": s, "label": s}]

    def _shot_info(self) -> dict[str, Any]:
        return {"pool_size": len(self.pool_texts_), "encoder": self._encoder().info()}

    def _reselect(self, texts: list[str], y: np.ndarray) -> None:
        """Nothing to re-pick: the neighbours read k and the shots are cut to tokens per shot at query time."""

    def _save(self, path: Path) -> None:
        super()._save(path)
        (path / "pool.json").write_text(json.dumps({"texts": self.pool_texts_, "labels": self.pool_y_.tolist()}))
        np.save(path / "pool_embeddings.npy", self.pool_emb_)

    def _load_shots(self, path: Path, state: dict[str, Any]) -> None:
        pool = json.loads((path / "pool.json").read_text())
        self.pool_texts_ = list(pool["texts"])
        self.pool_y_ = np.asarray(pool["labels"], dtype=np.int64)
        self.pool_emb_ = np.load(path / "pool_embeddings.npy")
