"""Run every benchmark script in this folder, one after the other.

Run: python benchmarks/run_all.py [name ...]   (names without .py; default: all)
Each script writes benchmarks/results/<name>.json; RESULTS.md quotes them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py")
    wanted = set(sys.argv[1:])
    failed = []
    for script in scripts:
        if wanted and script.stem not in wanted:
            continue
        start = time.perf_counter()
        print(f"== {script.name}", flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        print(f"== {script.name}: exit {rc} in {time.perf_counter() - start:.0f} s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
