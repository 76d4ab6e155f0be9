"""The run directory: atomic writes, one result file per rung, and the config hash.

Every file is written to a temporary name and renamed into place, so a run killed at any
moment leaves either the old file or the new one, never half of one. A run directory belongs
to one configuration (its hash); results from another configuration are never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError

SCHEMA_VERSION = 1
PROVENANCE_FILE = "provenance.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Modes for new files and folders: what open() / mkdir() would give (not mkstemp's 0600 or
# mkdtemp's 0700), so a report or a saved model can be shared like any other file the user writes.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_default) + "\n")


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_default).encode()).hexdigest()[:16]


def check_output_file(path: str | Path, *, overwrite: bool, option: str = "--output",
                      make_parent: bool = False) -> Path:
    """The one rule for every file a command writes for the user: an existing file is replaced only with
    ``--overwrite`` (nothing the user had is lost), never a folder, and its folder must exist (or, with
    ``make_parent``, is created: the audit's reports may go to a new folder)."""
    path = Path(path)
    if make_parent and not path.parent.exists() and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise AdaptError(f"{path} is a directory; pass a file path to {option}.")
    if path.exists() and not overwrite:
        raise AdaptError(f"{path} already exists; pass --overwrite to replace it or choose another {option}.")
    if not path.parent.exists():
        raise AdaptError(f"the folder {path.parent} does not exist; create it or choose another {option}.")
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise AdaptError(f"{path} not found; is this a run directory written by `adaptladder run`?") from e
    except json.JSONDecodeError as e:
        raise AdaptError(f"{path} is not valid JSON (line {e.lineno}); the run directory is damaged.") from e
    except RecursionError as e:  # a document nested thousands deep: no run of adaptladder writes one
        raise AdaptError(f"{path} is nested too deeply to be a file of a run directory; the run directory is "
                         "damaged.") from e
    except UnicodeDecodeError as e:
        raise AdaptError(f"{path} is not UTF-8 text; the run directory is damaged.") from e


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """The ``results.json`` of a run directory (one-line error when it is missing, damaged or too old)."""
    path = Path(run_dir) / "results.json"
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise AdaptError(f"{path} is not a results document (a JSON object); the run directory is damaged.")
    rungs = doc.get("rungs")
    if rungs is not None and (not isinstance(rungs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) for r in rungs)):
        raise AdaptError(f"{path}: 'rungs' is not a list of rung records; the run directory is damaged: re-run "
                         "the ladder.")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise AdaptError(f"{run_dir} was written by another adaptladder version (schema "
                         f"{doc.get('schema_version')}); re-run it.")
    return doc


def is_run_dir(root: Path) -> bool:
    """Does ``root`` hold a run written by adaptladder (its ``config.json`` with a config hash)?"""
    try:
        doc = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "config_hash" in doc and "schema_version" in doc


