"""`make bench`: run every benchmark, or the ones named (`make bench ARGS="registration"`).

Each benchmark is a module `bench/<name>.py` with `main(argv) -> int`. They print their
figures; docs/benchmarks.md records them with the command that reproduces them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def available() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if not info.name.startswith("_")
        and hasattr(importlib.import_module(f"bench.{info.name}"), "main")
    )


def run(argv: list[str]) -> int:
    names = argv or available()
    if not names:
        print("no benchmarks yet")
        return 0
    failed = 0
    for name in names:
        print(f"\n=== bench {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        failed += 1 if module.main([]) else 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
