"""Check 7: text hygiene (empty, very short / long, URL-only, symbol noise, encoding garbage)."""

from __future__ import annotations

from typing import Any

import numpy as np

from adaptladder.audit.context import _Ctx
from adaptladder.audit.report import Finding
from adaptladder.audit.text import (
    _WORD,
    _noise_kind,
    excerpt,
    noise_span,
    token_lengths,
)


def _check_hygiene(ctx: _Ctx, encoder: Any, findings: list[Finding], stats: dict[str, Any]) -> None:
    texts = ctx.task.texts
    n = len(texts)
    cfg = ctx.cfg
    # empty texts that reached a Task (API users can build one directly)
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty and not any(f.code == "empty_text" for f in findings):
        findings.append(Finding("error", "empty_text", f"{len(empty):,} empty or whitespace-only text(s)",
                                len(empty), [ctx.ex(i) for i in empty[: ctx.max_ex]],
                                advice="fill them in or drop the rows."))
    short_k = int(cfg.get("short_text_tokens", 3))
    # word counts only matter below short_k: look at the first 300 characters unless that is not enough
    words = np.fromiter((w if (w := len(_WORD.findall(t[:300]))) >= short_k or len(t) <= 300
                         else len(_WORD.findall(t)) for t in texts), dtype=np.int64, count=n)
    short = np.flatnonzero((words < short_k) & (words > 0))
    share = len(short) / max(n, 1)
    if len(short):
        findings.append(Finding("warning" if share > float(cfg.get("short_text_share_warn", 0.05)) else "info",
                                "short_texts", f"{len(short):,} text(s) ({share:.1%}) have fewer than {short_k} words",
                                len(short), [ctx.ex(int(i)) for i in short[: ctx.max_ex]],
                                advice="very short texts carry little signal; check they are complete."))
    # token lengths: exact up to length_sample texts, else a seeded random sample (long documents are slow)
    cap = int(cfg.get("length_sample", 5000))
    sample = (np.arange(n) if n <= cap else
              np.sort(np.random.default_rng(ctx.seed).choice(n, cap, replace=False)))
    lengths, tok_name = token_lengths([texts[i] for i in sample], encoder if isinstance(encoder, str) else "minilm")
    m = len(sample)
    pct = {f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 95, 99)} if m else {}
    windows = [int(w) for w in cfg.get("context_windows", [256, 512])]
    over_share = {str(w): float((lengths > w).mean()) if m else 0.0 for w in windows}
    over = {w: round(v * n) for w, v in over_share.items()}
    estimated = m < n
    stats["lengths"] = {"tokenizer": tok_name, "tokens": {**pct, "max": int(lengths.max()) if m else 0,
                                                          "mean": float(lengths.mean()) if m else 0.0},
                        "over_window": over, "over_window_share": over_share,
                        "sampled": m if estimated else None}
    w0 = windows[0]
    n_long = over[str(w0)]
    long_share = over_share[str(w0)]
    msg = (f"token lengths p50 {pct.get('p50', 0):.0f}, p90 {pct.get('p90', 0):.0f}, p99 {pct.get('p99', 0):.0f}, "
           f"max {stats['lengths']['tokens']['max']:,}" + (" (lower bound: long texts cut)"
                                                             if stats['lengths']['tokens']['max'] > 800 else "")
           + "; " + ", ".join(f"{'~' if estimated else ''}{over[str(w)]:,} ({over_share[str(w)]:.1%}) over {w}"
                              for w in windows)
           + (f" (estimated from a seeded sample of {m:,} texts)" if estimated else ""))
    order = np.argsort(-lengths, kind="stable")[: min(ctx.max_ex, int((lengths > w0).sum()))]
    findings.append(Finding("warning" if long_share > float(cfg.get("long_text_share_warn", 0.10)) else "info",
                            "text_length", msg, n_long,
                            [ctx.ex(int(sample[i]), tokens=int(lengths[i])) for i in order],
                            advice=f"the encoder reads the first {w0} tokens; longer texts are truncated, so put the "
                                   "deciding part first or expect lower scores from encoder rungs."))
    kinds: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        kind = _noise_kind(t)
        if kind and kind != "empty":
            kinds.setdefault(kind, []).append(i)
    total_noise = sum(len(v) for v in kinds.values())
    stats["noise"] = {k: len(v) for k, v in kinds.items()}
    if total_noise:
        share = total_noise / max(n, 1)
        examples = []
        for k, idx in kinds.items():
            for i in idx[:2]:
                ex = ctx.ex(i, kind=k)
                span = noise_span(texts[i]) if k == "encoding garbage" else None
                if span is not None:  # show the garbage itself, not a beginning cut off before it
                    ex["text"] = excerpt(texts[i], span[0], span[1], width=100)
                    ex["chars"] = texts[i][span[0]:span[1]]
                examples.append(ex)
        examples = examples[: ctx.max_ex]
        findings.append(Finding("warning" if share > float(cfg.get("noise_share_warn", 0.01)) or "encoding garbage"
                                in kinds else "info", "noisy_texts",
                                f"{total_noise:,} text(s) look like noise: "
                                + ", ".join(f"{k} {len(v):,}" for k, v in kinds.items()), total_noise, examples,
                                advice="re-save files as UTF-8 (encoding garbage) and drop texts with no words."))
