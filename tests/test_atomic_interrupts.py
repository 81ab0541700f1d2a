"""Atomic writes under Ctrl-C and SIGKILL: the target is old or new, temp files do not pile up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kbfm._atomic import atomic_write_text, remove_stale_temp_files

# A writer that swallows KeyboardInterrupt, as h5py does inside a long anndata write.
_SWALLOWING_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kbfm._atomic import atomic_write

    def write(tmp):
        Path(tmp).write_text("half")
        print("started", flush=True)
        for _ in range(40):
            try:
                time.sleep(0.05)
            except KeyboardInterrupt:
                pass  # swallowed, as h5py does
        Path(tmp).write_text("complete")

    atomic_write(sys.argv[1], write)
    print("finished", flush=True)
    """
)


def _start(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SWALLOWING_WRITER, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "started"
    return proc


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_ctrl_c_during_a_write_is_not_swallowed_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "data.h5ad"
    target.write_text("original")
    proc = _start(target)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "finished" not in out
    assert "KeyboardInterrupt" in err  # swallowed or not, depending on where it landed
    assert target.read_text() == "original"
    assert _leftovers(tmp_path) == []


def test_a_swallowed_ctrl_c_is_raised_after_the_writer_returns(tmp_path):
    from kbfm._atomic import atomic_write

    target = tmp_path / "data.txt"
    target.write_text("original")

    def swallowing(tmp):
        Path(tmp).write_text("complete")
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass  # what h5py does inside a long anndata write

    with pytest.raises(KeyboardInterrupt, match="it was not replaced"):
        atomic_write(target, swallowing)
    assert target.read_text() == "original" and _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


_WEAKREF_CTRL_C = textwrap.dedent(
    """
    import signal, sys, weakref
    from pathlib import Path
    from kbfm._atomic import atomic_write

    class Node:
        pass

    def write(tmp):
        Path(tmp).write_text("half")
        node = Node()
        keep = weakref.ref(node, lambda _ref: signal.raise_signal(signal.SIGINT))
        del node  # the callback runs here; the KeyboardInterrupt it raises is unraisable
        assert keep() is None
        Path(tmp).write_text("complete")

    hook_before = sys.unraisablehook
    try:
        atomic_write(sys.argv[1], write)
    except KeyboardInterrupt as exc:
        assert sys.unraisablehook is hook_before
        print("raised:", exc)
    """
)


def test_a_ctrl_c_inside_a_weakref_callback_is_quiet_and_still_raised(tmp_path):
    """The CI failure of 2026-12-02: Ctrl-C landed in a weakref callback during an h5ad
    write, and Python printed it as "Exception ignored ... Traceback" on stderr."""
    target = tmp_path / "data.txt"
    target.write_text("old")
    proc = subprocess.run(
        [sys.executable, "-c", _WEAKREF_CTRL_C, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "raised:" in proc.stdout and "not replaced" in proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_killed_writer_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "data.h5ad"
    proc = _start(target)
    proc.kill()
    proc.communicate(timeout=30)  # reaps it and closes its pipes
    stale = _leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".data.h5ad.") and ".kbfm-tmp" in stale[0]
    assert not target.exists()

    atomic_write_text(target, "new")

    assert target.read_text() == "new" and _leftovers(tmp_path) == []


def test_temp_files_of_a_live_writer_are_left_alone(tmp_path):
    target = tmp_path / "data.h5ad"
    proc = _start(target)
    try:
        assert remove_stale_temp_files(target) == []
        live = _leftovers(tmp_path)
        assert len(live) == 1
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert [p.name for p in remove_stale_temp_files(target)] == live  # now it is stale
    # other files that merely look alike are never touched
    (tmp_path / ".data.h5ad.notapid.kbfm-tmp.h5ad").write_text("x")
    (tmp_path / ".other.h5ad.1.kbfm-tmp.h5ad").write_text("x")
    removed = remove_stale_temp_files(target)
    assert removed == []
    assert sorted(_leftovers(tmp_path)) == [
        ".data.h5ad.notapid.kbfm-tmp.h5ad",
        ".other.h5ad.1.kbfm-tmp.h5ad",
    ]


@pytest.mark.slow
def test_cli_ctrl_c_exits_130_without_a_traceback_and_keeps_the_input(tmp_path):
    import anndata as ad
    import numpy as np

    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.poisson(1.0, (3000, 200)).astype(np.float32))
    adata.var_names = [f"GENE{i}" for i in range(200)]
    adata.uns["many"] = {f"k{i}": np.arange(50) for i in range(4000)}  # a slow write
    path = tmp_path / "in.h5ad"
    adata.write_h5ad(path)
    before = path.read_bytes()
    env = {**os.environ, "KBFM_PROGRESS": "0"}
    report = tmp_path / "qc"
    written = tmp_path / "qc.h5ad"
    command = ["qc", str(path), "--out-dir", str(report), "--out", str(written)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kbfm.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(".qc.h5ad.") for p in tmp_path.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err.lower()
    assert path.read_bytes() == before and not written.exists()
    assert _leftovers(report) == [] and _leftovers(tmp_path) == []
