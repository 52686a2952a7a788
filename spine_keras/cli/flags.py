"""Shared flag parsing: comma-separated numbers, and flags generated from a settings dataclass's fields (so the
dataclass is the one place that holds each default). Imports no TensorFlow: parsers must answer at once."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def numbers(text: str) -> tuple[float, ...]:
    """Parse '1,2.5,3' (or '1x2x3') into numbers, ints where they are whole."""
    try:
        values = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return tuple(int(v) if v.is_integer() else v for v in values)


def ints(text: str) -> tuple[int, ...]:
    """Parse '256,256' into ints."""
    values = numbers(text)
    if any(not isinstance(v, int) for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' must be whole numbers")
    return tuple(int(v) for v in values)


def names(text: str) -> list[str]:
    """Parse 'background,vertebra' into names."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return values


def add_dataclass_flags(
    group: argparse._ArgumentGroup, cls: type, prefix: str = "", shown_as: Mapping[str, str] | None = None
) -> None:
    """Add one `--field-name` flag per dataclass field, typed from its default (tuples as 'a,b'); `shown_as` gives
    the --help words of defaults that are not the field's own (e.g. a preset's)."""
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else None
        kind, metavar, shown = _flag_type(default)
        shown = (shown_as or {}).get(field.name, shown)
        group.add_argument(
            f"--{prefix}{field.name.replace('_', '-')}",
            dest=f"{prefix}{field.name}",
            type=kind,
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=f"{field.metadata.get('help', '')} (default {shown})".strip(),
        )


def _flag_type(default: Any) -> tuple[Callable[[str], Any], str, Any]:
    """(parser, metavar, default as shown) for a field with this default: booleans, numbers, words, or 'a,b' lists."""
    if isinstance(default, bool):
        return _boolean, "BOOL", default
    if isinstance(default, (int, float)):
        return float, "X", default
    if isinstance(default, str):
        return str, "NAME", default
    return numbers, "A,B", ",".join(str(v) for v in default) if isinstance(default, tuple) else default


def dataclass_from_flags(cls: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """Build `cls` from its defaults overridden by the flags the user gave."""
    given = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, f"{prefix}{field.name}", None)
        if value is not None:
            default = field.default
            whole = isinstance(default, int) and not isinstance(default, bool) and float(value).is_integer()
            given[field.name] = int(value) if whole else value  # 2.5 or inf stays, for the dataclass to refuse
    return cls(**given)


def _boolean(text: str) -> bool:
    """A BOOL flag's value: true/yes/1 or false/no/0; any other word is refused, not read as false."""
    word = text.strip().lower()
    if word not in ("1", "true", "yes", "0", "false", "no"):
        raise argparse.ArgumentTypeError(f"'{text}' is not true or false")
    return word in ("1", "true", "yes")


def add_settings_flags(parser: argparse.ArgumentParser, cls: type, groups: Mapping[str, str]) -> None:
    """One `--field-name` flag per field of `cls` whose metadata has a "help" entry, in the --help section
    named by the field's "group" entry ("" = the parser itself): booleans as --x/--no-x, numbers and text typed from
    the field's annotation, choices and the default's words from the metadata. Nothing else holds a default."""
    hints = typing.get_type_hints(cls)
    sections = {key: parser.add_argument_group(title) if title else parser for key, title in groups.items()}
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata:
            continue
        sections[field.metadata.get("group", "")].add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            help=_settings_help(field),
            **_flag_kind(hints[field.name], field.metadata.get("choices")),
        )


def _flag_kind(annotation: Any, choices: Sequence[str] | None) -> dict[str, Any]:
    """argparse keywords for a field typed `annotation` (Optional unwrapped; lists are given as 'a,b' text)."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = kinds[0]
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if choices:
        return {"choices": tuple(choices)}
    return {"type": kind if kind in (int, float) else str}


def _settings_help(field: dataclasses.Field) -> str:
    """The field's help text followed by its default, e.g. 'learning-rate reduction factor (default: 0.5)'."""
    info = field.metadata
    shown = info.get("shown")
    if not shown:
        default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
        if isinstance(default, bool):
            shown = "yes" if default else "no"
        else:
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
    text = f"{info.get('help', '')} (default: {shown})".strip()
    return text.replace("%", "%%")  # argparse %-formats help strings


def in_range(kind: type, low: float | None = None, high: float | None = None, high_open: bool = False) -> Any:
    """An argparse type: `kind` (int or float) within [low, high] (or [low, high) with `high_open`); anything else,
    NaN and infinities included, is refused in one line naming the range."""
    if high is None:
        bounds = f">= {low}"
    else:
        bounds = f"in [{low}, {high}{')' if high_open else ']'}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        above = high is not None and (value >= high if high_open else value > high)
        if value != value or (low is not None and value < low) or above or abs(value) == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
