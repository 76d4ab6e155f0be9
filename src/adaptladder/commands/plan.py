"""`adaptladder estimate` and `adaptladder advise`: planning before renting a GPU."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from adaptladder.commands import one_run_dir, print_json, renamed
from adaptladder.errors import AdaptError

console = Console()


def _memory_table(est: Any) -> Table:
    from adaptladder.estimate import fmt_gib, human_params

    d = est.to_dict()
    s = d["settings"]
    title = (f"{est.model['name']} · {s['method']} · seq {s['seq_len']} · batch {s['batch']} · {s['dtype']}"
             + (f" · {s['optimizer']}" if s["method"] != "inference" else "")
             + (" · grad ckpt" if s.get("grad_checkpointing") else "") + f" · {s['device']}")
    t = Table(title=title, show_lines=False)
    t.add_column("term")
    t.add_column("GiB", justify="right")
    t.add_column("note")
    m = est.memory
    t.add_row("parameters", "", f"{human_params(est.params['total'])} total, {human_params(est.params['trainable'])} "
              "trainable")
    for k, v in m["weights"].items():
        t.add_row(f"weights: {k}", fmt_gib(v), "")
    if s["method"] == "inference":
        t.add_row("KV cache", fmt_gib(m["kv_cache"]), "2 x layers x kv_dim x tokens")
        t.add_row("activations (working set)", fmt_gib(m["activations"]["working_set"] + m["activations"]["logits"]),
                  "one layer at a time + last-position logits")
    else:
        t.add_row("gradients", fmt_gib(m["gradients"]), "trainable params only")
        t.add_row("optimizer states", fmt_gib(m["optimizer"]["states"]), s["optimizer"])
        if m["optimizer"]["fp32_master_weights"]:
            t.add_row("fp32 master weights", fmt_gib(m["optimizer"]["fp32_master_weights"]), "mixed precision")
        act = m["activations"]
        t.add_row("activations saved for backward", fmt_gib(act["saved"]),
                  "checkpointed layer inputs" if s.get("grad_checkpointing") else "all layers")
        t.add_row("backward working set", fmt_gib(act["backward_working_set"]),
                  "loss (fp32 logits) or one layer's recompute + gradients")
        for k, v in m["transients"].items():
            if v:
                t.add_row(f"transient: {k.replace('_', ' ')}", fmt_gib(v), "")
        if m.get("allocator_retention"):
            t.add_row("allocator retention (CPU)", fmt_gib(m["allocator_retention"]), "glibc keeps freed blocks")
    t.add_row("framework overhead", fmt_gib(m["overhead"]), "CUDA context + allocator" if s["device"] == "cuda"
              else "allocator / scratch")
    t.add_row("[bold]peak[/bold]", f"[bold]{fmt_gib(est.peak_bytes)}[/bold]", est.peak_phase)
    if s["method"] != "inference":
        t.add_row("(sum of all terms)", fmt_gib(m["sum_of_all_terms"]), "what adding everything up would say")
    return t


def _fits_line(est: Any) -> str:
    parts = []
    for f in est.fits:
        mark = "[green]✓[/green]" if f["fits"] else "[red]✗[/red]"
        parts.append(f"{mark} {f['gpu']}")
    return "fits on one: " + "  ".join(parts)


def register(app: typer.Typer) -> None:
    @app.command("estimate")
    def estimate_cmd(
        arch: Annotated[str | None, typer.Option(
            "--arch", "-a", help="Model architecture: a preset (7B, 13B, 33B, 65B, 70B, 8B, smollm2, minilm), a "
            "config.json (or its folder) or a Hugging Face id [default: 7B].")] = None,
        old_model: Annotated[str | None, typer.Option("--model", "-m", hidden=True)] = None,
        method: Annotated[str, typer.Option(help="full | lora | qlora | prompt-tuning | inference")] = "lora",
        seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")] = 2048,
        batch: Annotated[int, typer.Option(help="Sequences per step (per GPU).")] = 4,
        grad_checkpointing: Annotated[bool | None, typer.Option(
            "--grad-checkpointing/--no-grad-checkpointing",
            help="Default: on for QLoRA (as peft's kbit preparation does), off otherwise.")] = None,
        optimizer: Annotated[str, typer.Option(help="adamw | adamw-8bit | sgd (with momentum)")] = "adamw",
        dtype: Annotated[str, typer.Option(help="bf16 | fp16 | fp32 (inference also int8 | nf4)")] = "bf16",
        lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 16,
        lora_targets: Annotated[str, typer.Option("--lora-targets", help="Comma list or all-linear.")] =
        "q_proj,v_proj",
        lora_dropout: Annotated[float, typer.Option("--lora-dropout")] = 0.05,
        double_quant: Annotated[bool, typer.Option("--double-quant/--no-double-quant",
                                                   help="QLoRA double quantisation.")] = True,
        adapter_dtype: Annotated[str, typer.Option("--adapter-dtype", help="fp32 (PEFT default) or bf16 (the QLoRA "
                                                   "repo's recipe).")] = "fp32",
        virtual_tokens: Annotated[int, typer.Option("--virtual-tokens", help="Prompt-tuning tokens.")] = 20,
        grad_accum: Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.")] = 1,
        device: Annotated[str, typer.Option(help="cuda | cpu (context, kernels and optimizer differ).")] = "cuda",
        attention: Annotated[str, typer.Option(help="auto | flash | eager")] = "auto",
        head: Annotated[str, typer.Option(help="auto | lm | classifier")] = "auto",
        num_labels: Annotated[int, typer.Option("--num-labels")] = 2,
        examples: Annotated[int | None, typer.Option(help="Training examples: adds time and cost.")] = None,
        epochs: Annotated[float, typer.Option()] = 1.0,
        tokens_per_example: Annotated[int | None, typer.Option("--tokens-per-example",
                                                               help="Default: --seq-len.")] = None,
        gpu: Annotated[str | None, typer.Option(help="Price/time on this GPU (default: every one it fits).")] = None,
        mfu: Annotated[float | None, typer.Option(help="Assumed utilisation of peak FLOPs (default 0.40).")] = None,
        prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Inference: tokens in.")] = 500,
        output_tokens: Annotated[int, typer.Option("--output-tokens", help="Inference: tokens out.")] = 50,
        concurrency: Annotated[int, typer.Option(help="Inference: requests decoded together.")] = 16,
        table: Annotated[bool, typer.Option("--table", help="7B/13B/70B x full/LoRA/QLoRA/prompt tuning.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    ) -> None:
        """GPU memory, time and cost of fine-tuning (full, LoRA, QLoRA, prompt tuning) or serving a model."""
        from adaptladder import estimate as E

        model = renamed(arch, old_model, "--arch", "--model") or "7B"

        kw: dict[str, Any] = dict(seq_len=seq_len, batch=batch, grad_checkpointing=grad_checkpointing,
                                  optimizer=optimizer, dtype=dtype, lora_r=lora_r, lora_targets=lora_targets,
                                  lora_dropout=lora_dropout, double_quant=double_quant,
                                  num_virtual_tokens=virtual_tokens, adapter_dtype=adapter_dtype,
                                  grad_accum=grad_accum, device=device,
                                  attention=attention, head=head, num_labels=num_labels)
        if table:
            _table(E, kw, as_json)
            return
        if method == "inference":
            est = E.estimate_training(model, "inference", seq_len=seq_len, batch=batch, dtype=dtype, device=device)
            cost = E.inference_cost(model, prompt_tokens=prompt_tokens, output_tokens=output_tokens, gpu=gpu,
                                    dtype=dtype, concurrency=concurrency, mfu=mfu)
            if as_json:
                print_json({**est.to_dict(), "serving_cost": cost})
                return
            console.print(_memory_table(est))
            console.print(_fits_line(est))
            _print_serving(cost)
            return
        est = E.estimate_training(model, method, **kw)
        compute: list[dict[str, Any]] = []
        if examples is not None:
            gpus = [gpu] if gpu else [f["gpu"] for f in est.fits if f["fits"]]
            shape = E.resolve_model(model)
            settings = E.Settings(**{k: v for k, v in est.settings.items() if k in E.Settings.__dataclass_fields__})
            settings.lora_targets = tuple(est.settings["lora_targets"])
            for g in gpus:
                compute.append(E.training_compute(shape, settings, examples=examples, epochs=epochs,
                                                  tokens_per_example=tokens_per_example, gpu=g, mfu=mfu,
                                                  trainable=est.params["trainable"]))
            est.compute = {"per_gpu": compute}
        if as_json:
            print_json(est.to_dict())
            return
        console.print(_memory_table(est))
        console.print(_fits_line(est))
        if compute:
            _print_compute(compute)
        for note in est.assumptions:
            console.print(f"[dim]· {note}[/dim]", highlight=False)

    @app.command("advise")
    def advise_cmd(
        run_dir: Annotated[Path | None, typer.Argument(help="A run directory written by `adaptladder run` "
                                                      "(runs/<name>): its measurements become evidence.",
                                                      show_default=False)] = None,
        old_run: Annotated[Path | None, typer.Option("--run", hidden=True)] = None,
        facts: Annotated[bool | None, typer.Option("--facts/--no-facts",
                                                   help="Must the model know new or changing facts?")] = None,
        style: Annotated[bool | None, typer.Option("--style/--no-style",
                                                   help="Need a consistent style/format/persona?")] = None,
        scale: Annotated[bool | None, typer.Option("--scale/--no-scale",
                                                   help="Need lower latency or cost at scale?")] = None,
        prompting_ok: Annotated[bool | None, typer.Option("--prompting-ok/--prompting-not-ok",
                                                          help="Is prompting already good enough?")] = None,
        changing: Annotated[bool | None, typer.Option("--changing-requirements/--stable-requirements",
                                                      help="Do requirements change often?")] = None,
        eval_set: Annotated[bool | None, typer.Option("--eval-set/--no-eval-set",
                                                      help="Do you have an evaluation set?")] = None,
        examples: Annotated[int | None, typer.Option("--examples", help="Labelled examples you have.")] = None,
        arch: Annotated[str | None, typer.Option("--arch", help="Model architecture for the memory estimate "
                                                  "(as in `adaptladder estimate --arch`).")] = None,
        old_model: Annotated[str | None, typer.Option("--model", hidden=True)] = None,
        seq_len: Annotated[int, typer.Option("--seq-len")] = 512,
        batch: Annotated[int, typer.Option()] = 8,
        interactive: Annotated[bool | None, typer.Option("--interactive/--no-interactive",
                                                         help="Ask the questions (default: when stdin is a "
                                                              "terminal and no answer flag is given).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Prompt, retrieve, fine-tune or distill? The decision tree, with a run's measured evidence."""
        from adaptladder.advise import QUESTIONS, Answers, advise

        answers = Answers(needs_facts=facts, needs_style=style, needs_scale=scale, prompting_ok=prompting_ok,
                          requirements_change=changing, has_eval_set=eval_set, n_examples=examples)
        ask = interactive if interactive is not None else (sys.stdin.isatty() and not as_json
                                                            and not answers.answered())
        if ask:
            if not sys.stdin.isatty():
                raise AdaptError("--interactive needs a terminal on stdin; answer with flags instead "
                                 "(see adaptladder advise --help).")
            from rich.prompt import Confirm, IntPrompt, Prompt

            for key, question in QUESTIONS:
                if getattr(answers, key) is None:
                    reply = Prompt.ask(question, choices=["y", "n", "?"], default="?", console=console)
                    setattr(answers, key, None if reply == "?" else reply == "y")
            if answers.n_examples is None and Confirm.ask("Do you know how many labelled examples you have?",
                                                          default=False, console=console):
                answers.n_examples = IntPrompt.ask("How many?", console=console)
        run = one_run_dir(run_dir, old_run, "--run")
        adv = advise(answers, run, model=renamed(arch, old_model, "--arch", "--model"), seq_len=seq_len, batch=batch)
        if as_json:
            print_json(adv.to_dict())
            return
        console.print(f"[bold]Recommendation:[/bold] {adv.headline}")
        console.print("[bold]Why:[/bold]")
        for r in adv.reasons:
            console.print(f"  · {r}", highlight=False)
        console.print(f"[bold]Next step:[/bold] {adv.next_step}", highlight=False)
        t = Table(title="When not to fine-tune: checklist")
        t.add_column("check")
        t.add_column("applies?")
        t.add_column("evidence")
        t.add_column("instead")
        for c in adv.checklist:
            flag = "[dim]unknown[/dim]" if c.triggered is None else ("[red]yes[/red]" if c.triggered else
                                                                    "[green]no[/green]")
            t.add_row(c.check, flag, c.evidence, c.instead)
        console.print(t)


