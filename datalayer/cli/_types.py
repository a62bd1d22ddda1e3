"""Numeric option types that take ASCII digits only and stay within what the server accepts.

click's ``IntRange`` and ``FloatRange`` convert with ``int()`` and ``float()``, which
read other scripts' digits (``--steps ٣`` as 3) and ``inf`` / ``nan`` / ``1e400``
(then an ``OverflowError`` traceback when a timeout is set).
"""

from __future__ import annotations

import re
from typing import Any

import click

__all__ = ["MAX_SECONDS", "PostgresVersion", "Seconds", "Whole"]

MAX_SECONDS = 2147483.647
"""The longest duration an option takes: PostgreSQL's largest timeout (2^31-1 ms)."""

_WHOLE = re.compile(r"^\s*\d{1,9}\s*$", re.ASCII)
_DECIMAL = re.compile(r"^\s*\d{1,10}(?:\.\d{0,9})?\s*$|^\s*\.\d{1,9}\s*$", re.ASCII)


class Whole(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A whole number of ASCII digits in ``[min, max]``."""

    name = "integer"

    def __init__(self, min: int = 0, max: int | None = None) -> None:
        self.min, self.max = min, max

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _WHOLE.match(value):
            number = int(value)
        else:
            self.fail(f"{value!r} is not a whole number (digits 0-9)", param, ctx)
        if number < self.min or (self.max is not None and number > self.max):
            upper = f" and <= {self.max}" if self.max is not None else ""
            self.fail(f"{number} is not >= {self.min}{upper}", param, ctx)
        return number


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A number of seconds (ASCII digits, a decimal point) from 0 to :data:`MAX_SECONDS`."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number or (isinstance(value, str) and _DECIMAL.match(value))):
            self.fail(f"{value!r} is not a number of seconds (e.g. 30 or 0.5)", param, ctx)
        seconds = float(value)
        if not 0 <= seconds <= MAX_SECONDS:
            self.fail(f"{value!r} is too long: at most {MAX_SECONDS:g} s (24 days)", param, ctx)
        return seconds


class PostgresVersion(Whole):
    """A target PostgreSQL major version: the range of ``[tool.datalayer] postgres``."""

    name = "version"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from ..project import postgres_problem

        number = super().convert(value, param, ctx)
        problem = postgres_problem(number)
        if problem is not None:
            self.fail(problem, param, ctx)
        return number
