"""Lint a statement from the facts its generator knows, without parsing its SQL.

Used when pglast is not installed (no ``lint`` extra): a statement that an
operation of the migrator wrote carries its kind, locks, scan and rewrite
(:class:`~datalayer.migrate.facts.StatementFacts`), and the rules follow
from the kind (:data:`RULE_OF_KIND`), under the same names and levels as the
SQL rules.  A hand-written statement (``migrator.sql(...)``) is reported as
not analysed, a warning that says how to install the parser.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..facts import StatementFacts
from ..parser import INSTALL
from ._state import Context
from ._types import WARNING, Finding, StatementReport
from .rules import RULES

__all__ = ["NOT_ANALYSED", "RULE_OF_KIND", "generated_report", "unanalysed_report"]

NOT_ANALYSED = "sql-not-analysed"
"""The finding of a hand-written statement when pglast is not installed."""

RULE_OF_KIND: dict[str, tuple[str, ...]] = {
    "create_index": ("require-concurrent-index-creation",),
    "drop_index": ("require-concurrent-index-deletion",),
    "add_foreign_key": ("constraint-missing-not-valid", "adding-foreign-key-constraint"),
    "add_check": ("constraint-missing-not-valid",),
    "add_unique": ("disallowed-unique-constraint",),
    "set_not_null": ("adding-not-nullable-field",),
    "alter_type": ("changing-column-type",),
    "alter_collation": ("changing-column-collation",),
    "add_column_rewriting": ("adding-field-with-default",),
    "drop_column": ("ban-drop-column",),
    "drop_table": ("ban-drop-table",),
    "rename_column": ("renaming-column",),
    "rename_table": ("renaming-table",),
    "set_schema": ("ban-set-schema",),
}
"""The rules a generated statement of each kind breaks on a table that is not new."""


def _name(quoted: str) -> str:
    """Return a table name as the SQL rules spell it (``"a"."b"`` → ``a.b``)."""
    return quoted.replace('""', "\0").replace('"', "").replace("\0", '"')


def _findings(fact: StatementFacts, ctx: Context) -> Iterator[Finding]:
    table = _name(fact.table or "?")
    if not fact.transactional and ctx.in_transaction:
        rule = RULES["ban-concurrent-index-creation-in-transaction"]
        yield Finding(rule.name, rule.level, f"{rule.summary} ({fact.sql})",
                      "set `atomic = False` at the top level of the migration file")
    if ctx.is_new(table) or ctx.undoes(table):
        return
    if fact.kind == "drop_column" and ctx.undoing is not None:
        return  # a rollback drops the columns its migration added (not told apart here)
    for name in RULE_OF_KIND.get(fact.kind, ()):
        rule = RULES[name]
        yield Finding(
            rule.name, rule.level, f"{table}: {rule.summary}",
            f"`datalayer migrate lint` with the lint extra ({INSTALL}) shows the safe form",
        )


def generated_report(index: int, fact: StatementFacts, ctx: Context) -> StatementReport:
    """Return the report of a generated statement, from its facts alone."""
    report = StatementReport(
        index, fact.sql, fact.kind or "statement",
        {_name(t): fact.lock.sql_name for t in fact.tables}, fact.scans, fact.rewrites,
    )
    report.findings.extend(_findings(fact, ctx))
    table = _name(fact.table) if fact.table is not None else None
    if fact.kind == "create_table" and table is not None:
        ctx.created.add(table)
        report.notes.append(f"{table} is new: nothing else uses it yet")
    elif fact.kind == "drop_table" and table is not None:
        ctx.created.discard(table)
    return report


def unanalysed_report(index: int, sql: str) -> StatementReport:
    """Return the report of a hand-written statement that cannot be parsed here."""
    report = StatementReport(index, sql, "unparsed")
    report.findings.append(Finding(
        NOT_ANALYSED, WARNING, f"not analysed: install the lint extra ({INSTALL})",
        f"{INSTALL} so that hand-written SQL (migrator.sql) is parsed and checked",
    ))
    return report
