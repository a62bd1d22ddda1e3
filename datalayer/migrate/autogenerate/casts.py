"""Column type changes: which need a ``USING`` expression, which one, and what they do to the data.

Pure functions of two column types (:class:`..ddl.spec.ColumnSpec`): no model, no state.
"""

from __future__ import annotations

from ...errors import GenerationError
from ..ddl.alter import auto_base
from ..ddl.spec import ColumnSpec, Sql, quote
from ..facts import parse_type


def _needs_using(old: Sql, new: Sql) -> bool:
    """Return True when PostgreSQL has no assignment cast from ``old`` to ``new``."""

    def base(t: str) -> str:
        auto = auto_base(t)  # serial and identity types: their integer type
        if auto:
            return auto
        t = _bare_type(t.upper()).strip()
        aliases = {
            "INT": "INTEGER", "INT4": "INTEGER", "SERIAL": "INTEGER", "BIGSERIAL": "BIGINT",
            "INT8": "BIGINT", "INT2": "SMALLINT", "BOOL": "BOOLEAN", "DECIMAL": "NUMERIC",
            "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE", "FLOAT": "DOUBLE PRECISION",
            "CHARACTER VARYING": "VARCHAR",
        }
        return aliases.get(t, t)

    if old.text.endswith("[]") != new.text.endswith("[]"):
        return True  # to or from an array: no assignment cast either way
    a, b = base(old.text), base(new.text)
    if a == b or b in ("TEXT", "VARCHAR", "CHAR"):
        return False  # same type, or any type to text: assignment casts exist
    numeric = {"SMALLINT", "INTEGER", "BIGINT", "NUMERIC", "REAL", "DOUBLE PRECISION"}
    if a in numeric and b in numeric:
        return False  # numeric types all cast to one another on assignment
    safe = {
        ("VARCHAR", "TEXT"), ("CHAR", "TEXT"), ("CHAR", "VARCHAR"),
        ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE"), ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP"),
        ("DATE", "TIMESTAMP"), ("DATE", "TIMESTAMP WITH TIME ZONE"), ("JSON", "JSONB"),
    }
    return (a, b) not in safe


