"""migrations.sum: format, and tampering refused by name with what to do."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from datalayer.config import Settings
from datalayer.errors import ChecksumError
from datalayer.migrate.runtime import apply as runner
from datalayer.migrate.runtime.checksum import problems, read_sum, verify, write_sum
from tests.migrate_runtime_support import history, make_tables, write_table_migration
from tests.pgserver import Server


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    make_tables(directory, 3)
    return directory


def test_format_is_atlas_sum(mdir: Path) -> None:
    lines = (mdir / "migrations.sum").read_text().splitlines()
    assert len(lines) == 4
    running = hashlib.sha256()
    total = hashlib.sha256()
    for line, name in zip(lines[1:], ["001_create_t1.py", "002_create_t2.py", "003_create_t3.py"],
                          strict=True):
        running.update(name.encode())
        running.update((mdir / name).read_bytes())
        expected = base64.b64encode(running.digest()).decode()
        assert line == f"{name} h1:{expected}"
        total.update(name.encode())
        total.update(expected.encode())
    assert lines[0] == "h1:" + base64.b64encode(total.digest()).decode()
    verify(mdir)


def test_write_is_stable_and_ignores_other_files(mdir: Path) -> None:
    before = (mdir / "migrations.sum").read_bytes()
    (mdir / "conf.py").write_text("IGNORE = []\n")
    (mdir / "__init__.py").write_text("")
    (mdir / "README.md").write_text("notes\n")
    write_sum(mdir)
    assert (mdir / "migrations.sum").read_bytes() == before
    verify(mdir)


def test_no_files_and_no_sum_is_fine(tmp_path: Path) -> None:
    verify(tmp_path / "nowhere")
    verify(tmp_path)


def _edit(mdir: Path) -> str:
    path = mdir / "002_create_t2.py"
    path.write_text(path.read_text() + "# edited\n")
    return "002_create_t2.py changed after"


def _remove(mdir: Path) -> str:
    (mdir / "002_create_t2.py").unlink()
    return "002_create_t2.py was removed but"


def _rename(mdir: Path) -> str:
    (mdir / "002_create_t2.py").rename(mdir / "002_make_t2.py")
    return "002_make_t2.py was renamed from 002_create_t2.py;"


def _rename_and_edit(mdir: Path) -> str:
    (mdir / "002_create_t2.py").rename(mdir / "002_make_t2.py")
    (mdir / "002_make_t2.py").write_text("# replaced\n")
    return "002_make_t2.py was renamed from 002_create_t2.py (and maybe edited)"


def _insert_out_of_order(mdir: Path) -> str:
    write_table_migration(mdir, "002_extra", "extra")
    return "002_extra.py was added out of order: it sorts before 003_create_t3.py"


def _add_at_end(mdir: Path) -> str:
    write_table_migration(mdir, "004_more", "more")
    return "004_more.py is not in"


def _edit_sum(mdir: Path) -> str:
    path = mdir / "migrations.sum"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5] + "AAAA="
    path.write_text("\n".join(lines) + "\n")
    return "migrations.sum was edited by hand"


def _conflict(mdir: Path) -> str:
    path = mdir / "migrations.sum"
    path.write_text("<<<<<<< HEAD\n" + path.read_text() + "=======\n>>>>>>> branch\n")
    return "merge-conflict markers"


def _delete_sum(mdir: Path) -> str:
    (mdir / "migrations.sum").unlink()
    return "migrations.sum is missing"


@pytest.mark.parametrize(
    ("tamper", "way_out"),
    [
        (_edit, "restore it and add a new migration instead"),
        (_remove, "restore it"),
        (_rename, "rename it back"),
        (_rename_and_edit, "rename it back"),
        (_insert_out_of_order, "rename it to come last (e.g. 004_extra.py)"),
        (_add_at_end, "run `datalayer migrate hash` to add it"),
        (_edit_sum, "run `datalayer migrate hash`"),
        (_conflict, "run `datalayer migrate hash`"),
        (_delete_sum, "run `datalayer migrate hash` to create it"),
    ],
    ids=lambda f: getattr(f, "__name__", "").lstrip("_") or None,
)
def test_tampering_is_refused_naming_the_file(tamper, way_out: str, mdir: Path) -> None:  # type: ignore[no-untyped-def]
    what = tamper(mdir)
    with pytest.raises(ChecksumError) as info:
        verify(mdir)
    message = str(info.value)
    assert what in message
    assert way_out in message
    assert info.value.problems, "the problems are listed one by one too"
    write_sum(mdir)  # the way out for files that were never applied
    verify(mdir)


def test_several_problems_are_all_listed(mdir: Path) -> None:
    (mdir / "003_create_t3.py").unlink()
    write_table_migration(mdir, "004_more", "more")
    found = problems(mdir)
    assert len(found) == 2
    assert "003_create_t3.py was removed" in found[0]
    assert "004_more.py" in found[1]
    with pytest.raises(ChecksumError, match="2 migration files do not match"):
        verify(mdir)


def test_edit_of_the_first_file_is_named_not_the_later_ones(mdir: Path) -> None:
    path = mdir / "001_create_t1.py"
    path.write_bytes(path.read_bytes().replace(b"max_length=50", b"max_length=51"))
    found = problems(mdir)
    assert len(found) == 1 and "001_create_t1.py changed" in found[0]


def test_read_sum(mdir: Path) -> None:
    parsed = read_sum(mdir)
    assert parsed is not None
    total, entries = parsed
    assert [e.name for e in entries] == [
        "001_create_t1.py", "002_create_t2.py", "003_create_t3.py"
    ]
    assert total


@pytest.mark.parametrize("tamper", [_edit, _remove, _rename, _insert_out_of_order, _add_at_end])
def test_apply_refuses_tampered_files_and_changes_nothing(  # type: ignore[no-untyped-def]
    tamper, pg: Server, empty_db: Settings, mdir: Path
) -> None:
    runner.apply(empty_db, mdir, to="001")
    what = tamper(mdir)
    with pytest.raises(ChecksumError, match=what.split(" ")[0].replace(".", r"\.")):
        runner.apply(empty_db, mdir)
    assert [r[0] for r in history(pg, empty_db.dbname)] == ["001_create_t1"]
