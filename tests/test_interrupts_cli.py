"""Ctrl-C in the middle of ``kbfm embed-cells``, ``kbfm embed-image`` and ``kbfm train``.

Each command runs in a subprocess through a small driver that swaps in fast, deterministic
test encoders (and, where asked, slows one step down) and logs each step to a file; the
test waits until the log shows the work in progress, then sends SIGINT. Afterwards: exit
code 130 with a one-line message and no traceback, the input untouched, the outputs
absent (or complete), the embedding cache valid, and a rerun reads and writes the cache
correctly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import kbfm
from kbfm._cache import EmbeddingCache

pytestmark = pytest.mark.slow  # each test runs the CLI in 2-4 subprocesses (~5 s apiece)

_DRIVER = textwrap.dedent(
    """
    import os, sys, time, zlib
    from pathlib import Path

    import numpy as np

    LOG = Path(os.environ["KBFM_TEST_LOG"])
    DELAY = float(os.environ.get("KBFM_TEST_DELAY", "0"))
    SLOW = os.environ.get("KBFM_TEST_SLOW", "")


    def note(text):
        with LOG.open("a") as fh:
            fh.write(text + "\\n")


    def pause(step):
        if SLOW == step:
            time.sleep(DELAY)


    # A fast, deterministic text encoder in place of MiniLM.
    from kbfm.encoders import text as T
    from kbfm.encoders._text_backends import TextEncoder


    class FakeText(TextEncoder):
        def __init__(self, name, source, **_):
            self.name, self.model_id, self.revision, self.dim = name, "test:fake", "v1", 16

        def _encode_batch(self, texts):
            note(f"encode {len(texts)}")
            pause("encode")
            return np.stack([
                np.random.default_rng(zlib.crc32(t.encode())).standard_normal(16)
                for t in texts
            ]).astype(np.float32)


    T._BACKENDS["fake"] = FakeText
    T.register_text_encoder(T.TextEncoderSpec("minilm", "fake", "fake", 16, "", "test"))

    # The colour/texture image encoder, logged (and slowed) per batch.
    from kbfm.encoders._image_backends import ColorTextureEncoder

    _embed = ColorTextureEncoder.embed_batch


    def embed_batch(self, items):
        note(f"image {len(items)}")
        pause("encode")
        return _embed(self, items)


    ColorTextureEncoder.embed_batch = embed_batch

    # One FusionModel optimisation step, logged (and slowed).
    import kbfm.models._training as training

    _losses = training.losses


    def losses(*args, **kwargs):
        note("epoch")
        pause("encode")
        return _losses(*args, **kwargs)


    training.losses = losses

    # Cache entries written slowly: half the bytes, a pause, then the rest.
    import kbfm._cache as cache
    from kbfm._atomic import atomic_write


    def slow_entry(path, data, *, sweep=True):
        def write(tmp):
            Path(tmp).write_bytes(data[: len(data) // 2])
            note("cache-write")
            time.sleep(DELAY)
            Path(tmp).write_bytes(data)

        return atomic_write(path, write, sweep=sweep)


    if SLOW == "cache":
        cache.atomic_write_bytes = slow_entry

    # A pause after the model weights are written, before its config.
    import kbfm.models._persist as persist

    _write_config = persist.write_config


    def write_config(*args, **kwargs):
        note("config")
        pause("config")
        return _write_config(*args, **kwargs)


    persist.write_config = write_config

    from kbfm.cli import app

    app(sys.argv[1:], prog_name="kbfm")
    """
)


class Runner:
    """Runs the driver with one cache folder and one log file."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path
        self.cache = tmp_path / "cache"
        self.log = tmp_path / "steps.log"
        self.driver = tmp_path / "driver.py"
        self.driver.write_text(_DRIVER)

    def env(self, slow: str, delay: float) -> dict:
        return {
            **os.environ,
            "KBFM_CACHE_DIR": str(self.cache),
            "KBFM_PROGRESS": "0",
            "KBFM_OFFLINE": "1",
            "KBFM_TEST_LOG": str(self.log),
            "KBFM_TEST_SLOW": slow,
            "KBFM_TEST_DELAY": str(delay),
        }

    def steps(self, prefix: str) -> list[str]:
        if not self.log.exists():
            return []
        return [s for s in self.log.read_text().splitlines() if s.startswith(prefix)]

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        self.log.unlink(missing_ok=True)
        proc = subprocess.run(
            [sys.executable, str(self.driver), *args],
            capture_output=True,
            text=True,
            env=self.env("", 0.0),
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def interrupt(self, args: list[str], *, slow: str, at: str, count: int = 1, delay=0.3):
        """Start the command, send SIGINT once ``count`` log lines start with ``at``."""
        self.log.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(self.driver), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(slow, delay),
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(self.steps(at)) < count:
            time.sleep(0.01)
        assert proc.poll() is None, f"finished before the interrupt: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert err.strip().lower().startswith("interrupted"), err
        assert len(err.strip().splitlines()) == 1, err
        return err

    def check_cache(self) -> int:
        """Every cache entry is complete and no temporary file is left; return the count."""
        if not self.cache.exists():
            return 0
        leftovers = [p for p in self.cache.rglob("*") if ".kbfm-tmp" in p.name]
        assert leftovers == []
        entries = [p for p in self.cache.rglob("*.emb")]
        reader = EmbeddingCache(self.cache)
        assert all(reader._read(p) is not None for p in entries)
        assert reader.stats.corrupt == 0
        return len(entries)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def runner(tmp_path):
    return Runner(tmp_path)


@pytest.fixture
def cells_input(tmp_path):
    path = tmp_path / "pbmc.h5ad"
    kbfm.datasets.pbmc68k_reduced()[:60].copy().write_h5ad(path)
    return path


@pytest.fixture
def image_input(tmp_path):
    from _histology import spots_adata, texture_image, write_pyramid

    slide = write_pyramid(tmp_path / "tex.tif", texture_image())
    path = tmp_path / "spots.h5ad"
    spots_adata(step=80).write_h5ad(path)
    return path, slide


def _embed_image_args(path: Path, slide: Path, out: Path) -> list[str]:
    model = ["--model", "color-texture", "--batch-size", "4"]
    return ["embed-image", str(path), "--slide", str(slide), "--out", str(out), *model]


def test_ctrl_c_during_embed_cells_encoding(runner, cells_input, tmp_path):
    before = cells_input.read_bytes()
    out = tmp_path / "pbmc.kbfm.h5ad"
    runner.interrupt(["embed-cells", str(cells_input)], slow="encode", at="encode")
    assert cells_input.read_bytes() == before
    assert not out.exists() and _hidden(tmp_path) == []
    runner.check_cache()

    runner.run(["embed-cells", str(cells_input)])
    assert kbfm.io.read_h5ad(out).obsm["X_genetext"].shape == (60, 16)
    n_entries = runner.check_cache()
    assert n_entries > 0
    runner.run(["embed-cells", str(cells_input), "--out", str(tmp_path / "again.h5ad")])
    assert runner.steps("encode") == []  # every gene read from the cache
    assert runner.check_cache() == n_entries
    again = kbfm.io.read_h5ad(tmp_path / "again.h5ad").obsm["X_genetext"]
    np.testing.assert_array_equal(again, kbfm.io.read_h5ad(out).obsm["X_genetext"])


def _encoded(runner: Runner, prefix: str) -> int:
    return sum(int(s.split()[1]) for s in runner.steps(prefix))


@pytest.mark.parametrize("command", ["embed-cells", "embed-image"])
def test_ctrl_c_while_the_cache_is_written_leaves_only_complete_entries(
    command, runner, cells_input, image_input, tmp_path
):
    if command == "embed-cells":
        path, args, prefix = cells_input, ["embed-cells", str(cells_input)], "encode"
        out = tmp_path / "pbmc.kbfm.h5ad"
    else:
        path, slide = image_input
        out = tmp_path / "spots.kbfm.h5ad"
        args, prefix = _embed_image_args(path, slide, out), "image"
    before = path.read_bytes()
    runner.interrupt(args, slow="cache", at="cache-write", count=5, delay=0.05)
    assert path.read_bytes() == before
    assert not out.exists() and _hidden(tmp_path) == []
    kept = runner.check_cache()
    assert kept >= 4

    runner.run(args)  # only what was not cached is computed
    total = runner.check_cache()
    assert _encoded(runner, prefix) == total - kept
    first = kbfm.io.read_h5ad(out)
    out.unlink()
    runner.run(args)  # now everything comes from the cache
    assert runner.steps(prefix) == [] and runner.check_cache() == total
    second = kbfm.io.read_h5ad(out)
    key = "X_genetext" if command == "embed-cells" else "X_image"
    np.testing.assert_array_equal(first.obsm[key], second.obsm[key])


def test_ctrl_c_during_embed_image_encoding(runner, image_input, tmp_path):
    path, slide = image_input
    before = path.read_bytes()
    out = tmp_path / "spots.kbfm.h5ad"
    args = _embed_image_args(path, slide, out)
    runner.interrupt(args, slow="encode", at="image", count=2)
    assert path.read_bytes() == before
    assert not out.exists() and _hidden(tmp_path) == []
    assert runner.check_cache() == 0  # entries are written once encoding has finished

    runner.run(args)
    n_spots = kbfm.io.read_h5ad(out).n_obs
    assert runner.check_cache() == n_spots and _encoded(runner, "image") == n_spots
    out.unlink()
    runner.run(args)
    assert runner.steps("image") == []
    assert kbfm.io.read_h5ad(out).obsm["X_image"].shape[0] == n_spots


@pytest.fixture
def spatial_input(tmp_path):
    genes = list(kbfm.knowledge.marker_table()["gene"].drop_duplicates()[:60])
    adata = kbfm.datasets.synthetic_spatial(n_side=10, n_genes=60, gene_names=genes, seed=1)
    path = tmp_path / "spots.h5ad"
    adata.write_h5ad(path)
    return path


def _train_args(path: Path, model_dir: Path) -> list[str]:
    return ["train", str(path), "--model-dir", str(model_dir), "--preset", "tiny"]


@pytest.mark.parametrize("where", ["epoch", "config"])
def test_ctrl_c_during_train_leaves_no_half_saved_model(where, runner, spatial_input, tmp_path):
    before = spatial_input.read_bytes()
    model_dir = tmp_path / "model"
    out = tmp_path / "spots.kbfm.h5ad"
    args = [*_train_args(spatial_input, model_dir), "--max-epochs", "40"]
    slow = "encode" if where == "epoch" else "config"
    runner.interrupt(args, slow=slow, at=where, count=3 if where == "epoch" else 1, delay=0.5)
    assert spatial_input.read_bytes() == before
    assert not out.exists() and _hidden(tmp_path) == []
    saved = sorted(p.name for p in model_dir.iterdir()) if model_dir.exists() else []
    assert saved == []  # no weights without their config
    n_entries = runner.check_cache()
    assert n_entries > 0  # the gene text embeddings were cached before training

    runner.run([*_train_args(spatial_input, model_dir), "--max-epochs", "3"])
    assert runner.steps("encode") == []  # gene texts read from the cache
    assert runner.check_cache() == n_entries
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert kbfm.io.read_h5ad(out).obsm["X_kbfm"].shape[0] == kbfm.io.read_h5ad(spatial_input).n_obs


def test_ctrl_c_while_replacing_a_saved_model_keeps_the_old_one(runner, spatial_input, tmp_path):
    model_dir = tmp_path / "model"
    runner.run([*_train_args(spatial_input, model_dir), "--max-epochs", "2"])
    old = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    (tmp_path / "spots.kbfm.h5ad").unlink()
    args = [*_train_args(spatial_input, model_dir), "--max-epochs", "4", "--overwrite"]
    runner.interrupt(args, slow="config", at="config", delay=1.0)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == old
    assert not (tmp_path / "spots.kbfm.h5ad").exists() and _hidden(tmp_path) == []
