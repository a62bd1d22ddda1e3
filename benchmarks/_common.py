"""Helpers shared by the benchmarks: a scratch database, interleaved timing, a result table.

Speed is only ever reported as a ratio of two things measured in the same
run, interleaved round by round, so a noisy machine slows both sides alike.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql

from datalayer.config import Settings, load_settings
from datalayer.db import resolve

__all__ = ["Result", "interleaved", "print_results", "scratch_database", "server_settings"]


def server_settings() -> Settings:
    """Return settings for DATABASE_URL / DB_* if set, else for the embedded server."""
    return resolve(load_settings())


def _admin(settings: Settings) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(**settings.connect_kwargs())
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def scratch_database(settings: Settings, prefix: str = "datalayer_bench") -> Iterator[Settings]:
    """Create a database of its own next to ``settings``' one; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = _admin(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    try:
        yield settings.replace(dbname=name)
    finally:
        conn = _admin(settings)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        finally:
            conn.close()


@dataclass
class Result:
    """One line of the table: seconds per operation on each side (medians of rounds)."""

    name: str
    package: float
    raw: float
    unit: str = "us"
    target: float | None = None  # minimum package/raw throughput ratio
    note: str = ""
    ratio_override: float | None = None
    met_override: bool | None = None

    @property
    def ratio(self) -> float:
        """Return package throughput / raw throughput (1.0 = as fast as raw)."""
        if self.ratio_override is not None:
            return self.ratio_override
        return self.raw / self.package if self.package > 0 else float("inf")

    @property
    def met(self) -> bool | None:
        if self.met_override is not None:
            return self.met_override
        return None if self.target is None else self.ratio >= self.target


def _time_batch(fn: Callable[[int], None], n: int) -> float:
    gc.disable()
    try:
        start = time.perf_counter()
        fn(n)
        return (time.perf_counter() - start) / n
    finally:
        gc.enable()


def interleaved(
    package: Callable[[int], None],
    raw: Callable[[int], None],
    *,
    rounds: int,
    batch: int,
    warmup: int = 1,
) -> tuple[float, float, float]:
    """Time ``package(batch)`` and ``raw(batch)`` alternately.

    Returns the median seconds per operation of each side and the median of
    the per-round ratios raw/package: the two batches of a round run back to
    back, so they share the machine's state of the moment, and the median of
    their ratios is steadier than the ratio of two medians on a noisy host.
    Each callable runs ``n`` operations when called with ``n``; the side that
    goes first alternates from round to round.
    """
    for _ in range(warmup):
        package(max(1, batch // 4))
        raw(max(1, batch // 4))
    pkg: list[float] = []
    ref: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            pkg.append(_time_batch(package, batch))
            ref.append(_time_batch(raw, batch))
        else:
            ref.append(_time_batch(raw, batch))
            pkg.append(_time_batch(package, batch))
    ratio = statistics.median(r / p for p, r in zip(pkg, ref, strict=True))
    return statistics.median(pkg), statistics.median(ref), ratio


def _fmt(seconds: float, unit: str) -> str:
    if unit == "ms":
        return f"{seconds * 1e3:9.2f} ms"
    return f"{seconds * 1e6:9.1f} us"


def print_results(title: str, results: list[Result]) -> None:
    """Print the table: medians per operation, ratio package/raw, target, met."""
    print(f"\n{title}")
    head = f"{'operation':<44} {'package':>12} {'raw':>12} {'ratio':>7} {'target':>8}  met"
    print(head)
    print("-" * len(head))
    for r in results:
        target = "" if r.target is None else f">={r.target:g}x"
        met = {True: "yes", False: "NO", None: ""}[r.met]
        print(
            f"{r.name:<44} {_fmt(r.package, r.unit)} {_fmt(r.raw, r.unit)} "
            f"{r.ratio:6.2f}x {target:>8}  {met}"
        )
        if r.note:
            print(f"{'':<4}{r.note}")
    print("ratio = package throughput / raw throughput: median over interleaved rounds of "
          "(raw time / package time); times are medians per operation")
