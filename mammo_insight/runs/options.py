"""What a training option is, apart from the config classes that declare them (runs/config.py).

``option`` declares a field with its documentation and, for a number, its range (``Between``); a value from
a TOML file fits an option's annotation or not (``fits``), is written back as TOML (``toml_value``), and a
config's numbers fall inside their ranges or not (``out_of_range``).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import types
import typing
from dataclasses import dataclass, field
from typing import Any

MAX_IMAGE_SIDE = 4096  # a 4096x4096 batch of 16 already needs ~1 GB per channel before the network


@dataclass(frozen=True)
class Between:
    """The documented range of a numeric option (finite, ``lo <=`` or ``<`` it, ``<=`` or ``<`` ``hi``)."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        def text(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else f"{v:g}"

        return f"{text(self.lo)} {'<' if self.lo_open else '<='} x {'<' if self.hi_open else '<='} {text(self.hi)}"


UNIT = Between(0, 1)  # a probability or a fraction
OPEN_UNIT = Between(0, 1, lo_open=True, hi_open=True)
COUNT = Between(0, 100_000)


def option(default: Any, doc: str, between: Between | None = None) -> Any:
    """A config field with its documentation and, for a number, its range: `options_table`, ``train --help``
    and `validate_config` are generated from it (every number is refused outside its range, and NaN/inf)."""
    return field(default=default, metadata={"doc": doc, "between": between})


def fits(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits an option's annotation (an int fits a float; a bool fits only bool)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and all(map(fits, value, args))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    """An option's annotation as an error message names the expected type."""
    if dataclasses.is_dataclass(hint):
        return "a table of options"
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def toml_value(value: Any) -> str:
    """A default as the options table and ``train --help`` show it: TOML syntax, ``unset`` for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def out_of_range(config: Any, ranges: dict[str, Between]) -> list[str]:
    """The numeric options of ``config`` outside their documented ``ranges`` (TOML key -> range; a number:
    each element of a pair; NaN, inf)."""
    bad = []
    for key, between in ranges.items():
        value = operator.attrgetter(key)(config)
        numbers = value if isinstance(value, tuple) else (value,)
        if value is None or all(isinstance(v, str) for v in numbers):  # unset, or "auto"
            continue
        if not all(v in between for v in numbers):
            bad.append(f"{key}={value!r} (expected {between})")
    return bad
