"""A run directory is untrusted input: it chooses no endpoint, credential or path outside itself.

Run directories travel (attached to a ticket, copied from a colleague, downloaded with a model), so
everything that reads one checks, before anything is loaded or written:

* **Names**: a rung name read from ``results.json`` (or anywhere else in the directory) must be a
  registered rung, so ``../../elsewhere`` never becomes a path.
* **Symlinks**: no symlink inside a saved rung (file, sub-folder, or the model folder itself).
* **Endpoints and credentials**: a saved prompting rung with ``backend: openai`` names a server and
  the environment variable holding its key. Neither is taken from the directory: the server is the
  one the person running the command gives (``--base-url`` / ``ADAPTLADDER_BASE_URL``), the key comes
  from the variable they name (``--api-key-env`` / ``ADAPTLADDER_API_KEY_ENV``, default
  ``OPENAI_API_KEY``). A saved server that differs from theirs, or any saved server when they gave
  none, is shown and refused unless they confirm it (``--trust-run-dir`` /
  ``ADAPTLADDER_TRUST_RUN_DIR=1``).
* **Paths**: a saved model reference (``lm``, ``model``, ``encoder``) that is a local path outside
  the run directory is refused unless confirmed the same way (packaged aliases and hub ids are
  model names, not paths).
* **The manifest**: ``manifest.json`` holds the SHA-256 of every file of every saved rung (its
  ``rung.json`` included); readers verify a rung's files against it (runs written before it
  existed have none: a log line says so).

The CLI flags set the environment variables, so ``serve --workers N`` processes inherit them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ENV_BASE_URL = "ADAPTLADDER_BASE_URL"
ENV_API_KEY_ENV = "ADAPTLADDER_API_KEY_ENV"
ENV_TRUST = "ADAPTLADDER_TRUST_RUN_DIR"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
#: saved settings that name a model to load (a path there would be read from outside the run)
MODEL_REF_KEYS = ("lm", "model", "encoder", "teacher")
#: saved settings that name where requests go and which credential they carry
ENDPOINT_KEYS = ("base_url", "api_key_env")


# ------------------------------------------------------------------ the person's policy
def trusted() -> bool:
    return os.environ.get(ENV_TRUST, "").strip().lower() in ("1", "true", "yes")


def user_endpoint() -> tuple[str | None, str]:
    """``(base_url, api_key_env)`` as the person running the command gave them."""
    url = os.environ.get(ENV_BASE_URL, "").strip() or None
    key = os.environ.get(ENV_API_KEY_ENV, "").strip() or DEFAULT_API_KEY_ENV
    return url, key


@contextlib.contextmanager
def policy(*, base_url: str | None = None, api_key_env: str | None = None, trust_run_dir: bool = False
           ) -> Iterator[None]:
    """The person's choices for this block (the CLI's ``--base-url``, ``--api-key-env``,
    ``--trust-run-dir``), through the environment so that worker processes inherit them."""
    saved = {k: os.environ.get(k) for k in (ENV_BASE_URL, ENV_API_KEY_ENV, ENV_TRUST)}
    try:
        if base_url:
            os.environ[ENV_BASE_URL] = base_url
        if api_key_env:
            os.environ[ENV_API_KEY_ENV] = api_key_env
        if trust_run_dir:
            os.environ[ENV_TRUST] = "1"
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def set_policy(*, base_url: str | None = None, api_key_env: str | None = None, trust_run_dir: bool = False) -> None:
    """The CLI's flags for the rest of this process (and its workers)."""
    if base_url:
        os.environ[ENV_BASE_URL] = base_url
    if api_key_env:
        os.environ[ENV_API_KEY_ENV] = api_key_env
    if trust_run_dir:
        os.environ[ENV_TRUST] = "1"


# ------------------------------------------------------------------ checks
def check_rung_name(name: Any, registry: Mapping[str, Any], where: Path | str) -> str:
    """``name`` if it is a registered rung; else one line (a rung name never becomes a path unchecked)."""
    if not isinstance(name, str) or name not in registry:
        raise AdaptError(f"{where} names {name!r}, which is no rung of adaptladder; the run directory is damaged or "
                         "was edited: refusing to read it.")
    return name


def refuse_symlinks(model_dir: Path, levels_up: int = 2) -> None:
    """No symlink in a saved rung: not the model folder or its ``levels_up`` parents, not any entry inside."""
    p = Path(model_dir)
    for q in [p, *list(p.parents)[:levels_up]]:
        if q.is_symlink():
            raise AdaptError(f"{q} is a symbolic link; a saved rung is read only from real files inside its run "
                             "directory: copy the files instead of linking them.")
    if not p.is_dir():
        return
    for q in sorted(p.rglob("*")):
        if q.is_symlink():
            raise AdaptError(f"{q} is a symbolic link; a saved rung is read only from real files inside its run "
                             "directory: copy the files instead of linking them.")


