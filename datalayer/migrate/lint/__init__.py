"""``datalayer migrate lint``: each statement's locks and the rules it breaks.

Reads the SQL that :mod:`datalayer.migrate.runtime.offline` renders (generated
operations and hand-written ``migrator.sql`` alike), and each migration's
rollback (a rollback is a deploy too), parses every statement with pglast
(PostgreSQL's own parser, the ``lint`` extra), and reports per statement the
tables, the lock taken on each, what the lock blocks, whether the table is
scanned or rewritten, and findings named as squawk names its rules.  Without
pglast, generated statements are judged from the facts their generator knows
(:mod:`datalayer.migrate.facts`) and hand-written SQL is reported as not
analysed (a warning).  Rules apply to existing tables: a table created earlier
in the same migration needs no safe form.  ``# datalayer: allow RULE[, RULE]
-- reason`` in a file allows those rules there (in its rollback too).

    from datalayer.migrate.lint import lint, render_text
    report = lint("migrations", postgres=15)
    print(render_text(report)); exit(0 if report.ok else 1)
"""

from __future__ import annotations

from ._engine import lint, lint_sql
from ._types import ERROR, WARNING, Finding, LintReport, MigrationReport, StatementReport
from .render import render_json, render_text
from .rules import RULES

__all__ = [
    "ERROR",
    "RULES",
    "WARNING",
    "Finding",
    "LintReport",
    "MigrationReport",
    "StatementReport",
    "lint",
    "lint_sql",
    "render_json",
    "render_text",
]
