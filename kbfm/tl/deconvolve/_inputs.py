"""Checks and gene matching shared by the deconvolution methods."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..._errors import KbfmInputError, KbfmUnavailableError, closest_names, preview
from ..._validate import expression_matrix
from ...pp._detect import detect_scale, guess_species

logger = logging.getLogger(__name__)


@dataclass
class GeneMatch:
    """How spatial genes were matched to reference (or marker) genes.

    Attributes
    ----------
    spatial_idx, reference_idx
        Aligned column indices of the shared genes in each matrix.
    names
        Shared gene names (as in the spatial data).
    how
        ``"exact"``, ``"symbols"`` (aliases / case resolved) or ``"orthologs"``.
    species, reference_species
        Species of each side.
    """

    spatial_idx: np.ndarray
    reference_idx: np.ndarray
    names: list[str]
    how: str
    species: str
    reference_species: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "n_shared": len(self.names),
            "how": self.how,
            "species": self.species,
            "reference_species": self.reference_species,
            "notes": list(self.notes),
        }


def counts_matrix(adata: AnnData, *, layer: str | None, what: str, need_counts: bool):
    """Return ``(matrix, names, scale)``, refusing log, scaled and (optionally) normalised data."""
    X, names = expression_matrix(adata, layer=layer)
    info = detect_scale(X)
    where = f"adata.layers[{layer!r}]" if layer else "adata.X"
    if info.kind == "log":
        msg = (
            f"The {what} data ({where}) looks log-transformed ({info.reason}), but "
            "deconvolution needs raw counts. Pass layer= with raw counts (e.g. "
            "layer='counts' after kbfm.pp.normalize), or reload the unnormalised file."
        )
        raise KbfmInputError(msg)
    if info.kind == "normalized" and need_counts:
        msg = (
            f"The {what} data ({where}) holds normalised, non-integer values "
            f"({info.reason}); this method has a count likelihood. Pass layer= with raw "
            "counts, or use method='nnls'."
        )
        raise KbfmInputError(msg)
    return X, names, info.kind


def check_labels(reference: AnnData, label_key: str, min_cells: int) -> pd.Series:
    """Return the labels, refusing a missing column or types with too few cells."""
    if label_key not in reference.obs.columns:
        msg = (
            f"The reference has no obs[{label_key!r}] column with cell-type labels; "
            f"available columns: {list(reference.obs.columns)}. Pass label_key=."
            + closest_names(label_key, reference.obs.columns)
        )
        raise KbfmInputError(msg)
    labels = reference.obs[label_key]
    n_missing = int(labels.isna().sum())
    if n_missing == len(labels):
        msg = f"obs[{label_key!r}] of the reference is empty (all NaN)."
        raise KbfmInputError(msg)
    if n_missing:
        logger.warning(
            "%d reference cells without a label in %r are ignored.", n_missing, label_key
        )
    labels = labels.astype(object)
    sizes = labels.dropna().astype(str).value_counts()
    small = sizes[sizes < min_cells]
    if len(sizes) < 2:
        msg = (
            f"The reference has a single cell type in obs[{label_key!r}] "
            f"({list(sizes.index)}); deconvolution needs at least two."
        )
        raise KbfmInputError(msg)
    if len(small):
        msg = (
            f"Cell types with fewer than {min_cells} reference cells in "
            f"obs[{label_key!r}]: {dict(small)}; a signature from so few cells is noise. "
            "Merge them into broader labels, drop them "
            "(reference[~reference.obs[label_key].isin([...])]), or add cells."
        )
        raise KbfmInputError(msg)
    return labels


def _detect_species(names: list[str], given: str, what: str) -> str:
    if given == "auto":
        return guess_species(names)
    if given not in ("human", "mouse"):
        msg = f"{what} must be 'human', 'mouse' or 'auto', got {given!r}."
        raise KbfmInputError(msg)
    return given


def _convert_orthologs(names: list[str], source: str, target: str) -> list[str | None]:
    try:
        from ... import knowledge
    except ImportError as err:
        msg = "Ortholog mapping needs kbfm.knowledge, which could not be imported."
        raise KbfmUnavailableError(msg) from err
    fn = knowledge.human_to_mouse if source == "human" else knowledge.mouse_to_human
    out = fn(names)
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(out, dict):
        return [out.get(n) for n in names]
    return [o if o else None for o in out]


def _symbol_map(names: list[str], species: str) -> list[str | None]:
    from ...knowledge import normalize_symbols

    symbols, _ = normalize_symbols(names, species=species)
    return list(symbols)


def _align(left: list[str | None], right: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    pos: dict[str, int] = {}
    for j, name in enumerate(right):
        if name is not None and name not in pos:
            pos[name] = j
    li, ri, seen = [], [], set()
    for i, name in enumerate(left):
        if name is not None and name in pos and name not in seen:
            seen.add(name)
            li.append(i)
            ri.append(pos[name])
    return np.array(li, dtype=int), np.array(ri, dtype=int)


def match_genes(
    spatial_names: list[str],
    reference_names: list[str],
    *,
    species: str = "auto",
    reference_species: str = "auto",
    min_shared: int = 10,
) -> GeneMatch:
    """Match genes between spatial and reference data (exact, then symbols, then orthologs).

    Raises
    ------
    KbfmInputError
        When fewer than ``min_shared`` genes can be matched, with examples of both sides.
    """
    sp_species = _detect_species(spatial_names, species, "species")
    ref_species = _detect_species(reference_names, reference_species, "reference_species")
    notes: list[str] = []
    if sp_species != ref_species:
        mapped = _convert_orthologs(reference_names, ref_species, sp_species)
        n_mapped = sum(m is not None for m in mapped)
        li, ri = _align(list(spatial_names), mapped)
        if len(li) < min_shared:
            msg = (
                f"The spatial data looks {sp_species} and the reference {ref_species} "
                f"(gene names {preview(spatial_names, 3)} vs {preview(reference_names, 3)}); "
                f"{n_mapped} reference genes have a {sp_species} ortholog and {len(li)} of "
                f"them are in the spatial data (need {min_shared}). Use a reference of the "
                "same species, or pass species= / reference_species= if the guess is wrong."
            )
            raise KbfmInputError(msg)
        notes.append(f"{n_mapped} of {len(reference_names)} reference genes mapped to orthologs")
        names = [spatial_names[i] for i in li]
        return GeneMatch(li, ri, names, "orthologs", sp_species, ref_species, notes)
    li, ri = _align(list(spatial_names), list(reference_names))
    how = "exact"
    if len(li) < max(min_shared, 0.5 * min(len(spatial_names), len(reference_names))):
        try:
            left = _symbol_map(list(spatial_names), sp_species)
            right = _symbol_map(list(reference_names), ref_species)
        except (ImportError, AttributeError, KbfmUnavailableError) as err:
            notes.append(f"symbol normalisation unavailable ({err}); exact names only")
        else:
            li2, ri2 = _align(left, right)
            if len(li2) > len(li):
                li, ri, how = li2, ri2, "symbols"
                notes.append("gene aliases / case resolved with kbfm.knowledge.normalize_symbols")
    if len(li) < min_shared:
        msg = (
            f"Only {len(li)} genes are shared between the spatial data "
            f"({len(spatial_names)} genes, e.g. {preview(spatial_names, 3)}) and the reference "
            f"({len(reference_names)} genes, e.g. {preview(reference_names, 3)}); need "
            f"{min_shared}. Check that both use gene symbols (or both Ensembl ids) of the "
            "same species; put symbols in var_names if one side uses ids."
        )
        raise KbfmInputError(msg)
    names = [spatial_names[i] for i in li]
    return GeneMatch(li, ri, names, how, sp_species, ref_species, notes)


def type_means(R, labels: pd.Series) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Mean counts per cell type (``types x genes``), the type names and cells per type."""
    keep = labels.notna().to_numpy()
    labs = labels[keep].astype(str).to_numpy()
    types = sorted(pd.unique(labs))
    R = R[np.flatnonzero(keep)]
    R = sp.csr_matrix(R) if sp.issparse(R) else np.asarray(R, dtype=float)
    onehot = sp.csr_matrix(
        (np.ones(len(labs)), ([types.index(t) for t in labs], np.arange(len(labs)))),
        shape=(len(types), len(labs)),
    )
    n = np.asarray(onehot.sum(axis=1)).ravel()
    sums = onehot @ R
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
    return sums / n[:, None], types, n


def informative_genes(
    R, labels: pd.Series, *, n_per_type: int = 100, min_log_fold: float = 0.5
) -> np.ndarray:
    """Indices of genes that tell the cell types apart (top fold changes per type).

    Each cell is scaled to 10,000 counts; a gene is kept for a type when its mean there
    exceeds the mean over the other types by ``min_log_fold`` (natural log) and it ranks
    in the type's top ``n_per_type``.
    """
    R = sp.csr_matrix(R) if sp.issparse(R) else sp.csr_matrix(np.asarray(R, dtype=float))
    totals = np.asarray(R.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    norm = sp.diags(1e4 / totals) @ R
    means, _, _ = type_means(norm, labels)
    eps = 0.05
    keep: set[int] = set()
    k = means.shape[0]
    for t in range(k):
        others = (means.sum(axis=0) - means[t]) / max(k - 1, 1)
        fold = np.log(means[t] + eps) - np.log(others + eps)
        order = np.argsort(-fold)
        chosen = [g for g in order[:n_per_type] if fold[g] > min_log_fold and means[t, g] > 0.1]
        keep.update(int(g) for g in chosen)
    return np.array(sorted(keep), dtype=int)
