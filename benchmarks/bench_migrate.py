"""Migration commands with 1, 100 and 1000 migrations on disk, next to upstream peewee-migrate.

``python -m benchmarks migrate``.  Uses DATABASE_URL / DB_* when set, else the
embedded server; every database is a scratch one of its own, dropped after.

The final schema is the same for every history length — 20 tables, 1000
columns in all — so only the number of files changes: with 1 migration one
file creates everything; with 100 or 1000, the first file creates the tables
and each later one adds a column (as ``datalayer migrate diff`` writes it).
Each command runs as a whole CLI process (interpreter start included), the
way CI and deploy scripts run it, rounds interleaved with upstream's:

* ``diff``: ``datalayer migrate diff x`` with nothing to do, versus
  ``pw_migrate create --auto`` (upstream's own generator) on the same files;
* ``status``: ``datalayer migrate status`` versus ``pw_migrate list``;
* ``apply 1``: apply the one pending migration (the rest applied), versus
  ``pw_migrate migrate``;
* ``rollback 1``: ``datalayer migrate rollback --steps 1`` versus
  ``pw_migrate rollback --count 1``;
* ``check``: ``datalayer migrate check`` (no upstream equivalent).

Each datalayer command is timed COLD (a fresh process and an empty cache
folder, as CI runs on a fresh clone) and WARM (the cache folder of
``datalayer.migrate.runtime.cache``, which holds JSON data only, warmed by one untimed
run of each command, as a developer's cache is after the first run of a
commit).  The ratio columns divide each time by the same command's time with
1 file (targets: warm at most 1.5x, cold at most 2x); the last column is the
cold growth per file: (time at N - time at 1) / (N - 1).

Two tables come out of one run, with the same columns: WALL time of each CLI
process, and its CPU time (user + system of the child process and the
processes it waited for, from ``resource.getrusage(RUSAGE_CHILDREN)`` deltas
around each run).  On a shared, loaded machine wall time is mostly waiting
for a core, so a cell over target in wall time only is load; over target in
CPU time it is a real cost.  The CPU time leaves out the server's side (the
PostgreSQL backends that run the statements, and the work of creating
``check``'s scratch database).  Each cell is the median of ROUNDS rounds
(``DATALAYER_BENCH_MIGRATE_ROUNDS``, default 3, or ``--rounds N``); the load
average is printed at the start and at the end.

``python -m benchmarks.bench_migrate [--rounds N] [--sizes 1,100,1000]``
runs it with options; ``--write-project DIR --files N`` only writes the
project of N files (models, pyproject.toml, migrations) to profile a command
on it.  This is a benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datalayer.config import Settings

SIZES = (1, 100, 1000)
ROUNDS = int(os.environ.get("DATALAYER_BENCH_MIGRATE_ROUNDS", "3"))
TABLES = 20
COLUMNS = 1000

_ADD = '''\
def migrate(migrator, database, *, fake=False):
    from datalayer.migrate.ops import extend

    m = extend(migrator)

    m.add_fields({table!r}, {column}=pw.IntegerField(column_name={column!r}, null=True))


def rollback(migrator, database, *, fake=False):
    from datalayer.migrate.ops import extend

    m = extend(migrator)

    m.remove_fields({table!r}, {column!r})
'''

_MODELS = '''\
import peewee as pw

MODELS = []
for t in range({tables}):
    attrs = {{"__module__": __name__, "Meta": type("Meta", (), {{"table_name": f"t{{t}}"}})}}
    for c in range({columns} // {tables}):
        attrs[f"c{{c}}"] = pw.IntegerField(null=True)
    MODELS.append(type(f"T{{t}}", (pw.Model,), attrs))
'''


def _columns_of(n_files: int) -> list[list[str]]:
    """Return, per table, the columns the first file creates (the rest come one a file)."""
    per_table = COLUMNS // TABLES
    later = n_files - 1
    order = [(c, t) for c in range(per_table) for t in range(TABLES)]
    first = order[: len(order) - later]
    created: list[list[str]] = [[] for _ in range(TABLES)]
    for c, t in first:
        created[t].append(f"c{c}")
    return created


def write_project(root: Path, n_files: int) -> Path:
    """Write the models module, pyproject.toml and ``n_files`` migrations; return the folder."""
    import peewee as pw

    from datalayer.db import Database
    from datalayer.migrate.autogenerate.compare import create_migration
    from datalayer.migrate.runtime.checksum import write_sum
    from datalayer.migrate.runtime.files import Router

    root.mkdir(parents=True)
    (root / "benchmodels.py").write_text(_MODELS.format(tables=TABLES, columns=COLUMNS))
    (root / "pyproject.toml").write_text(
        '[tool.datalayer]\nmodels = ["benchmodels"]\nmigrations = "migrations"\n'
    )
    directory = root / "migrations"
    created = _columns_of(n_files)
    models = []
    for t, cols in enumerate(created):
        attrs: dict[str, object] = {
            "__module__": __name__,
            "Meta": type("Meta", (), {"table_name": f"t{t}"}),
        }
        attrs.update({c: pw.IntegerField(null=True) for c in cols})
        models.append(type(f"T{t}", (pw.Model,), attrs))
    start = 0 if n_files >= 1000 else 1  # 000..999: upstream's 3-digit mask sees them all
    first = create_migration(Router(Database(), directory), "initial", models)
    assert first is not None
    wanted = f"{start:03d}_initial.py"
    if first.path.name != wanted:
        first.path.rename(directory / wanted)
    header = "import peewee as pw\n\n\n"
    per_table = COLUMNS // TABLES
    order = [(c, t) for c in range(per_table) for t in range(TABLES)]
    for i, (c, t) in enumerate(order[len(order) - (n_files - 1):], start=start + 1):
        (directory / f"{i:03d}_add_t{t}_c{c}.py").write_text(
            header + _ADD.format(table=f"t{t}", column=f"c{c}")
        )
    write_sum(directory)
    return directory


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(
    args: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> tuple[float, float]:
    """Run one CLI process; return its (wall seconds, CPU seconds: user + system)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if done.returncode not in ok:
        raise SystemExit(
            f"{' '.join(args[:4])} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return seconds, cpu


Cell = tuple[float, float]
"""(wall median s, CPU median s) of one command in one mode."""


def measure(
    server: Settings, n_files: int, rounds: int
) -> dict[str, dict[str, Cell | None]]:
    """Return {command: {"cold"|"warm"|"up": (wall median s, CPU median s) or None}}."""
    from benchmarks._common import scratch_database

    dl, pw_ = _bin("datalayer"), _bin("pw_migrate")
    names_ = ("diff", "status", "apply 1", "rollback 1", "check")
    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        k: {"cold": [], "warm": [], "up": []} for k in names_
    }
    with tempfile.TemporaryDirectory(prefix="datalayer-bench-") as tmp:
        root = Path(tmp) / "project"
        directory = write_project(root, n_files)
        upstream_dir = Path(tmp) / "upstream"  # the same files without our conf.py
        shutil.copytree(directory, upstream_dir, ignore=shutil.ignore_patterns("conf.py"))
        names = sorted(p.stem for p in directory.glob("[0-9]*.py"))
        with scratch_database(server, "dl_bench_ours") as ours, scratch_database(
            server, "dl_bench_up"
        ) as theirs:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATALAYER_"))}
            env["DATALAYER_CACHE_DIR"] = str(Path(tmp) / "cache")
            env["DATALAYER_DEV_DATABASE_URL"] = server.url(masked=False)
            env["PYTHONPATH"] = str(root)
            ours_env = {**env, "DATABASE_URL": ours.url(masked=False)}
            url_up = theirs.url(masked=False)
            if n_files > 1:
                _run([dl, "migrate", "apply", "--to", names[-2]], root, ours_env)
                _run([pw_, "migrate", "--database", url_up, "--directory", str(upstream_dir),
                      "--name", names[-2]], root, env)
            commands = {
                "diff": (
                    [dl, "migrate", "diff", "x"],
                    [pw_, "create", "--auto", "--auto-source", "benchmodels", "--database",
                     url_up, "--directory", str(upstream_dir), "x"],
                ),
                "status": (
                    [dl, "migrate", "status"],
                    [pw_, "list", "--database", url_up, "--directory", str(upstream_dir)],
                ),
                "apply 1": (
                    [dl, "migrate", "apply"],
                    [pw_, "migrate", "--database", url_up, "--directory", str(upstream_dir)],
                ),
                "rollback 1": (
                    [dl, "migrate", "rollback", "--steps", "1"],
                    [pw_, "rollback", "--count", "1", "--database", url_up, "--directory",
                     str(upstream_dir)],
                ),
                "check": ([dl, "migrate", "check"], None),
            }
            # One untimed run of each warms the cache, as any earlier run would.
            for name in names_:
                _run(commands[name][0], root, ours_env, ok=(0, 3))
            cold = 0
            for i in range(rounds):
                modes = ["cold", "warm", "up"] if i % 2 == 0 else ["up", "warm", "cold"]
                for mode in modes:  # each mode runs the whole sequence (apply, then rollback)
                    for name in names_:
                        ours_cmd, up_cmd = commands[name]
                        if mode == "up":
                            if up_cmd is None:
                                continue
                            timed = _run(up_cmd, root, env, ok=(0, 3))
                            if name == "diff":
                                for made in upstream_dir.glob("*_x.py"):
                                    made.unlink()
                        else:
                            run_env = ours_env
                            if mode == "cold":  # a fresh process with an empty cache folder
                                cold += 1
                                run_env = {
                                    **ours_env,
                                    "DATALAYER_CACHE_DIR": str(Path(tmp) / f"cold{cold}"),
                                }
                            timed = _run(ours_cmd, root, run_env, ok=(0, 3))
                        times[name][mode].append(timed)
    return {k: {mode: _medians(runs) for mode, runs in t.items()} for k, t in times.items()}


