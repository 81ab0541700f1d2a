"""One-time conversion of a GGUF LLM from the model store into a transformers folder.

transformers can read a GGUF file (``from_pretrained(dir, gguf_file=...)``), but on
CPU, without the optional GGUF matmul kernels, it dequantises every weight at each
load: about 134 s and 9.7 GB for Qwen2.5-1.5B. This module pays that price once:
it dequantises the GGUF, saves the dense model as safetensors (plus tokenizer and
chat template) in ``kbfm.settings.cache_dir / "models" / "<name>-hf-<dtype>"`` and
records the sha256 of the GGUF it came from. Later loads read the safetensors
directly (seconds, memory-mapped) and never parse the GGUF again.

The folder is written into a temporary sibling and renamed into place, so a
crash or a full disk leaves no half-written cache; a lock file serialises two
processes converting the same model at once.

Typical use::

    from kbfm.encoders._gguf_cache import ensure_converted
    folder = ensure_converted("qwen1.5b", dtype="bfloat16")   # slow the first time
    AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from .._errors import KbfmInputError, KbfmUnavailableError
from .._model_store import (
    check_disk_space,
    get_spec,
    installed_path,
    read_manifest,
    store_dir,
    verify_file,
)
from ._progress import library_progress

CACHE_FORMAT = 1
"""Version of the converted-folder layout; a different value forces a new conversion."""

CACHE_MANIFEST = "kbfm-converted.json"
"""File written last into a converted folder: source GGUF sha256, dtype, file sizes."""

SUPPORTED_DTYPES = ("bfloat16", "float32")
"""Dtypes a converted folder can be stored in."""

# Bytes written per byte of Q4_K_M GGUF (about 4.9 bits per weight), with margin.
_DISK_FACTOR = {"bfloat16": 3.5, "float32": 7.0}

Converter = Callable[[Path, Path, str], None]
"""``converter(gguf_path, out_dir, dtype)`` writes a transformers folder into ``out_dir``."""


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` when it is a supported storage dtype.

    Parameters
    ----------
    dtype
        ``"bfloat16"`` or ``"float32"``.

    Returns
    -------
    The same string.

    Raises
    ------
    KbfmInputError
        For any other value.
    """
    if dtype not in SUPPORTED_DTYPES:
        msg = f"Unsupported dtype {dtype!r} for a converted LLM; use one of {SUPPORTED_DTYPES}."
        raise KbfmInputError(msg)
    return dtype


def converted_dir(name: str, dtype: str = "bfloat16") -> Path:
    """Return the folder of a store model converted to transformers format (may not exist).

    Parameters
    ----------
    name
        Store name, e.g. ``"qwen1.5b"``.
    dtype
        Storage dtype, ``"bfloat16"`` or ``"float32"``.

    Returns
    -------
    ``kbfm.settings.cache_dir / "models" / "<name>-hf-<dtype>"``.
    """
    return store_dir() / f"{get_spec(name).name}-hf-{check_dtype(dtype)}"


