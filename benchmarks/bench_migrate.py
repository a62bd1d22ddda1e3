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
This is a benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import os
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


def _run(args: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in ok:
        raise SystemExit(
            f"{' '.join(args[:4])} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return seconds


def measure(
    server: Settings, n_files: int, rounds: int
) -> dict[str, tuple[float, float, float | None]]:
    """Return {command: (datalayer cold median s, warm median s, upstream median s or None)}."""
    from benchmarks._common import scratch_database

    dl, pw_ = _bin("datalayer"), _bin("pw_migrate")
    names_ = ("diff", "status", "apply 1", "rollback 1", "check")
    times: dict[str, dict[str, list[float]]] = {
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
                            seconds = _run(up_cmd, root, env, ok=(0, 3))
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
                            seconds = _run(ours_cmd, root, run_env, ok=(0, 3))
                        times[name][mode].append(seconds)
    return {
        k: (
            statistics.median(t["cold"]),
            statistics.median(t["warm"]),
            statistics.median(t["up"]) if t["up"] else None,
        )
        for k, t in times.items()
    }


def main() -> int:
    """Run the benchmark and print the table."""
    from benchmarks._common import server_settings

    server = server_settings()
    print(f"server: {server.describe()}; {ROUNDS} rounds; CLI wall time, medians")
    header = (
        f"{'command':<11}{'files':>6} {'cold':>9} {'warm':>9} {'upstream':>9} "
        f"{'cold vs 1':>10} {'warm vs 1':>10} {'per file':>9}"
    )
    print(header)
    print("-" * len(header))
    results = {n: measure(server, n, ROUNDS) for n in SIZES}
    for command in results[SIZES[0]]:
        cold1, warm1, _ = results[SIZES[0]][command]
        for n in SIZES:
            cold, warm, up = results[n][command]
            upstream = f"{up * 1e3:6.0f} ms" if up else f"{'-':>9}"
            growth = (cold - cold1) / (n - 1) * 1e3 if n > 1 else 0.0
            print(
                f"{command:<11}{n:>6} {cold * 1e3:6.0f} ms {warm * 1e3:6.0f} ms {upstream} "
                f"{cold / cold1:9.2f}x {warm / warm1:9.2f}x {growth:6.2f} ms"
            )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