def _medians(runs: list[tuple[float, float]]) -> Cell | None:
    if not runs:
        return None
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(
    title: str, results: dict[int, dict[str, dict[str, Cell | None]]], which: int
) -> None:
    """Print one table: ``which`` 0 for wall time, 1 for CPU time."""
    sizes = sorted(results)
    print(f"\n{title}")
    header = (
        f"{'command':<11}{'files':>6} {'cold':>9} {'warm':>9} {'upstream':>9} "
        f"{'cold vs 1':>10} {'warm vs 1':>10} {'per file':>9}"
    )
    print(header)
    print("-" * len(header))
    first = results[sizes[0]]
    for command in first:
        base = first[command]
        cold1, warm1 = base["cold"], base["warm"]
        assert cold1 is not None and warm1 is not None
        for n in sizes:
            cells = results[n][command]
            cold, warm, up = cells["cold"], cells["warm"], cells["up"]
            assert cold is not None and warm is not None
            upstream = f"{up[which] * 1e3:6.0f} ms" if up else f"{'-':>9}"
            growth = (cold[which] - cold1[which]) / (n - 1) * 1e3 if n > sizes[0] else 0.0
            print(
                f"{command:<11}{n:>6} {cold[which] * 1e3:6.0f} ms {warm[which] * 1e3:6.0f} ms "
                f"{upstream} {cold[which] / cold1[which]:9.2f}x "
                f"{warm[which] / warm1[which]:9.2f}x {growth:6.2f} ms"
            )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the two tables (wall time, CPU time)."""
    from benchmarks._common import server_settings

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_migrate")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="medians of N rounds")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="history lengths, comma-separated"
    )
    parser.add_argument("--write-project", type=Path, metavar="DIR",
                        help="only write a project of --files migrations to DIR")
    parser.add_argument("--files", type=int, default=SIZES[-1])
    args = parser.parse_args([] if argv is None else argv)
    if args.write_project is not None:
        directory = write_project(args.write_project, args.files)
        print(f"{args.files} migrations in {directory}")
        return 0
    sizes = sorted(int(x) for x in args.sizes.split(","))
    server = server_settings()
    print(
        f"server: {server.describe()}; medians of {args.rounds} rounds; whole CLI processes; "
        f"load average at start: {_load()}"
    )
    results: dict[int, dict[str, dict[str, Cell | None]]] = {}
    for n in sizes:
        results[n] = measure(server, n, args.rounds)
        print(f"{n} files measured; load average {_load()}", flush=True)
    print_table("WALL time of the CLI process (medians)", results, 0)
    print_table(
        "CPU time of the CLI process, user + system (medians; the server's side, "
        "the PostgreSQL backends and the scratch database's creation, is not counted)",
        results, 1,
    )
    print(f"\nload average at end: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
