"""Load a generation (text-to-text) task from the user's files into a :class:`GenTask`.

Formats: CSV / TSV / JSONL / Parquet with an input and a target column (``--text-col`` /
``--target-col``, else the usual names), and chat JSONL with a ``messages`` list per line
(``{"role": ..., "content": ...}`` turns): the last assistant turn is the target, the turns before
it are the input (a lone user turn as it is, several turns as ``User: ...`` / ``Assistant: ...``
lines; a system prompt shared by every line becomes the instruction). Splits: ``--split-col``,
``--train``/``--validation``/``--test`` files (validation carved from train when absent), else a
seeded split in which copies of an input (after normalisation) stay together.

Which kind of task a file is: ``--task generation`` / ``--task classification`` force it; else a
target column of mostly distinct, multi-word values (or JSON objects) is a generation target and
the run says so, and a label column stays classification (:func:`detect_task`).

Every problem with the user's input is one :class:`AdaptError` sentence naming the file, row and
column: empty targets, a target column of numbers, a schema file that does not parse or is not a
JSON Schema, a target that does not validate against it, inputs longer than the model's context
(:func:`check_context`, called by the ladder once it knows the model).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptladder.errors import AdaptError
from adaptladder.generation.task import DEFAULT_FRACTIONS, GENERATION_METRICS, GenTask, random_split
from adaptladder.io.tables import pick_column, read_table, row_offset
from adaptladder.task import (
    LABEL_CANDIDATES,
    check_no_empty_split,
    check_split_has,
    clean_texts,
    duplicate_groups,
    is_number,
    parse_split_column,
)

GEN_INPUT_CANDIDATES = ("input", "text", "source", "prompt", "document", "article", "content", "question",
                        "statement", "message", "sentence", "query", "context")
GEN_TARGET_CANDIDATES = ("target", "output", "summary", "response", "reply", "answer", "completion", "abstract",
                         "label")
TASK_TYPES = ("classification", "generation")

#: a target column is generation when at least this share of its values is distinct ...
DETECT_DISTINCT_SHARE = 0.5
#: ... and at least this share has two words or more
DETECT_MULTIWORD_SHARE = 0.5

DEFAULT_INSTRUCTIONS = {
    "summarisation": "Summarise the text.",
    "rewrite": "Rewrite the text in the same way as the examples. Answer with the rewritten text only.",
    "dialogue": "Reply to the conversation. Answer with the reply only.",
    "extraction": "Extract the information as a JSON object that follows the schema. Answer with the JSON only.",
}

_TARGET_NAME_KIND = {"summary": "summarisation", "abstract": "summarisation", "reply": "dialogue",
                     "response": "dialogue", "answer": "dialogue"}

Log = Callable[[str], None]


# ------------------------------------------------------------------ which kind of task
def config_task_type(cfg: Any) -> str | None:
    """``generation`` / ``classification`` when the configuration alone says so, else ``None`` (the
    data decides, :func:`detect_task`)."""
    from adaptladder.datasets import BUILTIN
    from adaptladder.generation.datasets import GENERATION_BUILTINS

    if cfg.task is not None:
        return cfg.task
    data = cfg.data
    if data is not None and not Path(str(data)).exists():
        if str(data) in GENERATION_BUILTINS:
            return "generation"
        if str(data) in BUILTIN:
            return "classification"
    if cfg.schema is not None:
        return "generation"
    if cfg.label_col is not None and cfg.target_col is None:
        return "classification"
    return None


def looks_like_generation(values: Sequence[Any]) -> tuple[bool, str]:
    """Whether a target column holds text to generate (mostly distinct, multi-word values, or JSON
    objects/lists) rather than labels; and a short reason."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if not vals:
        return False, "the column is empty"
    structured = sum(isinstance(v, (dict, list, np.ndarray)) for v in vals)
    if structured / len(vals) >= 0.5:
        return True, f"{structured / len(vals):.0%} of its values are JSON objects or lists"
    strs = [str(v).strip() for v in vals]
    strs = [s for s in strs if s]
    if not strs:
        return False, "the column is empty"
    if all(is_number(s) for s in strs):
        return False, "its values are numbers"
    distinct = len(set(strs)) / len(strs)
    multi = sum(len(s.split()) >= 2 for s in strs) / len(strs)
    why = f"{distinct:.0%} of its {len(strs):,} values are distinct and {multi:.0%} have several words"
    return (distinct >= DETECT_DISTINCT_SHARE and multi >= DETECT_MULTIWORD_SHARE), why


