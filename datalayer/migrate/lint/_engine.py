"""Walk the migrations' SQL statement by statement: locks, rules, allow comments."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import MigrationError
from ..runtime.offline import (
    DEFAULT_POSTGRES,
    PYTHON_PREFIX,
    MigrationSql,
    history_sql,
    migration_sql,
    select_names,
)
from ._allow import read_allowances
from ._generated import generated_report, unanalysed_report
from ._locks import Facts, analyse
from ._pg import AVAILABLE, ast, pglast
from ._state import Context, SchemaState, track
from ._types import ERROR, WARNING, Finding, LintReport, MigrationReport, StatementReport
from .rules import RULES, Statement

__all__ = ["lint", "lint_sql"]

History = tuple[Sequence[MigrationSql], Callable[[], list[MigrationSql]]]
"""Every migration's SQL and the function that renders every rollback (``history_sql``)."""

SYNTAX = "syntax-error"
ROLLBACK_UNREAD = "rollback-not-linted"


def _plpgsql_statements(sql: str) -> tuple[list[str], bool]:
    """Return the static SQL statements of a DO block and whether it runs dynamic SQL."""
    try:
        tree = pglast.parse_plpgsql(sql)
    except pglast.parser.ParseError:
        return [], True
    found: list[str] = []
    dynamic = False

    def walk(item: Any) -> None:
        nonlocal dynamic
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "PLpgSQL_stmt_execsql" and not value.get("into"):
                    found.append(value["sqlstmt"]["PLpgSQL_expr"]["query"])
                elif key == "PLpgSQL_stmt_dynexecute":
                    dynamic = True
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(tree)
    return found, dynamic


def _parse(sql: str) -> Iterator[tuple[Any, str]]:
    for raw in pglast.parse_sql(sql):
        start = raw.stmt_location or 0
        text = sql[start : start + raw.stmt_len] if raw.stmt_len else sql[start:]
        yield raw.stmt, text.strip()


def _check(node: Any, sql: str, ctx: Context) -> tuple[Facts, list[Finding]]:
    facts = analyse(node, ctx)
    statement = Statement(node, sql)
    # Rule.run's findings, without a call and a list per rule (20 rules, every statement).
    findings = [
        Finding(r.name, r.level, message, fix)
        for r in RULES.values() for message, fix in r.check(statement, ctx)
    ]
    if isinstance(node, ast.DoStmt):
        inner, dynamic = _plpgsql_statements(sql)
        for text in inner:
            try:
                parsed = list(_parse(text))
            except pglast.parser.ParseError:
                continue
            for sub, sub_sql in parsed:
                sub_facts, sub_findings = _check(sub, sub_sql, ctx)
                facts.merge(sub_facts)
                findings.extend(sub_findings)
                track(ctx, sub)
        if dynamic:
            facts.notes.append("runs dynamic SQL (EXECUTE): that part is not analysed")
    return facts, findings


def _statement_reports(item: MigrationSql, ctx: Context) -> list[StatementReport]:
    reports: list[StatementReport] = []
    known = item.facts or (None,) * len(item.statements)
    for text, fact in zip(item.statements, known, strict=True):
        if text.startswith(PYTHON_PREFIX):
            report = StatementReport(len(reports) + 1, text, "python")
            report.notes.append(
                "a Python function: not analysed"
                + ("; it runs inside the migration's transaction, under every lock taken "
                   "before it" if item.atomic else "")
            )
            reports.append(report)
            continue
        if not AVAILABLE:  # no parser: the generator's facts, or nothing
            reports.append(
                generated_report(len(reports) + 1, fact, ctx)
                if fact is not None and fact.origin == "generated"
                else unanalysed_report(len(reports) + 1, text)
            )
            if not item.atomic:
                ctx.end_transaction()
            continue
        try:
            parsed = list(_parse(text))
        except pglast.parser.ParseError as exc:
            report = StatementReport(len(reports) + 1, text, "unparsed")
            report.findings.append(Finding(
                SYNTAX, ERROR, f"PostgreSQL cannot parse this statement: {exc}",
                "fix the SQL (datalayer migrate sql shows it as it runs)"))
            reports.append(report)
            continue
        for node, sql in parsed:
            facts, findings = _check(node, sql, ctx)
            track(ctx, node)
            reports.append(StatementReport(
                len(reports) + 1, sql, facts.kind, facts.locks, facts.scans, facts.rewrites,
                facts.notes, findings,
            ))
            if not item.atomic:
                ctx.end_transaction()
    return reports


