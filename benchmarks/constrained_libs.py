"""Which constrained-decoding library for JSON Schema output: xgrammar, outlines(-core) or
lm-format-enforcer, measured side by side on the same prompts, model and schema.

For each library: grammar compile time, wall time of constrained greedy generation of N
us-cities-json prompts (batched through ``adaptladder.generation.decode.Generator``), its
ratio to unconstrained generation of the same prompts, schema-valid rate and field F1.
Libraries that are not installed are reported as such (only xgrammar is a dependency; the
others were installed into a side folder for the comparison: pass it with ``--libs``).

    PYTHONPATH=src python benchmarks/constrained_libs.py --n 8 --libs /tmp/generation/libs_outlines \\
        --libs /tmp/generation/libs_lm-format-enforcer --out /tmp/generation/libs.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def xgrammar_factory(gen: Any, schema: dict[str, Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    c = gen.constraint(schema)
    return c.processor, time.perf_counter() - t0


def outlines_factory(gen: Any, schema: dict[str, Any]) -> tuple[Any, float]:
    import outlines
    from outlines.backends.outlines_core import OutlinesCoreBackend

    model, tok = gen._load()
    t0 = time.perf_counter()
    backend = OutlinesCoreBackend(outlines.from_transformers(model, tok))
    schema_s = json.dumps(schema)
    first = backend.get_json_schema_logits_processor(schema_s, whitespace_pattern=r"[ ]?")
    index = first.index
    dt = time.perf_counter() - t0

    def make() -> Any:
        from outlines.backends.outlines_core import OutlinesCoreLogitsProcessor

        return OutlinesCoreLogitsProcessor(index, "torch")

    return make, dt


def lmfe_factory(gen: Any, schema: dict[str, Any]) -> tuple[Any, float]:
    # lm-format-enforcer 0.11.3 imports PreTrainedTokenizerBase from transformers.tokenization_utils,
    # which transformers 5 no longer exports: its integration fails to import as shipped. A shim
    # module lets the comparison measure it anyway.
    import types

    import transformers

    shim = types.ModuleType("transformers.tokenization_utils")
    shim.PreTrainedTokenizerBase = transformers.PreTrainedTokenizerBase  # type: ignore[attr-defined]
    sys.modules["transformers.tokenization_utils"] = shim
    from lmformatenforcer import JsonSchemaParser
    from lmformatenforcer.integrations.transformers import (
        build_token_enforcer_tokenizer_data,
        build_transformers_prefix_allowed_tokens_fn,
    )
    from transformers import PrefixConstrainedLogitsProcessor

    _, tok = gen._load()
    t0 = time.perf_counter()
    data = build_token_enforcer_tokenizer_data(tok)
    dt = time.perf_counter() - t0

    def make() -> Any:
        fn = build_transformers_prefix_allowed_tokens_fn(data, JsonSchemaParser(schema))
        return PrefixConstrainedLogitsProcessor(fn, num_beams=1)

    return make, dt


LIBS = {"xgrammar": xgrammar_factory, "outlines": outlines_factory, "lm-format-enforcer": lmfe_factory}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--libs", action="append", default=[], help="extra folder to put on sys.path")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sys.path[:0] = args.libs
    from importlib import metadata

    from adaptladder.generation.datasets import load_generation_builtin
    from adaptladder.generation.decode import (
        Generator,
        bound_schema,
        max_new_tokens_for,
        schema_char_bound,
        string_cap_from_targets,
    )
    from adaptladder.generation.metrics import score_generations

    d = load_generation_builtin("us-cities-json")
    gen = Generator(batch_size=args.batch_size)
    train = d.targets[1000:1300]
    schema = bound_schema(d.schema, max_string=string_cap_from_targets(train))
    budget = max_new_tokens_for(train, gen.count_tokens)
    xs, ys = d.inputs[:args.n], d.targets[:args.n]
    prompts = [gen.build_prompt(x, d.instruction, shots=[(d.inputs[1000], d.targets[1000])]) for x in xs]
    rows = []
    base = gen.generate(prompts, max_new_tokens=budget)
    sc = score_generations(base.texts, ys, kind="json", schema=d.schema, n_boot=200)["metrics"]
    rows.append({"lib": "unconstrained", "seconds": base.seconds, "tokens": sum(base.new_tokens),
                 "schema_valid": sc["schema_valid"]["mean"], "field_f1": sc["field_f1"]["mean"]})
    print(rows[-1], flush=True)
    for name, fac in LIBS.items():
        if args.only and name not in args.only:
            continue
        try:
            make, compile_s = fac(gen, schema)
            version = metadata.version(name if name != "outlines" else "outlines")
        except Exception as e:  # not installed or incompatible: say so
            rows.append({"lib": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            print(rows[-1], flush=True)
            continue
        try:
            out = gen.generate(prompts, max_new_tokens=max(budget, schema_char_bound(schema) + 1),
                               processor_factory=make)
        except Exception as e:
            rows.append({"lib": name, "version": version, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            print(rows[-1], flush=True)
            continue
        sc = score_generations(out.texts, ys, kind="json", schema=d.schema, n_boot=200)["metrics"]
        rows.append({"lib": name, "version": version, "compile_s": compile_s, "seconds": out.seconds,
                     "tokens": sum(out.new_tokens), "ratio_to_unconstrained": out.seconds / base.seconds,
                     "truncated": sum(out.truncated), "schema_valid": sc["schema_valid"]["mean"],
                     "field_f1": sc["field_f1"]["mean"], "sample": out.texts[0]})
        print(rows[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"n": args.n, "batch_size": args.batch_size, "budget": budget, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
