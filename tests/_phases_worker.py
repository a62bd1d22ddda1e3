"""An application release for the phase tests: the models of one release, and a worker loop.

``python -m tests._phases_worker KIND RELEASE STOP OUT`` (connection in DATABASE_URL)
inserts, reads and updates rows of ``items`` through the models of RELEASE
(``old`` or ``new``) for the change KIND (``rename``, ``drop``, ``not_null``)
until the file STOP exists, then writes ``{"ops": n, "errors": n, "samples": [...]}``
to OUT.  It announces DB_RELEASE=RELEASE, as a deployed process would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import peewee as pw

from datalayer.migrate.autogenerate.hints import renamed_from

KINDS = ("rename", "drop", "not_null")


def item_model(kind: str, release: str) -> type[pw.Model]:
    """Return the ``items`` model of ``release`` (old or new) for change ``kind``."""
    fields: dict[str, Any] = {"id": pw.AutoField(), "qty": pw.IntegerField(default=0)}
    new = release == "new"
    if kind == "rename":
        label = pw.CharField(max_length=50)
        fields["title" if new else "name"] = renamed_from(label, "name") if new else label
    elif kind == "drop":
        if not new:
            fields["gone"] = pw.TextField()  # NOT NULL, no default: the new release omits it
    elif kind == "not_null":
        fields["opt"] = pw.TextField(default="-") if new else pw.TextField(null=True)
    meta = type("Meta", (), {"table_name": "items", "legacy_table_names": False})
    return type("Item", (pw.Model,), {"Meta": meta, "__module__": __name__, **fields})


def values(kind: str, release: str, n: int) -> dict[str, Any]:
    """Return the fields ``release`` writes for row number ``n``."""
    out: dict[str, Any] = {"qty": n}
    if kind == "rename":
        out["title" if release == "new" else "name"] = f"{release}-{n}"
    elif kind == "drop" and release == "old":
        out["gone"] = f"g{n}"
    elif kind == "not_null":
        out["opt"] = None if release == "old" and n % 2 else f"o{n}"
    return out


def check(kind: str, release: str, rows: list[Any]) -> str | None:
    """Return what is wrong with rows read back (a rename's copy not kept in step), if anything."""
    if kind == "rename":
        column = "title" if release == "new" else "name"
        for row in rows:
            if getattr(row, column) is None:
                return f"row {row.id} has no {column}"
    return None


def main(kind: str, release: str, stop: Path, out: Path) -> None:
    from datalayer.config import load_settings
    from datalayer.db import Database

    os.environ["DB_RELEASE"] = release
    db = Database(load_settings())
    model = item_model(kind, release)
    ops = errors = 0
    samples: list[str] = []
    n = 0
    with db.checkout(), db.bind_ctx([model]):
        while not stop.exists():
            n += 1
            try:
                with db.atomic():
                    row = model.create(**values(kind, release, n))
                    got = list(model.select().order_by(model.id.desc()).limit(20))
                    update = values(kind, release, n + 1000)
                    update.pop("gone", None)
                    model.update(**update).where(model.id == row.id).execute()
                problem = check(kind, release, got)
                if problem:
                    raise AssertionError(problem)
                ops += 1
            except Exception as exc:  # every failure counts; the first few are kept
                errors += 1
                if len(samples) < 5:
                    samples.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            time.sleep(0.005)
    db.close_pool()
    out.write_text(json.dumps({"ops": ops, "errors": errors, "samples": samples}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
