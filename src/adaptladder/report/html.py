"""report.html: one self-contained file (inline CSS, base64 PNG figures), every string autoescaped."""

from __future__ import annotations

from typing import Any


def render_html(view: dict[str, Any]) -> str:
    from importlib.resources import files

    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    source = files("adaptladder").joinpath("templates", "report.html.j2").read_text(encoding="utf-8")
    return env.from_string(source).render(v=view)
