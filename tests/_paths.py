"""Where the tests find the shared public data: ``$KBFM_DATA``, else ``<repo>/../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED = Path(os.environ.get("KBFM_DATA") or _DEFAULT)
