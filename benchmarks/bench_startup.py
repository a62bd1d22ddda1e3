"""Start-up of a small script (import datalayer, connect, one lookup) as a whole process.

``python -m benchmarks startup``.  Each round runs, as fresh interpreters and
in alternating order:

* ``psycopg2``: the same lookup on raw psycopg2 (the anchor);
* ``floor``: interpreter + ``import psycopg2, peewee, environs`` + the raw
  lookup (what any peewee + environs program pays before its own code);
* ``datalayer``: ``import datalayer; datalayer.connect();
  datalayer.get_user_by_email(...)``;

each once as installed and, when psycopg 3 is installed, once more with it
hidden (``sys.modules['psycopg'] = None`` first), so both cases show in one
run.  Prints medians and the ratios to raw psycopg2.  Target: datalayer at
most 2.5x psycopg2, with or without psycopg 3 installed.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import time

ROUNDS = int(os.environ.get("DATALAYER_STARTUP_ROUNDS", "15"))

_HIDE = "import sys; sys.modules['psycopg'] = None\n"

_PSYCOPG2 = """
import os, psycopg2
conn = psycopg2.connect(os.environ["DATABASE_URL"])
cur = conn.cursor()
cur.execute("SELECT users_id, email FROM users WHERE email = %s", ("nobody@example.com",))
cur.fetchone()
conn.close()
"""

_FLOOR = "import peewee, environs\n" + _PSYCOPG2

_DATALAYER = """
import datalayer
datalayer.connect()
try:
    datalayer.get_user_by_email("nobody@example.com")
except datalayer.NotFound:
    pass
"""


def _run(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def main() -> int:
    """Run the benchmark and print the table."""
    import compileall

    import datalayer
    from benchmarks._common import scratch_database, server_settings
    from datalayer.db import Database
    from datalayer.models import MODELS

    # As a pip install would have it: byte-code compiled once (PYTHONDONTWRITEBYTECODE may
    # be set, and an editable checkout would otherwise be compiled by every process).
    compileall.compile_dir(os.path.dirname(datalayer.__file__), quiet=1)
    server = server_settings()
    print(f"server: {server.describe()}; {ROUNDS} rounds, fresh processes, medians")
    with scratch_database(server, "datalayer_bench_start") as settings:
        db = Database(settings)
        with db.checkout(), db.bind_ctx(MODELS):
            db.create_tables(MODELS)
        db.close_pool()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATALAYER_"))}
        env["DATABASE_URL"] = settings.url(masked=False)
        variants = {"": ""}
        if importlib.util.find_spec("psycopg") is not None:
            variants = {" (psycopg 3 installed)": "", " (psycopg 3 hidden)": _HIDE}
        cases = {
            f"{name}{label}": prefix + code
            for label, prefix in variants.items()
            for name, code in (
                ("psycopg2", _PSYCOPG2),
                ("floor", _FLOOR),
                ("datalayer", _DATALAYER),
            )
        }
        for code in cases.values():  # warm the OS cache and byte-code caches
            _run(code, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for i in range(ROUNDS):
            order = list(cases.items())
            if i % 2:
                order.reverse()
            for name, code in order:
                times[name].append(_run(code, env))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for label in variants:
        anchor = medians[f"psycopg2{label}"]
        for name in ("psycopg2", "floor", "datalayer"):
            key = f"{name}{label}"
            print(f"{key:<42} {medians[key] * 1e3:8.1f} ms  {medians[key] / anchor:5.2f}x psycopg2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
