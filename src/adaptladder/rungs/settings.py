"""Rung settings as declared dataclasses (PEFT-config style): one class per rung family.

Each field declares its type, its default and a help line (``metadata["help"]``); range checks
live in ``check()`` (run by ``__post_init__``). A rung class names its settings class
(``Rung.Settings``); the rung's ``__init__`` builds and validates it, so a bad setting is an
error when the rung is made, not when it has half trained. The ladder builds every chosen
rung's settings before any compute (:func:`resolve_params`), and ``adaptladder rungs`` lists
them from these declarations.

Values may come as strings (``--set lora.lr=1e-3``, a quoted YAML value): they are converted
to the declared type when they read as one (``"16"`` -> 16 for an ``int``, ``"true"`` -> True
for a ``bool``); anything else is a one-line error naming the rung, the setting and what is
accepted.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal

from adaptladder.errors import AdaptError


class SettingError(AdaptError):
    """A setting's value is invalid; ``key`` names it, ``want`` says what is accepted."""

    def __init__(self, key: str, value: Any, want: str) -> None:
        self.key, self.value, self.want = key, value, want
        super().__init__(f"setting {key}={value!r} is invalid: use {want}.")


def setting(default: Any = MISSING, *, help: str, factory: Any = MISSING) -> Any:
    """A declared setting: its default (or ``factory`` for a mutable default) and a help line."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class RungSettings:
    """Base of every rung family's settings; subclasses add fields and ``check()`` their ranges.

    ``run_values`` maps run-wide options (``encoder``, ``seed``, ``budget_minutes``, ``lm``) to the
    setting that takes them; the ladder passes those values unless the user set that setting.
    """

    run_values: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            tp = hints[f.name]
            if not conforms(value, tp):
                raise SettingError(f.name, value, type_text(tp, english=True))
        self.check()

    def check(self) -> None:
        """Ranges and relations between values; raise :class:`SettingError` (subclasses extend)."""

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, rung: str, values: dict[str, Any]) -> RungSettings:
        """Validated settings for ``rung`` from ``values`` (strings converted to the declared types)."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(map(str, values)) - set(names))
        if unknown:
            accepted = ", ".join(names) if names else "none (this rung takes no settings)"
            raise AdaptError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for the {rung} "
                             f"rung; accepted: {accepted}.")
        hints = _hints(cls)
        given = {k: coerce(v, hints[k]) for k, v in values.items()}
        try:
            return cls(**given)
        except SettingError as e:
            raise AdaptError(f"{rung} setting {e.key}={e.value!r} is invalid: use {e.want}.") from None

    def values(self) -> dict[str, Any]:
        """Every setting's value (the same objects, not copies: sklearn's ``clone`` relies on it)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting's declared default."""
        return {f.name: (f.default if f.default is not MISSING else f.default_factory())  # type: ignore[misc]
                for f in fields(cls)}

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """name, type, default and help of every setting (for ``adaptladder rungs``)."""
        hints = _hints(cls)
        out = []
        for f in fields(cls):
            if f.default is not MISSING:
                default = f.default
            elif f.default_factory is not MISSING:
                default = f.default_factory()
            else:  # pragma: no cover - every setting has a default
                default = None
            out.append({"name": f.name, "type": type_text(hints[f.name]), "default": _plain(default),
                        "help": f.metadata.get("help", "")})
        return out


@dataclass
class LoraFields(RungSettings):
    """The LoRA adapter settings, spelt once for every kind of task (classification ``lora`` /
    ``qlora`` and generation ``lora-sft`` / ``qlora-sft`` / ``distill``); a family may change a default."""

    r: int = setting(8, help="LoRA rank")
    alpha: float = setting(16, help="LoRA scaling alpha (the update is scaled by alpha / r)")
    dropout: float = setting(0.1, help="dropout on the LoRA path, in [0, 1)")
    target_modules: list[str] | Literal["all-linear"] | None = setting(
        None, help="modules that get adapters: a list of names, 'all-linear', or unset (the attention query and "
                   "value projections of the architecture)")

    def check(self) -> None:
        super().check()
        positive_int(self, "r")
        positive_number(self, "alpha")
        if not 0 <= self.dropout < 1:
            raise SettingError("dropout", self.dropout, "a number in [0, 1)")
        if isinstance(self.target_modules, (list, tuple)) and not self.target_modules:
            raise SettingError("target_modules", self.target_modules, "a list of module names such as "
                               "['query', 'value'], 'all-linear', or leave it unset")


