"""Run the benchmarks: ``python -m bench`` runs every one, ``python -m bench NAME ...`` one.

Each benchmark is a module with ``main(argv: list[str]) -> int``; a new one is
one more entry in ``BENCHMARKS``. See docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import sys

# name -> the module whose main(argv) runs it
BENCHMARKS: dict[str, str] = {
    "ingest": "bench.ingest",
    "console": "bench.console",
    "metrics": "bench.metrics",
    "sample": "bench.sample",
    "outcomes": "bench.outcomes",
}

USAGE = (
    "usage: python -m bench [NAME [OPTIONS...]]\n"
    "  with no NAME, every benchmark runs with its defaults; "
    "`python -m bench NAME --help` lists a benchmark's options\n"
    f"  benchmarks: {', '.join(BENCHMARKS)}"
)


def run(name: str, argv: list[str]) -> int:
    module = importlib.import_module(BENCHMARKS[name])
    return int(module.main(argv) or 0)


def main(argv: list[str]) -> int:
    if not argv:
        status = 0
        for name in BENCHMARKS:
            print(f"== {name} ==", flush=True)
            status = max(status, run(name, []))
        return status
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help", "help", "list"):
        print(USAGE)
        return 0
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n{USAGE}", file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
