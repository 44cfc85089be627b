"""Run every ``bench/bench_*.py`` module's ``main()`` in turn (``python -m bench``).

``python -m bench NAME ...`` runs only the named modules (``services`` or ``bench_services``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def _modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(
        info.name for info in pkgutil.iter_modules([str(here)]) if info.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    wanted = {name if name.startswith("bench_") else f"bench_{name}" for name in argv}
    names = [name for name in _modules() if not wanted or name in wanted]
    unknown = wanted - set(names)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(_modules())}")
        return 2
    failed = []
    for name in names:
        print(f"== {name}")
        started = time.monotonic()
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception:
            # One broken benchmark must not hide the others' figures.
            traceback.print_exc()
            failed.append(name)
        print(f"== {name}: {time.monotonic() - started:.1f} s\n")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