def _has_messages(df: pd.DataFrame) -> str | None:
    return next((c for c in df.columns if c.lower() == "messages"), None)


def detect_task(cfg: Any, log: Log | None = None) -> str:
    """``generation`` or ``classification`` for the run's data; a detected generation task is logged."""
    forced = config_task_type(cfg)
    if forced is not None:
        return forced
    log = log or (lambda s: None)
    first = cfg.data if cfg.data is not None else cfg.train
    if first is None:
        return "classification"  # load_task says what is missing
    path = Path(str(first))
    if not path.is_file():
        return "classification"  # not a file and not a built-in: load_task names the problem
    df = read_table(path)
    if cfg.text_col is None and cfg.target_col is None and _has_messages(df):
        log(f"{path.name}: a chat file (column {_has_messages(df)!r}): a generation task, the last assistant "
            "turn of each line is the target (--task classification to override)")
        return "generation"
    col = cfg.target_col
    if col is None:
        lower = {c.lower(): c for c in df.columns}
        col = next((lower[c] for c in (*LABEL_CANDIDATES, *GEN_TARGET_CANDIDATES) if c in lower), None)
    if col is None or col not in df.columns:
        return "generation" if cfg.target_col is not None else "classification"  # the loader names the column
    gen, why = looks_like_generation(df[col].tolist())
    if gen:
        log(f"{path.name}: column {col!r} looks like text to generate ({why}): a generation task "
            "(--task classification to override)")
        return "generation"
    if cfg.target_col is not None:
        log(f"{path.name}: column {col!r} looks like labels ({why}): a classification task "
            "(--task generation to override)")
    return "classification"


# ------------------------------------------------------------------ columns and values
def _offset(path: Path) -> int:
    """Row numbers as the user sees them (:func:`adaptladder.io.tables.row_offset`)."""
    return row_offset(path)


def _where(path: Path, i: int, offset: int) -> str:
    return f"{path}: {'row' if offset == 2 else 'record'} {i + offset}"


def clean_targets(raw: Sequence[Any], path: Path, col: str, offset: int = 2) -> list[str]:
    """Target texts (JSON values written as compact JSON); an empty target or a column of numbers
    is a one-line error."""
    out: list[str] = []
    for i, v in enumerate(raw):
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise AdaptError(f"{_where(path, i, offset)} has an empty target in column {col!r}; fill it in or "
                             "drop the row.")
        if isinstance(v, (dict, list)):
            out.append(json.dumps(v, ensure_ascii=False))
        elif isinstance(v, str):
            out.append(v)
        else:
            out.append(str(v))
    if out and all(is_number(s) for s in out):
        shown = ", ".join(out[:3])
        raise AdaptError(f"{path}: the target column {col!r} holds only numbers ({shown}, ...): that is a label or "
                         "a score, not text to generate; use --task classification --label-col "
                         f"{col}, or pass the text target with --target-col.")
    return out


