"""Property-based tests (hypothesis) of the pp/tl functions that need no text or image model.

The rule every property checks (issue 15): a call either raises ``KbfmInputError`` with a
message naming the problem, leaving the input as it was, or returns a correct-looking
result (right shapes, finite values, the documented keys). With ``copy=True`` (or
``inplace=False``) the input object is unchanged, judged by a hash of X, obs, var, obsm,
layers and uns, and so is the kbfm cache. Any other exception fails.

Each input is described by a small frozen dataclass (:class:`Case`), so a failure prints
a readable case that can be pasted into :data:`KNOWN_BUGS`. Inputs that trigger a known
bug in a module this layer does not own are listed there, run as strict xfails, and
skipped by the properties (so the suite stays green and the bug stays visible).
COO matrices are not generated: AnnData 0.12 refuses them in X, layers and obsm
("Only CSR and CSC matrices are supported"); ``csr_array`` stands in for the sparse-array API.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import kbfm
from kbfm._errors import KbfmInputError

settings.register_profile(
    "kbfm-properties",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("kbfm-properties")


#: Multiplies every property's examples, for a deeper run: KBFM_PROPERTY_SCALE=20 pytest ...
EXAMPLES_SCALE = float(os.environ.get("KBFM_PROPERTY_SCALE", "1"))


def props(max_examples: int) -> settings:
    """The shared profile with this property's number of examples."""
    return settings(PROFILE, max_examples=max(1, round(max_examples * EXAMPLES_SCALE)))


# --- fingerprints: hashes of everything a copy=True call must leave alone -------------


