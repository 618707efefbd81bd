"""Typed dataclass configs -> command-line flags, TOML config files and a resolved ``config.json``.

Every stage declares one small dataclass; this module turns it into argparse flags (help text from
each field's metadata), so the CLI, the config file and the code cannot disagree.

    @dataclass
    class TrainConfig:
        data: str = opt(help="token folder written by `ownlm encode`", positional=True)
        lr: float = opt(6e-4, help="peak learning rate")

Precedence: dataclass defaults < ``--config file.toml`` < flags given on the command line.
Field ``foo_bar`` becomes flag ``--foo-bar``; booleans get ``--foo/--no-foo``.

Every number is checked by one rule, whether it comes from a flag, a TOML file or an HTTP request
(``check_number``): it must be finite, an ``int`` field takes only whole numbers, and it must lie in the
field's ``bounds`` (``opt(0.9, bounds="[0, 1)")``; by default ``[0, inf)``: not negative), the range named in
the message.

A field whose type is itself a config dataclass is a *section*: its fields become flags of their own (flat:
``--max-iters``, not ``--train-max-iters``), shown as one group in ``--help``, written nested in
``config.json``, and given in TOML either as a table (``[train]``) or as flat keys. So several commands share one
section (``pretrain``, ``finetune`` and ``build`` all take ``TrainingConfig``) without copying its fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from ownlm.errors import UserError

_MISSING = dataclasses.MISSING


def opt(
    default: Any = _MISSING,
    *,
    help: str,
    positional: bool = False,
    short: str | None = None,
    choices: typing.Sequence[Any] | None = None,
    bounds: str | None = None,
) -> Any:
    """A dataclass field with CLI metadata. Lists get a fresh copy of ``default`` per instance.

    ``bounds``: the range a number must lie in, as an interval: ``"[0, 1)"``, ``"(0, inf)"``, ``"[-1, inf)"``
    (default ``"[0, inf)"``; an ``int`` is also at most 2**63 - 1)."""
    if bounds is not None:
        parse_bounds(bounds)  # a typo in a declaration fails at import, not at a user's run
    meta = {"help": help, "positional": positional, "short": short, "choices": choices, "bounds": bounds}
    # a section: a fresh copy each time
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        section = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(section), metadata=meta)
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------- numbers

INT_MAX = 2**63 - 1  # the largest integer any setting takes (torch and numpy seeds, counters, sizes)
DEFAULT_BOUNDS = "[0, inf)"
_BOUNDS = re.compile(r"\s*([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])\s*")


@dataclasses.dataclass(frozen=True)
class Bounds:
    lo: float
    hi: float
    lo_open: bool
    hi_open: bool
    text: str

    def holds(self, v: float) -> bool:
        return (v > self.lo if self.lo_open else v >= self.lo) and (
            v < self.hi if self.hi_open else v <= self.hi
        )


def parse_bounds(text: str) -> Bounds:
    """``"[0, 1)"`` -> Bounds(0, 1, closed below, open above).

    >>> parse_bounds("(0, inf)").holds(0.0), parse_bounds("(0, inf)").holds(1e-9)
    (False, True)
    """
    m = _BOUNDS.fullmatch(text)
    if m is None:
        raise ValueError(f"bounds {text!r}: write an interval such as '[0, 1)' or '(0, inf)'")
    return Bounds(float(m[2]), float(m[3]), m[1] == "(", m[4] == ")", f"{m[1]}{m[2]}, {m[3]}{m[4]}")


def _describe(b: Bounds, integer: bool) -> str:
    kind = "an integer" if integer else "a finite number"
    if b.hi == float("inf"):
        if b.lo == float("-inf"):
            return kind
        low = int(b.lo) if b.lo.is_integer() else b.lo
        return f"{kind} {'>' if b.lo_open else '>='} {low}" + (" (at most 2**63 - 1)" if integer else "")
    return f"{kind} in {b.text}"


def check_number(value: Any, name: str, bounds: str | None = None, integer: bool = False) -> int | float:
    """The one check of a number a user gave (a flag, a TOML value, an HTTP field): a real number (``bool``
    is not one), finite, whole when ``integer``, inside ``bounds`` (default ``[0, inf)``); returns it as
    ``int`` or ``float``. Anything else is a ``UserError`` naming ``name`` and the range.

    >>> check_number(0.5, "--top-p", "(0, 1]")
    0.5
    >>> check_number(float("nan"), "--lr", "(0, inf)")
    Traceback (most recent call last):
    ownlm.errors.UserError: --lr must be a finite number > 0, got nan
    >>> check_number(2**70, "--seed", integer=True)
    Traceback (most recent call last):
    ownlm.errors.UserError: --seed must be an integer >= 0 (at most 2**63 - 1), got 1180591620717411303424
    """
    b = parse_bounds(bounds or DEFAULT_BOUNDS)
    want = _describe(b, integer)
    if integer and b.hi > INT_MAX:
        b = dataclasses.replace(b, hi=INT_MAX, hi_open=False)
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise UserError(f"{name} must be {want}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's numbers are Real too
        raise UserError(f"{name} must be {want}, got {value!r}")
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{name} must be {want}, got {value!r}")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise UserError(f"{name} must be {want} (a whole number), got {value!r}")
            value = int(value)
        if not b.holds(value):  # int against float compares exactly in Python: 2**70 is not rounded
            raise UserError(f"{name} must be {want}, got {value}")
        return value
    value = float(value)
    if not b.holds(value):
        raise UserError(f"{name} must be {want}, got {value!r}")
    return value


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not _MISSING or f.default_factory is not _MISSING  # type: ignore[misc]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _converter(tp: Any):
    if tp in (int, float, str):
        return tp
    if tp is Path:
        return str
    if get_origin(tp) is Literal:
        return type(get_args(tp)[0])
    return str


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def sections(cls) -> dict[str, type]:
    """``{field name: section dataclass}`` of ``cls``."""
    hints = _field_types(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if _is_section(hints[f.name])}


def build_parser(cls, prog: str, description: str = "") -> argparse.ArgumentParser:
    """An ``argparse`` parser whose flags are the fields of dataclass ``cls`` (sections flattened, grouped)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config", metavar="FILE.toml", help="read flag values from a TOML file (flags given here win)"
    )
    _add_fields(parser, cls, None, "")
    return parser