def check_run_dir(root: Path) -> None:
    """Refuse an ``--out`` that is a file, or an existing folder that is neither empty nor a run of this tool
    (its report.md / results.json would be overwritten)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise AdaptError(f"--out {root} is an existing file, not a folder; pass a new or empty folder for the run.")
    for parent in root.parents:  # the nearest existing folder above it must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise AdaptError(f"--out {root}: {parent} is a file, not a folder; pass another --out.")
            break
    if root.is_dir():
        try:
            entries = [p.name for p in root.iterdir()]
        except OSError as e:
            raise AdaptError(f"--out {root} cannot be read ({e.strerror or e}); pass another --out.") from e
        if entries and not is_run_dir(root):
            shown = ", ".join(sorted(entries)[:4]) + (", ..." if len(entries) > 4 else "")
            raise AdaptError(f"--out {root} is an existing folder that is not an adaptladder run ({shown}); "
                             "nothing was written: pass a new or empty folder.")


class RunStore:
    """Files of one run: ``config.json``, ``task.json``, ``split.csv``, ``rungs/<name>/...``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------ paths
    def rung_dir(self, name: str) -> Path:
        return self.root / "rungs" / name

    def result_path(self, name: str) -> Path:
        return self.rung_dir(name) / "result.json"

    def model_dir(self, name: str) -> Path:
        return self.rung_dir(name) / "model"

    # ------------------------------------------------------------ lifecycle
    def open(self, config: dict[str, Any], chash: str, *, fresh: bool = False) -> bool:
        """Claim the directory for ``chash``; True when earlier results of the same config exist.

        A directory holding another configuration's results is refused (one line saying
        how to proceed) unless ``fresh``, which moves the old results aside, never deletes them.
        """
        cfg_path = self.root / "config.json"
        check_run_dir(self.root)
        if cfg_path.exists():
            old = read_json(cfg_path)
            if old.get("config_hash") != chash:
                if not fresh:
                    raise AdaptError(
                        f"{self.root} holds a run with a different configuration (data, seed or --sample "
                        "changed); pass another --out, or --fresh to move the old run aside."
                    )
                self._move_aside()
            elif fresh:
                self._move_aside()
        resumed = (self.root / "rungs").exists() and any((self.root / "rungs").glob("*/result.json"))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(cfg_path, dict(config, config_hash=chash, schema_version=SCHEMA_VERSION))
            atomic_write_json(self.root / PROVENANCE_FILE, provenance())
        except OSError as e:
            raise AdaptError(f"cannot write the run directory {self.root} ({e.strerror or e}); choose another "
                             "--out in a folder you can write to.") from e
        return resumed

    def _move_aside(self) -> None:
        n = 1
        while (aside := self.root.with_name(f"{self.root.name}.old{n}")).exists():
            n += 1
        shutil.move(str(self.root), str(aside))

    def load_result(self, name: str) -> dict[str, Any] | None:
        path = self.result_path(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes, but never trust a damaged file

    def save_result(self, name: str, result: dict[str, Any]) -> None:
        atomic_write_json(self.result_path(name), result)

    def discard_result(self, name: str) -> None:
        """Remove a stale result.json before its rung runs again, so a half-written new model
        can never sit next to an old 'finished' marker."""
        self.result_path(name).unlink(missing_ok=True)

    def save_model(self, name: str, rung: Any) -> Path:
        """Save a fitted rung into ``rungs/<name>/model`` atomically (temp dir, then rename).

        A process killed while saving leaves only a ``.model.tmp*`` directory, which the next
        save removes; ``model/`` is either the previous complete model or the new one.
        """
        return self.install_model(name, rung.save)

    def install_model(self, name: str, write: Any) -> Path:
        """Put a model directory in place atomically: ``write(tmp)`` fills a temporary folder beside
        ``rungs/<name>/model`` (a fitted rung's ``save``, or files shipped from a Ray worker), then it
        is renamed into place, as :meth:`save_model` does."""
        final = self.model_dir(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(".model.*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".model.tmp"))
        tmp.chmod(DIR_MODE)  # as mkdir would make it, not mkdtemp's 0700
        try:
            write(tmp)
            if final.exists():
                old = final.with_name(f".model.old{os.getpid()}")
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def is_finished(self, name: str, result: dict[str, Any], params_hash: str) -> bool:
        """May ``result`` be reused? Same rung settings, finished, and its saved model complete.

        Skipped rungs are not reused: whether a rung can run here (e.g. CUDA) is re-checked,
        which costs nothing.
        """
        if result.get("params_hash") != params_hash or result.get("status") != "done":
            return False
        meta = self.model_dir(name) / "rung.json"
        if not meta.is_file():
            return False
        try:  # a model saved by an older adaptladder (pickles, no content hashes) is redone, never loaded
            return bool(json.loads(meta.read_text(encoding="utf-8")).get("files"))
        except (ValueError, OSError, AttributeError):
            return False


# ------------------------------------------------------------------ provenance
def _cpu_model() -> str | None:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpus() -> list[dict[str, str]]:
    """GPUs seen by nvidia-smi (name, memory, driver); [] when there is none or no driver."""
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return gpus


def _git_commit(folder: Path) -> dict[str, Any] | None:
    """The commit (and whether the tree has uncommitted changes) of the git checkout holding ``folder``."""
    import subprocess

    if not shutil.which("git"):
        return None
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def package_versions() -> dict[str, str]:
    """Installed versions of adaptladder and of every package it depends on (from its metadata)."""
    import re
    from importlib import metadata

    names = ["adaptladder"]
    try:
        for req in metadata.requires("adaptladder") or []:
            if "extra ==" in req:
                continue
            m = re.match(r"[A-Za-z0-9_.\-]+", req)
            if m:
                names.append(m.group(0))
    except metadata.PackageNotFoundError:
        pass
    out: dict[str, str] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def provenance() -> dict[str, Any]:
    """Where and with what a run was made: packages, Python, CPU, GPU, load at start, git commits."""
    import platform
    import sys
    import time

    import adaptladder

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        physical, mem_gb = None, None
    source = Path(adaptladder.__file__).resolve().parent
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "adaptladder": getattr(adaptladder, "__version__", None),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": physical,
                "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
        "memory_gb": mem_gb,
        "gpus": _gpus(),
        "load_average_at_start": load,
        "git": {"adaptladder": _git_commit(source), "working_directory": _git_commit(Path.cwd())},
        "packages": package_versions(),
    }


def provenance_rows(prov: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(what, value) lines of a provenance record, for the bottom of the report."""
    if not prov:
        return []
    cpu = prov.get("cpu") or {}
    rows = [("started", str(prov.get("started_at"))), ("adaptladder", str(prov.get("adaptladder"))),
            ("Python", str(prov.get("python"))), ("platform", str(prov.get("platform"))),
            ("CPU", f"{cpu.get('model')}; {cpu.get('logical_cores')} logical cores "
                    f"({cpu.get('physical_cores')} physical, {cpu.get('usable_cores')} usable)"),
            ("memory", f"{prov.get('memory_gb')} GB")]
    gpus = prov.get("gpus") or []
    rows.append(("GPU", "; ".join(f"{g['name']} ({g['memory']}, driver {g['driver']})" for g in gpus) or "none"))
    load = prov.get("load_average_at_start")
    rows.append(("load average at start (1/5/15 min)", " / ".join(map(str, load)) if load else "unknown"))
    for where, g in (prov.get("git") or {}).items():
        if g:
            rows.append((f"git commit ({where.replace('_', ' ')})",
                         g["commit"][:12] + (" (uncommitted changes)" if g.get("dirty") else "")))
    pk = prov.get("packages") or {}
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in sorted(pk.items()))))
    return rows
