"""Composite primary keys: made, changed or given up (other key changes: :mod:`.columns`)."""

from __future__ import annotations

from typing import Any

import peewee as pw

from ..ddl.spec import table_spec
from .emitter import _ONLINE, _ONLINE_KW, Emitter


class Keys(Emitter):
    """Changes a composite primary key."""

    def _set_primary_key(
        self, t: str, tm: type[pw.Model], *, online: bool = False, plain: bool = False
    ) -> None:
        """Change a composite primary key into another one (other key changes: _change_columns).

        ``plain``: in the plain form, whatever the mode (before a key column is dropped).
        """
        fm = self.state()[t]
        # From a composite key, or from none (a serial key dropped with its column); or a
        # composite key given up, its columns kept (a table without a key, as peewee's
        # ``primary_key = False``).
        released = fm._meta.composite_key and not tm._meta.primary_key
        if not released and not (
            tm._meta.composite_key and (fm._meta.composite_key or not fm._meta.primary_key)
        ):
            return
        if table_spec(fm).primary_key == table_spec(tm).primary_key:
            return
        flag = [_ONLINE_KW] if (online or self.mode == _ONLINE) and not plain else []
        names = [] if released else _key_fields(tm)
        self.emit(self.writer.call("set_primary_key", t, *names, kw=flag), table=t)


def _key_fields(model: type[pw.Model]) -> list[str]:
    """Return the field names of ``model``'s composite primary key."""
    key: Any = model._meta.primary_key
    return list(key.field_names)