def _digest(value: object) -> str:
    h = hashlib.sha256()
    if value is None:
        h.update(b"None")
    elif sp.issparse(value):
        m = value.tocsr() if value.format not in ("csr", "csc") else value
        h.update(f"{m.format}{m.shape}{m.dtype}".encode())
        for part in (m.data, m.indices, m.indptr):
            h.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(value, pd.DataFrame):
        h.update(repr((list(value.columns), [str(d) for d in value.dtypes])).encode())
        h.update(repr(list(value.index)).encode())
        for col in value.columns:
            h.update(repr(value[col].tolist()).encode())
    elif isinstance(value, pd.Index):
        h.update(repr(list(value)).encode())
    elif isinstance(value, np.ndarray):
        h.update(f"{value.shape}{value.dtype}".encode())
        if value.dtype == object:
            h.update(repr(value.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(str(k).encode() + _digest(value[k]).encode())
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            arr = None
        if arr is not None and arr.dtype != object:
            return _digest(np.array(arr))
        h.update(repr(value).encode())
    return h.hexdigest()


def _fingerprint(adata: AnnData) -> dict[str, str]:
    """Hash of each slot of ``adata``; comparing two says which slot changed."""
    return {
        "X": _digest(adata.X),
        "obs": _digest(adata.obs),
        "var": _digest(adata.var),
        "obs_names": _digest(adata.obs_names),
        "var_names": _digest(adata.var_names),
        "obsm": _digest({k: adata.obsm[k] for k in adata.obsm}),
        "layers": _digest({k: adata.layers[k] for k in adata.layers}),
        "uns": _digest(dict(adata.uns)),
    }


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@contextmanager
def _watched_cache():
    """A fresh kbfm cache (settings and $KBFM_CACHE_DIR) holding one entry; it must not change."""
    old_dir, old_env = kbfm.settings.cache_dir, os.environ.get("KBFM_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="kbfm-prop-cache-") as tmp:
        folder = Path(tmp)
        (folder / "embeddings").mkdir()
        (folder / "embeddings" / "entry.npy").write_bytes(b"an existing cache entry")
        before = _tree(folder)
        kbfm.settings.cache_dir, os.environ["KBFM_CACHE_DIR"] = folder, str(folder)
        try:
            yield
            assert _tree(folder) == before, "the kbfm cache changed"
        finally:
            kbfm.settings.cache_dir = old_dir
            if old_env is None:
                os.environ.pop("KBFM_CACHE_DIR", None)
            else:
                os.environ["KBFM_CACHE_DIR"] = old_env


def _guarded_call(fn: Callable, objects: list[AnnData], *args, **kwargs):
    """Call ``fn``; return its result or the KbfmInputError it raised.

    Asserts that every object in ``objects`` (the input, its parent when it is a view,
    a reference) and the cache are unchanged. Any other exception propagates (a failure).
    """
    before = [_fingerprint(o) for o in objects]
    with _watched_cache(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = fn(*args, **kwargs)
        except KbfmInputError as err:
            result = err
    for obj, fp in zip(objects, before, strict=True):
        after = _fingerprint(obj)
        changed = [k for k in fp if fp[k] != after[k]]
        assert not changed, f"{fn.__name__} changed the input's {changed}"
    return result


def _event(text: str) -> None:
    """Count outcomes for --hypothesis-show-statistics (only inside a property)."""
    if currently_in_test_context():
        event(text)


def _check_outcome(result, allowed: list[str], *, must_fail: bool) -> bool:
    """True when ``result`` is a result to check; False for an allowed KbfmInputError."""
    if isinstance(result, KbfmInputError):
        msg = str(result)
        assert len(msg) > 20, f"uninformative message: {msg!r}"
        matched = [p for p in allowed if re.search(p, msg)]
        assert matched, f"unexpected refusal: {msg!r} (expected one of {allowed})"
        _event(f"refused: {matched[0]}")
        return False
    _event("result")
    assert not must_fail, f"expected a KbfmInputError matching one of {allowed}, got a result"
    return True


def _values(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _not_finite(adata: AnnData) -> bool:
    """NaN or inf in X: poisoned on purpose, or large counts overflowing float16."""
    return not np.isfinite(_values(adata.X)).all()


# --- the inputs ------------------------------------------------------------------------

HUMAN_GENES = (
    "CD3E", "CD3D", "CD2", "CD8A", "IL7R", "MS4A1", "CD79A", "CD19", "CD14", "LYZ",
    "FCGR3A", "NKG7", "GNLY", "PPBP", "PF4", "GFAP", "AQP4", "ALB", "ACTB", "GAPDH",
    "MT-CO1", "MT-ND1", "RPL3", "RPS6", "HBB", "HBA1", "VIM", "COL1A1", "EPCAM", "PTPRC",
)  # fmt: skip
MOUSE = {"MT-CO1": "mt-Co1", "MT-ND1": "mt-Nd1", "HBB": "Hbb-bs", "HBA1": "Hba-a1"}

SCALES = ("counts", "log", "normalized", "zeros", "large_counts")
POISONS = ("none", "nan", "inf", "neg_small", "neg")
SPATIAL = ("grid", "none", "grid_int", "nan", "inf", "one_column", "three_columns", "stacked")
SPATIAL_ERRORS = {
    "none": r"obsm\['spatial'\].*missing",
    "nan": r"obsm\['spatial'\] holds NaN or infinite coordinates",
    "inf": r"obsm\['spatial'\] holds NaN or infinite coordinates",
    "one_column": r"obsm\['spatial'\] must have shape",
}
EMPTY = r"AnnData is empty"
NOT_FINITE = r"holds \d+ NaN or infinite values"
REPEATED = r"repeated gene name"


@dataclass(frozen=True)
class Case:
    """One generated AnnData, described so that a failure reads as a test case."""

    n_obs: int = 6
    n_vars: int = 8
    scale: str = "counts"
    dtype: str = "float32"
    fmt: str = "dense"
    names: str = "human"
    dup_obs: bool = False
    dup_vars: bool = False
    zero_row: bool = False
    zero_col: bool = False
    poison: str = "none"
    spatial: str = "grid"
    view: str = "none"
    n_batches: int = 0
    seed: int = 0

    @property
    def empty(self) -> bool:
        return self.n_obs == 0 or self.n_vars == 0

    @property
    def negative(self) -> bool:
        return not self.empty and self.poison in ("neg_small", "neg")

    @property
    def repeated_genes(self) -> bool:
        return self.dup_vars and self.n_vars >= 2


def _gene_names(case: Case, n: int) -> tuple[list[str], list[str]]:
    """``(var_names, symbols)``; they differ for Ensembl ids."""
    rng = np.random.default_rng(case.seed + 1)
    pool = [HUMAN_GENES[i] for i in rng.permutation(len(HUMAN_GENES))]
    symbols = (pool + [f"GENE{i}" for i in range(max(0, n - len(pool)))])[:n]
    if case.names == "mouse":
        symbols = [MOUSE.get(s, s[:1] + s[1:].lower()) for s in symbols]
    if case.names in ("ensembl", "ensembl+symbols"):
        return [f"ENSG{10_000_000_000 + 37 * i:011d}" for i in range(n)], symbols
    return symbols, symbols


def _matrix(case: Case, n_obs: int, n_vars: int) -> np.ndarray:
    rng = np.random.default_rng(case.seed)
    counts = rng.poisson(rng.gamma(0.8, 4.0, size=(n_obs, n_vars))).astype(np.float64)
    if case.scale == "zeros":
        X = np.zeros((n_obs, n_vars))
    elif case.scale == "large_counts":
        X = counts * 6000.0
    elif case.scale == "log":
        X = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4)
    elif case.scale == "normalized":
        X = counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4 + 0.5 * (counts > 0)
    else:
        X = counts
    if case.zero_row and case.n_obs:
        X[0] = 0
    if case.zero_col and case.n_vars:
        X[:, case.n_vars - 1] = 0
    if not case.empty and case.poison != "none":
        i, j = int(rng.integers(case.n_obs)), int(rng.integers(case.n_vars))
        X[i, j] = {"nan": np.nan, "inf": np.inf, "neg_small": -0.25, "neg": -3.0}[case.poison]
    return X


def _coords(kind: str, n: int) -> np.ndarray | None:
    side = max(1, math.ceil(math.sqrt(n)))
    grid = np.c_[np.arange(n) % side, np.arange(n) // side].astype(float) * 100.0
    if kind == "none":
        return None
    if kind == "grid_int":
        return grid.astype(np.int64)
    if kind == "three_columns":
        return np.c_[grid, np.zeros(n)]
    if kind == "one_column":
        return grid[:, :1]
    if kind == "stacked":  # every spot at one position (a failed registration)
        return np.zeros((n, 2))
    if kind in ("nan", "inf") and n:
        grid[n // 2, 1] = np.nan if kind == "nan" else np.inf
    return grid


def build(case: Case) -> tuple[AnnData, list[AnnData]]:
    """The AnnData of ``case`` and the objects that must stay unchanged (it, its parent)."""
    extra_obs, extra_vars = (
        (2, 0) if case.view == "obs" else (0, 2) if case.view == "var" else (0, 0)
    )
    n_obs, n_vars = case.n_obs + extra_obs, case.n_vars + extra_vars
    with np.errstate(over="ignore", invalid="ignore"):  # float16 of large counts is inf
        X = _matrix(case, n_obs, n_vars).astype(case.dtype)
    if case.fmt == "csr":
        X = sp.csr_matrix(X)
    elif case.fmt == "csc":
        X = sp.csc_matrix(X)
    elif case.fmt == "csr_array":
        X = sp.csr_array(X)
    var_names, symbols = _gene_names(case, n_vars)
    if case.dup_vars and n_vars >= 2:
        var_names[1] = var_names[0]
    obs_names = [f"spot{i}" for i in range(n_obs)]
    if case.dup_obs and n_obs >= 2:
        obs_names[1] = obs_names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AnnData warns about repeated names
        adata = AnnData(
            X,
            obs=pd.DataFrame(index=pd.Index(obs_names, dtype=object)),
            var=pd.DataFrame(index=pd.Index(var_names, dtype=object)),
        )
        if case.names == "ensembl+symbols":
            adata.var["gene_symbols"] = symbols
        if case.n_batches:
            adata.obs["sample"] = [f"b{i % case.n_batches}" for i in range(n_obs)]
        coords = _coords(case.spatial, n_obs)
        if coords is not None:
            adata.obsm["spatial"] = coords
        if case.view == "obs":
            return adata[: case.n_obs], [adata[: case.n_obs], adata]
        if case.view == "var":
            return adata[:, : case.n_vars], [adata[:, : case.n_vars], adata]
    return adata, [adata]


@st.composite
def _case(
    draw,
    *,
    hostile: bool,
    n_obs: list[int],
    n_vars: list[int],
    spatial: tuple[str, ...],
    names: tuple[str, ...],
    scales: tuple[str, ...],
) -> Case:
    scale = draw(st.sampled_from(scales))
    poison = draw(st.sampled_from(POISONS)) if hostile else "none"
    fmt = draw(st.sampled_from(("dense", "csr", "csc", "csr_array")))
    dtypes = ["float64", "float32"]
    if fmt == "dense":
        dtypes.append("float16")
    if scale in ("counts", "zeros") and poison in ("none", "neg"):
        dtypes += ["int32", "int64"]
    if not hostile:
        n_obs, n_vars = [n for n in n_obs if n] or n_obs, [n for n in n_vars if n] or n_vars
        spatial = tuple(k for k in spatial if k not in SPATIAL_ERRORS) or spatial
    return Case(
        n_obs=draw(st.sampled_from(n_obs)),
        n_vars=draw(st.sampled_from(n_vars)),
        scale=scale,
        dtype=draw(st.sampled_from(dtypes)),
        fmt=fmt,
        names=draw(st.sampled_from(names)),
        dup_obs=draw(st.booleans()),
        dup_vars=draw(st.booleans()) if hostile else False,
        zero_row=draw(st.booleans()),
        zero_col=draw(st.booleans()),
        poison=poison,
        spatial=draw(st.sampled_from(spatial)),
        view=draw(st.sampled_from(("none", "obs", "var"))),
        seed=draw(st.integers(0, 2**16)),
    )


def cases(
    *,
    n_obs: tuple[int, ...] = (16, 9, 5, 3, 2, 1, 0),
    n_vars: tuple[int, ...] = (30, 15, 8, 4, 2, 1, 0),
    spatial: tuple[str, ...] = SPATIAL,
    names: tuple[str, ...] = ("human", "mouse", "ensembl", "ensembl+symbols"),
    scales: tuple[str, ...] = SCALES,
) -> st.SearchStrategy[Case]:
    """Half plausible data (odd dtypes, formats, names, views, empty rows), half hostile.

    Hostile cases add empty shapes, NaN/inf/negative values, repeated gene names and
    broken coordinates, any number at a time.
    """
    kw = {"n_obs": list(n_obs), "n_vars": list(n_vars), "spatial": spatial}
    kw.update(names=names, scales=scales)
    return st.one_of(_case(hostile=False, **kw), _case(hostile=True, **kw))


# --- pp.auto_qc and pp.qc_table --------------------------------------------------------


def check_auto_qc(
    case: Case, *, spatial: bool = True, n_batches: int = 0, remove: bool = False
) -> None:
    adata, keep = build(replace(case, n_batches=n_batches))
    batch_key = "sample" if n_batches else None
    result = _guarded_call(
        kbfm.pp.auto_qc, keep, adata, spatial=spatial, batch_key=batch_key, remove=remove, copy=True
    )
    allowed = [EMPTY, NOT_FINITE, r"does not hold raw counts \(scaled"]
    errors = [case.empty, _not_finite(adata), case.negative]
    if spatial and case.n_obs >= 3 and case.spatial in SPATIAL_ERRORS and case.spatial != "none":
        allowed.append(SPATIAL_ERRORS[case.spatial])
        errors.append(True)
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    assert isinstance(result, AnnData)
    obs = result.obs
    if remove:
        assert obs["kbfm_qc_pass"].all()
        assert result.n_obs == case.n_obs - result.uns["kbfm"]["auto_qc"]["n_fail"]
        return
    assert result.n_obs == case.n_obs and list(result.obs_names) == list(adata.obs_names)
    for metric in ("total_counts", "n_genes", "pct_mito", "pct_ribo", "pct_hb"):
        values = obs[f"kbfm_qc_{metric}"].to_numpy(dtype=float)
        assert np.isfinite(values).all() and (values >= 0).all(), metric
    for pct in ("pct_mito", "pct_ribo", "pct_hb"):
        assert (obs[f"kbfm_qc_{pct}"] <= 100 + 1e-6).all(), pct
    passed = obs["kbfm_qc_pass"].to_numpy()
    assert passed.dtype == bool
    assert (passed == (obs["kbfm_qc_reason"].astype(str) == "").to_numpy()).all()
    empty_spots = obs["kbfm_qc_total_counts"].to_numpy() <= 0
    assert not passed[empty_spots].any(), "a spot without counts passed QC"
    assert result.uns["kbfm"]["auto_qc"]["n_obs"] == case.n_obs
    table = kbfm.pp.qc_table(result)
    assert list(table.index) == list(result.obs_names)
    assert {"pass", "reason", "total_counts"} <= set(table.columns)


@props(40)
@given(cases())
def test_auto_qc_refuses_or_flags_every_spot(case):
    skip_known_bugs(check_auto_qc, case)


@props(20)
@given(cases(n_obs=(9, 5, 3)), st.integers(1, 4), st.booleans())
def test_auto_qc_per_sample_and_remove(case, n_batches, remove):
    skip_known_bugs(check_auto_qc, case, n_batches=n_batches, remove=remove)


@props(15)
@given(cases(spatial=("none", "grid", "nan", "one_column")))
def test_auto_qc_without_spatial_checks_ignores_bad_coordinates(case):
    skip_known_bugs(check_auto_qc, case, spatial=False)


@props(25)
@given(cases(n_vars=(1, 4, 8)), st.sampled_from(["kbfm_qc", "qc", "other"]))
def test_qc_table_needs_auto_qc_first(case, key):
    adata, keep = build(case)
    result = _guarded_call(kbfm.pp.qc_table, keep, adata, key=key)
    allowed = [EMPTY, rf"No QC results under obs\['{key}_\*'\]; run kbfm.pp.auto_qc"]
    _check_outcome(result, allowed, must_fail=True)


# --- pp.normalize ----------------------------------------------------------------------


def check_normalize(case: Case, method: str = "auto") -> None:
    adata, keep = build(case)
    result = _guarded_call(kbfm.pp.normalize, keep, adata, method=method, copy=True)
    allowed = [EMPTY, NOT_FINITE, r"scaled values", r"negative", r"need raw counts"]
    must_fail = case.empty or _not_finite(adata) or case.negative
    if not _check_outcome(result, allowed, must_fail=must_fail):
        return
    assert isinstance(result, AnnData) and result.shape == adata.shape
    X = _values(result.X).astype(float)
    assert np.isfinite(X).all(), "normalize wrote NaN or inf into X"
    record = result.uns["kbfm"]["normalize"]
    assert record["method"] in ("log1p", "pearson", "none")
    if record["method"] == "log1p":
        assert (X >= 0).all()
    if record["method"] == "none":
        np.testing.assert_array_equal(X, _values(adata.X).astype(float))
    if record["counts_kept_in"] == "counts":
        kept = _values(result.layers["counts"]).astype(float)
        np.testing.assert_array_equal(kept, _values(adata.X).astype(float))


@props(40)
@given(cases(spatial=("none",)))
def test_normalize_refuses_or_writes_finite_values(case):
    skip_known_bugs(check_normalize, case)


@props(20)
@given(
    cases(spatial=("none",), scales=("counts", "zeros", "large_counts")),
    st.sampled_from(["log1p", "pearson", "none"]),
)
def test_normalize_each_method_on_counts(case, method):
    skip_known_bugs(check_normalize, case, method)


@pytest.mark.parametrize(
    ("case", "method"),
    [
        # scanpy's normalize_total / Pearson residuals refused scipy sparse arrays
        (Case(fmt="csr_array"), "log1p"),
        (Case(fmt="csr_array"), "pearson"),
        # a gene or a spot without counts gave NaN residuals (0/0)
        (Case(zero_col=True, zero_row=True), "pearson"),
        (Case(n_obs=1, n_vars=1, scale="zeros"), "pearson"),
    ],
    ids=["csr_array-log1p", "csr_array-pearson", "pearson-empty-gene", "pearson-all-zero"],
)
def test_normalize_regressions_found_by_the_properties(case, method):
    check_normalize(case, method)


# --- pp.spatially_variable_genes -------------------------------------------------------


def check_svg(case: Case, n_top_genes: int = 5, *, inplace: bool = False) -> None:
    adata, keep = build(case)
    if inplace:
        keep = keep[1:]  # only the parent of a view must stay unchanged
    result = _guarded_call(
        kbfm.pp.spatially_variable_genes, keep, adata, n_top_genes=n_top_genes, inplace=inplace
    )
    allowed = [EMPTY, NOT_FINITE, r"negative values", REPEATED, r"n_top_genes must be"]
    errors = [case.empty, _not_finite(adata), case.negative, case.repeated_genes, n_top_genes < 1]
    if case.spatial in SPATIAL_ERRORS and case.n_obs:
        allowed.append(SPATIAL_ERRORS[case.spatial])
        errors.append(True)
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    if inplace:
        assert result is None
        table = adata.var
    else:
        assert isinstance(result, pd.DataFrame)
        table = result
    assert list(table.index) == list(adata.var_names)
    scores = table["kbfm_morans_i"].to_numpy(dtype=float)
    assert not np.isinf(scores).any()
    flags = table["kbfm_spatially_variable"].to_numpy()
    assert flags.dtype == bool and flags.sum() == min(n_top_genes, case.n_vars)
    if (~np.isnan(scores)).sum() >= flags.sum():
        assert not np.isnan(scores[flags]).any(), "a constant gene ranked as spatially variable"


@props(35)
@given(cases(), st.one_of(st.integers(1, 40), st.just(2000), st.integers(-2, 0)))
def test_spatially_variable_genes_refuses_or_ranks_every_gene(case, n_top_genes):
    skip_known_bugs(check_svg, case, n_top_genes)


@props(15)
@given(cases(n_obs=(1, 4, 9), spatial=("grid", "stacked", "three_columns")))
def test_spatially_variable_genes_in_place_writes_var(case):
    skip_known_bugs(check_svg, case, 3, inplace=True)


# --- the storage format never changes a result -----------------------------------------

FORMATS = ("dense", "csr", "csc", "csr_array")


def _same_in_every_format(case: Case, run: Callable[[AnnData], object]) -> None:
    outcomes = []
    for fmt in FORMATS:
        adata, keep = build(replace(case, fmt=fmt))
        outcomes.append(_guarded_call(run, keep, adata))
    first = outcomes[0]
    for fmt, other in zip(FORMATS[1:], outcomes[1:], strict=True):
        if isinstance(first, Exception) or isinstance(other, Exception):
            assert type(first) is type(other) and str(first) == str(other), fmt
        elif isinstance(first, pd.DataFrame):
            # float32 sparse and float64 dense arithmetic differ in the last digits
            pd.testing.assert_frame_equal(first, other, check_exact=False, rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_allclose(first, other, rtol=1e-4, atol=1e-5, err_msg=fmt)


def _qc_columns(adata: AnnData) -> pd.DataFrame:
    qc = kbfm.pp.auto_qc(adata, copy=True)
    return qc.obs[[c for c in qc.obs.columns if c.startswith("kbfm_qc")]]


def _normalized_values(adata: AnnData) -> np.ndarray:
    return _values(kbfm.pp.normalize(adata, copy=True).X).astype(float)


def _morans_i(adata: AnnData) -> pd.DataFrame:
    return kbfm.pp.spatially_variable_genes(adata, n_top_genes=3, inplace=False)


@pytest.mark.slow
@props(12)
@given(
    cases(n_obs=(16, 9, 3), n_vars=(30, 8, 2), spatial=("grid",)).filter(
        lambda c: c.dtype != "float16"
    ),
    st.sampled_from([_qc_columns, _normalized_values, _morans_i]),
)
def test_dense_and_sparse_storage_give_the_same_result(case, run):
    _same_in_every_format(case, run)


# --- tl.domains and tl.evaluate_domains ------------------------------------------------


@dataclass(frozen=True)
class DomainCase:
    """A representation in ``obsm["X_rep"]`` and the arguments of :func:`kbfm.tl.domains`."""

    n_obs: int = 8
    dim: int = 3
    rep: str = "dense"
    poison: str = "none"
    n_domains: int = 3
    method: str = "kmeans"
    smooth: bool = False
    spatial: str = "grid"
    use_rep: str = "X_rep"
    n_pcs: int | None = None
    seed: int = 0


def build_domains(case: DomainCase) -> AnnData:
    rng = np.random.default_rng(case.seed)
    rep = rng.normal(size=(case.n_obs, case.dim))
    rep[: case.n_obs // 2] += 4.0
    if case.n_obs and case.dim and case.poison != "none":
        rep[case.n_obs - 1, 0] = np.nan if case.poison == "nan" else np.inf
    adata = AnnData(np.ones((case.n_obs, 2), dtype=np.float32))
    value = {
        "dense": lambda r: r,
        "float16": lambda r: r.astype(np.float16),
        "int": lambda r: np.nan_to_num(r * 10, posinf=0).astype(np.int64),
        "dataframe": lambda r: pd.DataFrame(r, index=adata.obs_names),
        "csr": sp.csr_matrix,
    }[case.rep](rep)
    adata.obsm["X_rep"] = value
    coords = _coords(case.spatial, case.n_obs)
    if coords is not None:
        adata.obsm["spatial"] = coords
    return adata


@st.composite
def _domain_case(draw, *, hostile: bool) -> DomainCase:
    n_obs = draw(st.sampled_from([12, 5, 3, 2, 1, 0] if hostile else [12, 5, 3]))
    n_domains = [3, 2, 4, 1, 0, n_obs] if hostile else [d for d in (3, 2, 4) if d < n_obs]
    return DomainCase(
        n_obs=n_obs,
        dim=draw(st.sampled_from([3, 6, 2, 1, 0] if hostile else [3, 6, 2, 1])),
        rep=draw(st.sampled_from(["dense", "float16", "int", "dataframe"] + ["csr"] * hostile)),
        poison=draw(st.sampled_from(["none", "nan", "inf"] if hostile else ["none"])),
        n_domains=draw(st.sampled_from(n_domains)),
        method=draw(st.sampled_from(["kmeans", "gmm", "leiden"] if hostile else ["kmeans", "gmm"])),
        smooth=draw(st.booleans()),
        spatial=draw(
            st.sampled_from(
                ["grid", "none", "grid_int", "three_columns", "stacked", "nan", "one_column"]
                if hostile
                else ["grid", "grid_int", "three_columns", "stacked"]
            )
        ),
        use_rep=draw(st.sampled_from(["X_rep", "X_missing"] if hostile else ["X_rep"])),
        n_pcs=draw(st.sampled_from([None, 1, 2, 50] + [0] * hostile)),
        seed=draw(st.integers(0, 2**16)),
    )


def domain_cases() -> st.SearchStrategy[DomainCase]:
    """Half plausible representations and arguments, half hostile ones."""
    return st.one_of(_domain_case(hostile=False), _domain_case(hostile=True))


def check_domains(case: DomainCase) -> None:
    adata = build_domains(case)
    result = _guarded_call(
        kbfm.tl.domains,
        [adata],
        adata,
        n_domains=case.n_domains,
        use_rep=case.use_rep,
        method=case.method,
        smooth=case.smooth,
        n_pcs=case.n_pcs,
        n_init=2,
        copy=True,
    )
    allowed = [
        r"obsm\['X_missing'\] not found; available",
        r"n_domains must be between 2 and the number of spots",
        r"smooth=True needs obsm\['spatial'\]",
        r"obsm\['X_rep'\] holds NaN or infinite",
        r"Unknown method 'leiden'",
    ]
    errors = [
        case.use_rep == "X_missing",
        not 2 <= case.n_domains < case.n_obs,
        case.smooth and case.spatial == "none",
        case.poison != "none" and case.rep != "int" and case.n_obs > 0 and case.dim > 0,
        case.method == "leiden",
    ]
    if case.smooth and case.spatial in SPATIAL_ERRORS and case.spatial != "none":
        allowed.append(SPATIAL_ERRORS[case.spatial])
        errors.append(case.n_obs > 0)
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    labels = result.obs["kbfm_domain"]
    assert isinstance(labels.dtype, pd.CategoricalDtype) and len(labels) == case.n_obs
    assert 1 <= labels.nunique() <= case.n_domains
    assert result.uns["kbfm"]["domains"]["n_domains"] == case.n_domains


@pytest.mark.slow
@props(25)
@given(domain_cases())
def test_domains_refuses_or_labels_every_spot(case):
    skip_known_bugs(check_domains, case)


@st.composite
def labelled_spots(draw) -> tuple[AnnData, str]:
    n = draw(st.integers(0, 12))
    pool = [np.nan, "L1", "L2", "L3"]
    truth = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    pred = draw(st.lists(st.sampled_from(["0", "1", "2"]), min_size=n, max_size=n))
    obs = pd.DataFrame({"layer": truth, "kbfm_domain": pred}, index=[f"s{i}" for i in range(n)])
    if draw(st.booleans()):
        obs["layer"] = obs["layer"].astype("category")
    if draw(st.booleans()):
        obs["kbfm_domain"] = pd.Categorical(obs["kbfm_domain"])
    adata = AnnData(np.ones((n, 1), dtype=np.float32), obs=obs)
    return adata, draw(st.sampled_from(["layer", "missing"]))


@props(30)
@given(labelled_spots())
def test_evaluate_domains_scores_are_bounded(data):
    adata, label_key = data
    skip_known_bugs(check_evaluate_domains, adata, label_key)


def check_evaluate_domains(adata: AnnData, label_key: str) -> None:
    result = _guarded_call(kbfm.tl.evaluate_domains, [adata], adata, label_key)
    n_labelled = int(adata.obs["layer"].notna().sum())
    allowed = [r"obs\['missing'\] not found", r"no spot|labelled"]
    must_fail = label_key == "missing" or n_labelled == 0
    if not _check_outcome(result, allowed, must_fail=must_fail):
        return
    assert set(result) == {"ari", "nmi", "n"}
    assert -1.0 <= result["ari"] <= 1.0 and 0.0 <= result["nmi"] <= 1.0
    assert result["n"] == n_labelled


# --- tl.evaluate_annotation ------------------------------------------------------------

CL_IDS = ["CL:0000084", "CL:0000236", "CL:0000576", "CL:0000000", "CL:0000624"]
LABEL_POOL = [*CL_IDS, "T cell", "unknown", "", None, np.nan]


@st.composite
def annotations(draw):
    n = draw(st.integers(0, 10))
    truth = draw(st.lists(st.sampled_from(LABEL_POOL), min_size=n, max_size=n))
    m = draw(st.sampled_from([n, n, n, max(n - 1, 0), n + 1]))
    pred = draw(st.lists(st.sampled_from(LABEL_POOL), min_size=m, max_size=m))
    wrap = draw(st.sampled_from([list, tuple, np.array, pd.Series, pd.Categorical]))
    return wrap(truth), wrap(pred)


@props(30)
@given(annotations())
def test_evaluate_annotation_fractions_are_consistent(data):
    truth, pred = data
    truth_before, pred_before = list(truth), list(pred)
    with _watched_cache():
        try:
            result = kbfm.tl.evaluate_annotation(truth, pred)
        except KbfmInputError as err:
            result = err
    assert [str(t) for t in truth] == [str(t) for t in truth_before]
    assert [str(p) for p in pred] == [str(p) for p in pred_before]
    must_fail = len(truth_before) != len(pred_before) or not truth_before
    if not _check_outcome(result, [r"non-empty and aligned"], must_fail=must_fail):
        return
    fractions = [result[k] for k in ("accuracy", "macro_f1", "ontology_accuracy")]
    fractions += [result[k] for k in ("full", "partial", "none")]
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert math.isclose(result["full"] + result["partial"] + result["none"], 1.0)
    assert result["n"] == len(truth_before)
    same_id = [str(t) in CL_IDS and str(t) == str(p) for t, p in zip(truth, pred, strict=True)]
    assert result["full"] >= np.mean(same_id) - 1e-9, "an exact CL id match is not a full match"


# --- tl.annotate(method="marker_score") ------------------------------------------------

CANDIDATES = ["T cell", "B cell", "CL:0000576", "natural killer cell", "platelet", "astrocyte"]


def check_marker_score(case: Case, candidates: list[str]) -> None:
    adata, keep = build(case)
    result = _guarded_call(
        kbfm.tl.annotate, keep, adata, method="marker_score", candidates=candidates, copy=True
    )
    allowed = [
        EMPTY,
        NOT_FINITE,
        REPEATED,
        r"negative values",
        r"Need at least two candidate cell types",
        r"'not a cell type' is not a Cell Ontology id",
        r"None of the candidate cell types has a marker gene",
        r"Marker scoring needs control genes besides the markers",  # panels of a few genes
    ]
    known = [c for c in candidates if c != "not a cell type"]
    errors = [
        case.empty,
        _not_finite(adata),
        case.repeated_genes,
        case.negative,
        len(set(known)) < 2,
        len(known) < len(candidates),
    ]
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    obs = result.obs
    labels = set(obs["kbfm_celltype"].astype(str))
    scores = result.obsm["kbfm_celltype_scores"]
    assert isinstance(scores, pd.DataFrame) and scores.shape[0] == case.n_obs
    assert labels <= set(scores.columns)
    assert np.isfinite(obs["kbfm_celltype_score"].to_numpy(dtype=float)).all()
    assert obs["kbfm_celltype_id"].astype(str).str.startswith("CL:").all()
    assert result.uns["kbfm"]["annotate"]["method"] == "marker_score"


@pytest.mark.slow
@props(30)
@given(
    cases(
        n_obs=(12, 3, 1, 0),
        n_vars=(90, 60, 6, 1, 0),
        spatial=("none",),
        names=("human", "mouse", "ensembl+symbols"),
    ),
    st.one_of(
        st.lists(st.sampled_from(CANDIDATES), min_size=2, max_size=4, unique=True),
        st.lists(st.sampled_from([*CANDIDATES, "not a cell type"]), max_size=4),
    ),
)
def test_annotate_marker_score_refuses_or_labels_every_cell(case, candidates):
    skip_known_bugs(check_marker_score, case, candidates)


# --- tl.deconvolve(method="nnls") ------------------------------------------------------

REF_TYPES = {"T": ["CD3E", "CD3D", "CD2", "IL7R"], "B": ["MS4A1", "CD79A", "CD19"]}
REF_TYPES["mono"] = ["CD14", "LYZ", "FCGR3A"]


@cache
def _reference_counts() -> tuple[np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(7)
    labels = [t for t in REF_TYPES for _ in range(4)]
    X = rng.poisson(1.0, size=(len(labels), len(HUMAN_GENES))).astype(np.float64)
    for i, t in enumerate(labels):
        for g in REF_TYPES[t]:
            X[i, HUMAN_GENES.index(g)] += 30
    return X, labels, list(HUMAN_GENES)


def build_reference(kind: str) -> AnnData:
    X, labels, genes = _reference_counts()
    X = X.copy()
    labels = list(labels)
    if kind == "nan":
        X[0, 0] = np.nan
    if kind == "log":
        X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    if kind == "one_type":
        labels = ["T"] * len(labels)
    if kind == "few_cells":
        labels[-1] = "rare"
    if kind == "some_unlabelled":
        labels[0] = None
    ref = AnnData(sp.csr_matrix(X) if kind == "csr" else X)
    ref.var_names = genes
    ref.obs["cell_type"] = pd.Categorical(labels) if kind != "object_labels" else labels
    return ref[2:] if kind == "view" else ref


REFERENCE_ERRORS = {
    "nan": NOT_FINITE,
    "log": r"reference data .* looks log-transformed",
    "one_type": r"single cell type",
    "few_cells": r"fewer than 2 reference cells",
}


def check_deconvolve(case: Case, reference_kind: str = "plain") -> None:
    adata, keep = build(case)
    reference = build_reference(reference_kind)
    keep = [*keep, reference]
    result = _guarded_call(kbfm.tl.deconvolve, keep, adata, reference, method="nnls", copy=True)
    allowed = [
        EMPTY,
        NOT_FINITE,
        REPEATED,
        r"negative values",
        r"spatial data .* looks log-transformed",
        r"genes are shared between the spatial data",
        r"looks mouse and the reference human",
    ]
    errors = [
        case.empty,
        _not_finite(adata),
        case.repeated_genes,
        case.negative,
        case.scale == "log" and bool(_values(adata.X).any()),
        case.n_vars < 10,
    ]
    if reference_kind in REFERENCE_ERRORS:
        allowed.append(REFERENCE_ERRORS[reference_kind])
        errors.append(True)
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    P = result.obsm["kbfm_proportions"]
    assert isinstance(P, pd.DataFrame) and P.shape == (case.n_obs, 3)
    assert list(P.index) == list(adata.obs_names)
    values = P.to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all()
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-6)
    used = result.var["kbfm_proportions_used"].to_numpy()
    assert used.dtype == bool and used.any()


@pytest.mark.slow
@props(25)
@given(
    cases(
        n_obs=(7, 2, 1, 0),
        n_vars=(30, 12, 5, 1, 0),
        spatial=("none",),
        names=("human", "mouse", "ensembl"),
    ),
)
def test_deconvolve_nnls_refuses_or_sums_to_one(case):
    skip_known_bugs(check_deconvolve, case)


@pytest.mark.slow
@props(12)
@given(
    cases(n_obs=(7, 1), n_vars=(30,), spatial=("none",), names=("human",)),
    st.sampled_from(
        ["plain", "view", "csr", "object_labels", "some_unlabelled", *REFERENCE_ERRORS]
    ),
)
def test_deconvolve_nnls_checks_the_reference(case, reference_kind):
    skip_known_bugs(check_deconvolve, case, reference_kind)


# --- known bugs in modules this layer does not fix: strict xfails, skipped above --------


@dataclass(frozen=True)
class KnownBug:
    """A bug in kbfm/tl or kbfm/models: its reason, one input showing it, and how to spot it.

    ``when`` recognises the inputs that hit it (called with the checker's arguments);
    ``raises`` recognises it by the exception it raises (type, message pattern).
    """

    name: str
    checker: Callable
    reason: str
    example: tuple
    fails_with: type[BaseException] = AssertionError
    when: Callable[..., bool] | None = None
    raises: tuple[type[BaseException], str] | None = None


def _domains_reads_rep(c: DomainCase) -> bool:
    """Whether tl.domains gets past its argument checks to reading obsm[use_rep]."""
    smooth_ok = not (c.smooth and c.spatial == "none")
    return c.use_rep == "X_rep" and 2 <= c.n_domains < c.n_obs and smooth_ok


def _domains_fits(c: DomainCase) -> bool:
    """Whether tl.domains gets as far as fitting the clustering."""
    finite = c.poison == "none" or c.rep == "int" or c.dim == 0
    return _domains_reads_rep(c) and c.rep != "csr" and finite and c.method != "leiden"


def _labelled_spots(labels: list) -> AnnData:
    obs = pd.DataFrame({"layer": labels, "kbfm_domain": ["0"] * len(labels)})
    obs.index = [f"s{i}" for i in range(len(labels))]
    return AnnData(np.ones((len(labels), 1), dtype=np.float32), obs=obs)


KNOWN_BUGS = []


def skip_known_bugs(checker: Callable, *args, **kwargs) -> None:
    """Run ``checker``, rejecting the example when it hits one of :data:`KNOWN_BUGS`."""
    bugs = [b for b in KNOWN_BUGS if b.checker is checker]
    if any(b.when is not None and b.when(*args) for b in bugs):
        reject()
    try:
        checker(*args, **kwargs)
    except Exception as err:
        if any(
            b.raises and isinstance(err, b.raises[0]) and re.search(b.raises[1], str(err))
            for b in bugs
        ):
            reject()
        raise


@pytest.mark.parametrize(
    "bug",
    [
        pytest.param(b, marks=pytest.mark.xfail(strict=True, reason=b.reason, raises=b.fails_with))
        for b in KNOWN_BUGS
    ],
    ids=[b.name for b in KNOWN_BUGS],
)
def test_known_bug_still_fails(bug):
    bug.checker(*bug.example)