def _content(v: Any, where: str = "a chat message") -> str:
    """A turn's content: a string, or OpenAI-style text parts ``[{"type": "text", "text": ...}]``;
    anything else (a number, a list of plain values, an image part) is a one-line error, never text
    made up from its repr."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, (list, np.ndarray)):
        parts = []
        for p in (v.tolist() if isinstance(v, np.ndarray) else v):
            if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise AdaptError(f"{where}: the content part {str(p)[:60]!r} is not a text part; write content as "
                                 'a string or as [{"type": "text", "text": "..."}].')
        return "\n".join(p for p in parts if p)
    raise AdaptError(f"{where}: the content {str(v)[:60]!r} is a {type(v).__name__}, not text; write content as a "
                     "string.")


def as_turn_list(cell: Any) -> Any:
    """A ``messages`` cell as a Python list where it is one (a numpy array from Parquet, a JSON string
    from CSV); a string that is not JSON gives None; anything else is returned as it is."""
    if isinstance(cell, np.ndarray):
        cell = cell.tolist()
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except json.JSONDecodeError:
            cell = None
    return cell


def render_turns(turns: Sequence[dict[str, Any]], system: str | None = None) -> str:
    """The input text of a chat example: a lone user turn as it is (when no ``system`` is shown), else
    ``Role: text`` lines, after ``System: ...`` when ``system`` is given. Training (parse_chat) and
    predict render the same way."""
    if len(turns) == 1 and str(turns[0]["role"]).lower() == "user" and not system:
        return _content(turns[0].get("content"))
    lines = [f"System: {system}"] if system else []
    lines += [f"{str(m['role']).capitalize()}: {_content(m.get('content'))}" for m in turns]
    return "\n".join(lines)


def parse_chat(raw: Sequence[Any], path: Path, col: str, offset: int = 1
               ) -> tuple[list[str], list[str], str | None]:
    """(inputs, targets, shared system prompt or None) from a ``messages`` column."""
    inputs, targets, systems = [], [], []
    for i, cell in enumerate(raw):
        where = _where(path, i, offset)
        msgs = as_turn_list(cell)
        if not isinstance(msgs, list) or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise AdaptError(f"{where}: {col!r} is not a list of {{\"role\": ..., \"content\": ...}} turns; write "
                             'each line as {"messages": [{"role": "user", "content": "..."}, '
                             '{"role": "assistant", "content": "..."}]}.')
        roles = [str(m["role"]).lower() for m in msgs]
        if "assistant" not in roles:
            raise AdaptError(f"{where} has no assistant turn in {col!r}; the last assistant turn is the target, so "
                             "add one or drop the line.")
        last = len(roles) - 1 - roles[::-1].index("assistant")
        target = _content(msgs[last]["content"], f"{where} ({col!r}, turn {last + 1})")
        if not target.strip():
            raise AdaptError(f"{where} has an empty target (its last assistant turn in {col!r}); fill it in or "
                             "drop the line.")
        before = msgs[:last]
        texts = [_content(m["content"], f"{where} ({col!r}, turn {k + 1})") for k, m in enumerate(before)]
        system = "\n".join(t for t, m in zip(texts, before, strict=True)
                           if str(m["role"]).lower() == "system").strip()
        turns = [m for m in before if str(m["role"]).lower() != "system"]
        if not turns or not any(t.strip() for t, m in zip(texts, before, strict=True)
                                if str(m["role"]).lower() != "system"):
            raise AdaptError(f"{where} has no user turn before its last assistant turn in {col!r}; the turns "
                             "before the reply are the input, so add the user's message or drop the line.")
        systems.append(system)
        inputs.append(turns)
        targets.append(target)
    shared = systems[0] if systems and len(set(systems)) == 1 and systems[0] else None
    rendered = [render_turns(turns, None if shared else system) for turns, system in zip(inputs, systems, strict=True)]
    return rendered, targets, shared


# ------------------------------------------------------------------ schema
def load_schema(path: str | Path) -> dict[str, Any]:
    """A JSON Schema document from a file; one line if it is missing, does not parse or is not a schema."""
    import jsonschema

    p = Path(path)
    if not p.is_file():
        raise AdaptError(f"schema file {p} not found; pass a JSON Schema file with --schema.")
    try:
        schema = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdaptError(f"schema file {p} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                         "fix it.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise AdaptError(f"schema file {p} cannot be read ({e}); pass a UTF-8 JSON Schema file.") from e
    if not isinstance(schema, dict):
        raise AdaptError(f"schema file {p} holds a JSON {type(schema).__name__}, not an object; a JSON Schema is "
                         'an object such as {"type": "object", "properties": {...}}.')
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        at = "/".join(str(x) for x in e.absolute_path) or "the top level"
        raise AdaptError(f"schema file {p} is not a valid JSON Schema ({e.message} at {at}); fix it.") from e
    return schema


def check_targets_against_schema(targets: Sequence[str], schema: dict[str, Any], schema_path: str | Path,
                                 where: Callable[[int], str]) -> None:
    """Every target parses as JSON and validates against the schema; the first that does not is named."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    for i, t in enumerate(targets):
        try:
            value = json.loads(t)
        except json.JSONDecodeError as e:
            raise AdaptError(f"{where(i)}: the target is not JSON ({e.msg} at column {e.colno}) but --schema "
                             f"{schema_path} asks for JSON targets; fix the row or drop --schema.") from e
        err = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if err is not None:
            at = "/".join(str(x) for x in err.absolute_path) or "the top level"
            raise AdaptError(f"{where(i)}: the target does not validate against {schema_path} ({err.message} at "
                             f"{at}); fix the row or the schema.")


