"""DB_RELEASE: announced in application_name as <name>/<release>; bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from datalayer.cli import main
from datalayer.config import ConfigError, Settings, load_settings
from datalayer.db import Database


def test_release_is_announced(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    assert load_settings().release is None
    assert load_settings().connect_kwargs()["application_name"] == "datalayer"
    monkeypatch.setenv("DB_RELEASE", "3f9c2e1")
    assert load_settings().connect_kwargs()["application_name"] == "datalayer/3f9c2e1"
    monkeypatch.setenv("DB_APPLICATION_NAME", "shop")
    assert load_settings().announced_name == "shop/3f9c2e1"


@pytest.mark.parametrize(
    ("value", "says"),
    [("v 1", "no spaces or slashes"), ("a/b", "no spaces or slashes"),
     ("x" * 60, "too long")],
)
def test_bad_release(value: str, says: str, clean_env: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_RELEASE", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "DB_RELEASE" in str(info.value) and says in str(info.value)
    result = CliRunner().invoke(main, ["migrate", "status"], catch_exceptions=False)
    assert result.exit_code == 1 and "DB_RELEASE" in result.output
    assert "Traceback" not in result.output


def test_server_sees_the_release(empty_db: Settings) -> None:
    db = Database(empty_db.replace(release="v2.1"))
    try:
        with db.checkout():
            assert db.execute_sql("SHOW application_name").fetchone()[0] == (
                f"{empty_db.application_name}/v2.1"
            )
    finally:
        db.close_pool()
