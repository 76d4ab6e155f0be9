"""Tables from the user's files: CSV / TSV / JSONL / Parquet read into a DataFrame with one-line errors
that name the file and the position (line, record, byte), and the row numbers a user sees.

Shared by every task kind (classification :mod:`adaptladder.task`, generation
:mod:`adaptladder.generation.loaders`): nothing here knows what the columns mean.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from adaptladder.errors import AdaptError

__all__ = ["pick_column", "read_table", "row_offset"]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV / TSV / JSONL / Parquet into a DataFrame of strings, with one-line errors."""
    path = Path(path)
    if not path.exists():
        raise AdaptError(f"{path}: file not found; check the path.")
    if path.is_dir():
        raise AdaptError(f"{path} is a directory; pass a CSV, TSV, JSONL or Parquet file.")
    if not path.is_file():  # /dev/zero, a FIFO, a socket: no table, and maybe no end
        raise AdaptError(f"{path} is not a regular file; pass a CSV, TSV, JSONL or Parquet file.")
    if path.stat().st_size == 0:
        raise AdaptError(f"{path} is empty; pass a file with a header row and labelled examples.")
    compressed = path.suffix.lower() in {".gz", ".bz2", ".zst"}
    suffix = "".join(path.suffixes[-2:]).lower() if compressed else path.suffix.lower()
    kind = suffix.split(".")[1] if suffix.count(".") else ""
    if kind in ("csv", "tsv", "tab", "txt"):
        _check_duplicate_header(path, "\t" if kind != "csv" else ",")
    try:
        if kind in ("csv",):
            with warnings.catch_warnings():
                # a row with more fields than the header (an unquoted comma) would silently become
                # an index column or lose its tail; make it an error that names the cause instead
                warnings.simplefilter("error", pd.errors.ParserWarning)
                try:
                    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", index_col=False)
                except pd.errors.ParserWarning as w:
                    raise AdaptError(f"{path}: some rows have more fields than the header; quote texts that "
                                     "contain commas (\"like, this\") or use TSV / JSONL.") from w
        elif kind in ("tsv", "tab", "txt"):
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8", quoting=3)
        elif kind in ("jsonl", "ndjson"):
            df = _read_jsonl(path)
        elif kind in ("json",):
            try:
                df = pd.read_json(path, dtype=False, encoding="utf-8")
            except ValueError:
                df = _read_jsonl(path)
        elif kind in ("parquet", "pq"):
            df = _decoded(pd.read_parquet(path), path)
        else:
            raise AdaptError(f"{path}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet.")
    except UnicodeDecodeError as e:
        line, offset, byte = _first_bad_utf8(path, compressed)
        where = (f"line {line}, byte offset {offset} (byte 0x{byte:02x})" if line is not None
                 else f"position {e.start} of a decoded chunk")
        raise AdaptError(
            f"{path}: the bytes at {where} are not valid UTF-8 (latin-1 or Windows-1252?); re-save the file as UTF-8."
        ) from e
    except AdaptError:
        raise
    except pd.errors.EmptyDataError as e:
        raise AdaptError(f"{path} has no rows or header; pass a file with a header row and examples.") from e
    except (pd.errors.ParserError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AdaptError(f"{path} could not be parsed as {kind.upper()} ({first}); check the file's format.") from e
    except ImportError as e:  # parquet engine missing
        raise AdaptError(f"{path}: reading {kind} needs an extra package ({e}); install pyarrow.") from e
    if len(df) == 0:
        raise AdaptError(f"{path} has a header but no rows; add labelled examples.")
    df.columns = [str(c) for c in df.columns]
    return df


def _decoded(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Parquet binary columns as text: UTF-8 bytes are decoded (never ``str(b"caf\\xc3\\xa9")``), other
    bytes are a one-line error naming the record."""
    for col in df.columns:
        if df[col].dtype != object:
            continue
        values = df[col].tolist()
        if not any(isinstance(v, (bytes, bytearray, memoryview)) for v in values):
            continue
        out = []
        for i, v in enumerate(values):
            if isinstance(v, (bytes, bytearray, memoryview)):
                try:
                    v = bytes(v).decode("utf-8")
                except UnicodeDecodeError as e:
                    raise AdaptError(f"{path}: record {i + 1} of column {col!r} holds bytes that are not UTF-8 text "
                                     f"(byte 0x{bytes(v)[e.start]:02x} at offset {e.start}); store the column as "
                                     "UTF-8 strings.") from e
            out.append(v)
        df[col] = pd.Series(out, index=df.index, dtype=object)
    return df


def _check_duplicate_header(path: Path, sep: str) -> None:
    """A header naming one column twice is refused (pandas would silently rename the second ``x.1``)."""
    try:
        head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False,
                           encoding="utf-8", quoting=3 if sep == "\t" else 0)
    except Exception:  # unreadable: the full read below reports it properly
        return
    if head.empty:
        return
    names = [str(v).strip() for v in head.iloc[0].tolist()]
    seen: dict[str, int] = {}
    for pos, n in enumerate(names, start=1):
        if n in seen and n:
            raise AdaptError(f"{path}: the header names column {n!r} twice (columns {seen[n]} and {pos}); "
                             "rename one of them so it is clear which to use.")
        seen.setdefault(n, pos)


def _read_jsonl(path: Path) -> pd.DataFrame:
    """JSON Lines, one object per line; a broken line is reported by its line number."""
    import gzip
    import io

    opener: Any = gzip.open if path.suffix.lower() == ".gz" else open
    records: list[dict[str, Any]] = []
    with opener(path, "rb") as fb, io.TextIOWrapper(fb, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise AdaptError(f"{path}: line {lineno} is not valid JSON ({e.msg} at column {e.colno}); "
                                 "fix or remove that line (JSON Lines: one object per line).") from e
            if not isinstance(obj, dict):
                raise AdaptError(f"{path}: line {lineno} is a JSON {type(obj).__name__}, not an object; "
                                 'write one object per line, e.g. {"text": "...", "label": "..."}.')
            records.append(obj)
    if not records:
        raise AdaptError(f"{path} holds no JSON objects; add one labelled example per line.")
    return pd.DataFrame.from_records(records)


def _first_bad_utf8(path: Path, compressed: bool) -> tuple[int | None, int, int]:
    """(line, byte offset in the file, the byte) of the first byte that is not valid UTF-8."""
    import codecs

    if compressed:
        return None, 0, 0
    dec = codecs.getincrementaldecoder("utf-8")()
    done = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                try:
                    dec.decode(chunk)
                except UnicodeDecodeError as e:
                    # the decoder may hold back up to 3 bytes of an unfinished sequence from the last chunk
                    pending = len(e.object) - len(chunk)
                    start = done - pending + e.start
                    f.seek(0)
                    before = f.read(start)
                    bad = f.read(1)
                    return before.count(b"\n") + 1, start, bad[0] if bad else 0
                done += len(chunk)
    except OSError:
        return None, 0, 0
    return None, 0, 0


def pick_column(df: pd.DataFrame, wanted: str | None, candidates: Sequence[str], what: str, path: Path,
                 flag: str) -> str:
    cols = list(df.columns)
    if wanted is not None:
        if wanted not in cols:
            raise AdaptError(
                f"{path} has no column {wanted!r} (columns: {', '.join(cols)}); pass the right name with {flag}."
            )
        return wanted
    lower = {c.lower(): c for c in cols}
    for c in candidates:
        if c in lower:
            return lower[c]
    raise AdaptError(
        f"{path}: cannot tell which column holds the {what} (columns: {', '.join(cols)}); pass it with {flag}."
    )




def row_offset(path: Path) -> int:
    """Row numbers as the user sees them: data row i is line i + 2 of a CSV/TSV (the header is line 1),
    record i + 1 of a JSONL or Parquet file."""
    suffix = "".join(s for s in Path(path).suffixes if s.lower() not in (".gz", ".bz2", ".zst")).lower()
    return 2 if suffix.endswith((".csv", ".tsv", ".tab", ".txt")) else 1