def _bare_type(text: str, *, brackets: bool = True) -> str:
    """Return a type's text without its modifiers (``NUMERIC(12, 2)``) and array brackets.

    ``brackets``: also drop ``[]``.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "(" and ")" in text[i + 1:]:
            i = text.index(")", i + 1) + 1
        elif brackets and text.startswith("[]", i):
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


_INTEGERS = {"SMALLINT", "INTEGER", "BIGINT", "INT", "INT2", "INT4", "INT8"}


_INTEGER_BYTES = {"int2": 2, "int4": 4, "int8": 8}


def _narrowing(table: str, col: str, before: ColumnSpec, after: ColumnSpec) -> str | None:
    """Return what changing ``before`` to ``after`` does to the stored data or indexes, if any.

    Numeric scale down rounds every value, precision down (integer digits) fails on
    larger values, a shorter varchar or integer type fails on longer or larger values,
    timestamp to date drops the time of day, a collation change rebuilds the column's
    indexes.
    """
    name = f"{table}.{col}"
    old, new = parse_type(before.type.text), parse_type(after.type.text)
    what = f"({before.type.text} to {after.type.text})"
    if old[2] == new[2]:
        if old[0] == new[0] == "numeric" and new[1]:
            p, s = new[1][0], new[1][1] if len(new[1]) > 1 else 0
            said = []
            if not old[1] or (old[1][1] if len(old[1]) > 1 else 0) > s:
                said.append(f"rounds every stored value of {name} to {s} decimal places")
            if not old[1] or old[1][0] - (old[1][1] if len(old[1]) > 1 else 0) > p - s:
                said.append(f"fails if a stored value has more than {p - s} digits before "
                            "the decimal point")
            if said:
                return f"narrows {name} {what}: " + "; ".join(said)
        if old[0] in ("varchar", "text", "bpchar") and new[0] in ("varchar", "bpchar") \
                and new[1] and (not old[1] or old[1][0] > new[1][0]):
            return (f"narrows {name} {what}: the change fails if a stored value is longer "
                    f"than {new[1][0]} characters; shorten those values first")
        if _INTEGER_BYTES.get(old[0], 0) > _INTEGER_BYTES.get(new[0], 8):
            top = 2 ** (8 * _INTEGER_BYTES[new[0]] - 1)
            return (f"narrows {name} {what}: the change fails if a stored value is outside "
                    f"{-top} to {top - 1}; change those values first")
        if old[0] in ("timestamp", "timestamptz") and new[0] == "date":
            return (f"narrows {name} {what}: the time of day of every stored value is "
                    "dropped (only the date is kept)")
    if (before.collation or None) != (after.collation or None):
        return (f"changes the collation of {name} from {before.collation or 'the default'} to "
                f"{after.collation or 'the default'}: every index on the column is rebuilt "
                "under ACCESS EXCLUSIVE (reads and writes wait), and the values sort in the "
                "new order")
    return None


_JSON_TYPES = {"JSON", "JSONB"}


_PLAIN_ELEMENTS = _INTEGERS | {"NUMERIC", "DECIMAL", "REAL", "DOUBLE PRECISION", "FLOAT",
                               "BOOLEAN", "BOOL"}


def _json_using(table: str, col: str, old: str, new: str) -> str | None:
    """Return the USING expression between JSON and an array type (None: neither way).

    PostgreSQL has no cast between them, and USING allows no subquery.  An array goes
    to JSON with ``to_jsonb``; a JSON array of numbers or booleans reads as an array
    literal once its brackets become braces.  A JSON array of strings does not (JSON
    and array literals escape differently, and a bracket inside a string would change
    it): that is refused with the way out.
    """
    source, target = old.upper(), new.upper()
    if target in _JSON_TYPES and source.endswith("[]"):
        return f"to_{target.lower()}({quote(col)})"
    if source not in _JSON_TYPES or not target.endswith("[]"):
        return None
    element = _bare_type(target).strip()
    if element in _PLAIN_ELEMENTS:
        return f"translate({quote(col)}::TEXT, '[]', '{{}}')::{target}"
    raise GenerationError("cannot generate this migration", [
        f"{table}.{col} changes from {old} to {new}, which PostgreSQL cannot cast (and a "
        "type change's USING allows no subquery): write this migration by hand: add the "
        f"new column, fill it with ARRAY(SELECT jsonb_array_elements_text({col})) in "
        "batches, then drop the old column and rename the new one"
    ])


_TIMESTAMPS = {"TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE", "TIMESTAMPTZ",
               "TIMESTAMP WITH TIME ZONE"}


def _converted(col: str, old: str, new: str, resolution: int) -> tuple[str, str] | None:
    """Return the USING expression and what it does, for types PostgreSQL has no cast for.

    A timestamp and an integer count of ``1 / resolution`` seconds since 1970 (peewee's
    ``TimestampField``) either way, a boolean and a smallint or bigint either way (only
    integer has a cast), and a uuid and its 16 bytes (``BinaryUUIDField``) either way;
    None for other types (``col::new`` is written then).
    """
    source = _bare_type(old.upper(), brackets=False).strip()
    target = _bare_type(new.upper(), brackets=False).strip()
    q = quote(col)
    naive = ("a timestamp without time zone is read as UTC (as TimestampField(utc=True) "
             "stores it; edit the USING expression if the application's local time is not "
             "UTC)")
    if source in _TIMESTAMPS and target in _INTEGERS:
        scaled = f"extract(epoch FROM {q})" + (f" * {resolution}" if resolution > 1 else "")
        zoned = "WITH TIME ZONE" in source or source == "TIMESTAMPTZ"
        return (f"round({scaled})::{target}",
                f"each value becomes its count of 1/{resolution} seconds since 1970-01-01 "
                "UTC (rounded)" + ("" if zoned else "; " + naive))
    if source in _INTEGERS and target in _TIMESTAMPS:
        seconds = f"{q} / {resolution}.0" if resolution > 1 else q
        zoned = "WITH TIME ZONE" in target or target == "TIMESTAMPTZ"
        return (f"to_timestamp({seconds})" + ("" if zoned else " AT TIME ZONE 'UTC'"),
                f"each value is read as a count of 1/{resolution} seconds since 1970-01-01 "
                "UTC" + ("" if zoned else ", the timestamp written in UTC"))
    if source in ("SMALLINT", "INT2", "BIGINT", "INT8") and target in ("BOOLEAN", "BOOL"):
        return f"{q} <> 0", "0 becomes false, any other number true"  # int4 alone casts
    if source in ("BOOLEAN", "BOOL") and target in ("SMALLINT", "INT2", "BIGINT", "INT8"):
        return f"{q}::INTEGER::{target}", "false becomes 0, true 1"
    if source == "UUID" and target == "BYTEA":
        return (f"decode(replace({q}::TEXT, '-', ''), 'hex')",
                "each value becomes its 16 bytes, as BinaryUUIDField stores it")
    if source == "BYTEA" and target == "UUID":
        return (f"encode({q}, 'hex')::UUID",
                "each value is read as the 16 bytes of a uuid (the change fails on a value of "
                "another length)")
    return None

