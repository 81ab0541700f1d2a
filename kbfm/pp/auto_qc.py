"""Automated, data-driven QC of spots/cells: MAD thresholds per sample plus spatial checks."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import KbfmInputError, closest_names
from .._provenance import record_step
from .._validate import check_adata, check_finite
from ..io._spatial import spatial_coords
from ._detect import find_counts, gene_symbols, guess_species
from ._spatial_qc import local_log_ratio, neighbor_correlation, spot_graph

logger = logging.getLogger(__name__)

#: Gene-set patterns per species (mitochondrial, ribosomal protein, haemoglobin).
GENE_SET_PATTERNS: dict[str, dict[str, str]] = {
    "human": {
        "mito": r"^MT-",
        "ribo": r"^(RP[SL]\d+[A-Z]?\d*|RPLP[0-2]|RPSA)$",
        "hb": r"^HB(A1|A2|B|D|E1|G1|G2|M|Q1|Z)$",
    },
    "mouse": {
        "mito": r"^mt-",
        "ribo": r"^(Rp[sl]\d+[a-z]?\d*|Rplp[0-2]|Rpsa)$",
        "hb": r"^Hb(a|b|q)-",
    },
}

#: Every flag :func:`auto_qc` can raise; ``edge`` is informative and fails no spot by default.
FLAGS = (
    "low_counts",
    "high_counts",
    "low_genes",
    "high_mito",
    "high_ribo",
    "low_ribo",
    "high_hb",
    "not_in_tissue",
    "isolated",
    "edge",
    "local_counts_outlier",
    "local_profile_outlier",
)
DEFAULT_FAIL_ON = tuple(f for f in FLAGS if f != "edge")


def _mad_bounds(x: np.ndarray, nmads: float, min_spread: float = 0.0) -> tuple[float, float]:
    """``median -/+ max(nmads * MAD, min_spread)`` of the finite values (raw MAD)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (-np.inf, np.inf)
    med = float(np.median(x))
    spread = max(nmads * float(np.median(np.abs(x - med))), min_spread)
    return (med - spread, med + spread)


def _metrics(C, symbols: list[str], species: str) -> pd.DataFrame:
    C = sp.csr_matrix(C) if sp.issparse(C) else np.asarray(C, dtype=float)
    total = np.asarray(C.sum(axis=1)).ravel().astype(float)
    n_genes = np.asarray((C > 0).sum(axis=1)).ravel().astype(float)
    safe = np.where(total > 0, total, 1.0)
    out = {"total_counts": total, "n_genes": n_genes}
    for name, pattern in GENE_SET_PATTERNS[species].items():
        mask = np.array([bool(re.match(pattern, s)) for s in symbols])
        part = np.asarray(C[:, mask].sum(axis=1)).ravel() if mask.any() else np.zeros(len(total))
        out[f"pct_{name}"] = 100.0 * part / safe
        out[f"n_{name}_genes"] = np.full(len(total), int(mask.sum()))
    return pd.DataFrame(out)