def read_cache_manifest(folder: str | os.PathLike) -> dict | None:
    """Return the parsed ``kbfm-converted.json`` of a folder, or ``None`` when absent or bad."""
    try:
        data = json.loads((Path(folder) / CACHE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_valid_cache(folder: str | os.PathLike, source_sha256: str, dtype: str) -> bool:
    """Tell whether ``folder`` holds a complete conversion of the GGUF with that sha256.

    Parameters
    ----------
    folder
        Converted folder.
    source_sha256
        sha256 of the GGUF the folder must come from.
    dtype
        Storage dtype the folder must have.

    Returns
    -------
    True when the manifest matches (format, sha256, dtype) and every file it lists
    exists with its recorded size. Weights are not re-hashed.
    """
    folder = Path(folder)
    manifest = read_cache_manifest(folder)
    if manifest is None:
        return False
    if (
        manifest.get("format") != CACHE_FORMAT
        or manifest.get("source_sha256") != source_sha256
        or manifest.get("dtype") != dtype
    ):
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for rel, size in files.items():
        path = folder / rel
        try:
            if not path.is_file() or path.stat().st_size != size:
                return False
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def transformers_converter(gguf_path: Path, out_dir: Path, dtype: str) -> None:
    """Dequantise a GGUF with transformers and save it as safetensors plus tokenizer.

    Parameters
    ----------
    gguf_path
        The ``.gguf`` file.
    out_dir
        Empty folder to write ``config.json``, ``model.safetensors``, the tokenizer
        files and ``chat_template.jinja`` into.
    dtype
        Storage dtype.

    Raises
    ------
    KbfmUnavailableError
        When transformers (or its ``gguf`` dependency) cannot read the file.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .._optional import require

    require("gguf", "Reading GGUF models (smollm2, qwen0.5b, qwen1.5b)")
    folder, filename = str(gguf_path.parent), gguf_path.name
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "packed weights are fastest in float32": not our path
    try:
        with library_progress():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=filename, dtype=getattr(torch, dtype), low_cpu_mem_usage=True
            )
    except (OSError, ValueError, ImportError) as err:
        msg = f"transformers could not read {gguf_path}: {err}"
        raise KbfmUnavailableError(msg) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    # The GGUF quantizer marks the model "not serializable" even when it fell back to
    # dequantising every weight (no GGUF kernels): the modules are plain dense layers.
    packed = [n for n, m in model.named_modules() if type(m).__name__.startswith("Gguf")]
    if packed:
        msg = (
            f"{gguf_path}: transformers kept {len(packed)} modules packed (GGUF kernels are "
            "installed), so the model cannot be saved densely. Uninstall `kernels` or load "
            "the GGUF directly."
        )
        raise KbfmUnavailableError(msg)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    gc.collect()


def ensure_hf_folder(
    gguf_path: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    source_sha256: str,
    dtype: str = "bfloat16",
    source_size: int | None = None,
    converter: Converter | None = None,
    label: str = "",
) -> Path:
    """Return a converted transformers folder for a GGUF, converting it once if needed.

    The conversion runs under a lock, into a temporary sibling of ``folder`` that is
    renamed into place after the manifest is written; the GGUF's size and sha256 are
    checked first, so a corrupt file is never cached.

    Parameters
    ----------
    gguf_path
        Source ``.gguf`` file.
    folder
        Destination folder.
    source_sha256
        Expected sha256 of the GGUF (recorded in the manifest; a cache made from
        another file is rebuilt).
    dtype
        Storage dtype (see :data:`SUPPORTED_DTYPES`).
    source_size
        Expected size of the GGUF in bytes (``None``: not checked).
    converter
        ``converter(gguf_path, tmp_dir, dtype)``; :func:`transformers_converter` by
        default (tests pass a cheap one).
    label
        What is converted (named in messages).

    Returns
    -------
    ``folder``, holding a valid conversion.

    Raises
    ------
    KbfmInputError
        When the GGUF's size or sha256 differs from the expected values.
    KbfmUnavailableError
        When the disk is too full or the converter fails.
    """
    gguf_path, folder = Path(gguf_path), Path(folder)
    dtype = check_dtype(dtype)
    label = label or gguf_path.name
    if is_valid_cache(folder, source_sha256, dtype):
        return folder
    convert = converter or transformers_converter
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{folder.name}.lock"):
        if is_valid_cache(folder, source_sha256, dtype):  # another process finished it
            return folder
        verify_file(gguf_path, source_sha256, source_size, label=label)
        gguf_size = gguf_path.stat().st_size
        check_disk_space(
            {folder.parent: int(gguf_size * _DISK_FACTOR[dtype])},
            label=f"the {dtype} conversion of {label}",
        )
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
        old: Path | None = None
        try:
            start = time.perf_counter()
            convert(gguf_path, tmp, dtype)
            seconds = time.perf_counter() - start
            files = {
                str(p.relative_to(tmp)): p.stat().st_size
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            if not any(name.endswith(".safetensors") for name in files):
                msg = f"Converting {label} wrote no .safetensors file into {tmp}."
                raise KbfmUnavailableError(msg)
            for rel in files:
                with contextlib.suppress(OSError):
                    (tmp / rel).chmod(0o644)
            manifest = {
                "format": CACHE_FORMAT,
                "dtype": dtype,
                "source_gguf": gguf_path.name,
                "source_sha256": source_sha256,
                "source_size": gguf_size,
                "files": files,
                "convert_seconds": round(seconds, 1),
                "versions": _versions(),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            (tmp / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
            tmp.chmod(0o755)
            if folder.exists():
                old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-old-"))
                os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
        except OSError as err:
            msg = f"Could not write the converted {label} into {folder}: {err}"
            raise KbfmUnavailableError(msg) from err
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    return folder


def ensure_converted(
    name: str, dtype: str = "bfloat16", *, converter: Converter | None = None
) -> Path:
    """Return the converted transformers folder of a store LLM, converting it on first use.

    Parameters
    ----------
    name
        Store name of a GGUF LLM, e.g. ``"qwen1.5b"``.
    dtype
        Storage dtype, ``"bfloat16"`` (default) or ``"float32"``.
    converter
        Override of the conversion step (tests).

    Returns
    -------
    The folder (load it with ``AutoModelForCausalLM.from_pretrained``).

    Raises
    ------
    KbfmUnavailableError
        When the model is not installed (the message gives ``kbfm models install
        <name>``), the disk is too full or the conversion fails.
    KbfmInputError
        When the name is unknown, not a GGUF LLM, or the installed file fails its
        hash check.
    """
    spec = get_spec(name)
    if spec.kind != "llm" or not spec.filename.endswith(".gguf"):
        msg = f"Model {spec.name!r} is not a GGUF LLM; nothing to convert."
        raise KbfmInputError(msg)
    gguf = installed_path(spec)
    sha = spec.sha256 or (read_manifest(spec) or {}).get("sha256")
    if not sha:
        msg = f"Model {spec.name!r} has no known sha256; reinstall it with {spec.install_command}"
        raise KbfmUnavailableError(msg)
    return ensure_hf_folder(
        gguf,
        converted_dir(spec.name, dtype),
        source_sha256=sha,
        dtype=dtype,
        source_size=spec.size,
        converter=converter,
        label=f"model {spec.name!r}",
    )


def _versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for dist in ("torch", "transformers", "gguf", "safetensors"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out
