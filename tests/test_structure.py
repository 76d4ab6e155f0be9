"""The package's shape: no import cycles (lazy imports included) and a light ``import adaptladder.cli``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import adaptladder

PKG_ROOT = Path(adaptladder.__file__).resolve().parent


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        mods[".".join(parts)] = f
    return mods


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (function-level imports too).

    A package's edges to its own submodules count (``report/__init__ -> report/generation -> ladder ->
    report`` is a cycle); a submodule's edge to its own parents does not: Python imports parents
    first by design, so that edge adds nothing the parent's own imports do not.
    """
    mods = _modules(root)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
                    target = ".".join(base[:keep] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != mod and not mod.startswith(t + "."):
                    edges[mod].add(t)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_planted_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import x\n")
    (pkg / "a.py").write_text("x = 1\nfrom pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x  # lazy: still a cycle\n    return x\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert find_cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]


def test_cycle_finder_counts_a_package_importing_its_submodules(tmp_path: Path) -> None:
    """The cycle issue #26 found: a package's __init__ imports a submodule that imports, through another
    module, the package back."""
    pkg = tmp_path / "pkg"
    (pkg / "report").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "report" / "__init__.py").write_text("from pkg.report.generation import view\n")
    (pkg / "report" / "generation.py").write_text("def view():\n    from pkg.ladder import prepare\n")
    (pkg / "ladder.py").write_text("def run():\n    from pkg.report import write\n")
    assert find_cycles(import_graph(pkg)) == [["pkg.ladder", "pkg.report", "pkg.report.generation"]]


def test_no_import_cycles_in_the_package() -> None:
    assert len(_modules(PKG_ROOT)) > 30
    cycles = find_cycles(import_graph(PKG_ROOT))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


HEAVY = ("sklearn", "torch", "transformers", "scipy", "sentence_transformers", "peft", "pandas", "matplotlib")

PROBE = """
import json, sys
from adaptladder.cli import main
try:
    main(ARGS)
except SystemExit as e:
    print("EXIT", e.code, file=sys.stderr)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _modules_loaded_by(args: list[str]) -> tuple[set[str], str]:
    src = str(PKG_ROOT.parent)
    proc = subprocess.run([sys.executable, "-c", PROBE.replace("ARGS", json.dumps(args))], capture_output=True,
                          text=True, timeout=120,
                          env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1])), proc.stderr


def test_cli_help_does_not_import_heavy_libraries() -> None:
    """``adaptladder --help`` registers every command but loads none of the ML stack (fast start)."""
    loaded, _ = _modules_loaded_by(["--help"])
    assert "typer" in loaded  # the probe did run the CLI
    assert not loaded & set(HEAVY), f"imported at start: {sorted(loaded & set(HEAVY))}"


def test_a_bad_rung_setting_fails_before_the_ml_stack_loads(tmp_path: Path) -> None:
    """``run --set tfidf.foo=1`` is refused from the declared settings alone: no sklearn/torch import, no run dir."""
    out = tmp_path / "run"
    loaded, err = _modules_loaded_by(["run", "sms-spam", "--set", "tfidf.foo=1", "--out", str(out)])
    assert "EXIT 2" in err and "unknown setting foo for the tfidf rung" in err
    assert not loaded & {"sklearn", "torch", "transformers", "scipy", "sentence_transformers"}, sorted(loaded)
    assert not out.exists()


def test_lazy_public_api_still_resolves() -> None:
    import adaptladder as al

    assert callable(al.run) and callable(al.load_results) and "tfidf" in al.RUNGS
    assert set(al.__all__) <= set(dir(al))


def test_table_reading_lives_in_one_module_for_every_kind() -> None:
    """CSV/TSV/JSONL/Parquet reading is adaptladder.io.tables; the kinds' loaders only use it."""
    from adaptladder import task
    from adaptladder.generation import loaders
    from adaptladder.io import tables

    assert task.read_table is tables.read_table and loaders.read_table is tables.read_table
    for mod in (task, loaders):
        src = Path(mod.__file__).read_text(encoding="utf-8")
        assert "pd.read_csv" not in src and "read_parquet" not in src and "json.loads(line)" not in src


def test_config_imports_no_kind_specific_module() -> None:
    """config.py sits below every task kind: it asks adaptladder.kinds and the one rung registry."""
    edges = import_graph(PKG_ROOT)["adaptladder.config"]
    kind_specific = [m for m in edges if m.startswith("adaptladder.generation") or m in (
        "adaptladder.task", "adaptladder.ladder", "adaptladder.audit", "adaptladder.datasets")]
    assert not kind_specific, f"config.py imports {kind_specific}"