def _per_batch_flags(
    m: pd.DataFrame, *, nmads: float, nmads_mito: float, use_counts: bool
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    flags, thr = {}, {}
    log_total, log_genes = np.log1p(m["total_counts"].to_numpy()), np.log1p(m["n_genes"].to_numpy())
    if use_counts:
        lo, hi = _mad_bounds(log_total, nmads, min_spread=0.1)
        # An empty spot always fails, even when most spots are empty (MAD bounds at 0).
        flags["low_counts"] = (log_total < lo) | (m["total_counts"].to_numpy() <= 0)
        flags["high_counts"] = log_total > hi
        thr["total_counts"] = [float(np.expm1(lo)), float(np.expm1(hi))]
    lo, _ = _mad_bounds(log_genes, nmads, min_spread=0.1)
    flags["low_genes"] = (log_genes < lo) | (m["n_genes"].to_numpy() <= 0)
    thr["n_genes"] = [float(np.expm1(lo)), float("inf")]
    # Fractions: one-sided for mito / hb; a floor of percentage points stops a tight
    # distribution (MAD near 0) from flagging ordinary spots.
    for name, nm, floor, two_sided in (
        ("mito", nmads_mito, 2.0, False),
        ("hb", nmads, 1.0, False),
        ("ribo", nmads, 3.0, True),
    ):
        x = m[f"pct_{name}"].to_numpy()
        if m[f"n_{name}_genes"].iloc[0] == 0:
            continue
        lo, hi = _mad_bounds(x, nm, min_spread=floor)
        flags[f"high_{name}"] = x > hi
        if two_sided:
            flags[f"low_{name}"] = x < lo
        thr[f"pct_{name}"] = [float(lo) if two_sided else 0.0, float(hi)]
    return flags, thr


def _spatial_flags(
    adata: AnnData, C, m: pd.DataFrame, *, nmads: float, use_counts: bool
) -> tuple[dict[str, np.ndarray], dict[str, float], pd.DataFrame]:
    flags, summary = {}, {}
    coords = spatial_coords(adata)
    graph = spot_graph(coords)
    extra = pd.DataFrame({"n_neighbors": graph.n_neighbors}, index=m.index)
    if "in_tissue" in adata.obs.columns:
        flags["not_in_tissue"] = adata.obs["in_tissue"].astype(int).to_numpy() == 0
    summary.update(spacing=graph.spacing, full_neighbors=graph.full, contiguous=graph.contiguous)
    if graph.contiguous:
        flags["isolated"] = graph.n_neighbors <= 1
        flags["edge"] = (graph.n_neighbors < graph.full) & ~flags["isolated"]
    else:
        logger.warning(
            "Spots do not form a filled grid (median %.0f neighbours within 1.5 x spacing); "
            "isolated / edge checks skipped (sub-sampled spots?).",
            float(np.median(graph.n_neighbors)),
        )
        flags["isolated"] = flags["edge"] = np.zeros(len(m), dtype=bool)
    inner = ~flags["edge"] & ~flags["isolated"]
    if use_counts and flags["edge"].any() and inner.any():
        ratio = np.median(m["total_counts"][flags["edge"]]) / max(
            np.median(m["total_counts"][inner]), 1.0
        )
        summary["edge_to_interior_count_ratio"] = float(ratio)
    if use_counts:
        d = local_log_ratio(np.log1p(m["total_counts"].to_numpy()), graph)
        lo, hi = _mad_bounds(d, nmads, min_spread=0.3)
        flags["local_counts_outlier"] = (d > hi) | (d < lo)
        extra["local_log_counts_ratio"] = d
        summary["local_log_counts_ratio_bounds"] = [float(lo), float(hi)]
    r = neighbor_correlation(C, graph)
    lo, _ = _mad_bounds(r, nmads, min_spread=0.05)
    flags["local_profile_outlier"] = np.nan_to_num(r, nan=1.0) < lo
    extra["neighbor_correlation"] = r
    summary["neighbor_correlation_min"] = float(lo)
    return flags, summary, extra


def auto_qc(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    species: str = "auto",
    layer: str | None = None,
    gene_symbols_key: str | None = None,
    nmads: float = 5.0,
    nmads_mito: float = 3.0,
    nmads_local: float = 4.0,
    spatial: bool = True,
    fail_on: Sequence[str] | None = None,
    on_not_counts: str = "adapt",
    remove: bool = False,
    key_added: str = "kbfm_qc",
    copy: bool = False,
) -> AnnData | None:
    """Flag low-quality spots with data-driven thresholds, and say why for each.

    Thresholds are medians -/+ ``nmads`` median absolute deviations, computed per
    sample (``batch_key``), as in the scverse best-practice book: log total counts and
    log detected genes (both sides for counts, low side for genes; a spot with no
    counts always fails, whatever the thresholds), mitochondrial
    fraction (``nmads_mito``, high side), haemoglobin (high) and ribosomal fractions
    (both sides). With ``obsm["spatial"]`` it also flags spots outside the tissue
    (``obs["in_tissue"] == 0``), isolated spots (at most one neighbour), spots whose
    counts or expression profile disagree with their neighbours, and marks edge spots.

    Nothing is removed unless ``remove=True``.

    Parameters
    ----------
    adata
        Spots (or cells) x genes.
    batch_key
        ``obs`` column with the sample of each spot; thresholds are per sample.
    species
        ``"human"``, ``"mouse"`` or ``"auto"`` (from the symbol case / ``MT-`` genes);
        decides the mito / ribo / hb symbol patterns.
    layer
        Read counts from this layer. By default ``X`` is used when it holds counts,
        else ``layers["counts"]`` or ``raw``.
    gene_symbols_key
        ``var`` column with gene symbols when ``var_names`` are Ensembl ids.
    nmads, nmads_mito, nmads_local
        Width of the thresholds in MADs (``nmads_local`` for the comparisons of a spot
        with its neighbours).
    spatial
        Run the spatial checks when ``obsm["spatial"]`` is present.
    fail_on
        Flags that fail a spot (default: all in :data:`FLAGS` except ``"edge"``).
    on_not_counts
        When no raw counts are found: ``"adapt"`` (log values are ``expm1``-ed, and
        total-count thresholds are skipped for normalised data) or ``"raise"``.
    remove
        Drop the spots that fail.
    key_added
        Prefix of the ``obs`` columns written.
    copy
        Work on a copy and return it.

    Returns
    -------
    ``None`` (or a copy with ``copy=True``). Writes into ``obs``:
    ``{key_added}_<metric>`` (``total_counts``, ``n_genes``, ``pct_mito``, ``pct_ribo``,
    ``pct_hb``, and with spatial checks ``n_neighbors``, ``local_log_counts_ratio``,
    ``neighbor_correlation``), one boolean column per flag ``{key_added}_<flag>``,
    ``{key_added}_pass`` and ``{key_added}_reason`` (``;``-joined failing flags);
    thresholds and counts in ``uns["kbfm"]["auto_qc"]``. :func:`qc_table` reads them back.

    Examples
    --------
    >>> import kbfm
    >>> kbfm.pp.auto_qc(adata, batch_key="sample")  # doctest: +SKIP
    >>> kbfm.pp.qc_table(adata).query("not pass").reason.value_counts()  # doctest: +SKIP
    """
    check_adata(adata)
    fail_on = tuple(DEFAULT_FAIL_ON if fail_on is None else fail_on)
    unknown = [f for f in fail_on if f not in FLAGS]
    if unknown:
        msg = f"fail_on has unknown flags {unknown}; valid flags: {list(FLAGS)}."
        raise KbfmInputError(msg + closest_names(unknown[0], FLAGS))
    if on_not_counts not in ("adapt", "raise"):
        msg = f"on_not_counts must be 'adapt' or 'raise', got {on_not_counts!r}."
        raise KbfmInputError(msg)
    if batch_key is not None and batch_key not in adata.obs.columns:
        msg = f"batch_key {batch_key!r} is not an obs column; available: {list(adata.obs.columns)}."
        raise KbfmInputError(msg + closest_names(batch_key, adata.obs.columns))
    if layer is not None and layer not in adata.layers:
        msg = f"Layer {layer!r} not found in adata.layers; available: {list(adata.layers)}."
        raise KbfmInputError(msg)
    if species not in ("auto", "human", "mouse"):
        msg = f"species must be 'auto', 'human' or 'mouse', got {species!r}."
        raise KbfmInputError(msg)

    C, where, scale = find_counts(adata, layer=layer)
    check_finite(C, where)
    adaptation = "none"
    if scale.kind != "counts":
        fix = (
            f"{where} does not hold raw counts ({scale.kind}: {scale.reason}) and no counts "
            "layer was found. Pass layer= with raw counts, or store them in "
            "adata.layers['counts']"
        )
        if scale.kind == "scaled" or on_not_counts == "raise":
            raise KbfmInputError(fix + "; QC thresholds on scaled values mean nothing.")
        if scale.kind == "log":
            C = C.copy()
            if sp.issparse(C):
                C.data = np.expm1(C.data)
            else:
                C = np.expm1(C)
            adaptation = "log values expm1-ed; total-count thresholds skipped"
        else:
            adaptation = "normalised values; total-count thresholds skipped"
        logger.warning("%s. Adapting: %s.", fix, adaptation)
    use_counts = scale.kind == "counts"

    adata = adata.copy() if copy else adata
    symbols = gene_symbols(adata, gene_symbols_key=gene_symbols_key)
    species_used = guess_species(symbols) if species == "auto" else species
    metrics = _metrics(C, symbols, species_used)
    metrics.index = adata.obs_names

    flags = {f: np.zeros(adata.n_obs, dtype=bool) for f in FLAGS}
    thresholds = {}
    batches = (
        pd.Series("all", index=adata.obs_names)
        if batch_key is None
        else adata.obs[batch_key].astype(str)
    )
    for batch in pd.unique(batches):
        sel = (batches == batch).to_numpy()
        bflags, thr = _per_batch_flags(
            metrics[sel], nmads=nmads, nmads_mito=nmads_mito, use_counts=use_counts
        )
        for name, mask in bflags.items():
            flags[name][sel] = mask
        thresholds[str(batch)] = thr

    spatial_summary: dict = {}
    extra = pd.DataFrame(index=adata.obs_names)
    run_spatial = spatial and "spatial" in adata.obsm and adata.n_obs >= 3
    if run_spatial:
        for batch in pd.unique(batches):
            sel = (batches == batch).to_numpy()
            sub = adata[sel]
            C_sub = C[np.flatnonzero(sel)]
            bflags, summ, bextra = _spatial_flags(
                sub, C_sub, metrics[sel], nmads=nmads_local, use_counts=use_counts
            )
            for name, mask in bflags.items():
                flags[name][sel] = mask
            for col in bextra.columns:
                if col not in extra.columns:
                    extra[col] = np.nan
                extra.loc[sel, col] = bextra[col].to_numpy()
            spatial_summary[str(batch)] = summ

    reasons = [";".join(f for f in fail_on if flags[f][i]) for i in range(adata.n_obs)]
    passed = np.array([r == "" for r in reasons])
    for col in ("total_counts", "n_genes", "pct_mito", "pct_ribo", "pct_hb"):
        adata.obs[f"{key_added}_{col}"] = metrics[col].to_numpy()
    for col in extra.columns:
        adata.obs[f"{key_added}_{col}"] = extra[col].to_numpy()
    for f in FLAGS:
        adata.obs[f"{key_added}_{f}"] = flags[f]
    adata.obs[f"{key_added}_pass"] = passed
    adata.obs[f"{key_added}_reason"] = pd.Categorical(reasons)

    n_fail = int((~passed).sum())
    counts_by_flag = {f: int(flags[f].sum()) for f in FLAGS}
    logger.info("auto_qc: %d of %d spots fail (%s)", n_fail, adata.n_obs, counts_by_flag)
    record_step(
        adata,
        "auto_qc",
        counts_source=where,
        input_scale=scale.kind,
        input_scale_reason=scale.reason,
        adaptation=adaptation,
        species=species_used,
        batch_key=batch_key,
        nmads=nmads,
        nmads_mito=nmads_mito,
        nmads_local=nmads_local,
        fail_on=list(fail_on),
        spatial_checks=bool(run_spatial),
        thresholds=thresholds,
        spatial_summary=spatial_summary,
        n_obs=int(adata.n_obs),
        n_fail=n_fail,
        n_flagged=counts_by_flag,
        removed=bool(remove),
        key_added=key_added,
    )
    if remove and n_fail:
        if copy:
            adata = adata[passed].copy()
        else:
            adata._inplace_subset_obs(passed)
        logger.info("auto_qc: removed %d spots", n_fail)
    return adata if copy else None


def qc_table(adata: AnnData, *, key: str = "kbfm_qc") -> pd.DataFrame:
    """Return the per-spot QC table written by :func:`auto_qc` (metrics, flags, reason).

    Parameters
    ----------
    adata
        Data after :func:`auto_qc`.
    key
        The ``key_added`` used there.

    Returns
    -------
    DataFrame indexed by ``obs_names`` with the prefix removed from the column names.

    Examples
    --------
    >>> table = kbfm.pp.qc_table(adata)  # doctest: +SKIP
    """
    check_adata(adata)
    prefix = f"{key}_"
    cols = [c for c in adata.obs.columns if c.startswith(prefix)]
    if f"{key}_pass" not in cols:
        msg = f"No QC results under obs['{key}_*']; run kbfm.pp.auto_qc(adata, key_added={key!r})."
        raise KbfmInputError(msg)
    table = adata.obs[cols].copy()
    table.columns = [c[len(prefix) :] for c in cols]
    return table
