"""Run the benchmarks: ``python -m benchmarks [NAME ...]``.

Every module ``benchmarks/bench_NAME.py`` with a ``main()`` is a benchmark;
with no NAME all of them run, in name order.  Each uses DATABASE_URL / DB_*
when set, else the embedded server, and cleans up after itself.  Exit status:
0 when every benchmark returned 0 (or None), else 1; 2 for an unknown NAME.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """Return the names of the benchmark modules (``bench_NAME`` -> ``NAME``)."""
    here = Path(__file__).resolve().parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks (all by default) and return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    names = available()
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        print("\navailable: " + ", ".join(names))
        return 0
    unknown = [a for a in args if a not in names]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; choose from: {', '.join(names)}", file=sys.stderr)
        return 2
    status = 0
    for name in args or names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        entry = getattr(module, "main", None)
        if entry is None:
            print(f"benchmarks/bench_{name}.py has no main(); skipped", file=sys.stderr)
            continue
        print(f"== {name} ==", flush=True)
        # main() or main(argv): pass no arguments either way.
        takes_args = any(
            p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            for p in inspect.signature(entry).parameters.values()
        )
        result = entry([]) if takes_args else entry()
        if result not in (None, 0):
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
