"""`datalayer migrate lint`: every rule fires on a file that breaks it, and is allowed by
its comment; safe forms and new tables pass; exit codes and JSON; check and diff run it;
datalayer's rule names agree with squawk's on the rules both have."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from datalayer.cli import main
from datalayer.migrate.check import lint_problems
from datalayer.migrate.lint import RULES, lint, render_text
from datalayer.migrate.runtime.checksum import write_sum
from datalayer.migrate.runtime.offline import migration_sql, render
from tests.pgserver import Server

REPO_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

BASE = """
CREATE TABLE t (id bigint PRIMARY KEY, a int, v varchar(20), u_id bigint);
CREATE TABLE u (id bigint PRIMARY KEY);
CREATE INDEX t_a ON t (a);
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write(directory: Path, name: str, sql: str, *, atomic: bool = True, comment: str = "") -> Path:
    """Write a hand-written migration running each line of ``sql`` with migrator.sql."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [s.strip() for s in textwrap.dedent(sql).strip().splitlines() if s.strip()]
    body = "\n".join(f"    migrator.sql({s!r})" for s in lines) or "    pass"
    header = ("atomic = False\n" if not atomic else "") + (comment + "\n" if comment else "")
    path = directory / f"{name}.py"
    path.write_text(
        f"{header}\n\ndef migrate(migrator, database, *, fake=False):\n{body}\n\n\n"
        "def rollback(migrator, database, *, fake=False):\n    pass\n",
        encoding="utf-8",
    )
    return path


def rules_of(directory: Path, name: str, postgres: int = 12) -> set[str]:
    report = lint(directory, [name], postgres=postgres)
    return {f.rule for _, f in report.findings() if not f.allowed}


# rule -> (SQL of migration 002 on the existing tables of BASE, atomic)
TRIGGERS: dict[str, tuple[str, bool]] = {
    "require-concurrent-index-creation": ("CREATE INDEX t_v ON t (v)", True),
    "require-concurrent-index-deletion": ("DROP INDEX t_a", True),
    "ban-concurrent-index-creation-in-transaction": (
        "CREATE INDEX CONCURRENTLY t_v ON t (v)", True),
    "constraint-missing-not-valid": ("ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0)", True),
    "adding-foreign-key-constraint": ("ALTER TABLE t ADD COLUMN u2 bigint REFERENCES u (id)",
                                      True),
    "adding-not-nullable-field": ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", True),
    "adding-required-field": ("ALTER TABLE t ADD COLUMN b bigint NOT NULL", True),
    "adding-field-with-default": (
        "ALTER TABLE t ADD COLUMN w uuid DEFAULT gen_random_uuid()", True),
    "disallowed-unique-constraint": ("ALTER TABLE t ADD CONSTRAINT t_v_key UNIQUE (v)", True),
    "adding-serial-primary-key-field": ("ALTER TABLE u ADD COLUMN n bigint; ALTER TABLE u "
                                        "DROP CONSTRAINT u_pkey; ALTER TABLE u ADD PRIMARY KEY "
                                        "(n)", True),
    "changing-column-type": ("ALTER TABLE t ALTER COLUMN a TYPE bigint", True),
    "ban-drop-column": ("ALTER TABLE t DROP COLUMN v", True),
    "ban-drop-table": ("DROP TABLE u", True),
    "ban-drop-database": ("DROP DATABASE other", False),
    "renaming-column": ("ALTER TABLE t RENAME COLUMN v TO w", True),
    "renaming-table": ("ALTER TABLE u RENAME TO users2", True),
    "ban-truncate-cascade": ("TRUNCATE u CASCADE", True),
    "transaction-nesting": ("COMMIT", True),
    "ban-set-schema": ("ALTER TABLE u SET SCHEMA archive", True),
    "changing-column-collation": ('ALTER TABLE t ALTER COLUMN v TYPE varchar(20) COLLATE "C"',
                                  True),
}


def test_every_rule_has_a_trigger_case() -> None:
    assert set(TRIGGERS) == set(RULES)


@pytest.mark.parametrize("rule", sorted(TRIGGERS))
def test_rule_fires_and_its_comment_allows_it(rule: str, tmp_path: Path) -> None:
    sql, atomic = TRIGGERS[rule]
    write(tmp_path, "001_base", BASE)
    write(tmp_path, "002_change", sql.replace("; ", "\n"), atomic=atomic)
    assert rule in rules_of(tmp_path, "002_change")

    write(tmp_path, "002_change", sql.replace("; ", "\n"), atomic=atomic,
          comment=f"# datalayer: allow {rule} -- tested on purpose")
    report = lint(tmp_path, ["002_change"])
    hits = [f for _, f in report.findings() if f.rule == rule]
    assert hits and all(f.allowed and f.reason == "tested on purpose" for f in hits)
    assert f"allowed {rule}:" in render_text(report)
    if RULES[rule].level == "error":
        assert rule not in {f.rule for _, f in report.errors}


@pytest.mark.parametrize("rule", sorted(TRIGGERS))
def test_rule_does_not_apply_to_a_table_created_in_the_same_migration(
    rule: str, tmp_path: Path
) -> None:
    sql, atomic = TRIGGERS[rule]
    always = {"ban-concurrent-index-creation-in-transaction", "ban-drop-database",
              "transaction-nesting", "ban-truncate-cascade"}
    if rule in always:
        pytest.skip("fails whatever the table (not about existing tables)")
    write(tmp_path, "001_base", BASE.replace("CREATE INDEX t_a ON t (a);", "")
          + "\nCREATE INDEX t_a ON t (a);\n" + sql.replace("; ", "\n"), atomic=atomic)
    assert rules_of(tmp_path, "001_base") == set()


def test_missing_reason_and_unknown_rule_are_errors(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write(tmp_path, "002_x", "ALTER TABLE t DROP COLUMN v",
          comment="# datalayer: allow ban-drop-column")
    report = lint(tmp_path, ["002_x"])
    errors = [f for _, f in report.errors]
    assert [f.rule for f in errors] == ["invalid-allow-comment"]
    assert "002_x.py:1: allowing ban-drop-column needs a reason after ` -- `" in errors[0].message
    assert {f.rule for _, f in report.warnings} == {"ban-drop-column"}  # not allowed
    write(tmp_path, "002_x", "ALTER TABLE t DROP COLUMN v",
          comment="# datalayer: allow ban-drop-colum -- typo")
    (_, finding), = lint(tmp_path, ["002_x"]).errors
    assert "unknown rule ban-drop-colum" in finding.message


def test_allow_text_inside_a_string_is_not_a_comment(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write(tmp_path, "002_x", "ALTER TABLE t DROP COLUMN v",
          comment="NOTE = '# datalayer: allow ban-drop-column -- in a string'")
    assert rules_of(tmp_path, "002_x") == {"ban-drop-column"}


SAFE_FORMS = {
    "concurrent index in a non-transactional file": [
        ("002_idx", "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_v ON t (v)\n"
                    "DROP INDEX CONCURRENTLY IF EXISTS t_a", False),
    ],
    "check and foreign key NOT VALID, validated in a later transaction": [
        ("002_add", "ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0) NOT VALID\n"
                    "ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u_id) REFERENCES u (id) "
                    "NOT VALID", True),
        ("003_validate", "ALTER TABLE t VALIDATE CONSTRAINT a_pos\n"
                         "ALTER TABLE t VALIDATE CONSTRAINT t_u", True),
    ],
    "NOT VALID then VALIDATE in one non-transactional file": [
        ("002_add", "ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0) NOT VALID\n"
                    "ALTER TABLE t VALIDATE CONSTRAINT a_pos", False),
    ],
    "SET NOT NULL through a validated CHECK": [
        ("002_check", "ALTER TABLE t ADD CONSTRAINT a_nn CHECK (a IS NOT NULL) NOT VALID", True),
        ("003_set", "ALTER TABLE t VALIDATE CONSTRAINT a_nn", True),
        ("004_set", "ALTER TABLE t ALTER COLUMN a SET NOT NULL\n"
                    "ALTER TABLE t DROP CONSTRAINT a_nn", True),
    ],
    "UNIQUE and PRIMARY KEY through a concurrent unique index": [
        ("002_idx", "CREATE UNIQUE INDEX CONCURRENTLY t_v_key ON t (v)", False),
        ("003_use", "ALTER TABLE t ADD CONSTRAINT t_v_key UNIQUE USING INDEX t_v_key", True),
    ],
    "constant defaults, binary-coercible type changes": [
        ("002_cols", "ALTER TABLE t ADD COLUMN n int NOT NULL DEFAULT 0\n"
                     "ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now()\n"
                     "ALTER TABLE t ALTER COLUMN v TYPE varchar(50)\n"
                     "ALTER TABLE t ALTER COLUMN v TYPE text", True),
    ],
}


@pytest.mark.parametrize("case", sorted(SAFE_FORMS))
def test_safe_forms_pass(case: str, tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    for name, sql, atomic in SAFE_FORMS[case]:
        write(tmp_path, name, sql, atomic=atomic)
    report = lint(tmp_path)
    assert report.findings() == [], render_text(report)


def test_state_matters(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    # VALIDATE in the transaction that added the constraint NOT VALID holds the ADD's lock.
    write(tmp_path, "002_x", "ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0) NOT VALID\n"
                             "ALTER TABLE t VALIDATE CONSTRAINT a_pos")
    assert rules_of(tmp_path, "002_x") == {"constraint-missing-not-valid"}
    # A NOT VALID check does not spare the scan; nor does any check before PostgreSQL 12.
    write(tmp_path, "002_x", "ALTER TABLE t ADD CONSTRAINT a_nn CHECK (a IS NOT NULL) NOT VALID")
    write(tmp_path, "003_y", "ALTER TABLE t ALTER COLUMN a SET NOT NULL")
    assert rules_of(tmp_path, "003_y") == {"adding-not-nullable-field"}
    write(tmp_path, "002_x", "ALTER TABLE t ADD CONSTRAINT a_nn CHECK (a IS NOT NULL)")
    assert rules_of(tmp_path, "003_y") == set()
    assert rules_of(tmp_path, "003_y", postgres=11) == {"adding-not-nullable-field"}
    # A dropped check no longer counts.
    write(tmp_path, "002_x", "ALTER TABLE t ADD CONSTRAINT a_nn CHECK (a IS NOT NULL)\n"
                             "ALTER TABLE t DROP CONSTRAINT a_nn")
    assert rules_of(tmp_path, "003_y") == {"adding-not-nullable-field"}
    # Any DEFAULT rewrites before PostgreSQL 11; narrowing varchar rewrites.
    write(tmp_path, "003_y", "ALTER TABLE t ADD COLUMN n int DEFAULT 0")
    assert rules_of(tmp_path, "003_y") == set()
    assert rules_of(tmp_path, "003_y", postgres=10) == {"adding-field-with-default"}
    write(tmp_path, "003_y", "ALTER TABLE t ALTER COLUMN v TYPE varchar(10)")
    assert rules_of(tmp_path, "003_y") == {"changing-column-type"}
    # DROP INDEX on an index of a table created in the same migration is fine.
    write(tmp_path, "003_y", "CREATE TABLE z (id int)\nCREATE INDEX z_id ON z (id)\n"
                             "DROP INDEX z_id")
    assert rules_of(tmp_path, "003_y") == set()


def test_locks_scans_rewrites_and_blocks(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    write(tmp_path, "002_x", "CREATE INDEX t_v ON t (v)\n"
                             "ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u_id) "
                             "REFERENCES u (id)\n"
                             "ALTER TABLE t VALIDATE CONSTRAINT t_u\n"
                             "ALTER TABLE t ALTER COLUMN a TYPE bigint\n"
                             "ALTER TABLE t ALTER COLUMN v TYPE text\n"
                             "UPDATE t SET a = 1")
    s = lint(tmp_path, ["002_x"]).migrations[0].statements
    assert (s[0].locks, s[0].blocks, s[0].scans) == ({"t": "SHARE"}, ["writes", "DDL"], True)
    assert s[1].locks == {"t": "SHARE ROW EXCLUSIVE", "u": "SHARE ROW EXCLUSIVE"}
    assert (s[2].lock, s[2].blocks, s[2].scans) == ("SHARE UPDATE EXCLUSIVE", ["DDL"], True)
    assert (s[3].lock, s[3].rewrites, s[3].blocks) == (
        "ACCESS EXCLUSIVE", True, ["reads", "writes", "DDL"])
    assert (s[4].lock, s[4].rewrites) == ("ACCESS EXCLUSIVE", False)
    assert (s[5].lock, s[5].scans) == ("ROW EXCLUSIVE", True)


def test_do_blocks_and_python_steps(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    (tmp_path / "002_x.py").write_text(textwrap.dedent('''
        def migrate(migrator, database, *, fake=False):
            migrator.sql("""DO $$ BEGIN
                CREATE INDEX t_v ON t (v);
                EXECUTE 'SELECT 1';
            END $$""")
            migrator.run(print)
    '''), encoding="utf-8")
    m = lint(tmp_path, ["002_x"]).migrations[0]
    assert [f.rule for f in m.all_findings()] == ["require-concurrent-index-creation"]
    assert m.statements[0].locks == {"t": "SHARE"}
    assert any("dynamic SQL" in n for n in m.statements[0].notes)
    assert m.statements[1].kind == "python"


def test_cli_exit_codes_and_json(clean_env: Path) -> None:
    d = clean_env / "migrations"
    write(d, "001_base", BASE)
    result = invoke("migrate", "lint")
    assert result.exit_code == 0, result.output
    write(d, "002_warn", "ALTER TABLE t DROP COLUMN v")
    result = invoke("migrate", "lint")
    assert result.exit_code == 0  # warnings do not fail
    assert "warning ban-drop-column: dropping t.v" in result.output
    write(d, "003_err", "CREATE INDEX t_v ON t (v)")
    result = invoke("migrate", "lint")
    assert result.exit_code == 1
    assert "error require-concurrent-index-creation" in result.output
    assert "fix: build it with CREATE INDEX CONCURRENTLY" in result.output
    assert invoke("migrate", "lint", "002").exit_code == 0
    result = invoke("migrate", "lint", "--json", "3")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert (data["ok"], data["errors"], data["warnings"], data["postgres"]) == (False, 1, 0, 13)
    (stmt,) = data["migrations"][0]["statements"]
    assert stmt["tables"] == ["t"] and stmt["lock"] == "SHARE" and stmt["scans"] is True
    assert stmt["findings"][0]["rule"] == "require-concurrent-index-creation"
    write(d, "004_def", "ALTER TABLE t ADD COLUMN n int DEFAULT 1")
    assert invoke("migrate", "lint", "004").exit_code == 0
    assert invoke("migrate", "lint", "004", "--postgres", "10").exit_code == 2  # one range
    result = invoke("migrate", "lint", "9")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert invoke("migrate", "lint", "--postgres", "9").exit_code == 2


def test_check_reports_lint_errors(tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    assert lint_problems(tmp_path) == []
    write(tmp_path, "002_err", "ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0)")
    (problem,) = lint_problems(tmp_path)
    assert problem.startswith("lint 002_err: constraint-missing-not-valid: adding CHECK a_pos")
    assert "allow constraint-missing-not-valid -- reason" in problem


def test_check_lists_lint_errors_with_its_other_problems(pg: Server, tmp_path: Path) -> None:
    from datalayer.migrate.check import check

    settings = pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))
    d = tmp_path / "migrations"
    d.mkdir()
    shutil.copy(REPO_MIGRATIONS / "001_initial.py", d)
    write_sum(d)
    assert check(settings, d) == []
    write(d, "002_idx", "CREATE INDEX users_role ON users (role)")
    write_sum(d)
    problems = check(settings, d)
    lint_lines = [p for p in problems if p.startswith("lint ")]
    assert len(lint_lines) == 1
    assert lint_lines[0].startswith("lint 002_idx: require-concurrent-index-creation:")
    assert any(p.startswith("schema differs") for p in problems)  # the index is not in a model


def test_diff_prints_the_lint_findings_of_the_file_it_wrote(clean_env: Path) -> None:
    d = clean_env / "migrations"
    d.mkdir()
    source = (REPO_MIGRATIONS / "001_initial.py").read_text(encoding="utf-8")
    extra = "legacy = pw.CharField(max_length=10, column_name='legacy', null=True)"
    anchor = "        display_name = pw.CharField("
    (d / "001_initial.py").write_text(source.replace(anchor, f"        {extra}\n{anchor}", 1))
    write_sum(d)
    result = CliRunner().invoke(main, ["migrate", "diff", "drop_legacy", "--allow-drop"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    assert "lint warning ban-drop-column: dropping users.legacy" in result.output
    assert list(d.glob("002_drop_legacy.py"))


def test_repo_migrations_pass_lint() -> None:
    report = lint(REPO_MIGRATIONS)
    assert report.findings() == [], render_text(report)


# -- squawk, the reference -----------------------------------------------------------

# The venv's own bin folder too: `.venv/bin/python -m pytest` runs without activating it.
SQUAWK = shutil.which("squawk") or shutil.which("squawk", path=str(Path(sys.executable).parent))
NOISE = "prefer-robust-stmts,require-lock-timeout,require-statement-timeout"

# Statements on the existing tables of BASE; squawk and datalayer must agree on shared rules.
SAMPLES = [
    ("CREATE INDEX t_v ON t (v)", True),
    ("CREATE INDEX CONCURRENTLY t_v ON t (v)", False),
    ("DROP INDEX t_a", True),
    ("DROP INDEX CONCURRENTLY t_a", False),
    ("ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0)", True),
    ("ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0) NOT VALID", True),
    ("ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u_id) REFERENCES u (id)", True),
    ("ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u_id) REFERENCES u (id) NOT VALID", True),
    ("ALTER TABLE t ADD COLUMN u2 bigint REFERENCES u (id)", True),
    ("ALTER TABLE t ALTER COLUMN a SET NOT NULL", True),
    ("ALTER TABLE t ADD COLUMN b bigint NOT NULL", True),
    ("ALTER TABLE t ADD COLUMN b bigint NOT NULL DEFAULT 0", True),
    ("ALTER TABLE t ADD COLUMN w uuid DEFAULT gen_random_uuid()", True),
    ("ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now()", True),
    ("ALTER TABLE t ADD COLUMN g bigint GENERATED ALWAYS AS (a * 2) STORED", True),
    ("ALTER TABLE t ADD CONSTRAINT t_v_key UNIQUE USING INDEX t_a", True),
    ("ALTER TABLE t ADD COLUMN e text UNIQUE", True),
    ("ALTER TABLE t ALTER COLUMN a TYPE bigint", True),
    ("ALTER TABLE t DROP COLUMN v", True),
    ("DROP TABLE u", True),
    ("ALTER TABLE t RENAME COLUMN v TO w", True),
    ("ALTER TABLE u RENAME TO users2", True),
    ("TRUNCATE u CASCADE", True),
    ("ALTER TABLE u SET SCHEMA archive", True),
]

# Where datalayer and squawk differ on purpose: sql -> (only datalayer, only squawk).
KNOWN_DIFFERENCES: dict[str, tuple[set[str], set[str]]] = {
    # squawk also wants NOT VALID on UNIQUE / PRIMARY KEY, which PostgreSQL does not accept.
    "ALTER TABLE t ADD CONSTRAINT t_v_key UNIQUE (v)": (set(), {"constraint-missing-not-valid"}),
    "ALTER TABLE u ADD PRIMARY KEY (id)": (set(), {"constraint-missing-not-valid"}),
    # A serial column is filled from nextval() (volatile): the table is rewritten.
    "ALTER TABLE t ADD COLUMN s bigserial": ({"adding-field-with-default"}, set()),
    # varchar(20) to varchar(50) is binary-coercible: no rewrite (squawk flags every change).
    "ALTER TABLE t ALTER COLUMN v TYPE varchar(50)": (set(), {"changing-column-type"}),
    # lower() is immutable: evaluated once, no rewrite (squawk flags any function but now()).
    "ALTER TABLE t ADD COLUMN l text DEFAULT lower('X')": (set(), {"adding-field-with-default"}),
    # A collation change keeps the rows (no rewrite) but rebuilds the column's indexes:
    # datalayer names it changing-column-collation, squawk calls it a type change.
    'ALTER TABLE t ALTER COLUMN v TYPE varchar(20) COLLATE "C"': (
        {"changing-column-collation"}, {"changing-column-type"}),
}


def squawk_rules(sql: str, *, in_transaction: bool, tmp_path: Path) -> set[str]:
    assert SQUAWK is not None
    path = tmp_path / "statement.sql"
    path.write_text(sql, encoding="utf-8")
    args = [SQUAWK, "--reporter", "json", "--pg-version", "12", "--exclude", NOISE, str(path)]
    if in_transaction:
        args.insert(1, "--assume-in-transaction")
    out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode in (0, 1), out.stderr
    return {d["rule_name"] for d in json.loads(out.stdout or "[]")}


@pytest.mark.skipif(SQUAWK is None, reason="squawk (squawk-cli) is not installed")
def test_rule_names_agree_with_squawk(tmp_path: Path) -> None:
    shared = set(RULES) - {"transaction-nesting"}  # squawk has it; it checks nesting only
    write(tmp_path, "001_base", BASE)
    disagreements = []
    samples = [*SAMPLES, *((sql, True) for sql in KNOWN_DIFFERENCES)]
    for sql, atomic in samples:
        write(tmp_path, "002_sample", sql, atomic=atomic)
        (m,) = migration_sql(tmp_path, ["002_sample"])
        ours = rules_of(tmp_path, "002_sample") & shared
        theirs = squawk_rules(render([m]), in_transaction=atomic, tmp_path=tmp_path) & shared
        only_ours, only_theirs = KNOWN_DIFFERENCES.get(sql, (set(), set()))
        expected = (theirs - only_theirs) | only_ours
        if ours != expected or not only_theirs <= theirs:
            disagreements.append((sql, sorted(ours), sorted(theirs)))
    assert disagreements == []
    assert len({r for s, a in SAMPLES for r in rules_of_sample(tmp_path, s, a)}) >= 12


def rules_of_sample(tmp_path: Path, sql: str, atomic: bool) -> set[str]:
    write(tmp_path, "002_sample", sql, atomic=atomic)
    return rules_of(tmp_path, "002_sample")


@pytest.mark.skipif(SQUAWK is None, reason="squawk (squawk-cli) is not installed")
def test_squawk_agrees_on_the_repo_and_generated_migrations(tmp_path: Path) -> None:
    from tests.test_migrate_sql import generate

    generated = tmp_path / "gen"
    generate(generated)
    shared = set(RULES)
    for directory in (REPO_MIGRATIONS, generated):
        for m in migration_sql(directory):
            ours = {f.rule for _, f in lint(directory, [m.name]).findings()} & shared
            theirs = squawk_rules(render([m]), in_transaction=m.atomic, tmp_path=tmp_path)
            assert ours == theirs & shared, (directory, m.name)


def test_sql_that_does_not_parse_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "001_x", "ALTER TABLE t ADD COLUM x int")
    (_, finding), = lint(tmp_path).errors
    assert finding.rule == "syntax-error"
    assert 'syntax error at or near "int"' in finding.message
