"""Text helpers shared by the checks: noise patterns, row references, token lengths."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.task import Task

_WORD = re.compile(r"\w+", re.UNICODE)
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf]|Â[\u0080-\u00bf\u00a0]|â€|ï»¿")
_SPACE = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[\W_]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _noise_kind(text: str) -> str | None:
    s = text.strip()
    if not s:
        return "empty"
    if _MOJIBAKE.search(s) or _CONTROL.search(s):
        return "encoding garbage"
    no_urls = _URL.sub(" ", s)
    if no_urls != s and not _WORD.search(no_urls):
        return "URL only"
    visible = len(_SPACE.sub("", s))  # regex counts: a Python loop over every character is slow on long texts
    alnum = len(_NOT_ALNUM.sub("", s))
    if visible >= 4 and alnum / visible < 0.3:
        return "mostly symbols"
    return None


def _row_refs(task: Task) -> list[str]:
    """Where each row came from, for examples a user can look up ("train.csv line 14")."""
    src = task.source
    n = len(task.texts)
    if src.get("row_refs") is not None and len(src["row_refs"]) == n:
        return list(src["row_refs"])
    kind = src.get("kind")
    if kind == "file":
        name = Path(src.get("path", "data")).name
        rows = src.get("row_ids")
        ids = list(rows) if rows is not None and len(rows) == n else list(range(n))
        return [f"{name} line {i + 2}" for i in ids]
    if kind == "files":
        files = [("train", src.get("train"))]
        if src.get("validation"):
            files.append(("validation", src.get("validation")))
        files.append(("test", src.get("test")))
        refs: list[str] = []
        i = 0
        for part, fpath in files:
            in_file = {"train", "validation"} if part == "train" and not src.get("validation") else {part}
            line = 2
            while i < n and task.split[i] in in_file:
                refs.append(f"{Path(str(fpath)).name} line {line}")
                line += 1
                i += 1
        if len(refs) == n:
            return refs
    return [f"row {i}" for i in range(n)]



# ---------------------------------------------------------------------------- 7. hygiene
@lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_lengths(texts: Sequence[str], encoder: str | Any = "minilm", max_chars: int = 4000) -> tuple[np.ndarray, str]:
    """Token counts with the encoder's own tokenizer (packaged MiniLM's when unknown).

    Texts are cut at ``max_chars`` first (~800+ tokens, beyond every context window we report
    on), so long documents cost no more than that; counts of cut texts are lower bounds.
    Falls back to 1.3 x word count when no tokenizer file is found.
    """
    from adaptladder.models import resolve_encoder

    candidates = []
    for name in ([encoder] if isinstance(encoder, str) else []) + ["minilm"]:
        with contextlib.suppress(AdaptError):
            candidates.append(resolve_encoder(name))
    for c in candidates:
        if (Path(c) / "tokenizer.json").is_file():
            tok = _tokenizer(str(c))
            enc = tok.encode_batch([t[:max_chars] for t in texts])
            return np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(texts)), str(c)
    words = np.fromiter((len(_WORD.findall(t)) for t in texts), dtype=np.int64, count=len(texts))
    return np.ceil(words * 1.3).astype(np.int64) + 2, "estimate (1.3 x words)"


# ---------------------------------------------------------------------------- boilerplate and excerpts
_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,40}:[ \t]")  # "Received: ...", "From: a@b", "Subject: ..."
_QUOTED_LINE = re.compile(r"^[ \t]*(?:>|\|>)")
_MBOX_FROM = re.compile(r"^From \S+")  # the mbox separator line before an RFC 822 header block
_ATTRIBUTION = re.compile(r"^\s*(?:On .{3,200}wrote:|-{2,}\s*Original Message\s*-{2,})\s*$", re.IGNORECASE)
_FOOTER_RULE = re.compile(r"^\s*(?:_{10,}|-{10,}|={10,})\s*$")  # a mailing list's footer starts with a rule


def _email_body(text: str) -> str | None:
    """The plain-text body of an RFC 822 message (headers, MIME structure and HTML parts dropped), read
    with the standard library's parser; None when ``text`` does not start like a message."""
    import email
    import email.policy

    first = text.lstrip("\n").split("\n", 2)
    if not first or not (_MBOX_FROM.match(first[0]) or (_HEADER_LINE.match(first[0]) and len(first) > 1
                                                          and (_HEADER_LINE.match(first[1]) or first[1][:1] in " \t"))):
        return None
    raw = text.lstrip("\n")
    if _MBOX_FROM.match(first[0]):
        raw = raw.split("\n", 1)[1] if "\n" in raw else ""
    try:
        msg = email.message_from_string(raw, policy=email.policy.default)
        if not msg.keys():
            return None
        parts = [p for p in msg.walk() if not p.is_multipart()]
        texts = []
        for p in parts:
            if p.get_content_type() == "text/plain":
                try:
                    texts.append(str(p.get_content()))
                except (LookupError, ValueError):
                    texts.append(str(p.get_payload()))
        if not texts:
            texts = [str(p.get_payload()) for p in parts if p.get_content_maintype() == "text"]
        return "\n".join(texts)
    except Exception:  # a malformed message: the line-based stripping below still applies
        return None