def _print_compute(rows: list[dict[str, Any]]) -> None:
    t = Table(title="Training time and cost")
    for c in ("GPU", "tokens", "FLOPs", "FLOPs/token / N", "hours", "$/hour", "cost $"):
        t.add_column(c, justify="right" if c != "GPU" else "left")
    cheapest = min((r for r in rows if r["cost_usd"] is not None), key=lambda r: r["cost_usd"], default=None)
    for r in rows:
        star = " [green](cheapest)[/green]" if r is cheapest else ""
        t.add_row(r["gpu"] + star, f"{r['tokens']:,.0f}", f"{r['flops']:.2e}", f"{r['flops_per_token_over_params']}",
                  f"{r['hours']:.2f}", "-" if r["usd_per_hour"] is None else f"{r['usd_per_hour']:.2f}",
                  "-" if r["cost_usd"] is None else f"{r['cost_usd']:.2f}")
    console.print(t)
    if rows:
        console.print(f"[dim]· hours = FLOPs / (peak x {rows[0]['mfu']:.0%} utilisation)"
                      + (f" x {rows[0]['slowdown']} (4-bit dequantisation)" if rows[0]["slowdown"] != 1 else "")
                      + "; $/hour from prices.yaml[/dim]", highlight=False)
    else:
        console.print("[yellow]no GPU in the table fits this configuration; lower batch/seq-len or use "
                      "--grad-checkpointing / qlora.[/yellow]")


