"""`adaptladder prompt`: classify a few texts by prompting, zero-shot or with a saved prompting rung.

Handy to try a label set, a prompt template or a server before a full ladder run, and to
check that a saved rung answers with the prompt it was evaluated with.
"""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("prompt")
    def prompt_cmd(
        texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
        labels: Annotated[str | None, typer.Option(help="Comma-separated label names (zero-shot).")] = None,
        model_dir: Annotated[str | None, typer.Option("--from", help="A saved prompting rung's model folder.")] = None,
        backend: Annotated[str, typer.Option(help="hf or openai.")] = "hf",
        lm: Annotated[str | None, typer.Option("--lm", help="Language model: alias, HF id / path, or the server's "
                                                   "model name.")] = None,
        old_model: Annotated[str | None, typer.Option("--model", hidden=True)] = None,
        base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL (openai backend).")] = None,
        api_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key.")] = "OPENAI_API_KEY",
        calibrate: Annotated[bool, typer.Option(help="Contextual calibration against content-free inputs.")] = False,
        verbalizer: Annotated[str | None, typer.Option(
            help="Answer words to score instead of the label names, e.g. ham=normal (zero-shot).")] = None,
        show_prompt: Annotated[bool, typer.Option(help="Print the exact prompt of the first text.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the labels and probabilities as JSON.")] = False,
    ) -> None:
        """Classify TEXTS with a zero-shot prompt (--labels) or a saved prompting rung (--from)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from adaptladder.commands import print_json, renamed
        from adaptladder.errors import AdaptError
        from adaptladder.rungs.prompting import ZeroShotRung, _PromptingRung
        from adaptladder.winner import load_saved_rung

        model = renamed(lm, old_model, "--lm", "--model")
        console = Console()
        if model_dir:
            if verbalizer:
                raise AdaptError("--verbalizer applies to a zero-shot prompt (--labels); a saved rung (--from) "
                                 "answers with the words it was evaluated with.")
            rung = load_saved_rung(model_dir)
            if not isinstance(rung, _PromptingRung):
                raise AdaptError(f"{model_dir} holds a {rung.name} rung, not a prompting rung; pass a prompting "
                                 "rung's model folder (runs/<name>/rungs/<rung>/model).")
        else:
            if not labels:
                raise AdaptError("give the label names with --labels a,b,c (or a saved rung with --from DIR).")
            names = [x.strip() for x in labels.split(",") if x.strip()]
            params: dict[str, object] = {"backend": backend, "calibrate": calibrate, "api_key_env": api_key_env}
            if model:
                params["model"] = model
            if base_url:
                params["base_url"] = base_url
            if verbalizer:
                pairs = [x.split("=", 1) for x in verbalizer.split(",") if x.strip()]
                if any(len(p) != 2 for p in pairs):
                    raise AdaptError(f"--verbalizer {verbalizer!r} is not of the form label=word,label=word "
                                     "(e.g. ham=normal).")
                params["verbalizer"] = {a.strip(): b.strip() for a, b in pairs}
            rung = ZeroShotRung(**params)  # type: ignore[arg-type]
            rung.fit([], __import__("numpy").zeros(0, dtype=int), label_names=names)
        proba = rung.predict_proba(texts)
        if as_json:
            out: dict[str, object] = {
                "rung": rung.name, "model": rung.backend.describe().get("model"),
                "predictions": [{"text": t, "label": rung.label_names_[int(row.argmax())],
                                 "probabilities": dict(zip(rung.label_names_, map(float, row), strict=True))}
                                for t, row in zip(texts, proba, strict=True)]}
            if show_prompt:
                out["prompt"] = rung.example_prompt(texts[0])
            print_json(out)
            return
        table = Table(title=escape(f"{rung.name} ({rung.backend.describe().get('model')})"))
        table.add_column("text")
        table.add_column("label")
        table.add_column("p", justify="right")
        for t, row in zip(texts, proba, strict=True):
            k = int(row.argmax())
            table.add_row(escape(t[:80]), escape(str(rung.label_names_[k])), f"{row[k]:.2f}")
        console.print(table)
        if show_prompt:
            console.print(rung.example_prompt(texts[0]), markup=False, highlight=False)
