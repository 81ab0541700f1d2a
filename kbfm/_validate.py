"""Input checks shared by the public functions; each error names the key and a fix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._errors import KbfmInputError


def check_adata(adata: object) -> AnnData:
    """Raise unless ``adata`` is a non-empty AnnData."""
    if not isinstance(adata, AnnData):
        msg = f"Expected an AnnData object, got {type(adata).__name__}."
        raise KbfmInputError(msg)
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"The AnnData is empty ({adata.n_obs} observations x {adata.n_vars} variables)."
        raise KbfmInputError(msg)
    return adata


def check_in_memory(adata: AnnData, what: str) -> None:
    """Raise for a backed AnnData (``read_h5ad(backed="r")``) where ``what`` needs X in memory."""
    if getattr(adata, "isbacked", False):
        msg = (
            f"{what} needs the expression matrix in memory, but this AnnData is backed by "
            f"{adata.filename}. Load it with adata.to_memory() (or read_h5ad without backed=)."
        )
        raise KbfmInputError(msg)


def check_finite(X: np.ndarray | sp.spmatrix, where: str) -> None:
    """Raise when ``X`` holds NaN or infinite values, saying how many and where."""
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and not np.all(np.isfinite(values)):
        n_bad = int((~np.isfinite(values)).sum())
        msg = f"{where} holds {n_bad} NaN or infinite values; impute or drop them first."
        raise KbfmInputError(msg)


def check_unique_names(names: list[str], where: str) -> None:
    """Raise when gene names repeat (results per gene would be ambiguous)."""
    seen: set[str] = set()
    repeated = {n for n in names if n in seen or seen.add(n)}
    if repeated:
        examples = sorted(repeated)[:5]
        msg = (
            f"{where} holds {len(repeated)} repeated gene name(s), e.g. {examples}; make them "
            "unique first (adata.var_names_make_unique()) or aggregate the duplicates."
        )
        raise KbfmInputError(msg)


def expression_matrix(
    adata: AnnData, *, layer: str | None = None, use_raw: bool = False
) -> tuple[np.ndarray | sp.csr_matrix, list[str]]:
    """Return the expression matrix to use and its gene names, after checking its values.

    Parameters
    ----------
    adata
        The data.
    layer
        Read ``adata.layers[layer]`` instead of ``X``.
    use_raw
        Read ``adata.raw.X`` (and ``adata.raw.var_names``).

    Returns
    -------
    ``(matrix, gene_names)``; sparse input is returned as CSR, never densified.
    """
    check_adata(adata)
    check_in_memory(adata, "This step")
    if use_raw and layer is not None:
        msg = "Pass either layer= or use_raw=True, not both."
        raise KbfmInputError(msg)
    if use_raw:
        if adata.raw is None:
            msg = "use_raw=True but adata.raw is None; pass layer= or set adata.raw first."
            raise KbfmInputError(msg)
        X, names, where = adata.raw.X, list(adata.raw.var_names), "adata.raw.X"
    elif layer is not None:
        if layer not in adata.layers:
            msg = f"Layer {layer!r} not found in adata.layers; available: {list(adata.layers)}."
            raise KbfmInputError(msg)
        X, names, where = adata.layers[layer], list(adata.var_names), f"adata.layers[{layer!r}]"
    else:
        X, names, where = adata.X, list(adata.var_names), "adata.X"
    if X is None:
        msg = f"{where} is empty (None)."
        raise KbfmInputError(msg)
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    check_finite(X, where)
    check_unique_names(names, "adata.raw.var_names" if use_raw else "adata.var_names")
    values = X.data if sp.issparse(X) else X
    if values.size and values.min() < 0:
        hint = " It looks scaled (sc.pp.scale);" if values.min() < -0.5 else ""
        msg = (
            f"{where} holds negative values (min {values.min():.3g}).{hint} kbfm needs "
            "non-negative counts or log-normalised values: pass layer= or use_raw=True."
        )
        raise KbfmInputError(msg)
    return X, names
