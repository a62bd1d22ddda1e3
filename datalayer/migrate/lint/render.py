"""Pure renderers of a :class:`~._types.LintReport`: text for people, JSON for scripts."""

from __future__ import annotations

import json

from ..facts import Lock
from ._types import Finding, LintReport, StatementReport

__all__ = ["render_json", "render_text"]

_WIDTH = 110


def _short(sql: str) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= _WIDTH else flat[: _WIDTH - 3] + "..."


def _lock_line(s: StatementReport) -> str:
    if s.kind == "python":
        return "lock: unknown"
    if not s.locks:
        return "lock: no table lock"
    parts = [f"{t} {m} (blocks {', '.join(Lock.of(m).blocks)})" for t, m in s.locks.items()]
    effects = [w for w, on in (("scans", s.scans), ("rewrites", s.rewrites)) if on]
    return f"lock: {'; '.join(parts)}" + (f"; {' and '.join(effects)} the table" if effects else "")


def _finding_lines(f: Finding, indent: str) -> list[str]:
    if f.allowed:
        return [f"{indent}allowed {f.rule}: {f.message} (reason: {f.reason})"]
    return [f"{indent}{f.level} {f.rule}: {f.message}", f"{indent}  fix: {f.fix}"]


def _statement_lines(statements: list[StatementReport]) -> list[str]:
    lines: list[str] = []
    for s in statements:
        lines.append(f"  {s.index:>2}  {_short(s.sql)}")
        lines.append(f"      {_lock_line(s)}")
        lines.extend(f"      note: {note}" for note in s.notes)
        for f in s.findings:
            lines.extend(_finding_lines(f, "      "))
    return lines


def render_text(report: LintReport) -> str:
    """Return the human form of ``datalayer migrate lint``."""
    lines: list[str] = []
    for m in report.migrations:
        mode = (
            "one transaction: every lock is held until it commits"
            if m.atomic
            else "no transaction: each statement commits on its own"
        )
        lines.append(f"{m.name} ({mode})")
        for f in m.findings:
            lines.extend(_finding_lines(f, "  "))
        lines.extend(_statement_lines(m.statements))
        if m.rollback:
            lines.append("  rollback (a rollback is a deploy too):")
            lines.extend(_statement_lines(m.rollback))
        lines.append("")
    allowed = sum(1 for _, f in report.every_finding() if f.allowed)
    errors = len(report.errors) + len(report.rollback_errors)
    lines.append(
        f"{len(report.migrations)} migration(s) linted for PostgreSQL {report.postgres}: "
        f"{errors} error(s), {len(report.warnings)} warning(s), {allowed} allowed"
    )
    return "\n".join(lines)


def render_json(report: LintReport) -> str:
    """Return ``datalayer migrate lint --json``."""
    return json.dumps(report.to_dict(), indent=2)
