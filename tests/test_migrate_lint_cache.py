"""The lint's report is cached as JSON data and never served for anything that changed.

A long history (8 files or more) is linted once; the second lint reads the
report back from the cache folder (the files' SQL is not rendered again) and
equals the first; an edited file, an allow comment added, another selection or
another target version each give the report of a fresh lint.  No database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datalayer.migrate.lint import lint
from datalayer.migrate.runtime import offline
from tests.test_migrate_lint import write


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATALAYER_CACHE_DIR", str(tmp_path / "cache"))
    directory = tmp_path / "migrations"
    write(directory, "001_base", "CREATE TABLE t (id bigint PRIMARY KEY, a int)")
    for i in range(2, 10):
        write(directory, f"{i:03d}_col{i}", f"ALTER TABLE t ADD COLUMN c{i} int")
    write(directory, "010_index", "CREATE INDEX t_a ON t (a)")
    return directory


def _report(directory: Path, *names: str, postgres: int = 13) -> list[dict[str, object]]:
    report = lint(directory, list(names) or None, postgres=postgres)
    return [m.to_dict() for m in report.migrations]


def _rendered(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the renderings (what a lint does when it is not cached), forward and rollback.

    migration_sql renders one way per call; history_sql (every migration) renders
    forward when called and the rollbacks when its second result is called.
    """
    calls: list[int] = []
    real, real_history = offline.migration_sql, offline.history_sql

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    def counting_history(*args: object, **kwargs: object) -> object:
        calls.append(1)
        forward, rollbacks = real_history(*args, **kwargs)  # type: ignore[arg-type]

        def counted() -> object:
            calls.append(1)
            return rollbacks()

        return forward, counted

    monkeypatch.setattr("datalayer.migrate.lint._engine.migration_sql", counting)
    monkeypatch.setattr("datalayer.migrate.lint._engine.history_sql", counting_history)
    return calls


def test_a_second_lint_is_read_from_the_cache_and_equals_the_first(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _report(history)
    rules = {f["rule"] for m in first for s in m["statements"] for f in s["findings"]}  # type: ignore[attr-defined,index]
    assert "require-concurrent-index-creation" in rules
    calls = _rendered(monkeypatch)
    assert _report(history) == first
    assert calls == []  # nothing rendered: the report came from the cache
    folder = Path(str(history.parent / "cache"))
    assert [p for p in folder.iterdir() if p.name.startswith("lint-")]


def test_the_cached_report_follows_every_input(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _report(history)
    calls = _rendered(monkeypatch)
    # Another selection, another target version: linted anew.
    assert _report(history, "010_index") == [first[-1]]
    assert _report(history, postgres=14) != [] and len(calls) >= 4
    # An allow comment added to the last file: the finding is allowed now.
    write(history, "010_index", "CREATE INDEX t_a ON t (a)",
          comment="# datalayer: allow require-concurrent-index-creation -- a test table")
    allowed = _report(history)
    found = [f for s in allowed[-1]["statements"] for f in s["findings"]]  # type: ignore[attr-defined,index]
    assert found and all(f["allowed"] for f in found)
    # A file in the middle edited: its new SQL is in the report.
    write(history, "005_col5", "ALTER TABLE t ADD COLUMN c5 bigint")
    edited = _report(history)
    assert edited[4]["statements"][0]["sql"].endswith("c5 bigint")  # type: ignore[index]
    assert first[4]["statements"][0]["sql"].endswith("c5 int")  # type: ignore[index]