# ---------------------------------------------------------------------------- types
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _options(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` is of the declared type (an int passes for a float; a bool never for a number)."""
    for opt in _options(tp):
        origin = typing.get_origin(opt)
        if opt is Any:
            return True
        if opt is type(None):
            if value is None:
                return True
        elif origin is Literal:
            if any(value == a and type(value) is type(a) for a in typing.get_args(opt)):
                return True
        elif opt is bool:
            if isinstance(value, bool):
                return True
        elif opt is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif opt is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif opt is str:
            if isinstance(value, str):
                return True
        elif origin is list or opt is list:
            args = typing.get_args(opt)
            if isinstance(value, (list, tuple)) and (not args or all(conforms(v, args[0]) for v in value)):
                return True
        elif origin is dict or opt is dict:
            args = typing.get_args(opt)
            if isinstance(value, dict) and (not args or all(
                    conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())):
                return True
    return False


def coerce(value: Any, tp: Any) -> Any:
    """``value`` unchanged when it conforms; a string converted to the declared type when it reads as one."""
    if conforms(value, tp) or not isinstance(value, str):
        return value
    text = value.strip()
    for opt in _options(tp):
        origin = typing.get_origin(opt)
        try:
            if opt is type(None) and text.lower() in ("none", "null", "~", ""):
                return None
            if opt is bool and text.lower() in ("true", "false", "yes", "no"):
                return text.lower() in ("true", "yes")
            if origin is Literal:
                for a in typing.get_args(opt):
                    if isinstance(a, bool) and text.lower() == str(a).lower():
                        return a
            if opt is int:
                return int(text)
            if opt is float:
                return float(text)
            if origin in (list, dict) or opt in (list, dict):
                import yaml

                parsed = yaml.safe_load(text)
                if conforms(parsed, opt):
                    return parsed
        except (ValueError, TypeError, AttributeError, ImportError):
            continue
        except Exception:  # yaml.YAMLError: not this type
            continue
    return value


def type_text(tp: Any, english: bool = False) -> str:
    """``int | None`` for listings; ``an integer or none`` with ``english``."""
    parts = []
    for opt in _options(tp):
        origin = typing.get_origin(opt)
        if opt is Any:
            parts.append("any" if not english else "any value")
        elif opt is type(None):
            parts.append("None" if not english else "none (unset)")
        elif origin is Literal:
            parts.extend(repr(a) if not english else str(a).lower() if isinstance(a, bool) else repr(a)
                         for a in typing.get_args(opt))
        elif opt in (bool, int, float, str):
            names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
            parts.append(opt.__name__ if not english else names[opt])
        elif origin is list or opt is list:
            args = typing.get_args(opt)
            inner = type_text(args[0]) if args else "any"
            parts.append(f"list[{inner}]" if not english else f"a list of {inner}")
        elif origin is dict or opt is dict:
            parts.append("mapping" if not english else "a mapping")
        else:  # pragma: no cover
            parts.append(str(opt))
    return " | ".join(parts) if not english else " or ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


# ---------------------------------------------------------------------------- resolving
def resolve_params(name: str, run_values: dict[str, Any] | None = None,
                   given: dict[str, Any] | None = None, kind: str = "classification") -> dict[str, Any]:
    """The parameters a rung gets: the run-wide values it takes (``encoder``, ``seed``, ...) and the
    user's own settings for it (config file + ``--set``), validated against its declared settings.

    Returns the explicitly set values only (the declared defaults fill the rest when the rung is
    made), converted to their declared types. Raises a one-line :class:`AdaptError` naming the
    rung and the setting when one is unknown or invalid.
    """
    from adaptladder.rungs import get_rung_class

    cls = get_rung_class(name, kind)
    settings_cls = cls.Settings
    params: dict[str, Any] = {}
    for run_key, value in (run_values or {}).items():
        target = settings_cls.run_values.get(run_key)
        if value is not None and target is not None:
            params[target] = value
    params.update(given or {})
    built = settings_cls.build(name, params)
    return {k: getattr(built, k) for k in params}


def positive_int(s: RungSettings, *keys: str, minimum: int = 1, allow_none: bool = False) -> None:
    for key in keys:
        v = getattr(s, key)
        if v is None and allow_none:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise SettingError(key, v, f"an integer >= {minimum}" + (" or leave it unset" if allow_none else ""))


def positive_number(s: RungSettings, *keys: str, allow_none: bool = False) -> None:
    for key in keys:
        v = getattr(s, key)
        if v is None and allow_none:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise SettingError(key, v, "a positive number" + (" or leave it unset" if allow_none else ""))


__all__ = ["LoraFields", "RungSettings", "SettingError", "coerce", "conforms", "resolve_params", "setting",
           "type_text"]
