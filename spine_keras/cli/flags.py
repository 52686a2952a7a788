"""Shared flag parsing: comma-separated numbers and flags generated from a settings dataclass's fields."""

from __future__ import annotations

import argparse
import dataclasses
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


def add_dataclass_flags(group: argparse._ArgumentGroup, cls: type, prefix: str = "") -> None:
    """Add one `--field-name` flag per dataclass field, typed from its default (tuples as 'a,b')."""
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else None
        flag = f"--{prefix}{field.name.replace('_', '-')}"
        if isinstance(default, bool):
            group.add_argument(
                flag,
                dest=f"{prefix}{field.name}",
                type=lambda s: s.lower() in ("1", "true", "yes"),
                default=argparse.SUPPRESS,
                metavar="BOOL",
                help=f"(default {default})",
            )
        elif isinstance(default, (int, float)):
            group.add_argument(
                flag,
                dest=f"{prefix}{field.name}",
                type=float,
                default=argparse.SUPPRESS,
                metavar="X",
                help=f"(default {default})",
            )
        else:
            shown = ",".join(str(v) for v in default) if isinstance(default, tuple) else default
            group.add_argument(
                flag,
                dest=f"{prefix}{field.name}",
                type=numbers,
                default=argparse.SUPPRESS,
                metavar="A,B",
                help=f"(default {shown})",
            )


def dataclass_from_flags(cls: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """Build `cls` from its defaults overridden by the flags the user gave."""
    given = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, f"{prefix}{field.name}", None)
        if value is not None:
            default = field.default
            given[field.name] = int(value) if isinstance(default, int) and not isinstance(default, bool) else value
    return cls(**given)
