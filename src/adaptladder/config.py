"""The run's configuration: :class:`RunConfig` (the same object the CLI and the Python API take).

Kept free of heavy imports and of the ladder, so every layer (CLI, ladder, report, audit)
can read a configuration without importing the others.

Precedence: dataclass defaults < ``--config`` YAML < command-line options. The CLI passes
only the options the user gave (``None`` means "not given"), so a value in the YAML file
stands unless the command line overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError
from adaptladder.kinds import CLASSIFICATION_METRICS as METRICS
from adaptladder.kinds import KINDS as TASK_TYPES  # ``task`` values: None (detected from the data) or one of these
from adaptladder.kinds import SPLITS

#: Where rungs run (``--executor``): this process, or Ray tasks (adaptladder.executors).
EXECUTORS = ("local", "ray")

#: Non-inferiority margin of the bar (adaptladder.decide; README "How the recommendation is made").
DEFAULT_MARGIN = 0.005

_STR_KEYS = ("data", "text_col", "label_col", "target_col", "task", "schema", "instruction", "split_col", "train",
             "validation", "test", "encoder", "lm", "out", "name", "metric",
             "executor", "ray_address", "storage")
_BOOL_KEYS = ("run_all", "require_lower_bound", "no_audit", "force", "fresh")


@dataclass
class RunConfig:
    """Everything that describes a run; the same object the CLI and the Python API take.

    A YAML file with these keys can be passed as ``--config``; command-line options override it.
    """

    data: str | None = None
    text_col: str | None = None
    label_col: str | None = None
    # generation tasks (adaptladder.generation): target column, forced task type, JSON Schema file, instruction
    target_col: str | None = None
    task: str | None = None  # None: detected from the data; "classification" or "generation" forces it
    schema: str | None = None
    instruction: str | None = None
    split_col: str | None = None
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    seed: int = 13
    rungs: list[str] | None = None  # None: every registered rung, in cost order
    order: list[str] | None = None  # explicit climbing order overriding the declared costs
    rung_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # --sweep RUNG.KEY=v1,v2: settings searched on validation (adaptladder.sweep); {rung: {key: [values]}}
    sweep: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    bar: float | None = None
    metric: str = "macro_f1"
    run_all: bool = False
    require_lower_bound: bool = False
    margin: float = DEFAULT_MARGIN  # non-inferiority margin of the bar (see adaptladder.decide)
    cv_folds: int = 5  # k-fold CV estimates for cheap rungs (0: the validation split decides for every rung)
    cv_max_fit_seconds: float = 20.0  # any other rung whose fit took less than this is cross-validated too
    # cap rows per split (stratified) for quick runs: N for every split, or {split: N} (the CLI's
    # --sample train=2000,validation=1000,test=1000); a split not named keeps all its rows
    sample: int | dict[str, int] | None = None
    encoder: str = "minilm"
    lm: str | None = None
    budget_minutes: float | None = None
    audit_budget_minutes: float | None = None  # None: the run's budget_minutes (see audit.gate)
    out: str | None = None
    name: str | None = None
    no_audit: bool = False
    force: bool = False
    fresh: bool = False
    # where rungs run (adaptladder.executors; docs/scaling.md): in this process, or as Ray tasks on a
    # local Ray instance / the cluster at ray_address; storage: where workers put model files for the driver
    executor: str = "local"
    ray_address: str | None = None
    storage: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """The YAML file's values, then ``overrides`` that are not None (the options the user gave)."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise AdaptError(f"config file {p} not found; check the path.")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise AdaptError(f"config file {p} is not valid YAML ({str(e).splitlines()[0]}); fix it.") from e
        except (OSError, UnicodeDecodeError) as e:
            raise AdaptError(f"config file {p} cannot be read ({e}); pass a UTF-8 YAML file.") from e
        if not isinstance(raw, dict):
            raise AdaptError(f"config file {p} must be a mapping of option: value.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, raw)) - known)
        if unknown:
            raise AdaptError(f"config file {p} has unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}.")
        check_types(raw, where=f"config file {p}: ")
        raw = dict(raw)
        for key in ("rungs", "order"):
            if isinstance(raw.get(key), str):  # "tfidf,features" as on the command line
                raw[key] = [v.strip() for v in raw[key].split(",") if v.strip()]
        given = {k: v for k, v in overrides.items() if v is not None}
        if "rung_params" in given and isinstance(raw.get("rung_params"), dict):
            merged = {k: dict(v) for k, v in raw["rung_params"].items()}
            for rung, params in given.pop("rung_params").items():
                merged.setdefault(rung, {}).update(params)
            raw["rung_params"] = merged
        raw.update(given)
        return cls(**raw)

    def validate(self) -> None:
        """Types and ranges of every value (wherever it came from): one-line errors."""
        check_types({f.name: getattr(self, f.name) for f in fields(self)}, where="")
        if self.task is not None and self.task not in TASK_TYPES:
            raise AdaptError(f"--task {self.task!r} is unknown: use {' or '.join(TASK_TYPES)}.")
        from adaptladder.kinds.detect import config_kind, metrics_of

        generation_metrics = metrics_of("generation")
        kind = config_kind(self)  # None: the data decides (a target column of free text is generation)
        if kind == "generation":
            # the default macro_f1 means "the task's default metric" (see generation.loaders.resolve_generation_metric)
            if self.metric not in ("macro_f1", *generation_metrics):
                raise AdaptError(f"unknown metric {self.metric!r} for a generation task: use one of "
                                 f"{', '.join(generation_metrics)}.")
        elif kind == "classification" and self.metric not in METRICS:
            raise AdaptError(f"unknown metric {self.metric!r}: use {' or '.join(METRICS)}"
                             + (" (generation metrics need --task generation)." if self.metric in generation_metrics
                                else "."))
        elif self.metric not in (*METRICS, *generation_metrics):
            raise AdaptError(f"unknown metric {self.metric!r}: use {' or '.join(METRICS)} for classification, or one "
                             f"of {', '.join(generation_metrics)} for a generation task.")
        if self.bar is not None and not 0 < self.bar <= 1:
            raise AdaptError(f"--bar {self.bar} is outside (0, 1]; give a score such as 0.90.")
        from adaptladder.rungs import RUNGS, rung_table
        from adaptladder.rungs.settings import resolve_params

        kinds = [kind] if kind is not None else list(TASK_TYPES)
        known = {n: k for k in reversed(kinds) for n in rung_table(k)}  # a shared name: the first kind's
        for name in (self.rungs or []) + (self.order or []) + list(self.rung_params):
            if name not in known:
                what = "" if kind is None else f" for a {kind} task"
                names = dict.fromkeys(n for k in kinds for n in rung_table(k))
                raise AdaptError(f"unknown rung {name!r}{what}: choose from {', '.join(names)}.")
        # settings of a rung only the configured kind (or, undecided, only one kind) has: checked before any
        # data is read (classification rungs are checked with the run-wide values at the start of the run)
        for name, params in self.rung_params.items():
            owner = known.get(name)
            if owner == "generation" and (kind == "generation" or name not in RUNGS) and isinstance(params, dict):
                resolve_params(name, None, params, kind=owner)
        if not 0 <= self.margin < 0.5:
            raise AdaptError(f"--margin {self.margin} is outside [0, 0.5); give a score difference such as 0.005.")
        if self.cv_folds < 0 or self.cv_folds == 1 or self.cv_folds > 50:
            raise AdaptError(f"cv_folds {self.cv_folds} must be 0 (off) or 2-50.")
        sizes = self.sample.values() if isinstance(self.sample, dict) else [self.sample]
        if self.sample is not None and any(v < 10 for v in sizes):
            raise AdaptError(f"--sample {self.sample} is too small; use at least 10 rows per split.")
        if self.executor not in EXECUTORS:
            raise AdaptError(f"--executor {self.executor!r} is unknown: use {' or '.join(EXECUTORS)}.")
        if self.executor != "ray" and (self.ray_address or self.storage):
            opt = "--ray-address" if self.ray_address else "--storage"
            raise AdaptError(f"{opt} is for the Ray executor: add --executor ray (or drop {opt}).")
        if self.audit_budget_minutes is not None and self.audit_budget_minutes <= 0:
            raise AdaptError(f"--audit-budget-minutes {self.audit_budget_minutes} is invalid: use a positive "
                             "number of minutes.")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            raise AdaptError(f"--budget-minutes {self.budget_minutes} is invalid: use a positive number of minutes.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_types(values: dict[str, Any], *, where: str) -> None:
    """Refuse a value of the wrong type (``bar: high``, ``sample: lots``) with one line naming the key."""

    def bad(key: str, want: str) -> AdaptError:
        return AdaptError(f"{where}{key}: {values[key]!r} is not {want}.")

    for key, v in values.items():
        if v is None:
            if key in ("seed", "metric", "encoder", "rung_params", "sweep", "executor") or key in _BOOL_KEYS:
                raise bad(key, "allowed to be empty; give a value or leave the key out")
            continue
        if key in _STR_KEYS and not isinstance(v, str):
            raise bad(key, "a string")
        if key in _BOOL_KEYS and not isinstance(v, bool):
            raise bad(key, "true or false")
        if key == "sample" and isinstance(v, dict):
            if not v or not all(k in SPLITS and _is_int(n) for k, n in v.items()):
                raise bad(key, "an integer or a mapping of train/validation/test to integers")
            continue
        if key in ("seed", "sample", "cv_folds") and not _is_int(v):
            raise bad(key, "an integer")
        if key == "seed" and not 0 <= v < 2**32:  # numpy's and torch's seeds: anything larger fails deep inside
            raise bad(key, "an integer from 0 to 4294967295")
        if key in ("bar", "budget_minutes", "audit_budget_minutes", "margin", "cv_max_fit_seconds") \
                and not _is_number(v):
            raise bad(key, "a number")
        if key in ("rungs", "order") and not (isinstance(v, str) or (
                isinstance(v, list) and all(isinstance(x, str) for x in v))):
            raise bad(key, "a list of rung names")
        if key == "rung_params" and not (isinstance(v, dict) and all(
                isinstance(k, str) and isinstance(p, dict) for k, p in v.items())):
            raise bad(key, "a mapping rung -> {setting: value}")
        if key == "sweep" and not (isinstance(v, dict) and all(
                isinstance(k, str) and isinstance(p, dict) and all(isinstance(x, list) and x for x in p.values())
                for k, p in v.items())):
            raise bad(key, "a mapping rung -> {setting: [values to try]}")


def rung_budget_s(name: str, cfg: Any) -> float | None:
    """A rung's time budget in seconds: its own ``budget_minutes`` setting, else ``--budget-minutes``
    (one rule for the classification and the generation ladder)."""
    own = (cfg.rung_params or {}).get(name, {}).get("budget_minutes")
    minutes = own if own is not None else cfg.budget_minutes
    if minutes is None:
        return None
    try:
        minutes = float(minutes)
    except (TypeError, ValueError):
        raise AdaptError(f"budget_minutes for {name} must be a number of minutes, got {minutes!r}.") from None
    if not minutes > 0:
        raise AdaptError(f"budget_minutes for {name} must be positive, got {minutes}.")
    return minutes * 60