def _is_local_path(value: str) -> bool:
    """A filesystem path (not a packaged alias, a hub id or a URL)."""
    if not value or "://" in value:
        return False
    return value.startswith(("/", "~", ".")) or Path(value).expanduser().exists()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def check_saved_params(params: Any, meta_file: Path, run_root: Path | None = None) -> dict[str, Any]:
    """The saved settings a rung is rebuilt with, after the person's endpoint policy is applied.

    Returns a copy: an ``openai`` backend gets the person's server and key variable (never the saved
    ones); a saved server that differs, or any when the person gave none, is refused unless trusted;
    a model reference that is a local path outside ``run_root`` is refused unless trusted.
    """
    if not isinstance(params, dict):
        return params
    out = dict(params)
    trust = trusted()
    root = run_root or meta_file.parent

    def paths_checked() -> dict[str, Any]:
        for key in MODEL_REF_KEYS:
            v = out.get(key)
            if isinstance(v, str) and _is_local_path(v) and not _inside(Path(v).expanduser(), root) and not trust:
                raise AdaptError(f"{meta_file} loads its {key} from {v!r}, a path outside the run directory; a run "
                                 "directory does not choose files to read: pass --trust-run-dir if you trust it "
                                 "(or re-run the ladder here).")
        return out

    if out.get("backend") != "openai":
        return paths_checked()
    saved_url = out.get("base_url") or None
    saved_key = out.get("api_key_env") or DEFAULT_API_KEY_ENV
    if trust:
        log.warning("%s: trusted run directory: requests go to %s with the key in $%s", meta_file,
                    saved_url or "the OpenAI API", saved_key)
        return paths_checked()
    url, key = user_endpoint()
    shown = saved_url or "the OpenAI API (its default URL)"
    if url is None:
        raise AdaptError(f"{meta_file} sends requests to {shown} with the key in ${saved_key}; a run directory does "
                         "not choose where requests go or which key is sent: pass --base-url URL (and --api-key-env "
                         "VAR) to use your own server, or --trust-run-dir to use the saved one.")
    if saved_url is not None and saved_url.rstrip("/") != url.rstrip("/"):
        raise AdaptError(f"{meta_file} was fitted against {saved_url}, not the --base-url you gave ({url}); pass "
                         "--trust-run-dir to use the saved server, or re-run the ladder against yours.")
    out["base_url"], out["api_key_env"] = url, key
    return paths_checked()


# ------------------------------------------------------------------ the manifest
def sha256_file(path: Path) -> str:
    """SHA-256 of a file (read in chunks; the stdlib's, so this module needs no other of the package's)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

def write_manifest(run_dir: Path) -> Path:
    """``manifest.json``: the SHA-256 of every file of every saved rung (``rungs/*/model/**``)."""
    from adaptladder.store import atomic_write_json

    run_dir = Path(run_dir)
    files: dict[str, str] = {}
    rungs = run_dir / "rungs"
    if rungs.is_dir():
        for p in sorted(rungs.glob("*/model/**/*")):
            if p.is_file() and not p.is_symlink() and not p.name.endswith(".tmp"):
                files[p.relative_to(run_dir).as_posix()] = sha256_file(p)
    path = run_dir / MANIFEST
    atomic_write_json(path, {"algorithm": "sha256", "files": files})
    return path


def verify_manifest(run_dir: Path, model_dir: Path) -> bool:
    """Check ``model_dir``'s files against the run's manifest (``rung.json`` included). False when the run
    has no manifest (written before it existed: said in a log line); one line on any mismatch."""
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        log.info("%s has no %s (written by an older adaptladder): its rung.json files are not covered by a "
                 "manifest", run_dir, MANIFEST)
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        files = doc["files"]
        assert isinstance(files, dict)
    except (ValueError, KeyError, AssertionError, UnicodeDecodeError) as e:
        raise AdaptError(f"{path} is damaged (not a manifest of a run directory); refusing to read the run.") from e
    prefix = model_dir.relative_to(run_dir).as_posix() + "/"
    want = {k: v for k, v in files.items() if isinstance(k, str) and k.startswith(prefix)}
    found = {p.relative_to(run_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    if not want:
        raise AdaptError(f"{path} lists no file of {model_dir}; the run directory was edited: refusing to read it.")
    for rel in sorted(found - set(want)):
        raise AdaptError(f"{run_dir / rel} is not in {path}; the run directory was edited: refusing to read it.")
    for rel, digest in sorted(want.items()):
        p = run_dir / rel
        if not p.is_file():
            raise AdaptError(f"{p} is missing (listed in {path}); the run directory is incomplete.")
        if sha256_file(p) != digest:
            raise AdaptError(f"{p} does not match its hash in {path} (changed after the run); refusing to read it: "
                             "re-run the ladder.")
    return True