def _add_fields(parser, cls, instance, prefix: str) -> None:
    """Add a flag for every field of ``cls``; a section's flags go into an argument group, with ``dest``
    ``"section.field"`` and the section instance's values as defaults."""
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            section = _default(f) if instance is None else getattr(instance, f.name)
            title = (hints[f.name].__doc__ or f.name).strip().splitlines()[0]
            _add_fields(parser.add_argument_group(title), hints[f.name], section, f"{prefix}{f.name}.")
            continue
        default = _default(f) if instance is None else getattr(instance, f.name)
        _add_field(parser, f, hints[f.name], _has_default(f), default, prefix + f.name)


def _add_field(parser, f: dataclasses.Field, hint: Any, has_default: bool, default: Any, dest: str) -> None:
    meta = f.metadata
    tp, optional = _unwrap(hint)
    choices = meta.get("choices")
    if get_origin(tp) is Literal:
        choices = list(get_args(tp))
    help_text = flag_help(meta.get("help", ""), choices, has_default and not meta.get("positional"), default,
                          meta.get("bounds"))  # fmt: skip
    kwargs: dict[str, Any] = {"help": help_text.replace("%", "%%")}
    if choices:
        kwargs["choices"] = choices
    is_list = get_origin(tp) is list
    if is_list:
        (item,) = get_args(tp) or (str,)
        kwargs["type"] = _converter(item)
    elif tp is not bool:
        kwargs["type"] = _converter(tp)
    if meta.get("positional"):
        kwargs["metavar"] = f.name.upper()
        kwargs["nargs"] = "*" if is_list else "?"
        parser.add_argument(dest, **kwargs)
        return
    names = ["--" + f.name.replace("_", "-")]
    if meta.get("short"):
        names.insert(0, meta["short"])
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif is_list:  # a repeated flag adds to the list: --person Ann --person "Ann B."
        kwargs["nargs"] = "*"
        kwargs["action"] = "extend"
        kwargs["metavar"] = f.name.upper()
    else:
        kwargs["metavar"] = {int: "INT", float: "FLOAT"}.get(tp, f.name.upper())
    parser.add_argument(*names, dest=dest, **kwargs)


