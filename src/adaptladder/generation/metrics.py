"""Generation metrics: per-example scores, bootstrap CIs of their means, paired comparisons.

Every metric is a per-example score in [0, 1] (embedding similarity: a cosine in [-1, 1]),
so any two rungs scored on the same examples can be compared with a paired bootstrap of the
per-example difference, the same way for every metric.

Text metrics
    ``exact_match``  1 if the SQuAD-normalised prediction equals the normalised reference
                     (lower-case, punctuation and the articles a/an/the removed, whitespace collapsed).
    ``token_f1``     SQuAD token-level F1 over the normalised tokens (bag of tokens).
    ``rouge_l``      ROUGE-L F-measure from ``rouge-score`` (its default tokenizer, no stemming;
                     note that it keeps only ``[a-z0-9]`` tokens, so it suits English text).
    ``chrf``         chrF (character n-grams up to 6, beta 2) from ``sacrebleu``, divided by 100.
    ``embedding_sim`` cosine between the encoder's vectors of prediction and reference; pass any
                     ``encode(list[str]) -> array`` callable, e.g. ``adaptladder.encode.get_encoder().encode``.
    Two empty texts score 1 on every metric (sacrebleu and rouge-score would give 0).

JSON metrics (extraction tasks)
    ``json_parse``       the output contains a JSON object/array: surrounding whitespace and a
                         Markdown code fence are stripped, then the first JSON value that starts at
                         the first ``{`` or ``[`` is decoded (text after it is ignored).
    ``schema_valid``     it parses and validates against the task's JSON Schema (``jsonschema``).
    ``field_f1``         F1 between the multisets of (field path, normalised value) leaves of the
                         prediction and of the reference; list items are order-free. Unparsed -> 0.
    ``json_exact_match`` every leaf equal (normalised), i.e. ``field_f1 == 1``.
    per-field exact match: for each top-level field (the schema's ``properties``, else the
                         references' keys), 1 if the prediction's value equals the reference's.
    Leaf values are normalised: strings case-folded with whitespace collapsed; numbers compared
    as floats (so ``3 == 3.0``); booleans and null as they are.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError

N_BOOT = 1000
TEXT_METRICS = ("exact_match", "token_f1", "rouge_l", "chrf")
JSON_METRICS = ("json_parse", "schema_valid", "field_f1", "json_exact_match")
TASK_KINDS = ("summarisation", "rewrite", "dialogue", "extraction")
# The default primary metric per task kind (``--metric`` will override it once wired).
PRIMARY_METRIC = {"summarisation": "rouge_l", "rewrite": "chrf", "dialogue": "chrf", "extraction": "field_f1"}

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```\s*$", re.S)


# ------------------------------------------------------------------ text metrics
def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(pred: str, ref: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(ref))


def token_f1(pred: str, ref: str) -> float:
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p or not r:
        return float(p == r)
    same = sum((Counter(p) & Counter(r)).values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(r)
    return 2 * prec * rec / (prec + rec)


_ROUGE: Any = None


def rouge_l(pred: str, ref: str) -> float:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    if not pred.strip() and not ref.strip():
        return 1.0
    return float(_ROUGE.score(ref, pred)["rougeL"].fmeasure)


def chrf(pred: str, ref: str) -> float:
    import sacrebleu

    if not pred.strip() and not ref.strip():
        return 1.0
    return float(sacrebleu.sentence_chrf(pred, [ref]).score) / 100.0


_TEXT_FNS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l, "chrf": chrf,
}


def embedding_similarity(preds: Sequence[str], refs: Sequence[str],
                         encode: Callable[[list[str]], Any]) -> np.ndarray:
    """Per-example cosine between ``encode(preds)`` and ``encode(refs)`` (a zero vector scores 0)."""
    if len(preds) != len(refs):
        raise AdaptError(f"embedding similarity needs as many predictions as references ({len(preds)} vs {len(refs)}).")
    if not len(preds):
        return np.zeros(0)
    a = np.asarray(encode(list(preds)), dtype=np.float64)
    b = np.asarray(encode(list(refs)), dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    denom = na * nb
    return np.divide((a * b).sum(1), denom, out=np.zeros(len(a)), where=denom > 0)


# ------------------------------------------------------------------ JSON metrics
def parse_json(text: str) -> tuple[bool, Any]:
    """``(True, value)`` for the first JSON object/array in ``text`` (see module doc), else ``(False, None)``."""
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1).strip()
    starts = [i for i in (s.find("{"), s.find("[")) if i != -1]
    if not starts:
        return False, None
    try:
        value, _ = json.JSONDecoder().raw_decode(s, min(starts))
    except json.JSONDecodeError:
        return False, None
    return True, value


def schema_validator(schema: dict[str, Any] | str) -> Any:
    """A ``jsonschema`` validator for ``schema`` (a dict or JSON text); a bad schema is a one-line error."""
    import jsonschema

    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise AdaptError(f"the JSON schema does not parse ({e}); give a valid JSON Schema document.") from e
    if not isinstance(schema, dict):
        raise AdaptError("the JSON schema must be a JSON object (a JSON Schema document).")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        raise AdaptError(f"the JSON schema is not a valid JSON Schema: {e.message}.") from e
    return cls(schema)


def _norm_leaf(v: Any) -> Any:
    if isinstance(v, str):
        return " ".join(v.split()).casefold()
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        f = float(v)
        return f if math.isfinite(f) else str(f)
    return v


def _canon(v: Any) -> str:
    """A canonical string of a JSON value: normalised leaves, sorted keys, order-free lists."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_canon(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, list):
        return "[" + ",".join(sorted(_canon(x) for x in v)) + "]"
    return json.dumps(_norm_leaf(v))


