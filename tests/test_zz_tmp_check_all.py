from pathlib import Path
from typing import Any
import pytest
from datalayer.config import Settings
from datalayer.migrate.check import check
from datalayer.migrate.checksum import write_sum
from tests.pgserver import Server
from tests.test_migrate_lint_rollback import ALL_CASES, _generated


@pytest.fixture
def settings(pg: Server) -> Settings:
    return pg.settings("postgres").replace(dev_database_url=pg.admin.url(masked=False))


@pytest.mark.parametrize("case", ALL_CASES)
def test_check_all(case: Any, settings: Settings, tmp_path: Path) -> None:
    _generated(case, tmp_path)
    write_sum(tmp_path)
    assert check(settings, tmp_path, models=case.v2()) == []
