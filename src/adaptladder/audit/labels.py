"""Check 6: likely label errors (cleanlab on out-of-fold probabilities of a cheap model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptladder.audit.context import _Ctx
from adaptladder.audit.report import (
    Finding,
    _short,
)
from adaptladder.errors import AdaptError


# ---------------------------------------------------------------------------- 6. likely label errors
def tfidf_matrix(texts: Sequence[str]) -> Any:
    """Word TF-IDF of ``texts`` (cut at 5,000 characters), robust to texts with no word tokens.

    Emoji-only or symbol-only data gives scikit-learn an empty vocabulary ("empty vocabulary;
    perhaps the documents only contain stop words"): then words seen once, and finally
    character 1-3-grams (emoji and punctuation included) are used. Raises :class:`AdaptError`
    only when the texts have no visible character at all.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    cut = [t[:5000] for t in texts]
    tries: list[dict[str, Any]] = [{"min_df": 2}, {"min_df": 1}, {"analyzer": "char", "ngram_range": (1, 3)}]
    for kw in tries:
        try:
            X = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, max_features=50_000, **kw).fit_transform(cut)
        except ValueError:  # empty vocabulary / no terms left after pruning
            continue
        if X.shape[1]:
            return X
    raise AdaptError("the texts have no word or character tokens; nothing to learn labels from.")


def out_of_fold_probs(texts: Sequence[str], y: np.ndarray, *, model: str = "tfidf", emb: np.ndarray | None = None,
                      folds: int = 5, seed: int = 13) -> np.ndarray:
    """Out-of-fold predicted probabilities (n, K) for cleanlab, from a fast cross-validated model.

    ``tfidf``: word TF-IDF (texts cut at 5,000 characters) + an averaged SGD logistic
    regression (a few passes, far faster than lbfgs on 20 classes with the same ranking quality);
    ``features``: precomputed embeddings + the same averaged SGD logistic regression.
    """
    if model not in ("tfidf", "features"):
        raise AdaptError(f"unknown out-of-fold model {model!r}: use tfidf or features.")
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import StratifiedKFold

    k = int(y.max()) + 1
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if model == "tfidf":
        X = tfidf_matrix(texts)

        def make() -> Any:
            return SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=8, tol=None, average=True,
                                 random_state=seed, n_jobs=2)
    else:
        if emb is None:
            raise AdaptError("the features label-error model needs embeddings; give an encoder.")
        X = emb

        def make() -> Any:  # averaged SGD too: lbfgs took 93-125 s on trec6 (5-fold) vs 14 s, accuracy 84.9 vs 84.2%
            return SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=20, tol=None, average=True,
                                 random_state=seed, n_jobs=2)
    probs = np.zeros((len(y), k), dtype=np.float64)
    for tr, te in cv.split(np.zeros(len(y)), y):
        clf = make().fit(X[tr], y[tr])
        p = clf.predict_proba(X[te])
        probs[np.ix_(te, clf.classes_)] = p
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)


#: Rows of the timing probe that sizes a budgeted label-error search.
PROBE_ROWS = 400