def flatten_fields(value: Any, prefix: str = "$") -> Counter[tuple[str, str]]:
    """The multiset of ``(path, canonical leaf)`` of a JSON value; list items share the path ``p[]``."""
    out: Counter[tuple[str, str]] = Counter()
    if isinstance(value, dict):
        if not value:
            out[(prefix, "{}")] += 1
        for k, v in value.items():
            out.update(flatten_fields(v, f"{prefix}.{k}"))
    elif isinstance(value, list):
        if not value:
            out[(prefix, "[]")] += 1
        for v in value:
            out.update(flatten_fields(v, f"{prefix}[]"))
    else:
        out[(prefix, _canon(value))] += 1
    return out


def field_f1(pred: Any, ref: Any) -> float:
    """F1 between the leaf multisets of two parsed JSON values (both empty -> 1)."""
    p, r = flatten_fields(pred), flatten_fields(ref)
    tp = sum((p & r).values())
    n_p, n_r = sum(p.values()), sum(r.values())
    if n_p == 0 or n_r == 0:
        return float(n_p == n_r)
    if tp == 0:
        return 0.0
    prec, rec = tp / n_p, tp / n_r
    return 2 * prec * rec / (prec + rec)


_MISSING = object()


def _field_names(refs_parsed: list[Any], schema: dict[str, Any] | None) -> list[str]:
    if schema and isinstance(schema.get("properties"), dict):
        return list(schema["properties"])
    names: dict[str, None] = {}
    for r in refs_parsed:
        if isinstance(r, dict):
            names.update(dict.fromkeys(r))
    return list(names)


def json_scores(preds: Sequence[str], refs: Sequence[Any], schema: dict[str, Any] | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-example JSON metrics and per-field exact match.

    ``refs`` may be JSON texts or already parsed values; a reference that does not parse is a
    one-line error (the data set is broken, not the prediction).
    """
    refs_parsed = []
    for i, r in enumerate(refs):
        if isinstance(r, str):
            try:
                r = json.loads(r)
            except json.JSONDecodeError as e:
                raise AdaptError(f"reference {i} is not valid JSON ({e}); every target of a JSON task must be "
                                 "a JSON value.") from e
        refs_parsed.append(r)
    validator = schema_validator(schema) if schema is not None else None
    n = len(preds)
    out = {m: np.zeros(n) for m in JSON_METRICS}
    fields = _field_names(refs_parsed, schema)
    per_field = {f: np.zeros(n) for f in fields}
    for i, (p, r) in enumerate(zip(preds, refs_parsed, strict=True)):
        ok, v = parse_json(p)
        if not ok:
            continue
        out["json_parse"][i] = 1.0
        out["schema_valid"][i] = float(validator.is_valid(v)) if validator is not None else 1.0
        out["field_f1"][i] = field_f1(v, r)
        out["json_exact_match"][i] = float(_canon(v) == _canon(r))
        for f in fields:
            pv = v.get(f, _MISSING) if isinstance(v, dict) else _MISSING
            rv = r.get(f, _MISSING) if isinstance(r, dict) else _MISSING
            if pv is _MISSING or rv is _MISSING:
                per_field[f][i] = float(pv is rv)
            else:
                per_field[f][i] = float(_canon(pv) == _canon(rv))
    return out, per_field


# ------------------------------------------------------------------ aggregation
def bootstrap_means(scores: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``n_boot`` means of the scores resampled with replacement (seeded; chunked to bound memory)."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(n, 1))
    for s in range(0, n_boot, chunk):
        m = min(chunk, n_boot - s)
        out[s:s + m] = scores[rng.integers(0, n, (m, n))].mean(1)
    return out


def summarise(scores: Sequence[float] | np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
              alpha: float = 0.05) -> dict[str, Any]:
    """Mean with a percentile-bootstrap (1 - alpha) CI over examples."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise AdaptError("no examples to score: the evaluation split is empty.")
    boots = bootstrap_means(scores, n_boot, seed)
    lo, hi = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"mean": float(scores.mean()), "ci": [float(lo), float(hi)], "n": len(scores)}


