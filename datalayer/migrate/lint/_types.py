"""What lint reports: findings, and the facts about each statement."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..facts import Lock

__all__ = ["ERROR", "WARNING", "Finding", "LintReport", "MigrationReport", "StatementReport"]

Level = Literal["error", "warning"]
ERROR: Level = "error"
WARNING: Level = "warning"


@dataclass(frozen=True)
class Finding:
    """One rule broken by one statement (or by the file, for a bad allow comment)."""

    rule: str
    level: Level
    message: str
    fix: str
    allowed: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the finding as JSON-ready data."""
        return {
            "rule": self.rule,
            "level": self.level,
            "message": self.message,
            "fix": self.fix,
            "allowed": self.allowed,
            "reason": self.reason,
        }


@dataclass
class StatementReport:
    """One statement: its tables, the lock it takes on each, scan/rewrite, findings."""

    index: int
    sql: str
    kind: str
    locks: dict[str, str] = field(default_factory=dict)
    scans: bool = False
    rewrites: bool = False
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def tables(self) -> list[str]:
        """Return the tables the statement locks."""
        return list(self.locks)

    @property
    def lock(self) -> str | None:
        """Return the strongest lock the statement takes (None: none known)."""
        return max(self.locks.values(), key=Lock.of, default=None)

    @property
    def blocks(self) -> list[str]:
        """Return what the strongest lock blocks on its tables: reads, writes, DDL."""
        return [] if self.lock is None else list(Lock.of(self.lock).blocks)

    def to_dict(self) -> dict[str, Any]:
        """Return the statement's report as JSON-ready data."""
        return {
            "index": self.index,
            "sql": self.sql,
            "kind": self.kind,
            "tables": self.tables,
            "locks": dict(self.locks),
            "lock": self.lock,
            "blocks": self.blocks,
            "scans": self.scans,
            "rewrites": self.rewrites,
            "notes": list(self.notes),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class MigrationReport:
    """The lint of one migration file."""

    name: str
    path: Path
    atomic: bool
    statements: list[StatementReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # about the file itself
    rollback: list[StatementReport] = field(default_factory=list)  # its rollback's statements

    def all_findings(self) -> list[Finding]:
        """Return the file's findings and every forward statement's, in order."""
        return [*self.findings, *(f for s in self.statements for f in s.findings)]

    def rollback_findings(self) -> list[Finding]:
        """Return the findings of the rollback's statements (a rollback is a deploy too)."""
        return [f for s in self.rollback for f in s.findings]

    def to_dict(self) -> dict[str, Any]:
        """Return the migration's report as JSON-ready data."""
        return {
            "name": self.name,
            "path": str(self.path),
            "atomic": self.atomic,
            "findings": [f.to_dict() for f in self.findings],
            "statements": [s.to_dict() for s in self.statements],
            "rollback": [s.to_dict() for s in self.rollback],
        }


@dataclass
class LintReport:
    """The lint of a set of migrations, for one target PostgreSQL version."""

    postgres: int
    migrations: list[MigrationReport] = field(default_factory=list)

    def findings(self) -> list[tuple[str, Finding]]:
        """Return ``(migration name, finding)`` for every finding of the forward SQL, in order."""
        return [(m.name, f) for m in self.migrations for f in m.all_findings()]

    def rollback_findings(self) -> list[tuple[str, Finding]]:
        """Return ``("NAME (rollback)", finding)`` for every finding of the rollbacks' SQL."""
        return [(f"{m.name} (rollback)", f) for m in self.migrations for f in m.rollback_findings()]

    def every_finding(self) -> list[tuple[str, Finding]]:
        """Return the findings of each migration followed by its rollback's."""
        out: list[tuple[str, Finding]] = []
        for m in self.migrations:
            out.extend((m.name, f) for f in m.all_findings())
            out.extend((f"{m.name} (rollback)", f) for f in m.rollback_findings())
        return out

    @property
    def errors(self) -> list[tuple[str, Finding]]:
        """Return the error-level findings of the forward SQL that no allow comment covers."""
        return [(n, f) for n, f in self.findings() if f.level == ERROR and not f.allowed]

    @property
    def rollback_errors(self) -> list[tuple[str, Finding]]:
        """Return the error-level findings of the rollbacks that no allow comment covers."""
        return [
            (n, f) for n, f in self.rollback_findings() if f.level == ERROR and not f.allowed
        ]

    @property
    def warnings(self) -> list[tuple[str, Finding]]:
        """Return the warning-level findings (forward and rollback) no allow comment covers."""
        return [(n, f) for n, f in self.every_finding() if f.level == WARNING and not f.allowed]

    @property
    def ok(self) -> bool:
        """True when no unallowed error was found, in the migrations or their rollbacks."""
        return not self.errors and not self.rollback_errors

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (``datalayer migrate lint --json``)."""
        return {
            "postgres": self.postgres,
            "ok": self.ok,
            "errors": len(self.errors) + len(self.rollback_errors),
            "warnings": len(self.warnings),
            "allowed": sum(1 for _, f in self.every_finding() if f.allowed),
            "migrations": [m.to_dict() for m in self.migrations],
        }