# ------------------------------------------------------------------ splits
def carve_validation(split: np.ndarray, inputs: Sequence[str], seed: int, where: str,
                     frac: float = DEFAULT_FRACTIONS[1]) -> np.ndarray:
    """Move a seeded ``frac`` of the training inputs (copies of an input together) to validation."""
    split = np.asarray(split, dtype=object).copy()
    tr = np.flatnonzero(split == "train")
    groups = duplicate_groups([inputs[i] for i in tr])
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise AdaptError(f"{where}: {len(tr)} training pair(s) with {len(uniq)} distinct input(s) is too few to "
                         "carve a validation split; add examples or give a validation split.")
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    n_val = min(len(uniq) - 1, max(1, round(len(uniq) * frac)))
    val = set(uniq[:n_val].tolist())
    split[tr[[g in val for g in groups.tolist()]]] = "validation"
    return split


def check_gen_split_sanity(task: GenTask) -> None:
    """Every split has examples (with or without the audit)."""
    check_no_empty_split(task, task.inputs, rows="pairs", item="input", an_item="an input")


# ------------------------------------------------------------------ loading
def guess_kind(inputs: Sequence[str], targets: Sequence[str], target_col: str | None, chat: bool,
               schema: dict[str, Any] | None) -> tuple[str, str]:
    """The task kind (sets the audit's size table and the default metric) and why."""
    if schema is not None:
        return "extraction", "a JSON schema is given"
    if chat:
        return "dialogue", "a chat file"
    if target_col and target_col.lower() in _TARGET_NAME_KIND:
        return _TARGET_NAME_KIND[target_col.lower()], f"the target column is called {target_col!r}"
    n_in = float(np.median([len(s.split()) for s in inputs])) if inputs else 0.0
    n_out = float(np.median([len(s.split()) for s in targets])) if targets else 0.0
    if n_in >= 30 and n_out <= 0.5 * n_in:
        return "summarisation", f"targets are short next to their inputs (median {n_out:.0f} vs {n_in:.0f} words)"
    return "rewrite", f"targets are about as long as their inputs (median {n_out:.0f} vs {n_in:.0f} words)"


def _read_pairs(path: Path, text_col: str | None, target_col: str | None
                ) -> tuple[pd.DataFrame, list[str], list[str], dict[str, Any]]:
    df = read_table(path)
    offset = _offset(path)
    mcol = _has_messages(df)
    if mcol and text_col is None and target_col is None:
        inputs, targets, system = parse_chat(df[mcol].tolist(), path, mcol, offset)
        return df, inputs, targets, {"format": "chat", "messages_col": mcol, "system": system}
    tcol = pick_column(df, text_col, GEN_INPUT_CANDIDATES, "input text", path, "--text-col")
    ycol = pick_column(df, target_col, GEN_TARGET_CANDIDATES, "target text", path, "--target-col")
    if tcol == ycol:
        raise AdaptError(f"{path}: the input and target columns are both {tcol!r}; pass --text-col and --target-col.")
    inputs = clean_texts(df[tcol], path, tcol, offset)
    targets = clean_targets(df[ycol].tolist(), path, ycol, offset)
    return df, inputs, targets, {"format": "columns", "text_col": tcol, "target_col": ycol}


