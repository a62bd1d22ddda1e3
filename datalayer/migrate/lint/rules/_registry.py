"""The rule registry: each rule is a small function of one statement and its context."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._state import Context
from .._types import Finding, Level

__all__ = ["RULES", "Rule", "Statement", "rule"]


@dataclass(frozen=True)
class Statement:
    """One parsed statement: its pglast node and its SQL text."""

    node: Any
    sql: str


Check = Callable[[Statement, Context], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Rule:
    """A lint rule: its name (squawk's where squawk has it), its level and its check."""

    name: str
    level: Level
    summary: str
    check: Check

    def run(self, statement: Statement, ctx: Context) -> list[Finding]:
        """Return the findings of this rule for ``statement``."""
        return [
            Finding(self.name, self.level, message, fix)
            for message, fix in self.check(statement, ctx)
        ]


RULES: dict[str, Rule] = {}
"""Every rule by name, in the order they are registered."""


def rule(name: str, level: Level, summary: str) -> Callable[[Check], Check]:
    """Register the decorated function as rule ``name``; it yields ``(message, fix)`` pairs."""

    def register(check: Check) -> Check:
        if name in RULES:
            raise ValueError(f"lint rule {name} registered twice")
        RULES[name] = Rule(name, level, summary, check)
        return check

    return register
