"""Where the benchmarks find the shared public data, and how they report a skipped row.

``$KBFM_DATA`` names the data folder; without it, ``<repo>/../shared/data`` is used.
A row whose data is missing is printed as skipped (with the path and the variable to
set) and listed in the result JSON under ``"skipped"``, never dropped silently.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("KBFM_DATA") or ROOT.parent / "shared" / "data")


def skipped(what: str, path: Path, into: list | None = None) -> dict:
    """Say that ``what`` was skipped because ``path`` is missing; append it to ``into``."""
    row = {"row": what, "missing": str(path), "hint": "set KBFM_DATA to the shared data folder"}
    print(f"SKIPPED {what}: {path} not found (set KBFM_DATA to the shared data folder)")
    if into is not None:
        into.append(row)
    return row


def require(path: Path, what: str) -> Path:
    """Exit with a clear message when a benchmark's only data set is missing."""
    if not path.exists():
        raise SystemExit(f"{what}: {path} not found (set KBFM_DATA to the shared data folder)")
    return path