def _show(value: Any) -> str:
    """A default as a user would type it: on/off, none, plain strings, lists space-separated."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == []:
        return "none"
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    return str(value)


def flag_help(text: str, choices: typing.Sequence[Any] | None, show_default: bool, default: Any,
              bounds: str | None = None) -> str:  # fmt: skip
    """A flag's help: its text, then its choices (unless the text names them all), its declared range and its
    default (unless the text already says it), so every flag shows both, once.

    >>> flag_help("decay after warm-up", ["cosine", "wsd"], True, "cosine")
    'decay after warm-up (choices: cosine, wsd; default: cosine)'
    >>> flag_help("heads (default: n_head)", None, True, None)
    'heads (default: n_head)'
    >>> flag_help("AdamW beta1", None, True, 0.9, "[0, 1)")
    'AdamW beta1 (range: [0, 1); default: 0.9)'
    """
    extra = [f"range: {parse_bounds(bounds).text}"] if bounds else []
    words = set(re.findall(r"[\w.+-]+", text))
    if choices and not all(str(c) in words for c in choices):
        extra.append("choices: " + ", ".join(map(str, choices)))
    if show_default and "default" not in text.lower():
        extra.append(f"default: {_show(default)}")
    return f"{text} ({'; '.join(extra)})" if extra else text


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None


def from_dict(cls, values: dict[str, Any], source: str = "config"):
    """Build ``cls`` from a dict, checking names and types; missing required fields are a ``UserError``."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = _field_types(cls)
    values = _route_sections(cls, values)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name in names and _is_section(hints[name]):
            base = _default(names[name]) or hints[name]()
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = dataclasses.asdict(value)
            if not isinstance(value, dict):
                raise UserError(f"{source}: '{key}' must be a table of settings, got {value!r}")
            kwargs[name] = from_dict(hints[name], {**dataclasses.asdict(base), **value}, source)
            continue
        if name not in names:
            known = ", ".join(sorted(n.replace("_", "-") for n in names))
            raise UserError(f"{source}: unknown setting '{key}' (known: {known})")
        kwargs[name] = _coerce(value, hints[name], f"{source}: '{key}'", _flag(names[name]))
    missing = [n for n, f in names.items() if not _has_default(f) and n not in kwargs]
    if missing:
        flags = ", ".join(
            n.upper() if names[n].metadata.get("positional") else "--" + n.replace("_", "-") for n in missing
        )
        raise UserError(f"{source}: missing required {flags}")
    return cls(**kwargs)


def _route_sections(cls, values: dict[str, Any]) -> dict[str, Any]:
    """Flat keys (``max_iters``) and dotted keys (``train.max_iters``) of a section's fields, gathered under
    the section's name; a table given for the section (``{"train": {...}}``) is kept and merged."""
    secs = sections(cls)
    if not secs:
        return values
    owner = {}
    for sec, tp in secs.items():
        for f in dataclasses.fields(tp):
            owner.setdefault(f.name, sec)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        sec, _, sub = name.partition(".")
        if sub and sec in secs:
            out.setdefault(sec, {})[sub] = value
        elif name in owner and name not in {f.name for f in dataclasses.fields(cls)}:
            out.setdefault(owner[name], {})[name] = value
        elif name in secs and isinstance(value, dict):
            out.setdefault(name, {}).update(value)
        else:
            out[key] = value
    return out


def _flag(f: dataclasses.Field) -> tuple[str, str | None]:
    """How a field is named in messages (``--lr``, or ``RUN`` for a positional) and its bounds."""
    name = f.name.upper() if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
    return name, f.metadata.get("bounds")


def _coerce(value: Any, tp: Any, where: str, field: tuple[str, str | None] = ("value", None)) -> Any:
    tp, optional = _unwrap(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"{where} must not be empty")
    if get_origin(tp) is Literal:
        if value not in get_args(tp):
            raise UserError(f"{where} must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if get_origin(tp) is list:
        (item,) = get_args(tp) or (str,)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, item, where, field) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where} must be true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, int | float | str):  # a bool too: refused, with the range
        return check_number(value, field[0], field[1], integer=tp is int)
    if tp in (str, Path) and isinstance(value, str | Path):
        return str(value)
    if tp is dict and isinstance(value, dict):
        return value
    raise UserError(f"{where} must be of type {getattr(tp, '__name__', tp)}, got {value!r}")


def parse_args(cls, argv: list[str], prog: str, description: str = ""):
    """Parse ``argv`` into an instance of ``cls`` (defaults < --config TOML < flags)."""
    parser = build_parser(cls, prog, description)
    ns = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_path = ns.pop("config", None)
    if config_path:
        values.update(load_toml(config_path))
    for key, value in ns.items():
        if value == [] and key in values:
            continue
        values[key] = value
    return from_dict(cls, values, source=prog)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg, path: str | Path) -> None:
    """Write the resolved config (every field, defaults included) as JSON next to an output."""
    from ownlm.io import write_json

    write_json(path, to_dict(cfg))


def config_hash(cfg) -> str:
    """A stable hash of a config, for ``ownlm build`` to tell whether a stage is up to date."""
    import hashlib

    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()


def validate(cfg) -> None:
    """Check every number of a config built in code (sections included) by the rule flags and TOML follow
    (``check_number``): a ``UserError`` naming the first field out of its bounds."""
    hints = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _is_section(hints[f.name]):
            validate(value)
            continue
        tp, _ = _unwrap(hints[f.name])
        if get_origin(tp) is list:
            (tp,) = get_args(tp) or (str,)
            items = value if isinstance(value, list) else [value]
        else:
            items = [value]
        if tp in (int, float):
            for v in items:
                if v is not None:
                    check_number(v, _flag(f)[0], f.metadata.get("bounds"), integer=tp is int)
