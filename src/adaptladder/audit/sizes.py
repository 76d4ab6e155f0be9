"""Checks 1-2: size against the requirements table (which ladder families the data supports) and balance."""

from __future__ import annotations

from typing import Any

import numpy as np

from adaptladder.audit.context import _Ctx
from adaptladder.audit.report import Finding
from adaptladder.audit.requirements import (
    FAMILY_ORDER,
    FAMILY_WORDS,
)


# ---------------------------------------------------------------------------- 1. size and families
def _check_size(ctx: _Ctx, reqs: dict[str, Any], task_type: str, findings: list[Finding],
                stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = reqs["task_types"][task_type]
    y, names, split = ctx.y, ctx.names, ctx.split
    k = len(names)
    total = np.bincount(y, minlength=k)
    train = np.bincount(y[split == "train"], minlength=k)
    test = np.bincount(y[split == "test"], minlength=k)
    n, n_train = len(y), int((split == "train").sum())
    stats["size"] = {"n": n, "n_train": n_train, "n_validation": int((split == "validation").sum()),
                     "n_test": int((split == "test").sum()),
                     "per_class": {names[i]: int(total[i]) for i in range(k)},
                     "per_class_train": {names[i]: int(train[i]) for i in range(k)},
                     "task_type": task_type, "requirements": spec}
    lo, hi = spec["recommended"]
    if n < spec["minimum"]:
        findings.append(Finding("warning", "size_below_minimum",
                                f"{n:,} labelled examples is below the {spec['minimum']:,} a {task_type} task needs "
                                f"(recommended {lo:,}-{hi:,})", n,
                                advice="label more examples; until then expect noisy scores and wide intervals."))
    elif n < lo:
        findings.append(Finding("info", "size", f"{n:,} labelled examples: above the {task_type} minimum "
                                f"({spec['minimum']:,}), below the recommended {lo:,}-{hi:,}", n))
    else:
        findings.append(Finding("info", "size", f"{n:,} labelled examples: meets the {task_type} recommendation "
                                f"({lo:,}-{hi:,})", n))
    tiny = [i for i in range(k) if total[i] < int(ctx.cfg.get("min_class_examples", 2))]
    if tiny:
        findings.append(Finding("error", "tiny_class", f"{len(tiny)} class(es) have fewer than "
                                f"{ctx.cfg.get('min_class_examples', 2)} examples: "
                                + ", ".join(f"{names[i]!r} ({total[i]})" for i in tiny), len(tiny),
                                [{"label": names[i], "n": int(total[i])} for i in tiny[: ctx.max_ex]],
                                advice="add examples for these classes or drop them; nothing can learn or be "
                                       "measured on one example."))
    no_train = [i for i in range(k) if train[i] == 0 and total[i] > 0]
    if no_train:
        findings.append(Finding("error", "class_missing_from_train",
                                "classes with no training example: " + ", ".join(repr(names[i]) for i in no_train),
                                len(no_train), advice="move examples of these classes into train."))
    no_test = [i for i in range(k) if test[i] == 0]
    if no_test and (split == "test").any():
        findings.append(Finding("warning", "class_missing_from_test",
                                "classes with no test example (their recall cannot be measured): "
                                + ", ".join(repr(names[i]) for i in no_test), len(no_test)))
    small = [i for i in range(k) if total[i] < spec["min_per_class"] and i not in tiny]
    if small:
        order = sorted(small, key=lambda i: total[i])
        findings.append(Finding("warning", "small_classes", f"{len(small)} class(es) have fewer than the "
                                f"{spec['min_per_class']} examples per class a {task_type} task needs: "
                                + ", ".join(f"{names[i]!r} ({total[i]})" for i in order[:6])
                                + (" ..." if len(order) > 6 else ""), len(small),
                                [{"label": names[i], "n": int(total[i]), "n_train": int(train[i])}
                                 for i in order[: ctx.max_ex]],
                                advice="label more examples of these classes first."))
    support: dict[str, dict[str, Any]] = {}
    for fam in FAMILY_ORDER:
        rule = reqs["families"].get(fam)
        if rule is None:
            continue
        min_train, min_pc = int(rule.get("min_train", 0)), int(rule.get("min_per_class", 0))
        short = [names[i] for i in range(k) if train[i] < min_pc]
        ok = n_train >= min_train and not short
        if ok and min_train == 0 and min_pc == 0:
            reason = f"{rule.get('why', '')}; needs no training examples"
        elif ok:
            reason = f"{rule.get('why', '')}; needs {min_train:,}+ training examples and {min_pc}+ per class"
        elif n_train < min_train:
            reason = f"needs {min_train:,}+ training examples, has {n_train:,}"
        else:
            reason = (f"needs {min_pc}+ training examples per class; "
                      + ", ".join(repr(s) for s in short[:4]) + (" ..." if len(short) > 4 else "") + " have fewer")
        support[fam] = {"supported": bool(ok), "reason": reason, "min_train": min_train, "min_per_class": min_pc}
    sup = [FAMILY_WORDS[f] for f in FAMILY_ORDER if support.get(f, {}).get("supported")]
    # one rule table (families) decides support; the fine_tuning grades only say how good a supported one gets,
    # so the sentence about fine-tuning never says both "enough to try" and "too few"
    ft = reqs["fine_tuning"]
    fs = support.get("finetune")
    ft_min = fs["min_train"] if fs is not None else int(ft.get("too_few", 0))
    if (fs is not None and not fs["supported"]) or (fs is None and n_train < ft_min):
        verdict = f"too few for fine-tuning ({fs['reason'] if fs is not None else f'needs {ft_min:,}+'})"
    elif n_train < ft["a_start"]:
        verdict = f"a start for fine-tuning ({ft_min}-{ft['a_start']}); expect unstable results"
    elif n_train < ft["good"][0]:
        verdict = f"enough to try fine-tuning; {ft['good'][0]:,}-{ft['good'][1]:,} usually gives good results"
    else:
        verdict = f"enough for fine-tuning to give good results ({ft['good'][0]:,}+)"
    others = [f for f in FAMILY_ORDER if f != "finetune" and f in support and not support[f]["supported"]]
    msg = f"{n_train:,} training examples: {verdict}"
    if others:
        msg += "; " + "; ".join(f"too few for {FAMILY_WORDS[f]} ({support[f]['reason']})" for f in others)
    msg += f"; supported: {', '.join(sup) or 'nothing'}"
    findings.append(Finding("warning" if "finetune" in support and not support["finetune"]["supported"] else "info",
                            "supported_families", msg, len(sup)))
    stats["supported_families"] = [f for f in FAMILY_ORDER if support.get(f, {}).get("supported")]
    stats["fine_tuning_verdict"] = verdict
    return support


# ---------------------------------------------------------------------------- 2. balance
def _check_balance(ctx: _Ctx, spec: dict[str, Any], findings: list[Finding], stats: dict[str, Any]) -> None:
    total = np.bincount(ctx.y, minlength=len(ctx.names))
    present = total[total > 0]
    ratio = float(present.max() / present.min()) if len(present) else float("nan")
    order = np.argsort(total, kind="stable")
    smallest = [{"label": ctx.names[i], "n": int(total[i]), "share": float(total[i] / total.sum())}
                for i in order[:3]]
    stats["balance"] = {"imbalance_ratio": ratio, "smallest": smallest,
                        "largest": {"label": ctx.names[int(order[-1])], "n": int(total[order[-1]])}}
    desc = ", ".join(f"{s['label']!r} {s['n']:,} ({s['share']:.1%})" for s in smallest)
    msg = f"imbalance ratio {ratio:.1f} (largest / smallest class); smallest: {desc}"
    advice = ("compare rungs on macro-F1 (the ladder's default), train with class weights "
              "(class_weight='balanced'), keep splits stratified, and label more of the smallest classes.")
    if ratio > float(spec["max_imbalance"]):
        findings.append(Finding("warning", "class_imbalance", msg + f"; above the {spec['max_imbalance']} "
                                "this task type tolerates", 1, smallest, advice=advice))
    else:
        findings.append(Finding("info", "class_balance", msg, 0, smallest))
