"""Every key `[tool.datalayer]` accepts is documented on the project page."""

from __future__ import annotations

from pathlib import Path

from datalayer import project

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration-project.md"


def test_every_accepted_key_has_a_section() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for key in sorted(project._KEYS):
        assert f"### `{key}`" in text, f"[tool.datalayer] {key} is accepted but not documented"
    assert f"from {project.MIN_POSTGRES} to {project.MAX_POSTGRES}" in text