def _check_label_errors(ctx: _Ctx, model: str, emb: np.ndarray | None, findings: list[Finding],
                        stats: dict[str, Any], seconds: float | None = None, clock: Any = None) -> None:
    """cleanlab on out-of-fold probabilities. With ``seconds`` (the audit's budget for this stage) the
    out-of-fold models are first timed on a stratified probe of :data:`PROBE_ROWS` rows; when all rows
    would not fit, a stratified sample sized to fit is checked (``stats["label_errors"]["sampled"]``)."""
    import time

    from cleanlab.filter import find_label_issues

    clock = clock or time.perf_counter

    folds = 5 if len(ctx.y) <= 10_000 else 3  # 3 folds halve the training work on large sets
    counts = np.bincount(ctx.y, minlength=len(ctx.names))
    ok_classes = np.flatnonzero(counts >= folds)
    rows = np.flatnonzero(np.isin(ctx.y, ok_classes))
    if len(ok_classes) < 2 or len(rows) < 20:
        findings.append(Finding("info", "label_errors_skipped", "label-error search skipped: it needs at least two "
                                f"classes with {folds}+ examples and 20 rows", 0))
        return
    embedded = getattr(ctx, "embedded", None)
    n_eligible = len(rows)
    if emb is not None and embedded is not None and not embedded.all():
        # the embedding stopped at a sample (the audit's budget): the features model would see only
        # those rows, so the label-error search uses the tfidf model, on rows sized by its own budget
        emb = None
        model = "tfidf"
    remap = np.full(len(ctx.names), -1)
    remap[ok_classes] = np.arange(len(ok_classes))
    if model == "features" and emb is None:
        model = "tfidf"
    candidates = ["tfidf", "features"] if model == "auto" else [model]
    if emb is None:
        candidates = [c for c in candidates if c != "features"] or ["tfidf"]

    def fit_all(rs: np.ndarray) -> tuple[dict[str, float], tuple[float, str, np.ndarray]]:
        y_ = remap[ctx.y[rs]]
        texts_ = [ctx.task.texts[i] for i in rs]
        row_emb = emb[ctx.group[rs]] if emb is not None else None
        tried_: dict[str, float] = {}
        best_: tuple[float, str, np.ndarray] | None = None
        for m in candidates:
            p = out_of_fold_probs(texts_, y_, model=m, emb=row_emb, folds=folds, seed=ctx.seed)
            a = float((p.argmax(1) == y_).mean())
            tried_[m] = a
            if best_ is None or a > best_[0]:
                best_ = (a, m, p)
        assert best_ is not None
        return tried_, best_

    budget_note: dict[str, Any] | None = None
    result = None
    if seconds is not None and len(rows) > PROBE_ROWS:
        from adaptladder.budget import stratified_order

        order = stratified_order(ctx.y[rows], ctx.seed)
        probe = np.sort(rows[order[:PROBE_ROWS]])
        t = clock()
        result = fit_all(probe)
        per_row = (clock() - t) / len(probe)
        left = seconds - (clock() - t)
        afford = int(left / per_row) if per_row > 0 else len(rows)
        budget_note = {"budget_seconds": round(seconds, 1), "probe_rows": len(probe),
                       "seconds_per_row": round(per_row, 5), "rows_eligible": n_eligible}
        if afford >= len(rows):
            result = None  # all rows fit: the probe only measured
        elif afford > len(probe):
            rows = np.sort(rows[order[:afford]])
            result = None
        else:
            rows = probe  # the probe's own result is the sample that fits
    y = remap[ctx.y[rows]]
    tried, best = result or fit_all(rows)
    acc, model, probs = best
    issues = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    n_issue = len(issues)
    share = n_issue / len(rows)
    by_class = np.bincount(y[issues], minlength=len(ok_classes))
    sampled = len(rows) < n_eligible
    stats["label_errors"] = {"model": model, "folds": folds, "rows_checked": len(rows), "sampled": sampled,
                             **({"budget": budget_note} if budget_note else {}),
                             "out_of_fold_accuracy": acc, "models_tried": tried, "issues": n_issue, "share": share,
                             "by_given_label": {ctx.names[int(ok_classes[c])]: int(by_class[c])
                                                for c in range(len(ok_classes)) if by_class[c]}}
    examples = []
    for pos in issues[: max(ctx.max_ex, 10)]:
        i = int(rows[pos])
        sug = int(probs[pos].argmax())
        examples.append({"where": ctx.refs[i], "split": str(ctx.split[i]), "given": ctx.names[int(ctx.y[i])],
                         "suggested": ctx.names[int(ok_classes[sug])], "p_given": float(probs[pos, y[pos]]),
                         "p_suggested": float(probs[pos, sug]), "text": _short(ctx.task.texts[i], 200)})
    min_acc = float(ctx.cfg.get("label_model_min_accuracy", 0.85))
    weak = acc < min_acc
    stats["label_errors"]["model_too_weak"] = weak
    stats["label_errors"]["min_accuracy"] = min_acc
    chosen = f"out-of-fold {model} model, accuracy {acc:.1%}" + (
        f"; the better of {', '.join(f'{k} {v:.1%}' for k, v in tried.items())}" if len(tried) > 1 else "")
    if weak:
        sev = "info"
        msg = (f"{n_issue:,} of {len(rows):,} rows ({share:.1%}) look mislabelled to cleanlab, but the audit's model "
               f"is too weak to judge labels ({chosen}, below the {min_acc:.0%} needed): most of these are "
               "probably its own mistakes, not the data's")
        advice = ("a stronger model (a fine-tuned rung) can re-check the labels; the top-ranked rows are still worth "
                  "a look.")
    else:
        sev = "warning" if share > float(ctx.cfg.get("label_issue_share_warn", 0.03)) else "info"
        msg = f"{n_issue:,} of {len(rows):,} rows ({share:.1%}) look mislabelled to cleanlab ({chosen})"
        advice = ("review the top-ranked rows (given vs suggested label); on a hard task some flags are just "
                  "difficult texts, not mistakes.")
    if sampled:
        msg += f" - a stratified sample of {len(rows):,} of {n_eligible:,} rows, sized to the audit's time budget"
    findings.append(Finding(sev, "likely_label_errors", msg, n_issue, examples, advice=advice))
