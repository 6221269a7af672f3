"""Run the benchmarks: every `bench/*.py` module that defines `main()`, or only those named on the command line."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main() -> int:
    wanted = sys.argv[1:]
    failed: list[str] = []
    for name in modules():
        if wanted and name not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.monotonic()
        sys.argv = [f"bench.{name}"]  # each benchmark parses its own (default) options
        try:
            entry()
        except Exception as error:  # one broken benchmark must not hide the others' figures
            print(f"bench.{name} failed: {type(error).__name__}: {error}", flush=True)
            failed.append(name)
        print(f"=== bench.{name}: {time.monotonic() - started:.0f}s ===", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
