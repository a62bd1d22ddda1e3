"""Generated migration files: a header naming the operations they use, pw_pext only when used."""

from __future__ import annotations

import ast
from pathlib import Path

from click.testing import CliRunner

from datalayer.cli import main
from datalayer.migrate.runtime.template import operations, render_migration


def test_the_header_lists_the_operations_the_bodies_call() -> None:
    text = render_migration(
        "002_x.py",
        "from datalayer.migrate.ops import extend\n\n    m = extend(migrator)\n\n"
        "    m.add_fields('users', note=pw.TextField(null=True))\n"
        "    m.add_index('users', 'note')\n    migrator.sql('SELECT 1')",
        "m = extend(migrator)\n    m.remove_fields('users', 'note')",
    )
    ast.parse(text)
    doc = text.split('"""', 2)[1]
    assert "migrate:  m.add_fields, m.add_index, migrator.sql" in doc
    assert "rollback: m.remove_fields" in doc
    assert "rename_field" not in text and "Some examples" not in text
    assert "pw_pext" not in text, "not used: not imported"


def test_pw_pext_is_imported_when_used() -> None:
    text = render_migration("003_y.py", "m.add_fields('t', at=pw_pext.DateTimeTZField())")
    assert "import playhouse.postgres_ext as pw_pext" in text
    assert "rollback: (none)" in text
    assert text.count("pass") == 1  # the empty rollback body
    ast.parse(text)


def test_operations_ignore_attributes_and_repeat_once() -> None:
    assert operations("m.orm['x']; m.sql('a'); m.sql('b'); migrator.run(f)") == [
        "m.sql", "migrator.run",
    ]


def test_a_file_written_by_diff(clean_env: Path) -> None:
    result = CliRunner().invoke(main, ["migrate", "--dir", "migrations", "diff", "initial"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = (clean_env / "migrations" / "001_initial.py").read_text()
    header = text.split('"""', 2)[1]
    assert header.startswith("001_initial.py: written by `datalayer migrate diff`")
    assert "migrate:  m.create_model" in header and "rollback: m.remove_model" in header
    assert "migrator.rename_field" not in text
    uses_pext = "pw_pext." in text.split("def migrate", 1)[1]
    assert ("import playhouse.postgres_ext as pw_pext" in text) == uses_pext
