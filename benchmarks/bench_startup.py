"""Start-up of a small script (import datalayer, connect, one lookup) as a whole process.

``python -m benchmarks startup``.  Each round runs, as fresh interpreters and
in alternating order:

* ``psycopg2``: the same lookup on bare psycopg2;
* ``floor``: interpreter + what the package must import (``peewee``,
  ``playhouse.postgres_ext``, ``environs``), with psycopg 3 kept out as the
  package keeps it out, + the raw lookup on psycopg2: what any peewee +
  environs program pays before its own code;
* ``datalayer``: ``import datalayer; datalayer.connect();
  datalayer.get_user_by_email(...)`` (connection settings from the environment).

Prints the medians and, for each case, the median of its per-round ratios to
the floor and to bare psycopg2.  Target: datalayer at most 1.15x the floor.
The CPU time of each process (user + system) is printed too: on a loaded
machine the wall times wait for the CPU as much as they measure the work.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

ROUNDS = int(os.environ.get("DATALAYER_STARTUP_ROUNDS", "15"))

_PSYCOPG2 = """
import os, psycopg2
conn = psycopg2.connect(os.environ["DATABASE_URL"])
cur = conn.cursor()
cur.execute("SELECT users_id, email FROM users WHERE email = %s", ("nobody@example.com",))
cur.fetchone()
conn.close()
"""

# psycopg 3 kept out, as datalayer keeps it out of peewee (see datalayer/__init__.py).
_FLOOR = (
    "import sys; sys.modules['psycopg'] = None\n"
    "import peewee, playhouse.postgres_ext, environs\n" + _PSYCOPG2
)

_DATALAYER = """
import datalayer
datalayer.connect()
try:
    datalayer.get_user_by_email("nobody@example.com")
except datalayer.NotFound:
    pass
"""

TARGET = 1.15
CASES = {"psycopg2": _PSYCOPG2, "floor": _FLOOR, "datalayer": _DATALAYER}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(code: str, env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Return the wall time of one fresh process; append its CPU time to ``cpu``."""
    cpu_before = _cpu()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    wall = time.perf_counter() - start
    if cpu is not None:
        cpu.append(_cpu() - cpu_before)
    return wall


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
        for code in CASES.values():  # warm the OS cache and byte-code caches
            _run(code, env)
        times: dict[str, list[float]] = {name: [] for name in CASES}
        cpu: dict[str, list[float]] = {name: [] for name in CASES}
        for i in range(ROUNDS):
            order = list(CASES.items())
            if i % 2:
                order.reverse()
            for name, code in order:
                times[name].append(_run(code, env, cpu[name]))
    print(f"{'case':<12} {'median':>10} {'x floor':>8} {'x psycopg2':>11} {'CPU':>10} "
          f"{'CPU x floor':>12}")
    for name in CASES:
        med = statistics.median(times[name])
        to_floor = statistics.median(
            a / b for a, b in zip(times[name], times["floor"], strict=True))
        to_bare = statistics.median(
            a / b for a, b in zip(times[name], times["psycopg2"], strict=True))
        cpu_med = statistics.median(cpu[name])
        cpu_floor = statistics.median(
            a / b for a, b in zip(cpu[name], cpu["floor"], strict=True))
        print(f"{name:<12} {med * 1e3:7.1f} ms {to_floor:7.2f}x {to_bare:10.2f}x "
              f"{cpu_med * 1e3:7.1f} ms {cpu_floor:11.2f}x")
    ratio = statistics.median(
        a / b for a, b in zip(times["datalayer"], times["floor"], strict=True))
    met = ratio <= TARGET
    verdict = "met" if met else "NOT met"
    print(f"datalayer / floor: {ratio:.2f}x (target <= {TARGET:g}x): {verdict}; "
          f"x = median of per-round ratios; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
