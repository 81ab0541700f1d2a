"""Read/write ``.h5ad`` files with clear errors and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
from anndata import AnnData

from .._atomic import atomic_write
from .._errors import KbfmInputError


def read_h5ad(path: str | os.PathLike) -> AnnData:
    """Read an ``.h5ad`` file, with an error that names the path when it is missing.

    Parameters
    ----------
    path
        File to read.

    Returns
    -------
    The AnnData.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"No such .h5ad file: {path}"
        raise KbfmInputError(msg)
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError) as err:
        msg = f"Could not read {path} as .h5ad: {err}"
        raise KbfmInputError(msg) from err


def write_h5ad(adata: AnnData, path: str | os.PathLike) -> Path:
    """Write ``adata`` to ``path`` atomically (temporary file in the same folder + rename).

    Parameters
    ----------
    adata
        Data to write.
    path
        Destination; its folder is created when missing.

    Returns
    -------
    The destination path.
    """
    return atomic_write(path, adata.write_h5ad)
