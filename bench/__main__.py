"""Run benchmarks: ``python -m bench [name ...] [options for them]``.

Each ``bench/bench_<name>.py`` defines ``main(argv) -> int | None``.  Leading arguments
that do not start with ``-`` are benchmark names (all benchmarks, in name order, when
none is given); everything from the first option on is passed to each selected
benchmark's ``main``.  ``python -m bench --list`` prints the names.  The exit status is
the largest status any benchmark returned.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def available() -> list[str]:
    """Names of the benchmark modules next to this file, sorted."""
    here = Path(__file__).resolve().parent
    return sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--list"]:
        print("\n".join(available()))
        return 0
    names: list[str] = []
    while args and not args[0].startswith("-"):
        names.append(args.pop(0))
    if args[:1] == ["--"]:
        args.pop(0)
    known = available()
    unknown = [n for n in names if n not in known]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name in names or known:
        if len(names or known) > 1:
            print(f"\n=== bench {name} ===", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        result = module.main(args)
        status = max(status, int(result or 0))
    return status


if __name__ == "__main__":
    sys.exit(main())