def paired_compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_boot: int = N_BOOT,
                   seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Paired bootstrap of the per-example difference ``a - b`` on the same examples.

    Returns both means, the mean difference with its percentile CI, whether the CI excludes 0,
    and a two-sided bootstrap p-value (twice the smaller share of resampled differences on
    either side of 0, capped at 1; its resolution is 1 / n_boot).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AdaptError(f"a paired comparison needs scores on the same examples ({len(a)} vs {len(b)}).")
    d = a - b
    boots = bootstrap_means(d, n_boot, seed)
    lo, hi = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    p = min(1.0, 2 * min(float((boots <= 0).mean()), float((boots >= 0).mean())))
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(d.mean()),
            "ci": [float(lo), float(hi)], "excludes_zero": bool(lo > 0 or hi < 0), "p_value": p, "n": len(d)}


def per_example_scores(preds: Sequence[str], refs: Sequence[Any], *, kind: str = "text",
                       schema: dict[str, Any] | None = None, encode: Callable[[list[str]], Any] | None = None,
                       metrics: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-example arrays of every metric (text or JSON kind) and, for JSON, per-field exact match."""
    preds = [("" if p is None else str(p)) for p in preds]
    if len(preds) != len(refs):
        raise AdaptError(f"{len(preds)} predictions for {len(refs)} references: they must pair up one to one.")
    per_field: dict[str, np.ndarray] = {}
    if kind == "json":
        out, per_field = json_scores(preds, refs, schema)
        if metrics is not None:
            out = {m: out[m] for m in metrics if m in out}
        return out, per_field
    if kind != "text":
        raise AdaptError(f"unknown output kind {kind!r}: use text or json.")
    refs = [str(r) for r in refs]
    wanted = list(metrics) if metrics is not None else [*TEXT_METRICS, *(["embedding_sim"] if encode else [])]
    out = {}
    for m in wanted:
        if m == "embedding_sim":
            if encode is None:
                raise AdaptError("embedding_sim needs an encoder: pass encode=...")
            out[m] = embedding_similarity(preds, refs, encode)
        elif m in _TEXT_FNS:
            out[m] = np.array([_TEXT_FNS[m](p, r) for p, r in zip(preds, refs, strict=True)], dtype=np.float64)
        else:
            raise AdaptError(f"unknown metric {m!r}: use one of {', '.join([*TEXT_METRICS, 'embedding_sim'])}.")
    return out, per_field


def score_generations(preds: Sequence[str], refs: Sequence[Any], *, kind: str = "text",
                      schema: dict[str, Any] | None = None, encode: Callable[[list[str]], Any] | None = None,
                      metrics: Sequence[str] | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Every metric's mean with its 95% bootstrap CI, the per-example scores (for paired
    comparisons between rungs) and, for JSON tasks, per-field exact match with CIs."""
    per, per_field = per_example_scores(preds, refs, kind=kind, schema=schema, encode=encode, metrics=metrics)
    return {
        "n": len(preds),
        "kind": kind,
        "metrics": {m: summarise(v, n_boot=n_boot, seed=seed) for m, v in per.items()},
        "per_field_exact_match": {f: summarise(v, n_boot=n_boot, seed=seed) for f, v in per_field.items()},
        "per_example": {m: v.tolist() for m, v in per.items()},
    }
