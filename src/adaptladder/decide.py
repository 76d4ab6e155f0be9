"""The decision rule: which rung to recommend, as pure functions of the measured results.

Nothing here fits or predicts; every function reads result dicts (as stored in results.json) and
a config-like object with ``bar``, ``metric``, ``require_lower_bound``, ``margin`` and ``seed``.
The test split never decides: each rung's *decision estimate* is its cross-validated score over
train + validation when it has one (cheap rungs, see :mod:`adaptladder.crossval`), else its
validation score.

The rule (the README states it the same way):

1. A rung **meets the bar** when its estimate clears the bar, or when it is below the bar by no
   more than the non-inferiority ``margin`` and not significantly below it (the bar lies inside
   its 95% interval). With ``require_lower_bound`` the interval's lower bound must clear the bar.
2. Every pair of finished rungs is compared on the examples both were scored on (paired; a
   cross-validated rung against a validation-only rung on the validation examples), with Holm's
   correction across all the pairs.
3. The recommendation is the cheapest rung that meets the bar (with no bar, or when none meets
   it: any finished rung) and that no costlier rung which ran beats significantly. When a
   costlier rung is significantly better, the reasons say by how much and at what cost.
4. Cheaper rungs that missed the bar narrowly ("near-misses") are named with their shortfall,
   whether it is significant, and how much faster and cheaper they are.

:func:`choose_rung` holds the rule once for both ladders: :func:`recommend` (classification) gives it
this module's paired test, the generation ladder its paired bootstrap of per-example scores and its
own :class:`Wording` of the reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptladder.compare import compare_pair, describe, holm_family, no_evidence
from adaptladder.config import DEFAULT_MARGIN  # 0.005; README "How the recommendation is made" says why

__all__ = ["DEFAULT_MARGIN", "Wording", "bar_check", "choose_rung", "decision_comparisons", "decision_part",
           "estimate", "meets_bar", "recommend"]
#: A cheaper rung that missed the bar by less than this (or not significantly) is named as a near-miss.
NEAR_MISS = 0.02

PART_LABEL = {"cv": "cross-validated", "validation": "validation"}
#: A ladder's paired comparison of two rungs (``b`` the costlier): a comparison dict, or None.
Compare = Callable[[dict[str, Any], dict[str, Any]], "dict[str, Any] | None"]


def margin_of(cfg: Any) -> float:
    m = getattr(cfg, "margin", None)
    return DEFAULT_MARGIN if m is None else float(m)


def decision_part(res: dict[str, Any]) -> str:
    """``"cv"`` when the rung has a cross-validated estimate (with predictions), else ``"validation"``."""
    cv = res.get("cv")
    return "cv" if isinstance(cv, dict) and "predictions" in cv and "n" in cv else "validation"


def estimate(res: dict[str, Any], metric: str) -> dict[str, Any]:
    """The estimate the decision uses: value, 95% interval, n and which split (``cv`` / ``validation``)."""
    part = decision_part(res)
    p = res[part]
    ci = p.get(metric + "_ci") or [p[metric], p[metric]]
    out = {"part": part, "label": PART_LABEL[part], "value": float(p[metric]), "ci": [float(ci[0]), float(ci[1])],
           "n": int(p.get("n") or len(p.get("predictions") or p.get("indices") or []))}
    if part == "cv":
        out["folds"] = p.get("folds")
    return out


def bar_check(res: dict[str, Any], cfg: Any) -> dict[str, Any] | None:
    """Whether a finished rung meets the bar, and how; None without a bar or for an unfinished rung."""
    if getattr(cfg, "bar", None) is None or res.get("status") != "done":
        return None
    bar = float(cfg.bar)
    margin = margin_of(cfg)
    est = estimate(res, cfg.metric)
    value, (lo, hi) = est["value"], est["ci"]
    below_sig = hi < bar
    if getattr(cfg, "require_lower_bound", False):
        ok, how = lo >= bar, ("its lower 95% bound clears the bar" if lo >= bar else
                              "its lower 95% bound is below the bar")
    elif value >= bar:
        ok, how = True, "clears the bar"
    elif value >= bar - margin and not below_sig:
        ok, how = True, (f"is {bar - value:.4f} below the bar, within the margin {margin:g}, and not significantly "
                         f"below it (95% CI up to {hi:.3f})")
    else:
        ok, how = False, ("is significantly below the bar" if below_sig else
                          f"is below the bar by more than the margin {margin:g}")
    return dict(est, ok=bool(ok), how=how, gap=value - bar, significant_miss=bool(below_sig), bar=bar,
                margin=margin)


def meets_bar(res: dict[str, Any], cfg: Any) -> bool | None:
    """True / False whether a finished rung meets the bar (see :func:`bar_check`); None without a bar."""
    check = bar_check(res, cfg)
    return None if check is None else check["ok"]


def decision_comparisons(done: Sequence[dict[str, Any]], metric: str, *, all_labels: np.ndarray | None = None,
                         seed: int = 0) -> list[dict[str, Any]]:
    """Every pair of finished rungs (cheaper first) compared on their decision estimates' examples,
    Holm-corrected as one family."""
    return holm_family(done, _decision_compare(metric, all_labels, seed))


def _decision_compare(metric: str, all_labels: np.ndarray | None, seed: int) -> Compare:
    """The classification ladder's paired test of two rungs on their decision estimates' examples."""
    return lambda a, b: compare_pair(a, b, decision_part(a), metric, part_b=decision_part(b), all_labels=all_labels,
                                     seed=seed)


def _ratio(x: float) -> str:
    return f"{x:.1f}x" if x < 10 else f"{x:,.0f}x"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and np.isfinite(v) and v > 0 else None


def speed_cost_phrase(cheap: dict[str, Any], costly: dict[str, Any]) -> str:
    """'17x faster and 90x cheaper' (per prediction: latency p50 and cost per 1,000), or ''."""
    bits = []
    lc, lx = _num((cheap.get("predict") or {}).get("latency_ms_p50")), _num((costly.get("predict") or {})
                                                                             .get("latency_ms_p50"))
    if lc and lx and lx / lc >= 1.2:
        bits.append(f"{_ratio(lx / lc)} faster")
    cc, cx = _num(cheap.get("cost_per_1k_usd")), _num(costly.get("cost_per_1k_usd"))
    if cc and cx and cx / cc >= 1.2:
        bits.append(f"{_ratio(cx / cc)} cheaper")
    return " and ".join(bits)


def _money(v: Any) -> str:
    v = _num(v)
    if v is None:
        return "-"
    return f"${v:.2e}" if v < 0.01 else f"${v:,.2f}"


def _better_sentence(cheap: dict[str, Any], costly: dict[str, Any], cmp: dict[str, Any], why: str) -> str:
    lo, hi = cmp["diff_ci"]
    cost = []
    cc, cx = _num(cheap.get("cost_per_1k_usd")), _num(costly.get("cost_per_1k_usd"))
    if cc and cx:
        cost.append(f"{_ratio(cx / cc)} the cost per prediction ({_money(cx)} vs {_money(cc)} per 1,000)")
    lc, lx = _num((cheap.get("predict") or {}).get("latency_ms_p50")), _num((costly.get("predict") or {})
                                                                             .get("latency_ms_p50"))
    if lc and lx:
        cost.append(f"{_ratio(lx / lc)} the latency ({lx:.2f} vs {lc:.2f} ms)")
    at = (" at " + " and ".join(cost)) if cost else ""
    return (f"{cheap['name']} {why}, but {costly['name']} is significantly better by {cmp['diff']:+.3f} "
            f"{cmp['metric']} (95% CI [{lo:+.3f}, {hi:+.3f}], n={cmp['n_common']} paired {cmp['part']} examples, "
            f"Holm-adjusted p={cmp['p_holm']:.3g}){at}.")


def _versus_sentence(other: dict[str, Any], chosen: dict[str, Any], c: dict[str, Any]) -> str:
    verdict = f"significantly worse than {chosen['name']}" if c["significant"] else no_evidence(c)
    return (f"{other['name']} vs {chosen['name']}: {c['diff']:+.3f} {c['metric']}, {verdict} ({c['part']}, "
            f"n={c['n_common']}; Holm-adjusted p={c['p_holm']:.3g})")


@dataclass(frozen=True)
class Wording:
    """How a ladder's recommendation words what :func:`choose_rung` found (the rule is the same for all).

    ``beaten(cheap, costly, cmp, why)``: a cheaper rung passed over for a significantly better costlier one;
    ``versus(other, chosen, cmp)``: a costlier rung against the chosen one (the speed/cost tail is added);
    ``test``: the paired test's name; ``bar_names_metric``: "no rung met the bar 0.80 on chrf";
    ``near_misses``: name the cheaper rungs that missed the bar narrowly.
    """

    beaten: Callable[[dict[str, Any], dict[str, Any], dict[str, Any], str], str] = _better_sentence
    versus: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], str] = _versus_sentence
    test: str = "paired"
    bar_names_metric: bool = False
    near_misses: bool = True


def recommend(results: Sequence[dict[str, Any]], cfg: Any, *, all_labels: np.ndarray | None = None
              ) -> dict[str, Any]:
    """Choose a rung from the decision estimates only (cross-validated or validation; never test).

    See the module docstring for the rule. Returns ``{"rung", "rule", "bar_met", "reasons",
    "margin", "estimates", "comparisons"}``; ``comparisons`` are the Holm-corrected paired tests
    the rule used.
    """
    results = list(results)
    done = [r for r in results if r.get("status") == "done"]
    return choose_rung(results, done, cfg,
                       compare=_decision_compare(cfg.metric, all_labels, getattr(cfg, "seed", 0) or 0))


def training_record(r: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning rung's training record (``extra.training``), or {}."""
    tr = (r.get("extra") or {}).get("training") if isinstance(r.get("extra"), dict) else None
    return tr if isinstance(tr, dict) else {}