def load_generation_data(
    data: str | Path | None = None, *, text_col: str | None = None, target_col: str | None = None,
    split_col: str | None = None, train: str | Path | None = None, validation: str | Path | None = None,
    test: str | Path | None = None, schema: str | Path | None = None, instruction: str | None = None,
    seed: int = 13, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, name: str | None = None,
    log: Log | None = None,
) -> GenTask:
    """A :class:`GenTask` from a built-in name, one file (optionally with a split column) or split files."""
    from adaptladder.generation.datasets import GENERATION_BUILTINS
    from adaptladder.generation.task import load_generation_task

    log = log or (lambda s: None)
    if data is not None and train is not None:
        raise AdaptError("pass either one data file (or built-in name) or --train/--test files, not both.")
    if data is None and train is None:
        raise AdaptError("no data given: pass a built-in data set name, a file, or --train and --test files.")
    if data is not None and str(data) in GENERATION_BUILTINS and not Path(str(data)).exists():
        if schema is not None:
            raise AdaptError(f"{data} is a built-in set with its own schema; --schema is for your own files.")
        for opt, given, has in (("--text-col", text_col, "input"), ("--target-col", target_col, "target"),
                                ("--split-col", split_col, None)):
            if given is not None and given != has:
                raise AdaptError(f"{data} is a built-in set with the columns input and target; {opt} {given!r} is "
                                 "for your own files: drop it, or pass a file.")
        task = load_generation_task(str(data), seed=seed, fractions=fractions)
        if instruction:
            task.instruction = instruction
        return task

    schema_doc = load_schema(schema) if schema is not None else None
    source: dict[str, Any] = {"kind": "file" if data is not None else "files", "seed": seed}
    if data is not None:
        path = Path(data)
        df, inputs, targets, meta = _read_pairs(path, text_col, target_col)
        source.update(path=str(path.resolve()), **meta)
        offset = _offset(path)
        row_files = [[str(path), 0, offset]]

        def where(i: int) -> str:
            return _where(path, i, offset)

        if split_col is not None:
            if split_col not in df.columns:
                raise AdaptError(f"{path} has no column {split_col!r} (columns: {', '.join(df.columns)}); fix "
                                 "--split-col.")
            split = parse_split_column(df[split_col], path, split_col)
            source["split"] = f"column {split_col}"
            check_split_has(split, path, ("train", "test"))
            if not (split == "validation").any():
                split = carve_validation(split, inputs, seed, str(path))
                source["split"] += " (validation carved from train, inputs kept together)"
        else:
            split = random_split(len(inputs), seed, fractions, groups=duplicate_groups(inputs))
            source["split"] = (f"seeded {fractions[0]:.0%}/{fractions[1]:.0%}/{fractions[2]:.0%}, copies of an "
                               "input kept in one split")
        task_name = name or path.stem
    else:
        if test is None:
            raise AdaptError("--train needs a --test file too (or pass one data file and let adaptladder split it).")
        parts: list[tuple[str, Path]] = [("train", Path(train)), ("test", Path(test))]  # type: ignore[arg-type]
        if validation is not None:
            parts.insert(1, ("validation", Path(validation)))
        inputs, targets, split_l, row_files = [], [], [], []
        meta = {}
        for part, p in parts:
            _, x, y, m = _read_pairs(p, text_col, target_col)
            meta = meta or m
            row_files.append([str(p), len(inputs), _offset(p)])
            inputs += x
            targets += y
            split_l += [part] * len(x)
        split = np.array(split_l, dtype=object)
        source.update(train=str(Path(train).resolve()), test=str(Path(test).resolve()), split="given files",  # type: ignore[arg-type]
                      **meta)
        if validation is None:
            split = carve_validation(split, inputs, seed, str(train))
            source["split"] = "given train/test files; validation carved from train, inputs kept together"
        else:
            source["validation"] = str(Path(validation).resolve())

        def where(i: int) -> str:
            return _row_where(row_files, i)

        task_name = name or Path(train).stem  # type: ignore[arg-type]

    if schema_doc is not None:
        check_targets_against_schema(targets, schema_doc, schema, where)  # type: ignore[arg-type]
        source["schema_path"] = str(Path(schema).resolve())  # type: ignore[arg-type]
    kind, why = guess_kind(inputs, targets, meta.get("target_col"), meta.get("format") == "chat", schema_doc)
    log(f"generation task kind: {kind} ({why})")
    source["kind_reason"] = why
    if instruction:
        instr, source["instruction_from"] = instruction, "--instruction"
    elif meta.get("system"):
        instr, source["instruction_from"] = meta["system"], "the chat file's system prompt"
    else:
        instr, source["instruction_from"] = DEFAULT_INSTRUCTIONS[kind], "default for the task kind"
    source["row_ids"] = list(range(len(inputs)))
    source["row_files"] = row_files
    return GenTask(task_name, inputs, targets, split, kind, instr, schema_doc, source)


