"""The schema state operations change: an immutable mapping of table name to its spec."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

from ..ddl.spec import TableSpec

__all__ = ["SchemaState"]


class SchemaState(Mapping[str, TableSpec]):
    """Table name -> :class:`~..ddl.spec.TableSpec`, as ``create_tables()`` would make each table.

    Immutable: :meth:`put` and :meth:`without` return a new state.  Operations fold
    over it (``Operation.forward``) without a database or a peewee model.
    """

    __slots__ = ("_tables",)

    def __init__(self, tables: Iterable[TableSpec] = ()) -> None:
        self._tables: Mapping[str, TableSpec] = MappingProxyType({t.name: t for t in tables})

    def __getitem__(self, name: str) -> TableSpec:
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __repr__(self) -> str:
        return f"SchemaState({', '.join(self._tables)})"

    def put(self, *specs: TableSpec) -> SchemaState:
        """Return this state with ``specs`` in place of the tables of their names."""
        new = dict(self._tables)
        new.update((spec.name, spec) for spec in specs)
        return SchemaState(new.values())

    def without(self, name: str) -> SchemaState:
        """Return this state without table ``name``.

        :raises KeyError: naming the table when the state has none of that name.
        """
        if name not in self._tables:
            raise KeyError(f"no table {name!r} in the schema state")
        return SchemaState(t for n, t in self._tables.items() if n != name)
