"""The lint reads a file's allow comments from the bytes the rendering read, as read_text would."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalayer.migrate.lint import lint

from .test_migrate_lint import BASE, write


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_allow_comments_of_a_file_with_other_line_endings(newline: str, tmp_path: Path) -> None:
    write(tmp_path, "001_base", BASE)
    path = write(tmp_path, "002_x", "ALTER TABLE t DROP COLUMN v",
                 comment="# datalayer: allow ban-drop-column -- tested on purpose")
    path.write_bytes(path.read_bytes().replace(b"\n", newline.encode()))
    for names in (None, ["002_x"]):  # every file (one pass both ways), and one by name
        report = lint(tmp_path, names)
        hits = [f for m, f in report.findings() if f.rule == "ban-drop-column"]
        assert hits and all(f.allowed and f.reason == "tested on purpose" for f in hits), names
