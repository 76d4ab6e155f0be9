"""Safe model files: no pickle on any load path, and content hashes checked before loading.

A run directory may come from someone else, so loading it must never execute code:

* scikit-learn objects (the TF-IDF pipeline, the feature heads) are written with skops and read
  back with an explicit, fixed list of trusted types (:data:`TRUSTED_TYPES`); a file that
  needs any other type is refused, never unpickled. Plain arrays go through ``np.save`` /
  ``np.load`` (``allow_pickle=False``), everything else is JSON.
* every file of a saved rung is hashed (SHA-256) when written; the hashes go into
  ``rung.json`` and :func:`verify_files` refuses a directory whose files do not match.
* a directory written by an older adaptladder (joblib pickles) is refused with a one-line
  "re-run with --fresh", never unpickled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError

#: Types outside skops' default trusted set that adaptladder's own scikit-learn models need
#: (the MLP head's optimiser state, the gradient-boosting head's trees). Fixed here, never
#: taken from the file being loaded.
TRUSTED_TYPES = (
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path, *, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every regular file under ``root`` (relative POSIX paths), except ``exclude`` names at the top."""
    root = Path(root)
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel in exclude or not p.is_file() or p.name.endswith(".tmp"):
            continue
        out[rel] = sha256_file(p)
    return out


def refuse_pickles(root: Path) -> None:
    """A saved rung holding pickle files is from an older adaptladder: refuse, never unpickle."""
    for p in sorted(Path(root).rglob("*")):
        if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file():
            raise AdaptError(f"{p} is a pickle written by an older adaptladder; pickles are never loaded (they can "
                             "run code): re-run with --fresh to save this rung in the safe format.")


def verify_files(root: Path, recorded: Any, meta_file: Path) -> None:
    """Refuse ``root`` unless its files are exactly those recorded in ``meta_file``, with the same hashes."""
    if not isinstance(recorded, dict) or not recorded:
        raise AdaptError(f"{meta_file} records no content hashes (written by an older adaptladder, or edited); "
                         "re-run with --fresh to save this rung again.")
    for rel, digest in recorded.items():
        p = root / rel
        if not isinstance(rel, str) or ".." in Path(rel).parts or Path(rel).is_absolute():
            raise AdaptError(f"{meta_file} lists an invalid file name {rel!r}; the run directory is damaged.")
        if not p.is_file():
            raise AdaptError(f"{p} is missing (listed in {meta_file}); the saved rung is incomplete: re-run it "
                             "with --fresh.")
        if sha256_file(p) != digest:
            raise AdaptError(f"{p} does not match the content hash recorded in {meta_file} when it was written "
                             "(changed or tampered with); refusing to load it: re-run with --fresh.")
    extra = sorted(set(file_hashes(root, exclude=(meta_file.name,))) - set(recorded))
    if extra:
        raise AdaptError(f"{root / extra[0]} is not among the files recorded in {meta_file} "
                         f"({len(extra)} unexpected file(s)); refusing to load it: remove it or re-run with --fresh.")


#: The description every saved rung (classification or generation) keeps in its directory.
RUNG_FILE = "rung.json"
#: :func:`read_rung_meta`'s message for a rung.json naming no rung of the registry (``{file}``, ``{name}``).
UNKNOWN_RUNG = ("{file} names no known rung ({name!r}); the saved rung is damaged or not from adaptladder: "
                "re-run it with --fresh.")


def read_rung_meta(path: str | Path, registry: Any, *, unknown: str = UNKNOWN_RUNG,
                   required: tuple[str, ...] = (), run_root: Path | None = None) -> dict[str, Any]:
    """The checked ``rung.json`` of the saved rung in directory ``path``, before anything else is read.

    One-line :class:`AdaptError` when the folder or anything in it is a symlink, when the file is
    missing or not JSON, when it names no rung of ``registry`` (the class always comes from the
    registry by that name, never from the file; the message is ``unknown`` formatted with ``file``
    and ``name``), when it lacks a ``required`` key, when the directory holds pickles, or when its
    files do not match the recorded content hashes. With ``run_root`` (the rung is read from a run
    directory: untrusted input, :mod:`adaptladder.trust`), also when its files differ from the run's
    manifest, and its saved settings get the person's endpoint policy (no saved server, key variable
    or outside path is used unconfirmed).
    """
    import json

    from adaptladder.trust import check_saved_params, refuse_symlinks, verify_manifest

    path = Path(path)
    refuse_symlinks(path)
    meta_file = path / RUNG_FILE
    if not meta_file.is_file():
        raise AdaptError(f"{path} holds no saved rung ({RUNG_FILE} is missing): pass a rung's model directory.")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise AdaptError(f"{meta_file} is not valid JSON; the saved rung is damaged: re-run it with --fresh.") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or meta["name"] not in registry:
        raise AdaptError(unknown.format(file=meta_file, name=meta.get("name") if isinstance(meta, dict) else None))
    missing = [k for k in required if k not in meta]
    if missing:
        raise AdaptError(f"{meta_file} lacks {', '.join(missing)}; the saved rung is damaged: re-run it with --fresh.")
    refuse_pickles(path)
    verify_files(path, meta.get("files"), meta_file)
    if run_root is not None:
        verify_manifest(run_root, path)
        meta["params"] = check_saved_params(meta.get("params"), meta_file, run_root)
    return meta


def dump_sklearn(obj: Any, path: Path) -> None:
    """Write a scikit-learn object with skops (no pickle)."""
    import skops.io as sio

    sio.dump(obj, path)


