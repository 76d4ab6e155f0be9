"""One CLI grammar: hints name real commands and options, --json keeps stdout clean, --version works."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

import adaptladder
from adaptladder.cli import app, main

PKG_ROOT = Path(adaptladder.__file__).resolve().parent

#: words that follow "adaptladder " in prose, not commands ("adaptladder version", "from adaptladder import")
NOT_COMMANDS = {"does", "split", "version", "keeps", "import", "and"}

#: commands for which one JSON document on stdout means nothing: a long-running HTTP server
NO_JSON = {"serve"}

HINT = re.compile(r"adaptladder ([a-z][a-z-]*)(?=[\s`)'\".,;]|$)(.*?)(?=`|;|$|\. |\)\.)")


def _cli() -> Any:
    """The click group typer builds (typer vendors its own click: duck-typed, not isinstance)."""
    from adaptladder.cli import _register_commands

    _register_commands()
    cmd = typer.main.get_command(app)
    assert hasattr(cmd, "commands")
    return cmd


def _strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal in a module, f-strings with their placeholders as ``{}``."""
    out: list[tuple[int, str]] = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if id(node) in in_fstring:
            continue
        if isinstance(node, ast.JoinedStr):
            out.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


def collect_hints() -> list[tuple[str, str, str]]:
    """(where, command, the rest of the hint) for every ``adaptladder <command> ...`` the source can print."""
    hints = []
    for path in sorted(PKG_ROOT.rglob("*.py")):
        for line, text in _strings(path):
            for m in HINT.finditer(text):
                hints.append((f"{path.relative_to(PKG_ROOT)}:{line}", m.group(1), m.group(2)))
    return hints


def test_hint_collector_sees_the_known_hints() -> None:
    found = {(cmd, rest.strip().split(" ")[0]) for _, cmd, rest in collect_hints()}
    assert ("validate-jsonl", "{}") in found  # export-jsonl's closing line
    assert any(cmd == "audit" for cmd, _ in found) and any(cmd == "report" for cmd, _ in found)
    assert len(found) >= 8


def test_every_hint_names_an_existing_command_and_options() -> None:
    cli = _cli()
    bad = []
    for where, cmd, rest in collect_hints():
        if cmd in NOT_COMMANDS:
            continue
        if cmd not in cli.commands:
            bad.append(f"{where}: `adaptladder {cmd}` is not a command")
            continue
        opts = {o for p in cli.commands[cmd].params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        for opt in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", rest):
            if opt not in opts:
                bad.append(f"{where}: `adaptladder {cmd}` has no option {opt}")
    assert not bad, "\n".join(bad)


def test_every_command_has_json_and_run_dirs_are_positional() -> None:
    cli = _cli()
    for name, cmd in cli.commands.items():
        opts = {o for p in cmd.params for o in p.opts}
        if name not in NO_JSON:
            assert "--json" in opts, f"{name} has no --json (issue #13: --json on every command)"
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option" and not p.hidden:
                assert "--out" not in p.opts or "dir" in (p.help or "").lower(), f"{name}: --out must be a directory"
                assert not {"--run", "--from-run", "--system-from"} & set(p.opts), f"{name}: run dir as an option"
                assert "--model" not in p.opts, f"{name}: --model is ambiguous (use --lm / --arch / --price-model)"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0
    assert capsys.readouterr().out.strip() == f"adaptladder {adaptladder.__version__}"


def _run_cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adaptladder", *args], capture_output=True, text=True, timeout=600,
                          cwd=tmp, env={"PYTHONPATH": str(PKG_ROOT.parent), "PATH": "/usr/bin:/bin",
                                        "HOME": str(Path.home()), "ADAPTLADDER_CACHE": str(tmp / "cache"),
                                        "ADAPTLADDER_PROGRESS": "lines"})


def test_run_json_stdout_is_clean_json(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    rows = ["text,label"] + [f"win a prize now {i},spam" for i in range(40)] + [f"see you at lunch {i},ham"
                                                                                 for i in range(40)]
    data.write_text("\n".join(rows) + "\n")
    proc = _run_cli(["run", str(data), "--rungs", "majority,tfidf", "--no-audit", "--out", str(tmp_path / "r"),
                     "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # nothing but the JSON on stdout
    assert doc["recommendation"]["rung"] in ("majority", "tfidf") and "tfidf: running" in proc.stderr
    rep = _run_cli(["report", str(tmp_path / "r"), "--json"], tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert Path(json.loads(rep.stdout)["html"]).is_file()
    adv = _run_cli(["advise", str(tmp_path / "r"), "--json", "--no-interactive"], tmp_path)
    assert adv.returncode == 0, adv.stderr
    assert json.loads(adv.stdout)["evidence"]
    old = _run_cli(["advise", "--run", str(tmp_path / "r"), "--json", "--no-interactive"], tmp_path)
    assert old.returncode == 0, old.stderr  # the old option still works, hidden
    assert json.loads(old.stdout)["evidence"] == json.loads(adv.stdout)["evidence"]


def test_datasets_json_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["datasets", "--json"])
    assert ex.value.code == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"sms-spam", "trec6"} <= names
