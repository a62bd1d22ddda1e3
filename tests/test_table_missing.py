"""A query on a table that does not exist yet says to apply the migrations (DatalayerError)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import datalayer
from datalayer.config import Settings
from datalayer.db import Database
from datalayer.errors import DatalayerError, TableMissing
from datalayer.models import User


@pytest.fixture
def bare(empty_db: Settings) -> Iterator[Database]:
    db = Database(empty_db)
    try:
        yield db
    finally:
        db.close_pool()


def test_operations_on_an_unmigrated_database(bare: Database) -> None:
    with pytest.raises(TableMissing) as info:
        datalayer.get_user_by_email("nobody@example.com", db=bare)
    message = str(info.value)
    assert 'relation "users" does not exist' in message
    assert "datalayer migrate apply" in message and bare.settings.describe() in message
    assert isinstance(info.value, DatalayerError)


def test_peewee_queries_on_an_unmigrated_database(bare: Database) -> None:
    with bare.checkout(), bare.bind_ctx([User]), pytest.raises(
        TableMissing, match="datalayer migrate apply"
    ):
        User.select().count()
    # Other SQL errors are peewee's as before.
    import peewee

    with bare.checkout(), pytest.raises(peewee.ProgrammingError) as info:
        bare.execute_sql("SELEC 1")
    assert not isinstance(info.value, TableMissing)