def choose_rung(results: Sequence[dict[str, Any]], done: Sequence[dict[str, Any]], cfg: Any, *, compare: Compare,
                wording: Wording | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The decision rule (module docstring) over ``done`` (the finished rungs, in cost order) for any ladder.

    ``compare(a, b)`` is the ladder's paired comparison of two rungs (``b`` the costlier; a dict with
    ``diff`` = b - a and ``p_value``, or None); every pair is compared and Holm-corrected as one family.
    Each rung's estimate and bar check come from :func:`estimate` / :func:`bar_check` on ``cfg.metric``.
    ``extra`` keys go into the returned document before ``reasons``.
    """
    wording, extra = wording or Wording(), extra or {}
    if not done:
        why = [f"{r['name']}: {r.get('status')} ({r.get('reason')})" for r in results]
        return {"rung": None, "rule": "none", **extra,
                "reasons": ["no rung finished" + (": " + "; ".join(why) if why else ".")]}
    m = cfg.metric
    margin = margin_of(cfg)
    cmps = holm_family(done, compare)
    lookup = {(c["a"], c["b"]): c for c in cmps}
    pos = {r["name"]: i for i, r in enumerate(done)}
    ests = {r["name"]: estimate(r, m) for r in done}
    checks = {r["name"]: bar_check(r, cfg) for r in done}
    has_bar = getattr(cfg, "bar", None) is not None

    def sig_better(costly: dict[str, Any], cheap: dict[str, Any]) -> dict[str, Any] | None:
        c = lookup.get((cheap["name"], costly["name"]))
        return c if c is not None and c["significant"] and c["diff"] > 0 else None

    def est_text(r: dict[str, Any]) -> str:
        e = ests[r["name"]]
        folds = f", {e['folds']}-fold" if e.get("folds") else ""
        return f"{e['label']} {m} {e['value']:.3f} (95% CI {e['ci'][0]:.3f}-{e['ci'][1]:.3f}, n={e['n']}{folds})"

    reasons: list[str] = []
    candidates = [r for r in done if checks[r["name"]] and checks[r["name"]]["ok"]] if has_bar else list(done)
    bar_met: bool | None = bool(candidates) if has_bar else None
    if has_bar and not candidates:
        best = max(done, key=lambda r: ests[r["name"]]["value"])
        on = f" on {m}" if wording.bar_names_metric else ""
        reasons.append(f"no rung met the bar {cfg.bar:.2f}{on} (margin {margin:g}); the best was {best['name']} "
                       f"({est_text(best)}). Consider more data, a stronger rung, or a lower bar; meanwhile:")
        candidates = list(done)
    chosen = None
    for r in candidates:
        beaten = [(o, c) for o in done[pos[r["name"]] + 1:] if (c := sig_better(o, r)) is not None]
        if not beaten:
            chosen = r
            break
        o, c = max(beaten, key=lambda oc: oc[1]["diff"])
        why = "meets the bar" if has_bar and bar_met else "is cheaper"
        reasons.append(wording.beaten(r, o, c, why))
    rule = "bar" if bar_met else "tradeoff"
    if chosen is None:  # every candidate has a significantly better costlier rung (mixed estimates)
        chosen = max(done, key=lambda r: ests[r["name"]]["value"])
        rule = "best"
        reasons.append(f"{chosen['name']} has the best {est_text(chosen)}.")
    name = chosen["name"]
    own = training_record(chosen)
    if own.get("base_model_outputs"):
        reasons.append(f"note: {name}: {own.get('base_model_note')}.")
    costlier = done[pos[name] + 1:]
    beats = f"; no costlier rung that ran is significantly better ({wording.test}, Holm-corrected)" if costlier else ""
    if has_bar and bar_met:
        ck = checks[name]
        reasons.insert(0, f"{name} is the cheapest rung that meets the bar {cfg.bar:.2f}: its {est_text(chosen)} "
                          f"{ck['how']}{beats}.")
    else:
        reasons.append(f"{name} is the cheapest rung that no costlier rung beats significantly ({wording.test}, "
                       f"Holm-corrected): {est_text(chosen)}.")
    for o in costlier:  # what the costlier rungs that ran would change
        c = lookup.get((name, o["name"]))
        tr = training_record(o)
        if tr.get("under_trained") or tr.get("base_model_outputs"):
            # a rung that did not get to train is no evidence against training: say so, never "not better"
            notes = [str(tr[k]) for k in ("under_trained_note", "base_model_note") if tr.get(k)]
            reasons.append(f"{o['name']} is not evidence against fine-tuning: " + "; ".join(notes) + ".")
        elif c is not None and not sig_better(o, chosen):
            sc = speed_cost_phrase(chosen, o)
            reasons.append(wording.versus(o, chosen, c) + (f"; {name} is {sc}." if sc else "."))
    if has_bar and wording.near_misses:  # near-misses: cheaper rungs that missed the bar narrowly, said out loud
        for r in done[:pos[name]]:
            ck = checks[r["name"]]
            if ck is None or ck["ok"] or (ck["significant_miss"] and -ck["gap"] >= NEAR_MISS):
                continue
            sig = "significant" if ck["significant_miss"] else "not significant"
            sc = speed_cost_phrase(r, chosen)
            reasons.append(f"{r['name']} missed the bar by {-ck['gap']:.4f} ({sig}; {est_text(r)}, margin "
                           f"{margin:g})" + (f", is {sc} than {name}." if sc else "."))
    return {"rung": name, "rule": rule, "bar_met": bar_met, **extra, "reasons": reasons, "margin": margin,
            "estimates": ests, "bar_checks": {k: v for k, v in checks.items() if v is not None},
            "comparisons": cmps}


def describe_comparisons(cmps: Sequence[dict[str, Any]]) -> list[str]:
    """The sentences of :func:`compare.describe` for a family of comparisons."""
    return [describe(c) for c in cmps]