def _print_serving(c: dict[str, Any]) -> None:
    t = Table(title=f"Cost per 1,000 requests ({c['prompt_tokens']} tokens in, {c['output_tokens']} out)")
    t.add_column("option")
    t.add_column("$ per 1,000", justify="right")
    sh = c["self_hosted_usd_per_1k"]
    t.add_row(f"self-hosted {c['model']} on {c['gpu']} ({c['dtype']}, {c['seconds_per_request']:.3f} s/request)"
              + ("" if c["fits"] else " [red](does not fit)[/red]"), "-" if sh is None else f"{sh:.4f}")
    for m, v in c["api_usd_per_1k"].items():
        t.add_row(f"API {m}", f"{v:.4f}")
    console.print(t)
    for a in c["assumptions"]:
        console.print(f"[dim]· {a}[/dim]", highlight=False)


def _table(E: Any, kw: dict[str, Any], as_json: bool) -> None:
    ests = E.comparison_table(**kw)
    if as_json:
        print_json([e.to_dict() for e in ests])
        return
    s = ests[0].settings
    t = Table(title=f"Peak GPU memory (GiB) · seq {s['seq_len']} · batch {s['batch']} · {s['dtype']} · "
                    f"{s['optimizer']} · LoRA r={s['lora_r']} on {','.join(s['lora_targets'])}"
                    + (" · grad ckpt" if kw.get("grad_checkpointing") else " · grad ckpt for QLoRA only"
                       if kw.get("grad_checkpointing") is None else ""))
    for c in ("model", "method", "trainable", "weights", "grad+opt", "activ.", "peak", "smallest GPU"):
        t.add_column(c, justify="left" if c in {"model", "method", "smallest GPU"} else "right")
    for e in ests:
        m = e.memory
        fits = sorted((f for f in e.fits if f["fits"]), key=lambda f: f["memory_gib"])
        t.add_row(e.model["name"], e.settings["method"], E.human_params(e.params["trainable"]),
                  E.fmt_gib(sum(m["weights"].values())),
                  E.fmt_gib(m["gradients"] + m["optimizer"]["states"] + m["optimizer"]["fp32_master_weights"]),
                  E.fmt_gib(m["activations"]["saved"]), E.fmt_gib(e.peak_bytes),
                  fits[0]["gpu"] if fits else "[red]none (shard)[/red]")
    console.print(t)