def load_sklearn(path: Path) -> Any:
    """Read a skops file, trusting only skops' defaults plus :data:`TRUSTED_TYPES`; anything else is refused."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    if not path.is_file():
        raise AdaptError(f"{path} is missing; the saved rung is incomplete: re-run it with --fresh.")
    try:
        return sio.load(path, trusted=list(TRUSTED_TYPES))
    except UntrustedTypesFoundException as e:
        raise AdaptError(f"{path} needs types adaptladder does not trust ({e}); refusing to load it.") from e
    except Exception as e:  # a damaged zip / schema: one line, not a traceback
        raise AdaptError(f"{path} could not be read as a skops model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); re-run with --fresh.") from e


def dumps_json(obj: Any) -> str:
    """JSON text of a rung's state (numpy scalars and arrays as plain numbers and lists)."""
    import json

    import numpy as np

    def default(o: Any) -> Any:
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.bool_):
            return bool(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return json.dumps(obj, indent=2, default=default) + "\n"


# ---------------------------------------------------------------- the encoder of a features model
ENCODER_DIR = "encoder"
_HASHED: dict[tuple[str, int, int], str] = {}


def _cached_sha(p: Path) -> str:
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(p)
    return _HASHED[key]


def folder_hashes(root: Path) -> dict[str, str]:
    """Like :func:`file_hashes`, memoised per file (size, mtime) so a packaged encoder is hashed once per process."""
    return {p.relative_to(root).as_posix(): _cached_sha(p) for p in sorted(Path(root).rglob("*")) if p.is_file()}


def save_encoder_source(rung: Any, path: Path) -> dict[str, Any]:
    """Record where a features-type rung's encoder comes from, so its model directory travels.

    * The packaged all-MiniLM-L6-v2 (alias ``minilm``): recorded as its alias, pip package and
      the SHA-256 of every file (plus the packaged int8 ONNX graph when int8 was used), not
      copied. It is a pinned pip package, so the alias resolves to the same bytes on any machine
      with adaptladder's assets installed, which the hashes prove on load; copying it would put
      88 MB into every model directory and would also change the int8 backend (the packaged ONNX
      graph is only used for the packaged model), so predictions would not be identical.
    * Any other encoder (a local path or a hub name): saved into ``encoder/`` (safetensors via
      sentence-transformers), covered by the rung's own content hashes, and loaded from there.
    """
    from adaptladder.models import ENCODER_ALIASES, MINILM_INT8_ONNX, is_packaged_minilm, packaged_path, resolve_encoder

    spec = rung.settings.encoder
    copied_from = getattr(rung, "_encoder_dir", None)
    if copied_from is None and is_packaged_minilm(spec):
        alias = spec if spec in ENCODER_ALIASES else "minilm"
        folder = Path(resolve_encoder(alias))
        src: dict[str, Any] = {"kind": "packaged", "alias": alias, "pip": ENCODER_ALIASES[alias][2],
                               "files": folder_hashes(folder)}
        if getattr(rung, "precision_used_", None) == "int8":
            try:
                onnx = packaged_path(*MINILM_INT8_ONNX)
            except AdaptError:
                onnx = None
            if onnx is not None:
                src["int8_onnx"] = {"pip": MINILM_INT8_ONNX[2], "sha256": _cached_sha(onnx)}
        return src
    rung._encoder()._load().save(str(path / ENCODER_DIR))
    return {"kind": "copied", "spec": str(spec), "dir": ENCODER_DIR}


def load_encoder_source(src: dict[str, Any], path: Path) -> str | None:
    """The encoder folder to load (``None``: the packaged alias), after checking it is the one fitted with."""
    from adaptladder.models import ENCODER_ALIASES, MINILM_INT8_ONNX, packaged_path, resolve_encoder

    kind = src.get("kind")
    if kind == "copied":
        if src.get("dir", ENCODER_DIR) != ENCODER_DIR:  # never a folder the file chooses (../.., /abs)
            raise AdaptError(f"{path} says its encoder is in {src.get('dir')!r}, not {ENCODER_DIR}/ inside the saved "
                             "rung; refusing to load an encoder from elsewhere: re-run with --fresh.")
        folder = path / ENCODER_DIR
        if not folder.is_dir():
            raise AdaptError(f"{folder} is missing: the saved rung's encoder did not travel with it; re-run with "
                             "--fresh.")
        return str(folder)  # its files are under the rung's own content hashes
    if kind == "packaged":
        alias = src.get("alias")
        if alias not in ENCODER_ALIASES:
            raise AdaptError(f"{path} names an unknown packaged encoder {alias!r}; the saved rung is damaged.")
        folder = Path(resolve_encoder(alias))  # a one-line error naming the pip package when it is missing
        found = folder_hashes(folder)
        want = src.get("files") or {}
        bad = sorted(k for k in set(want) | set(found) if want.get(k) != found.get(k))
        if bad:
            raise AdaptError(f"the packaged encoder at {folder} differs from the one {path} was fitted with "
                             f"({bad[0]} changed); install {src.get('pip')} to predict with this model.")
        if src.get("int8_onnx"):
            onnx = packaged_path(*MINILM_INT8_ONNX)
            if _cached_sha(onnx) != src["int8_onnx"].get("sha256"):
                raise AdaptError(f"the packaged int8 encoder graph {onnx} differs from the one {path} was fitted "
                                 f"with; install {src['int8_onnx'].get('pip')} to predict with this model.")
        return None
    raise AdaptError(f"{path} does not say where its encoder comes from; re-run with --fresh.")
