"""Lint reports kept in the cache (:mod:`..runtime.cache`), as JSON data.

A report depends on every migration file (the lint renders them all, and a
file that does not render fails it), the migrations chosen, the target
PostgreSQL version, the directory as given (paths appear in the report), the
lint's own code and the parser's version: all of it is in the key, so an
entry is never served for anything that changed.  Only with pglast: without
it the lint reads the generator's facts, which are not cached either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from ..runtime import cache as _cache
from ..runtime.names import migration_names
from ._types import Finding, Level, LintReport, MigrationReport, StatementReport

__all__ = ["load_report", "report_key", "store_report"]

_CODE: list[str] = []  # the hash of the lint's source files, once per process


def _code_hash() -> str:
    if not _CODE:
        digest = hashlib.sha256()
        here = Path(__file__).resolve().parent
        for path in sorted(here.rglob("*.py")):
            digest.update(path.relative_to(here).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
        _CODE.append(digest.hexdigest())
    return _CODE[0]


def report_key(
    directory: Path, names: Iterable[str] | None, postgres: int, parser: str
) -> str | None:
    """Return the key of the lint of ``names`` (None: all) in ``directory``; None: no cache."""
    found = migration_names(directory)
    if len(found) < _cache.MIN_FILES or _cache.cache_dir() is None:
        return None
    chain = _cache.chain_keys(found, lambda n: (directory / f"{n}.py").read_bytes())[-1]
    chosen = "\0".join(names) if names is not None else "\0all"
    text = f"lint|{chain}|{postgres}|{parser}|{_code_hash()}|{directory}|{chosen}"
    return hashlib.sha256(text.encode()).hexdigest()


def _finding(data: dict[str, Any]) -> Finding:
    reason = data["reason"]
    return Finding(
        str(data["rule"]), cast(Level, str(data["level"])), str(data["message"]),
        str(data["fix"]), bool(data["allowed"]), None if reason is None else str(reason),
    )


def _statement(data: dict[str, Any]) -> StatementReport:
    return StatementReport(
        int(data["index"]), str(data["sql"]), str(data["kind"]),
        {str(k): str(v) for k, v in data["locks"].items()},
        bool(data["scans"]), bool(data["rewrites"]),
        [str(n) for n in data["notes"]],
        [_finding(f) for f in data["findings"]],
    )


def load_report(key: str) -> LintReport | None:
    """Return the cached report of ``key``, or None."""
    data = _cache.load_data("lint", key)
    if not isinstance(data, dict):
        return None
    try:
        return LintReport(int(data["postgres"]), [
            MigrationReport(
                str(m["name"]), Path(m["path"]), bool(m["atomic"]),
                [_statement(s) for s in m["statements"]],
                [_finding(f) for f in m["findings"]],
                [_statement(s) for s in m["rollback"]],
            )
            for m in data["migrations"]
        ])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _finding_data(f: Finding) -> dict[str, Any]:
    return {"rule": f.rule, "level": f.level, "message": f.message, "fix": f.fix,
            "allowed": f.allowed, "reason": f.reason}


def _statement_data(s: StatementReport) -> dict[str, Any]:
    """Return what :func:`_statement` reads back (not the lock, tables and blocks it derives)."""
    return {"index": s.index, "sql": s.sql, "kind": s.kind, "locks": dict(s.locks),
            "scans": s.scans, "rewrites": s.rewrites, "notes": list(s.notes),
            "findings": [_finding_data(f) for f in s.findings]}


def store_report(key: str, report: LintReport) -> None:
    """Cache ``report`` (atomically; a failure only costs the cache).

    Only what :func:`load_report` reads is stored: what a statement's report
    derives from it (its strongest lock, what that blocks) is derived again.
    """
    _cache.store_data("lint", key, {
        "postgres": report.postgres,
        "migrations": [
            {
                "name": m.name, "path": str(m.path), "atomic": m.atomic,
                "findings": [_finding_data(f) for f in m.findings],
                "statements": [_statement_data(st) for st in m.statements],
                "rollback": [_statement_data(st) for st in m.rollback],
            }
            for m in report.migrations
        ],
    })