def load_generation(cfg: Any, log: Log | None = None) -> GenTask:
    """The run's generation task from its configuration (``adaptladder.ladder.prepare_task`` calls it)."""
    if cfg.label_col is not None and cfg.target_col is None and cfg.task == "generation":
        target_col = cfg.label_col
    else:
        target_col = cfg.target_col
    return load_generation_data(cfg.data, text_col=cfg.text_col, target_col=target_col, split_col=cfg.split_col,
                                train=cfg.train, validation=cfg.validation, test=cfg.test, schema=cfg.schema,
                                instruction=cfg.instruction, seed=cfg.seed, name=cfg.name, log=log)


def _row_where(row_files: list[list[Any]], pos: int) -> str:
    """``file: row N`` for position ``pos`` of the concatenated files ``[[path, first position, offset], ...]``."""
    path, start, off = next(f for f in reversed(row_files) if f[1] <= pos)
    return _where(Path(path), pos - start, off)


def row_label(task: GenTask, i: int) -> str:
    """Where example ``i`` of a task came from, for messages ("data.csv: row 7"; the input's start otherwise)."""
    files = task.source.get("row_files")
    rows = task.source.get("row_ids")
    if files and rows is not None and i < len(rows):
        return _row_where(files, int(rows[i]))
    text = " ".join(task.inputs[i].split())
    return f"{task.name}: the {task.split[i]} example starting {text[:50]!r}"


# ------------------------------------------------------------------ metric and context
def resolve_generation_metric(cfg: Any, task: GenTask) -> str:
    """The run's primary metric for a generation task: ``--metric`` when it is a generation metric that
    fits the task's output, the task's default when it was left at the (classification) default."""
    from adaptladder.generation.metrics import JSON_METRICS

    m = cfg.metric
    if m is None or (m == "macro_f1" and not getattr(cfg, "metric_given", False)):
        return task.default_metric  # left at the (classification) default
    if m not in GENERATION_METRICS:
        raise AdaptError(f"--metric {m} is a classification metric; for a generation task use one of "
                         f"{', '.join(GENERATION_METRICS)} (default for this task: {task.default_metric}).")
    if task.output == "text" and m in JSON_METRICS:
        raise AdaptError(f"--metric {m} scores JSON output but {task.name} has text targets (no --schema); use one "
                         f"of exact_match, token_f1, rouge_l, chrf, embedding_sim.")
    return m