def _allowed(statements: list[StatementReport], reasons: dict[str, str]) -> None:
    for statement in statements:
        statement.findings = [
            Finding(f.rule, f.level, f.message, f.fix, True, reasons[f.rule])
            if f.rule in reasons else f
            for f in statement.findings
        ]


def lint_sql(
    migrations: Iterable[MigrationSql],
    *,
    postgres: int = DEFAULT_POSTGRES,
    report: Iterable[str] | None = None,
    rollbacks: Mapping[str, MigrationSql] | None = None,
) -> LintReport:
    """Lint already rendered migrations, in order; ``report`` limits which are reported.

    ``rollbacks`` (by migration name) are the rollbacks' statements: each is
    linted against the schema as its migration left it, and reported with it
    (its findings as ``NAME (rollback)``).  The file's allow comments cover both.
    """
    wanted = None if report is None else set(report)
    state = SchemaState()
    result = LintReport(postgres)
    for item in migrations:
        ctx = Context(postgres, item.atomic, state)
        statements = _statement_reports(item, ctx)
        if wanted is not None and item.name not in wanted:
            continue
        if item.source is not None:  # the bytes the rendering read: as read_text() decodes them
            source = item.source.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        else:
            try:
                source = item.path.read_text(encoding="utf-8")
            except OSError:
                source = ""
        allow = read_allowances(source, str(item.path), RULES)
        migration = MigrationReport(item.name, item.path, item.atomic, statements, allow.problems)
        backward = (rollbacks or {}).get(item.name)
        if backward is not None:
            # The rollback runs on the schema this migration left; it changes nothing after.
            undo = Context(postgres, backward.atomic, state.copy(), undoing=ctx)
            migration.rollback = _statement_reports(backward, undo)
        _allowed(migration.statements, allow.reasons)
        _allowed(migration.rollback, allow.reasons)
        result.migrations.append(migration)
    return result


def lint(
    directory: str | Path,
    names: Iterable[str] | None = None,
    *,
    postgres: int = DEFAULT_POSTGRES,
    history: History | None = None,
) -> LintReport:
    """Lint migrations ``names`` (default: all) in ``directory`` for PostgreSQL ``postgres``.

    Every earlier migration is read too, so that what it created is known
    (column types, validated ``CHECK (col IS NOT NULL)`` constraints).
    ``history``: what :func:`~..runtime.offline.history_sql` returned for
    ``directory`` and ``postgres`` (``migrate check`` applies the same SQL), so
    that nothing is rendered again; used when every migration is linted.

    :raises MigrationError: when a name matches no migration or a file cannot be rendered.
    """
    from . import _cached

    directory = Path(directory)
    chosen_names = None if names is None else list(names)
    # Without pglast the generator's facts are what the lint reads (not cached).
    key = (
        _cached.report_key(directory, chosen_names, postgres, f"pglast {pglast.__version__}")
        if AVAILABLE else None
    )
    cached = _cached.load_report(key) if key is not None else None
    if cached is not None:
        return cached
    result = _lint(directory, chosen_names, postgres, history if AVAILABLE else None)
    if key is not None:
        _cached.store_report(key, result)
    return result


def _lint(
    directory: Path,
    names: list[str] | None,
    postgres: int,
    history: History | None = None,
) -> LintReport:
    if names is None and history is None:  # all of them: one pass renders both ways
        history = history_sql(directory, postgres=postgres, facts=not AVAILABLE)
    everything = (
        list(history[0]) if history is not None
        else migration_sql(directory, postgres=postgres, facts=not AVAILABLE)
    )
    chosen = select_names([m.name for m in everything], names, directory)
    if not chosen:
        return LintReport(postgres)
    last = chosen[-1]
    upto = []
    for item in everything:
        upto.append(item)
        if item.name == last:
            break
    problem: Finding | None = None
    try:
        backward = (
            history[1]() if history is not None and names is None
            else migration_sql(directory, chosen, rollback=True, postgres=postgres,
                               facts=not AVAILABLE)
        )
    except MigrationError as exc:
        backward = []
        problem = Finding(
            ROLLBACK_UNREAD, WARNING, f"the rollbacks were not linted: {exc}",
            "make the rollback renderable without a database (`datalayer migrate sql "
            "--rollback` shows the same error)",
        )
    result = lint_sql(upto, postgres=postgres, report=chosen,
                      rollbacks={m.name: m for m in backward})
    if problem is not None and result.migrations:
        result.migrations[-1].findings.append(problem)
    return result