def strip_boilerplate(text: str) -> str:
    """The text without what unrelated messages share: headers, quoted replies, signatures, list footers.

    An RFC 822 message (an mbox ``From `` line or a header block first) is read with the standard
    library's ``email`` parser and keeps only its plain-text body (MIME structure and HTML parts
    dropped); otherwise a leading block of two or more ``Name: value`` lines (with their indented
    continuation lines) is removed. Then quoted reply lines (``> ...``) and their attribution
    (``On ... wrote:``, ``-----Original Message-----``) go, and everything after a signature
    (``--``) or a footer rule (a line of 10+ ``_``, ``-`` or ``=``). A text without them (or one
    that would be left empty) comes back unchanged, so single-line data sets are unaffected.
    """
    if "\n" not in text:
        return text
    body = _email_body(text)
    source = text if body is None or not body.strip() else body
    lines = source.split("\n")
    i = n_hdr = 0
    while i < len(lines):
        line = lines[i]
        if _HEADER_LINE.match(line):
            n_hdr += 1
        elif not (n_hdr and line[:1] in (" ", "\t") and line.strip()):
            break
        i += 1
    body_lines = lines[i:] if n_hdr >= 2 else lines
    out: list[str] = []
    for line in body_lines:
        if line.rstrip() == "--" or _FOOTER_RULE.match(line):
            break  # a signature, or a list footer after its rule
        if not _QUOTED_LINE.match(line) and not _ATTRIBUTION.match(line):
            out.append(line)
    if source is text and len(out) == len(lines):
        return text  # nothing removed: the very same string (the encoder cache is shared with the rungs)
    s = "\n".join(out).strip()
    return s if s else text


def excerpt(text: str, start: int, end: int | None = None, width: int = 160) -> str:
    """About ``width`` characters of ``text`` centred on ``text[start:end]``, whitespace collapsed.

    Used so that an example shows the offending characters (``Â£``) or the matched span
    instead of a beginning that is cut off before it.
    """
    end = start if end is None else end
    if len(text) <= width:
        return " ".join(text.split())
    mid = (start + end) // 2
    lo = max(0, min(mid - width // 2, len(text) - width))
    hi = lo + width
    s = " ".join(text[lo:hi].split())
    return ("…" if lo > 0 else "") + s + ("…" if hi < len(text) else "")


def noise_span(text: str) -> tuple[int, int] | None:
    """Where the first encoding garbage (mojibake or a control character) in ``text`` is."""
    m = _MOJIBAKE.search(text) or _CONTROL.search(text)
    return (m.start(), m.end()) if m else None