def lm_checkpoint(lm: str | None) -> tuple[Path, int] | None:
    """``(folder, max_ctx)`` of a local LM checkpoint that is at hand without loading or converting weights:
    a local folder, or the packaged alias once converted into the cache. ``None`` otherwise (an HF id, an
    API model name, the packaged LM before its first conversion), so nothing slow happens for a check."""
    from adaptladder import models

    name = lm or models.DEFAULT_LM
    if name in models.LM_ALIASES:
        gguf_name = models.LM_ALIASES[name][2]
        folder = (models.cache_dir() / "lm"
                  / f"{gguf_name.removesuffix('.gguf')}-fp32-v{models._LM_CHECKPOINT_VERSION}")
        if not (folder / "DONE").is_file():
            return None
    else:
        folder = Path(name)
    try:
        conf = json.loads((folder / "config.json").read_text())
        max_ctx = int(conf.get("max_position_embeddings") or conf.get("n_positions") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return (folder, max_ctx) if max_ctx > 0 else None


def lm_token_counter(folder: str | Path) -> tuple[Callable[[str], int], Callable[[list[str]], list[int]]] | None:
    """``(count_tokens, count_batch)`` with the checkpoint's tokenizer (``None`` if it does not load)."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception:  # an unreadable folder is the rungs' to report, with their own message
        return None

    def count_batch(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]

    return (lambda t: count_batch([t])[0]), count_batch


#: tokens the chat template and role markers add around the instruction and the input
TEMPLATE_TOKENS = 32


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_run_context(task: GenTask, cfg: Any, log: Log | None = None) -> dict[str, Any] | None:
    """:func:`check_context` against the run's local LM (``cfg.lm``) when its checkpoint is at hand
    (:func:`lm_checkpoint`); the prompt reserve is the instruction + the chat template + the answer
    budget (``max_new_tokens_for`` the training targets). Skipped (``None``) for API backends.

    A token covers at least one byte, so a text's UTF-8 length bounds its token count: when even
    that bound fits, no tokenizer is loaded at all."""
    if any(str((p or {}).get("backend", "")).lower() == "openai" for p in (cfg.rung_params or {}).values()):
        return None
    ckpt = lm_checkpoint(cfg.lm)
    if ckpt is None:
        return None
    from adaptladder.generation.decode import max_new_tokens_for

    folder, max_ctx = ckpt
    train_targets = task.part("train")[1][:2000]
    bound = max_new_tokens_for(train_targets, _utf8_len) + _utf8_len(task.instruction) + TEMPLATE_TOKENS
    longest = max((_utf8_len(t) for t in task.inputs), default=0)
    if longest + bound <= max_ctx:
        return {"max_bytes": longest, "room": max_ctx - bound, "exact": False}
    counter = lm_token_counter(folder)
    if counter is None:
        return None
    count, batch = counter
    answer = max_new_tokens_for(train_targets, count)
    reserve = count(task.instruction) + TEMPLATE_TOKENS + answer
    out = check_context(task, count, max_ctx, reserve, count_batch=batch)
    if log:
        log(f"context: every input fits the LM's {max_ctx:,} tokens after the prompt and a {answer}-token answer "
            f"(longest input {out['max']:,} tokens)")
    return out


def check_context(task: GenTask, count_tokens: Callable[[str], int], max_ctx: int, reserve: int,
                  count_batch: Callable[[list[str]], list[int]] | None = None) -> dict[str, Any]:
    """Refuse inputs that do not fit the model's context once the prompt (instruction, template, shots)
    and the answer take ``reserve`` tokens: one line naming the first such row and how many there are.

    Only inputs longer than the room in UTF-8 bytes are counted (a token covers at least one byte);
    returns the longest counted input's tokens (``max``, 0 when none needed counting) and ``room``.
    """
    room = max_ctx - reserve
    if room <= 0:
        raise AdaptError(f"the prompt and answer take {reserve} tokens, more than the model's {max_ctx}-token "
                         "context; shorten the instruction or choose a model with a longer context.")
    # a token covers at least one byte: only inputs longer than the room in UTF-8 bytes can be too long
    maybe = [i for i, t in enumerate(task.inputs) if _utf8_len(t) > room]
    texts = [task.inputs[i] for i in maybe]
    if count_batch is not None:
        got = [c for s in range(0, len(texts), 4096) for c in count_batch(texts[s:s + 4096])]
    else:
        got = [count_tokens(t) for t in texts]
    counts = np.zeros(len(task.inputs), dtype=np.int64)
    counts[maybe] = got
    over = np.flatnonzero(counts > room)
    if len(over):
        i = int(over[0])
        more = f" ({len(over):,} inputs in all, the longest {int(counts.max()):,} tokens)" if len(over) > 1 else ""
        raise AdaptError(f"{row_label(task, i)}: the input has {int(counts[i]):,} tokens, more than the "
                         f"{room:,} the model's {max_ctx:,}-token context leaves after the prompt and answer "
                         f"({reserve:,}){more}; shorten or drop such inputs, or use a model with a longer context.")
    return {"max": int(counts.max()) if len(counts) else 0, "counted": len(maybe), "room": room, "exact": True}
