"""Checks 3-5: exact and near duplicates, train -> validation / test leakage, conflicting labels."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from adaptladder.audit.context import (
    SupportsEncode,
    _Ctx,
)
from adaptladder.audit.report import (
    Finding,
    _short,
)
from adaptladder.audit.text import excerpt, strip_boilerplate
from adaptladder.task import SPLITS, normalize_text

_WORDS = re.compile(r"\w+", re.UNICODE)


# ---------------------------------------------------------------------------- 3. exact duplicates
def _check_exact(ctx: _Ctx, findings: list[Finding], stats: dict[str, Any]) -> None:
    df = pd.DataFrame({"g": ctx.group, "s": ctx.split.astype(str)})
    per = df.groupby(["g", "s"]).size()
    dup = per[per > 1]
    redundant = int((dup - 1).sum())
    n_groups = len(dup)
    by_split = {p: int((dup.xs(p, level="s") - 1).sum()) if p in dup.index.get_level_values("s") else 0
                for p in SPLITS}
    stats["exact_duplicates"] = {"redundant_rows": redundant, "groups": n_groups, "by_split": by_split,
                                 "unique_texts": ctx.n_groups}
    if not redundant:
        findings.append(Finding("info", "exact_duplicates", "no exact duplicates within a split "
                                "(after case / whitespace / punctuation normalisation)", 0))
        return
    top = dup.sort_values(ascending=False).head(ctx.max_ex)
    examples = []
    for (g, s), c in top.items():
        i = int(ctx.first_row[g])
        labels = sorted({ctx.names[int(v)] for v in ctx.y[(ctx.group == g) & (ctx.split == s)]})
        examples.append({"copies": int(c), "split": s, "labels": "/".join(labels), "where": ctx.refs[i],
                         "text": _short(ctx.task.texts[i], 200)})
    share = redundant / max(len(ctx.y), 1)
    sev = "warning" if share > float(ctx.cfg.get("duplicate_share_warn", 0.02)) else "info"
    findings.append(Finding(sev, "exact_duplicates",
                            f"{redundant:,} redundant row(s) ({share:.1%}) in {n_groups:,} group(s) of identical texts "
                            f"within a split (train {by_split['train']:,}, validation {by_split['validation']:,}, "
                            f"test {by_split['test']:,})", redundant, examples,
                            advice="duplicates over-weight some texts in training and in the score; "
                                   "`--dedupe OUT_DIR` keeps one copy."))


# ---------------------------------------------------------------------------- 3b. near duplicates
def _embed_groups(ctx: _Ctx, encoder: str | SupportsEncode, progress: bool, seconds: float | None = None,
                  clock: Any = time.perf_counter, min_groups: int = 200) -> np.ndarray:
    """Embeddings of one representative text per normalised group (L2-normalised float32).

    The encoder reads each text after :func:`strip_boilerplate` (so e-mail headers do not fill
    its window; texts without boilerplate are embedded as they are and share the rungs' cache),
    in chunks reported to :mod:`adaptladder.progress` (a bar with ETA on a terminal, a heartbeat
    line with done/total, elapsed and ETA at least every 20 s elsewhere).

    With ``seconds`` (the audit's time budget for this stage) the groups are embedded in a
    seeded label-stratified order and embedding stops before a chunk that would not fit (at
    least ``min_groups`` are embedded): the groups left out get zero vectors (no similarity to
    anything), ``ctx.embedded`` marks the ones embedded and ``ctx.embed_budget`` says what was done.
    """
    if isinstance(encoder, str):
        from adaptladder.encode import get_encoder

        enc: SupportsEncode = get_encoder(encoder)
    else:
        enc = encoder
    raw = [ctx.task.texts[int(i)] for i in ctx.first_row]
    reps = [strip_boilerplate(t) for t in raw]
    ctx.n_stripped = sum(1 for r, t in zip(reps, raw, strict=True) if r is not t)
    ctx.embedded_texts = reps
    window = getattr(enc, "max_length", None)  # tokens the encoder reads; unknown for custom encoders
    ctx.embed_window = int(window) if isinstance(window, int) and window > 0 else None
    ctx.embed_tokenizer = encoder if isinstance(encoder, str) else str(getattr(enc, "model", "minilm"))
    before = dict(getattr(enc, "stats", {}) or {})
    n = len(reps)
    from adaptladder import progress as prog
    from adaptladder.budget import run_within, stratified_order

    if seconds is None:
        order = np.arange(n, dtype=np.int64)
        chunk = 512
    else:  # every prefix of this order is a label-stratified sample of the groups
        order = stratified_order(ctx.y[ctx.first_row], ctx.seed)
        chunk = 256

    def encode(pos: np.ndarray) -> np.ndarray:
        return np.asarray(enc.encode([reps[int(i)] for i in pos], progress=False, desc="audit: embedding"),
                          dtype=np.float32)

    # chunks through the cache: a bar with ETA on a terminal, a heartbeat line at least every 20 s elsewhere
    # a small first chunk (it also pays the encoder's load and calibration) so a rate and an ETA show early
    with prog.step("audit: embedding", total=n):
        done = run_within(encode, order, seconds=seconds, chunk=chunk, first_chunk=64, min_n=min(min_groups, n),
                          clock=clock, on_chunk=lambda k: prog.update(done=k))
    parts = [p for p in done.outputs if len(p)]
    dim = parts[0].shape[1] if parts else 1
    emb = np.zeros((n, dim), dtype=np.float32)
    if parts:
        emb[done.done] = np.concatenate(parts)
    ctx.embedded = np.zeros(n, dtype=bool)
    ctx.embedded[done.done] = True
    ctx.embed_budget = dict(done.record(), budget_seconds=None if seconds is None else round(seconds, 1))
    after = dict(getattr(enc, "stats", {}) or {})
    ctx.embed_stats = {"texts": n, "embedded": len(done.done), "boilerplate_stripped": ctx.n_stripped,
                       **{k: int(after.get(k, 0) - before.get(k, 0)) for k in ("hits", "misses") if k in after}}
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


_LEX_MAX_WORDS = 3000


def lexical_tokens(text: str) -> list[str]:
    """The words a whole-text comparison uses: boilerplate stripped, normalised, at most 3,000 words."""
    return normalize_text(strip_boilerplate(text)).split()[:_LEX_MAX_WORDS]


def text_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """Word-level normalised similarity of two token lists: 1 - Indel distance / (len a + len b).

    2 x (longest common word subsequence) / (total words): 1.0 for the same words in the same
    order, 0.8 for a 10-word text with 2 words changed; two unrelated English texts share only
    function words (typically under 0.4).
    """
    from rapidfuzz.distance import Indel

    if not a and not b:
        return 1.0
    return float(Indel.normalized_similarity(a, b))


def confirm_pairs(ctx: _Ctx, pairs: np.ndarray, sims: np.ndarray, min_text_sim: float,
                  max_checked: int = 200_000, seconds: float | None = None,
                  clock: Any = time.perf_counter) -> np.ndarray:
    """Whole-text similarity of candidate pairs (groups), NaN for pairs beyond ``max_checked``
    or not reached within ``seconds`` (the audit's budget for this stage; None: no limit).

    The most similar candidates (by cosine) are checked first.
    """
    out = np.full(len(pairs), np.nan, dtype=np.float32)
    if not len(pairs):
        return out
    order = np.argsort(-sims, kind="stable")[:max_checked]
    tokens: dict[int, list[str]] = {}

    def tok(g: int) -> list[str]:
        if g not in tokens:
            tokens[g] = lexical_tokens(ctx.task.texts[int(ctx.first_row[g])])
        return tokens[g]

    from rapidfuzz.distance import Indel

    from adaptladder import progress as prog

    t0 = clock()
    with prog.step("audit: comparing whole texts of candidate pairs", total=len(order)):
        for k, o in enumerate(order.tolist()):
            if seconds is not None and k % 200 == 0 and k and clock() - t0 > seconds:
                ctx.confirm_stopped = k  # the rest stay NaN: not checked, so not confirmed
                break
            _confirm_one(pairs, o, tok, min_text_sim, out, Indel)
            if k % 1000 == 999:
                prog.update(done=k + 1)
    return out


def _confirm_one(pairs: np.ndarray, o: int, tok: Any, min_text_sim: float, out: np.ndarray, indel: Any) -> None:
    ta, tb = tok(int(pairs[o, 0])), tok(int(pairs[o, 1]))
    la, lb = len(ta), len(tb)
    if la + lb and 2 * min(la, lb) / (la + lb) < min_text_sim:
        out[o] = 2 * min(la, lb) / (la + lb)  # the length ratio bounds the similarity, already below the threshold
    else:
        out[o] = 1.0 if not (la or lb) else indel.normalized_similarity(ta, tb)


def near_duplicate_pairs(emb: np.ndarray, threshold: float, block: int = 1024,
                         max_pairs: int = 2_000_000) -> tuple[np.ndarray, np.ndarray, int]:
    """All pairs ``i < j`` with cosine similarity >= ``threshold``, by blockwise matrix products.

    Returns ``(pairs (m, 2), similarities (m,), total)``; ``total`` keeps counting past
    ``max_pairs`` so a truncated list is visible. Memory stays at ``block x n`` floats.
    """
    n = len(emb)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    total = kept = 0
    for s in range(0, n, block):
        b = min(block, n - s)
        sims = emb[s:s + b] @ emb[s:].T  # (b, n - s): only columns j >= i's block start
        sims[:, :b][np.tri(b, dtype=bool)] = -np.inf  # keep j > i: mask the diagonal block's lower triangle
        r, c = np.nonzero(sims >= threshold)
        total += len(r)
        if kept < max_pairs and len(r):
            take = min(len(r), max_pairs - kept)
            out_i.append(r[:take] + s)
            out_j.append(c[:take] + s)
            out_s.append(sims[r[:take], c[:take]])
            kept += take
    if not out_i:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32), total
    pairs = np.stack([np.concatenate(out_i), np.concatenate(out_j)], axis=1).astype(np.int64)
    return pairs, np.concatenate(out_s).astype(np.float32), total


def _check_near(ctx: _Ctx, emb: np.ndarray, thr: float, findings: list[Finding],
                stats: dict[str, Any], seconds: float | None = None, clock: Any = time.perf_counter) -> np.ndarray:
    """Near-duplicates: cosine similarity proposes candidate pairs, a whole-text comparison confirms them.

    Only confirmed pairs count (near-duplicates, label disagreement, leakage, --dedupe). When many
    candidate pairs carry different labels the encoder's similarity is a poor duplicate signal on
    these texts (shared headers, templates) and the audit says so.
    """
    cand, cand_sims, total = near_duplicate_pairs(emb, thr, max_pairs=int(ctx.cfg.get("max_pairs", 2_000_000)))
    min_text = float(ctx.cfg.get("near_dup_min_text_similarity", 0.8))
    t = time.perf_counter()
    text_sims = confirm_pairs(ctx, cand, cand_sims, min_text, int(ctx.cfg.get("max_confirm_pairs", 200_000)),
                              seconds=seconds, clock=clock)
    confirm_s = time.perf_counter() - t
    # the encoder read both texts whole (short texts, e.g. questions): its similarity is itself a whole-text
    # comparison, and paraphrases ("Who owns CNN ?" / "CNN is owned by whom ?") count as before; a text
    # longer than the window (or when the window is unknown) needs the whole-text word check
    read_whole = _read_whole(ctx, cand)
    ok = read_whole | (text_sims >= min_text)  # NaN (not checked) is False
    pairs, sims = cand[ok], cand_sims[ok]
    ctx.pair_sims = sims
    ctx.pair_text_sims = text_sims[ok]
    ctx.near_done = True
    ins = ctx.in_split
    a, b = pairs[:, 0], pairs[:, 1]
    same = np.zeros(len(pairs), dtype=bool)
    for p in SPLITS:
        same |= ins[p][a] & ins[p][b]
    within = pairs[same]
    rows_involved = 0
    if len(within):
        gs = np.unique(within)
        rows_involved = int(np.isin(ctx.group, gs).sum())
    # labels of the representatives: near-duplicates that disagree are label-noise candidates
    la, lb = ctx.y[ctx.first_row[a]], ctx.y[ctx.first_row[b]]
    disagree = la != lb
    cand_disagree = ctx.y[ctx.first_row[cand[:, 0]]] != ctx.y[ctx.first_row[cand[:, 1]]]
    n_checked = int(np.isfinite(text_sims).sum())
    stats["near_duplicates"] = {"threshold": thr, "min_text_similarity": min_text,
                                "candidates": int(total), "candidates_kept": len(cand),
                                "candidates_checked": n_checked, "candidates_rejected": len(cand) - int(ok.sum()),
                                "candidates_with_different_labels": int(cand_disagree.sum()),
                                "confirmed_by_text": int((text_sims >= min_text).sum()),
                                "confirmed_as_read_whole": int((read_whole & ~(text_sims >= min_text)).sum()),
                                "encoder_window_tokens": ctx.embed_window,
                                "pairs": len(pairs), "pairs_within_split": int(same.sum()),
                                "rows_within_split": rows_involved,
                                "pairs_with_different_labels": int(disagree.sum()),
                                "truncated": bool(total > len(cand) or n_checked < len(cand)),
                                "boilerplate_stripped": int(getattr(ctx, "n_stripped", 0)),
                                "confirm_seconds": round(confirm_s, 3),
                                "compared": "encoder: the first window of each text after e-mail headers, quoted "
                                            "lines and signatures are removed; confirmation: whole texts (up to "
                                            f"{_LEX_MAX_WORDS:,} words), the same parts removed"}
    how = (f"cosine >= {thr}, confirmed on whole texts: read whole by the encoder, or word similarity >= "
           f"{min_text}")
    rejected = len(cand) - int(ok.sum())
    note = f"; {rejected:,} of {len(cand):,} embedding candidates rejected by the whole-text check" if rejected else ""
    order = np.argsort(-sims[same], kind="stable")[: ctx.max_ex]

    def shared_split(g1: int, g2: int) -> str:
        return next(p for p in SPLITS if ins[p][g1] and ins[p][g2])

    examples = [_pair_example(ctx, int(within[o, 0]), int(within[o, 1]), float(sims[same][o]),
                              shared_split(int(within[o, 0]), int(within[o, 1])),
                              text_sim=float(ctx.pair_text_sims[same][o])) for o in order]
    n_within = int(same.sum())
    if n_within:
        share = rows_involved / max(len(ctx.y), 1)
        sev = "warning" if share > float(ctx.cfg.get("duplicate_share_warn", 0.02)) else "info"
        findings.append(Finding(sev, "near_duplicates",
                                f"{n_within:,} near-duplicate pair(s) ({how}) within a split, "
                                f"involving {rows_involved:,} row(s) ({share:.1%}){note}", n_within, examples,
                                advice="near-copies (templates, re-posts) inflate what the model seems to know; "
                                       "review them, and raise --near-dup-threshold if they are distinct texts."))
    else:
        findings.append(Finding("info", "near_duplicates", f"no near-duplicate pairs ({how}) within a split{note}",
                                0))
    # a detector check: candidates (before confirmation) that disagree on labels as often as random pairs do
    # mean the encoder's similarity does not track "same text" here (e.g. e-mails sharing long headers)
    prior = np.bincount(ctx.y, minlength=len(ctx.names)) / max(len(ctx.y), 1)
    random_disagree = 1.0 - float((prior ** 2).sum())
    cand_share = float(cand_disagree.mean()) if len(cand) else 0.0
    stats["near_duplicates"]["candidate_label_disagreement"] = cand_share
    stats["near_duplicates"]["random_pair_label_disagreement"] = random_disagree
    min_pairs = int(ctx.cfg.get("detector_check_min_pairs", 20))
    if len(cand) >= min_pairs and random_disagree > 0 and cand_share > 0.5 * random_disagree:
        findings.append(Finding(
            "warning", "near_duplicate_detector_doubtful",
            f"{int(cand_disagree.sum()):,} of {len(cand):,} embedding candidate pairs ({cand_share:.0%}) carry "
            f"different labels (random pairs: {random_disagree:.0%}): cosine similarity is not a good duplicate "
            f"signal on these texts, so only the {len(pairs):,} pair(s) the whole-text check confirmed count",
            int(cand_disagree.sum()),
            advice="the detector, not the data, is probably wrong for most candidates (shared headers or "
                   "templates); check a few confirmed pairs before trusting the near-duplicate findings."))
    if disagree.any():
        order = np.flatnonzero(disagree)[np.argsort(-sims[disagree], kind="stable")][: ctx.max_ex]
        findings.append(Finding("warning" if disagree.sum() > 0.005 * len(ctx.y) else "info",
                                "near_duplicate_label_disagreement",
                                f"{int(disagree.sum()):,} near-duplicate pair(s) ({how}) carry different labels",
                                int(disagree.sum()),
                                [_pair_example(ctx, int(pairs[o, 0]), int(pairs[o, 1]), float(sims[o]),
                                               text_sim=float(ctx.pair_text_sims[o])) for o in order],
                                advice="near-identical texts with different labels are often labelling mistakes."))
    cross = np.zeros(len(pairs), dtype=bool)
    for p in SPLITS:
        for q in SPLITS:
            if p != q:
                cross |= ins[p][a] & ins[q][b]
    ctx.cross_pairs = pairs[cross]
    return pairs


#: The embedding alone confirms a pair only when both contents are this short (a question, a one-line
#: message: a paraphrase is then a plausible copy); longer texts also need the word-level check, since
#: two different bodies that share vocabulary, a template or a footer can embed alike.
SHORT_CONTENT_WORDS = 20


def _read_whole(ctx: _Ctx, cand: np.ndarray) -> np.ndarray:
    """Per candidate pair: did the encoder read both (boilerplate-stripped) texts whole, and are both
    short (:data:`SHORT_CONTENT_WORDS`)? Only then does the embedding alone confirm the pair."""
    out = np.zeros(len(cand), dtype=bool)
    window = getattr(ctx, "embed_window", None)
    if window is None or not len(cand):
        return out
    from adaptladder.audit.text import token_lengths

    gs = np.unique(cand)
    lengths, _ = token_lengths([ctx.embedded_texts[int(g)] for g in gs], ctx.embed_tokenizer)
    whole = np.zeros(ctx.n_groups, dtype=bool)
    words = np.array([len(ctx.embedded_texts[int(g)].split()) for g in gs])
    # [CLS] and [SEP] take two positions; cut texts count as long
    whole[gs] = (lengths <= window - 2) & (words <= SHORT_CONTENT_WORDS)
    return whole[cand[:, 0]] & whole[cand[:, 1]]


def matched_excerpts(text_a: str, text_b: str, width: int = 160) -> tuple[str, str]:
    """Excerpts of two texts centred on their longest common run of words (after boilerplate)."""
    from difflib import SequenceMatcher

    def words(t: str) -> tuple[str, list[tuple[int, int]]]:
        body = strip_boilerplate(t)
        spans = [(m.start(), m.end()) for m in _WORDS.finditer(body)][:_LEX_MAX_WORDS]
        return body, spans

    ba, sa = words(text_a)
    bb, sb = words(text_b)
    wa = [ba[s:e].casefold() for s, e in sa]
    wb = [bb[s:e].casefold() for s, e in sb]
    if not wa or not wb:
        return _short(text_a, width), _short(text_b, width)
    m = SequenceMatcher(None, wa, wb, autojunk=False).find_longest_match(0, len(wa), 0, len(wb))
    if m.size == 0:
        return excerpt(ba, 0, 0, width), excerpt(bb, 0, 0, width)
    return (excerpt(ba, sa[m.a][0], sa[m.a + m.size - 1][1], width),
            excerpt(bb, sb[m.b][0], sb[m.b + m.size - 1][1], width))


def _pair_example(ctx: _Ctx, g1: int, g2: int, sim: float, split: str | None = None,
                  text_sim: float | None = None) -> dict[str, Any]:
    def row(g: int) -> int:  # a row of the group, from ``split`` when given (so the pair shows where it clashes)
        if split is not None:
            hit = np.flatnonzero((ctx.group == g) & (ctx.split == split))
            if len(hit):
                return int(hit[0])
        return int(ctx.first_row[g])

    i, j = row(g1), row(g2)
    ea, eb = matched_excerpts(ctx.task.texts[i], ctx.task.texts[j])
    out: dict[str, Any] = {"similarity": round(sim, 4)}
    if text_sim is not None:
        out["text_similarity"] = round(text_sim, 3)
    out.update({"where_a": ctx.refs[i], "split_a": str(ctx.split[i]), "label_a": ctx.names[int(ctx.y[i])],
                "text_a": ea, "where_b": ctx.refs[j], "split_b": str(ctx.split[j]),
                "label_b": ctx.names[int(ctx.y[j])], "text_b": eb})
    return out


# ---------------------------------------------------------------------------- 4. leakage
def _check_leakage(ctx: _Ctx, pairs: np.ndarray, findings: list[Finding], stats: dict[str, Any]) -> None:
    ins = ctx.in_split
    near_partner: dict[str, dict[int, tuple[int, float]]] = {}
    sims = ctx.pair_sims
    leak_stats: dict[str, Any] = {}
    for evaluated, source in (("test", "train"), ("validation", "train"), ("test", "validation")):
        rows = np.flatnonzero(ctx.split == evaluated)
        if not len(rows):
            continue
        exact = ins[source][ctx.group[rows]]
        # near: the group of an evaluated row has a near-duplicate group that occurs in `source`
        partner: dict[int, tuple[int, float]] = {}
        if len(pairs):
            a, b = pairs[:, 0], pairs[:, 1]
            for x, y_ in ((a, b), (b, a)):
                m = ins[evaluated][x] & ins[source][y_] & ~ins[source][x]
                for g, h, s in zip(x[m].tolist(), y_[m].tolist(), sims[m].tolist(), strict=True):
                    if g not in partner or s > partner[g][1]:
                        partner[g] = (h, s)
        near_partner[f"{evaluated}<-{source}"] = partner
        near = np.array([int(g) in partner for g in ctx.group[rows]], dtype=bool) & ~exact
        n_exact, n_near = int(exact.sum()), int(near.sum())
        share = (n_exact + n_near) / len(rows)
        leak_stats[f"{evaluated}_in_{source}"] = {"exact": n_exact, "near": n_near, "rows": len(rows),
                                                  "share": share}
        if not (n_exact or n_near):
            continue
        examples = []
        n_near_ex = min(n_near, ctx.max_ex // 2)
        for i in rows[exact][: ctx.max_ex - n_near_ex]:
            j = int(np.flatnonzero((ctx.group == ctx.group[i]) & (ctx.split == source))[0])
            examples.append(ctx.ex(int(i), kind="exact", matches=ctx.refs[j],
                                   matched_label=ctx.names[int(ctx.y[j])]))
        for i in rows[near][: max(0, ctx.max_ex - len(examples))]:
            h, s = partner[int(ctx.group[i])]
            j = int(np.flatnonzero((ctx.group == h) & (ctx.split == source))[0])
            ea, eb = matched_excerpts(ctx.task.texts[int(i)], ctx.task.texts[j])
            ex = ctx.ex(int(i), kind="near", similarity=round(s, 4), matches=ctx.refs[j], text_match=eb)
            ex["text"] = ea
            examples.append(ex)
        code = f"leakage_{source}_{evaluated}"
        msg = (f"{n_exact + n_near:,} of {len(rows):,} {evaluated} rows ({share:.1%}) have the same "
               f"({n_exact:,}) or a near-same ({n_near:,}) text in {source}")
        if evaluated == "test" and source == "train":
            # exact copies are memorised outright; near-copies (cosine >= threshold: templated spam,
            # re-posted questions) are often a real property of the stream, so they get more room
            limit = float(ctx.cfg.get("max_test_leak_share", 0.01))
            near_limit = max(float(ctx.cfg.get("max_test_near_leak_share", 0.10)), limit)
            exact_share = n_exact / len(rows)
            if exact_share > limit:
                sev = "error"
                msg += f"; exact copies ({exact_share:.1%}) above the {limit:.0%} allowed"
            elif share > near_limit:
                sev = "error"
                msg += f"; above the {near_limit:.0%} allowed for exact + near copies"
            else:
                sev = "warning"
                msg += (f"; within the {limit:.0%} allowed for exact and the {near_limit:.0%} for exact + near "
                        "copies, but the test score is somewhat optimistic")
            advice = ("the test score would partly measure memorisation: run `adaptladder audit DATA --dedupe OUT_DIR` "
                      "and use the clean splits (or --force to run anyway).")
        elif source == "train":
            limit = float(ctx.cfg.get("max_validation_leak_share", 0.05))
            sev = "warning" if share > limit else "info"
            advice = "validation leakage flatters rung selection and early stopping; --dedupe removes it."
        else:
            sev = "info" if share <= 0.05 else "warning"
            advice = "validation and test share texts; their scores are not independent."
        findings.append(Finding(sev, code, msg, n_exact + n_near, examples, advice=advice))
    if "test_in_train" in leak_stats:
        stats["test_leak_share"] = leak_stats["test_in_train"]["share"]
    stats["leakage"] = leak_stats
    if not any(v["exact"] or v["near"] for v in leak_stats.values()):
        findings.append(Finding("info", "leakage", "no test or validation text (exact"
                                + (" or near" if ctx.near_done else "")
                                + ") appears in train", 0))


# ---------------------------------------------------------------------------- 5. conflicting labels
def _check_conflicts(ctx: _Ctx, findings: list[Finding], stats: dict[str, Any]) -> None:
    df = pd.DataFrame({"g": ctx.group, "y": ctx.y, "s": ctx.split.astype(str)})
    nlab = df.groupby("g")["y"].nunique()
    bad = nlab[nlab > 1].index.to_numpy()
    ctx.conflict_groups = set(bad.tolist())
    if not len(bad):
        stats["conflicts"] = {"groups": 0, "rows": 0, "train_test_groups": 0}
        findings.append(Finding("info", "conflicting_labels", "no text carries two different labels", 0))
        return
    sub = df[df["g"].isin(bad)]
    cross = []
    for g, part in sub.groupby("g"):
        tr = set(part.loc[part["s"] == "train", "y"])
        ev = set(part.loc[part["s"].isin(["test", "validation"]), "y"])
        if tr and ev and tr != ev:
            cross.append(int(g))
    examples = []
    for g in (cross + [int(x) for x in bad if int(x) not in set(cross)])[: ctx.max_ex]:
        part = sub[sub["g"] == g]
        i = int(ctx.first_row[g])
        examples.append({"text": _short(ctx.task.texts[i], 200),
                         "labels": ", ".join(f"{ctx.names[int(y)]}@{s}" for y, s in zip(part["y"], part["s"],
                                                                                         strict=True)),
                         "where": ", ".join(ctx.refs[int(r)] for r in part.index[:4])})
    stats["conflicts"] = {"groups": len(bad), "rows": len(sub), "train_test_groups": len(cross)}
    advice = "decide the right label (or drop the text); `--dedupe` drops conflicting rows."
    if cross:
        # an error when it can move the score; a handful in a large evaluation set is a warning
        n_eval = int(np.isin(ctx.split.astype(str), ["validation", "test"]).sum())
        n_cross_rows = int(sub[sub["g"].isin(cross) & sub["s"].isin(["validation", "test"])].shape[0])
        share = n_cross_rows / max(n_eval, 1)
        limit = float(ctx.cfg.get("max_eval_conflict_share", 0.005))
        findings.append(Finding("error" if share > limit else "warning", "conflicting_labels_train_test",
                                f"{len(cross):,} text(s) are labelled one way in train and another in "
                                f"validation/test ({n_cross_rows:,} evaluation rows, {share:.2%}; "
                                f"{'above' if share > limit else 'within'} the {limit:.1%} allowed): the model "
                                "is scored wrong for learning the training label",
                                len(cross), examples[: ctx.max_ex], advice=advice))
    findings.append(Finding("warning", "conflicting_labels",
                            f"{len(bad):,} text(s) ({len(sub):,} rows) appear with different labels",
                            len(bad), examples, advice=advice))
