"""Property-based tests (hypothesis) of the embedding functions: embed_cells, query, embed_image.

The rule of tests/test_properties.py (issue 15), whose inputs and fingerprints this file
reuses: a call either raises ``KbfmInputError`` with a message naming the problem, or
returns a correct-looking result (right shapes, finite values, the documented keys).
With ``copy=True`` the input object (and the parent of a view) is unchanged, judged by a
hash of X, obs, var, obsm, layers and uns. The kbfm cache is checked too: an entry that
was there before stays byte-identical; a refusal comes before any text is encoded and
writes nothing; a successful call leaves entries a second call can use (it then encodes
nothing and returns the same embedding).

Text encoders are :class:`TinyEncoder` (16-d bag-of-words hash vectors, counting what it
encodes); gene knowledge is the offline ``"atlas"`` source. Images are a generated H&E-like
PNG read with the weight-free ``"color-texture"`` encoder. No network is used.
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
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from hypothesis import given
from hypothesis import strategies as st
from test_properties import (
    EMPTY,
    HUMAN_GENES,
    MOUSE,
    NOT_FINITE,
    REPEATED,
    SPATIAL_ERRORS,
    Case,
    _check_outcome,
    _fingerprint,
    _not_finite,
    _tree,
    _values,
    build,
    cases,
    props,
)

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.encoders import TextEncoder

# --- a tiny text encoder and a cache that may grow but never be damaged ----------------


class TinyEncoder(TextEncoder):
    """Bag-of-words hash vectors: texts that share words get similar vectors."""

    def __init__(self, dim: int = 16) -> None:
        self.name = "tiny-words"
        self.model_id = f"test/tiny-words-{dim}"
        self.revision = "r1"
        self.dim = dim
        self.calls = 0

    def _encode_batch(self, texts):
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()) or [""]:
                digest = hashlib.sha256(word.encode()).digest()[: self.dim]
                out[i] += np.frombuffer(digest, dtype=np.uint8).astype(np.float32) - 127.5
        return out


ENCODER = TinyEncoder(16)
DIM = ENCODER.dim


@contextmanager
def _fresh_cache():
    """A fresh kbfm cache (settings and $KBFM_CACHE_DIR) holding one unrelated entry."""
    old_dir, old_env = kbfm.settings.cache_dir, os.environ.get("KBFM_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="kbfm-prop-cache-") as tmp:
        folder = Path(tmp)
        (folder / "embeddings").mkdir()
        (folder / "embeddings" / "entry.npy").write_bytes(b"an existing cache entry")
        kbfm.settings.cache_dir, os.environ["KBFM_CACHE_DIR"] = folder, str(folder)
        try:
            yield folder
        finally:
            kbfm.settings.cache_dir = old_dir
            if old_env is None:
                os.environ.pop("KBFM_CACHE_DIR", None)
            else:
                os.environ["KBFM_CACHE_DIR"] = old_env


def _quiet(fn: Callable, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except KbfmInputError as err:
            return err


def _run(
    fn: Callable,
    objects: list[AnnData],
    *args,
    repeat: str | None = None,
    facts: str | None = None,
    **kwargs,
):
    """Call ``fn``; return its result or the KbfmInputError it raised.

    Asserts that ``objects`` are unchanged and that the cache rules of the module
    docstring hold. With ``repeat`` (an obsm key), a successful call is made a second time
    under the same cache: it must encode no text, add no file and give the same obsm.
    ``facts``: a cache folder a refusal may still add to (embed_image records the slide's
    fingerprint under ``image/slides/`` when it opens the slide, before checking mpp).
    """
    before = [_fingerprint(o) for o in objects]
    with _fresh_cache() as folder:
        seeded = _tree(folder)
        calls = ENCODER.calls
        result = _quiet(fn, *args, **kwargs)
        after = _tree(folder)
        assert all(after.get(k) == v for k, v in seeded.items()), "a cache entry changed"
        if isinstance(result, KbfmInputError):
            added = {k: v for k, v in after.items() if not (facts and k.startswith(facts))}
            assert added == seeded, f"refused after writing to the cache: {result}"
            assert ENCODER.calls == calls, f"refused after encoding texts: {result}"
        elif repeat is not None:
            encoded = ENCODER.calls
            second = _quiet(fn, *args, **kwargs)
            assert not isinstance(second, Exception), f"the second call failed: {second}"
            assert ENCODER.calls == encoded, "the second call encoded again: cache unusable"
            assert _tree(folder) == after, "the second call rewrote the cache"
            np.testing.assert_array_equal(second.obsm[repeat], result.obsm[repeat])
    for obj, fp in zip(objects, before, strict=True):
        now = _fingerprint(obj)
        changed = [k for k in fp if fp[k] != now[k]]
        assert not changed, f"{fn.__name__} changed the input's {changed}"
    return result


def _unit_or_zero(emb: np.ndarray) -> np.ndarray:
    """Row norms, asserted to be 1 (an embedding) or 0 (a cell with nothing to embed)."""
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    ok = np.isclose(norms, 1.0, atol=1e-4) | (norms == 0)
    assert ok.all(), f"rows neither unit nor zero: {norms[~ok]}"
    return norms


# --- tl.embed_cells ---------------------------------------------------------------------

#: Real Ensembl ids (GENCODE) of some of HUMAN_GENES; ``Case.names == "ensembl"`` are fake.
ENSEMBL = {
    "CD3E": "ENSG00000198851",
    "MS4A1": "ENSG00000156738",
    "LYZ": "ENSG00000090382",
    "NKG7": "ENSG00000105374",
    "ACTB": "ENSG00000075624",
    "GAPDH": "ENSG00000111640",
    "CD14": "ENSG00000170458",
    "PTPRC": "ENSG00000081237",
    "VIM": "ENSG00000026025",
    "CD19": "ENSG00000177455",
    "GFAP": "ENSG00000131095",
    "ALB": "ENSG00000163631",
    "EPCAM": "ENSG00000119888",
    "CD8A": "ENSG00000153563",
}
FAKE_ENSEMBL = r"The names look like Ensembl ids and none could be mapped"


def build_expression(case: Case, *, real_ensembl: bool = False) -> tuple[AnnData, list[AnnData]]:
    """``build(case)``; with ``real_ensembl`` the human symbols that have one become ids."""
    adata, keep = build(case)
    if real_ensembl and case.names == "human" and case.view == "none":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # repeated names stay repeated
            adata.var_names = [ENSEMBL.get(g, g) for g in adata.var_names]
    return adata, keep


def data_refusals(
    case: Case, adata: AnnData, method: str = "genept_w"
) -> tuple[list[str], list[bool]]:
    """Messages embed_cells may refuse this data with, and whether it must.

    Cell sentences need no gene knowledge: unmapped Ensembl ids are written as they are.
    """
    allowed = [
        EMPTY,
        NOT_FINITE,
        REPEATED,
        r"adata\.X holds negative values",
        FAKE_ENSEMBL,
        r"None of the \d+ genes has a description in knowledge source 'atlas'",
    ]
    errors = [
        case.empty,
        _not_finite(adata),
        case.repeated_genes,
        case.negative,
        method == "genept_w" and case.names in ("ensembl", "ensembl+symbols"),
    ]
    return allowed, errors


def _dense_float64(adata: AnnData) -> AnnData:
    """The same values and names, as a dense float64 in-memory AnnData."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AnnData(
            _values(adata.X).astype(np.float64),
            obs=pd.DataFrame(index=list(adata.obs_names)),
            var=pd.DataFrame(index=list(adata.var_names)),
        )


def check_embed_cells(case: Case, *, real_ensembl: bool = False, **options) -> None:
    adata, keep = build_expression(case, real_ensembl=real_ensembl)
    result = _run(
        kbfm.tl.embed_cells, keep, adata, encoder=ENCODER, copy=True, repeat="X_genetext", **options
    )
    method = options.get("method", "genept_w")
    allowed, errors = data_refusals(case, adata, method)
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    assert isinstance(result, AnnData) and result.shape == adata.shape
    assert list(result.obs_names) == list(adata.obs_names)
    emb = result.obsm["X_genetext"]
    assert isinstance(emb, np.ndarray) and emb.dtype == np.float32
    assert emb.shape == (case.n_obs, DIM) and np.isfinite(emb).all()
    weighting = options.get("weighting", "expression")
    record = result.uns["kbfm"]["embed_cells"]
    assert record["method"] == method and record["weighting"] == weighting
    assert record["encoder"] == ENCODER.name and record["key_added"] == "X_genetext"
    norms = _unit_or_zero(emb)
    empty_cells = ~(_values(adata.X) != 0).any(axis=1)
    if method == "genept_w":
        assert 1 <= record["n_genes_used"] <= case.n_vars
        if weighting == "expression":
            assert (norms[empty_cells] == 0).all(), "a cell without counts got an embedding"
            if record["n_genes_used"] == case.n_vars:
                assert (norms[~empty_cells] > 0).all(), "a cell with counts got no embedding"
    else:
        assert (norms > 0).all() and record["top_k"] == options.get("top_k", 50)
        if empty_cells.sum() > 1:  # one sentence, one vector
            assert (emb[empty_cells] == emb[empty_cells][0]).all()
    # Storage (dense/sparse, float16/int, view, chunking) never changes the embedding.
    reference = _quiet(
        kbfm.tl.embed_cells,
        _dense_float64(adata),
        encoder=ENCODER,
        cache=False,
        copy=True,
        **{k: v for k, v in options.items() if k != "chunk_size"},
    )
    np.testing.assert_allclose(emb, reference.obsm["X_genetext"], atol=1e-4)


EMBED_CASES = {
    "n_obs": (9, 5, 2, 1, 0),
    "n_vars": (30, 12, 4, 1, 0),
    "spatial": ("none",),
    "names": ("human", "mouse", "ensembl"),
}


@props(30)
@given(
    cases(**EMBED_CASES),
    st.sampled_from(["expression", "relative"]),
    st.sampled_from([10_000, 2, 1]),
    st.booleans(),
)
def test_embed_cells_genept_w_refuses_or_embeds_every_cell(case, weighting, chunk_size, ens):
    check_embed_cells(case, real_ensembl=ens, weighting=weighting, chunk_size=chunk_size)


@props(15)
@given(
    cases(**EMBED_CASES),
    st.sampled_from(["expression", "relative"]),
    st.sampled_from([50, 3, 1]),
)
def test_embed_cells_cell_sentence_refuses_or_embeds_every_cell(case, weighting, top_k):
    check_embed_cells(case, method="cell_sentence", weighting=weighting, top_k=top_k)


@dataclass(frozen=True)
class EmbedArgs:
    """Arguments of :func:`kbfm.tl.embed_cells`, and whether the data has a raw / a layer."""

    method: str = "genept_w"
    weighting: str = "expression"
    top_k: int = 50
    chunk_size: int = 10_000
    layer: str | None = None
    use_raw: bool = False
    has_raw: bool = False
    key_added: str = "X_genetext"


ARG_ERRORS = {
    "method": r"Unknown method 'genept'; choose 'genept_w' or 'cell_sentence'",
    "weighting": r"Unknown weighting 'zscore'; choose 'expression' or 'relative'",
    "positive": r"chunk_size and top_k must be positive",
    "both": r"Pass either layer= or use_raw=True, not both",
    "no_raw": r"use_raw=True but adata\.raw is None",
    "layer": r"Layer 'missing' not found in adata\.layers; available: \['counts'\]",
}


@props(25)
@given(
    cases(n_obs=(5, 2, 1), n_vars=(12, 4), spatial=("none",), names=("human", "mouse")),
    st.builds(
        EmbedArgs,
        method=st.sampled_from(["genept_w", "cell_sentence", "genept"]),
        weighting=st.sampled_from(["expression", "relative", "zscore"]),
        top_k=st.sampled_from([50, 2, 0]),
        chunk_size=st.sampled_from([10_000, 1, 0, -1]),
        layer=st.sampled_from([None, "counts", "missing"]),
        use_raw=st.booleans(),
        has_raw=st.booleans(),
        key_added=st.sampled_from(["X_genetext", "X_other"]),
    ),
)
def test_embed_cells_checks_its_arguments_before_work(case, args):
    adata, _ = build(replace(case, view="none"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.layers["counts"] = adata.X.copy()
        if args.has_raw:
            adata.raw = adata.copy()
    result = _run(
        kbfm.tl.embed_cells,
        [adata],
        adata,
        method=args.method,
        weighting=args.weighting,
        top_k=args.top_k,
        chunk_size=args.chunk_size,
        layer=args.layer,
        use_raw=args.use_raw,
        key_added=args.key_added,
        encoder=ENCODER,
        copy=True,
    )
    allowed, errors = data_refusals(case, adata, args.method)
    # the raw copy and the layer hold X's values: the same data refusals, other names
    allowed = [p.replace(r"adata\.X", r"adata\.(X|raw\.X|layers\['counts'\])") for p in allowed]
    allowed += list(ARG_ERRORS.values())
    errors += [
        args.method == "genept",
        args.weighting == "zscore",
        args.top_k < 1 or args.chunk_size < 1,
        args.use_raw and args.layer is not None,
        args.use_raw and not args.has_raw,
        args.layer == "missing",
    ]
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    emb = result.obsm[args.key_added]
    assert emb.shape == (case.n_obs, DIM) and np.isfinite(emb).all()
    assert result.uns["kbfm"]["embed_cells"]["key_added"] == args.key_added
    _unit_or_zero(emb)


def test_embed_cells_refuses_backed_data_before_work(tmp_path):
    adata, _ = build(Case(n_obs=4, n_vars=8))
    adata.write_h5ad(tmp_path / "spots.h5ad")
    backed = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r")
    try:
        result = _run(kbfm.tl.embed_cells, [backed], backed, encoder=ENCODER, copy=True)
        _check_outcome(
            result, [r"needs the expression matrix in memory.*backed by"], must_fail=True
        )
    finally:
        backed.file.close()


def test_relative_weighting_of_float16_equals_float64():
    """Regression: squares of float16 values above 256 overflowed in the gene statistics."""
    case = Case(n_obs=6, n_vars=15, scale="normalized", dtype="float16")
    check_embed_cells(case, weighting="relative")
    from kbfm.tl.embed_cells import gene_stats

    X = np.array([[300.0, 1.0], [600.0, 1.0], [0.0, 2.0]], dtype=np.float16)
    mean, std = gene_stats(X)
    np.testing.assert_allclose(mean, [300.0, 4 / 3])
    np.testing.assert_allclose(std, np.std(X.astype(np.float64), axis=0))
    X32 = sp.csr_matrix(X.astype(np.float32) * 1e3)  # scipy has no float16; float32 squares
    np.testing.assert_allclose(gene_stats(X32, chunk_size=2)[1], std * 1e3, rtol=1e-12)


# --- tl.query ---------------------------------------------------------------------------

TEXTS = ["T cell", "regulatory T cell", "B cell", "macrophage", "cytotoxic lymphocytes", "!!"]
BAD_TEXTS = ["", "   ", 3]


@dataclass(frozen=True)
class QueryCase:
    """Cell embeddings in ``obsm['X_genetext']`` (and maybe gene text) and the query."""

    n_obs: int = 6
    dim: int = DIM
    rep: str = "dense"
    poison: str = "none"
    zero_row: bool = False
    dup_obs: bool = False
    view: bool = False
    names: str = "human"
    gene_text: str = "none"
    text: object = "T cell"
    use_rep: str = "X_genetext"
    encoder: str = "given"
    ontology_prior: bool = True
    key_added: str | None = None
    seed: int = 0


def build_query(case: QueryCase) -> tuple[AnnData, list[AnnData]]:
    rng = np.random.default_rng(case.seed)
    n_obs = case.n_obs + 2 * case.view
    genes = list(HUMAN_GENES[:12])
    if case.names == "mouse":
        genes = [MOUSE.get(g, g[:1] + g[1:].lower()) for g in genes]
    elif case.names == "ensembl":
        genes = [ENSEMBL.get(g, g) for g in genes]
    cells = np.round(rng.normal(size=(n_obs, case.dim)), 1)  # whole numbers once x10
    if n_obs >= 2:
        cells[1] = 2 * cells[0]  # the same direction: the same score
    if case.zero_row and n_obs:
        cells[-1] = 0
    if case.poison != "none" and case.n_obs:
        cells[case.n_obs - 1, 0] = np.nan if case.poison == "nan" else np.inf
    obs_names = [f"cell{i}" for i in range(n_obs)]
    if case.dup_obs and n_obs >= 2:
        obs_names[1] = obs_names[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = AnnData(
            np.ones((n_obs, len(genes)), dtype=np.float32),
            obs=pd.DataFrame(index=pd.Index(obs_names, dtype=object)),
            var=pd.DataFrame(index=genes),
        )
    adata.obsm["X_genetext"] = {
        "dense": lambda c: c.astype(np.float32),
        "float16": lambda c: c.astype(np.float16),
        "int": lambda c: np.rint(np.nan_to_num(c * 10, posinf=0)).astype(np.int64),
        "dataframe": lambda c: pd.DataFrame(c, index=adata.obs_names),
        "csr": sp.csr_matrix,
    }[case.rep](cells)
    adata.uns["kbfm"] = {"embed_cells": {"encoder": ENCODER.name}}
    if case.gene_text != "none":
        width = 8 if case.gene_text == "other_dim" else DIM
        gene_text = rng.normal(size=(len(genes), width)).astype(np.float32)
        gene_text[-1] = 0
        if case.gene_text == "nan":
            gene_text[:, 0] = np.nan
        adata.varm["kbfm_gene_text"] = gene_text
        if case.gene_text != "no_flags":
            adata.var["kbfm_has_knowledge"] = np.arange(len(genes)) < len(genes) - 1
    if case.view:
        return adata[: case.n_obs], [adata[: case.n_obs], adata]
    return adata, [adata]


@st.composite
def query_cases(draw, *, hostile: bool) -> QueryCase:
    pick = st.sampled_from
    return QueryCase(
        n_obs=draw(pick([6, 3, 1, 0] if hostile else [6, 3, 1])),
        dim=draw(pick([DIM, 8] if hostile else [DIM])),
        rep=draw(pick(["dense", "float16", "int", "dataframe", "csr"])),
        poison=draw(pick(["none", "nan", "inf"] if hostile else ["none"])),
        zero_row=draw(st.booleans()),
        dup_obs=draw(st.booleans()),
        view=draw(st.booleans()),
        names=draw(pick(["human", "mouse", "ensembl"])),
        gene_text=draw(
            pick(["none", "same", "no_flags", "other_dim", "nan"] if hostile else ["none", "same"])
        ),
        text=draw(pick(TEXTS + BAD_TEXTS if hostile else TEXTS)),
        use_rep=draw(pick(["X_genetext", "X_missing"] if hostile else ["X_genetext"])),
        encoder=draw(pick(["given", "recorded"] if hostile else ["given"])),
        ontology_prior=draw(st.booleans()),
        key_added=draw(pick([None, "score"])),
        seed=draw(st.integers(0, 2**16)),
    )


def _slug(text: str) -> str:
    return "kbfm_query_" + (re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "text")


def check_query(case: QueryCase) -> None:
    adata, keep = build_query(case)
    encoder = ENCODER if case.encoder == "given" else None
    result = _run(
        kbfm.tl.query,
        keep,
        adata,
        case.text,
        use_rep=case.use_rep,
        encoder=encoder,
        ontology_prior=case.ontology_prior,
        key_added=case.key_added,
        copy=True,
    )
    allowed = [
        r"query text must be a non-empty string",
        r"adata\.obsm\['X_missing'\] not found; run kbfm\.tl\.embed_cells",
        r"Unknown text encoder 'tiny-words'",
        rf"Encoder 'tiny-words' gives {DIM}-d vectors but obsm\['X_genetext'\] is 8-d",
        r"adata\.obsm\['X_genetext'\] holds \d+ NaN or infinite values",
        # gene text the marker prior would use (only for a Cell Ontology term)
        rf"are 8-d and encoder 'tiny-words' gives {DIM}-d vectors; rerun kbfm\.tl\.embed_genes",
        r"adata\.varm\['kbfm_gene_text'\] \(marker genes of CL:\d+\) holds \d+ NaN",
    ]
    errors = [
        not isinstance(case.text, str) or not case.text.strip(),
        case.use_rep == "X_missing",
        case.encoder == "recorded",
        case.dim != DIM,
        case.poison != "none" and case.rep != "int" and case.n_obs > 0,
    ]
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    key = case.key_added or _slug(case.text)
    scores = result.obs[key].to_numpy()
    assert scores.dtype == np.float32 and scores.shape == (case.n_obs,)
    assert np.isfinite(scores).all() and (np.abs(scores) <= 1 + 1e-5).all()
    assert list(result.obs_names) == list(adata.obs_names)
    if case.n_obs >= 2:
        assert math.isclose(scores[0], scores[1], abs_tol=1e-5), "cosine depends on the norm"
    record = result.uns["kbfm"][f"query_{key}"]
    assert record["text"] == case.text and record["use_rep"] == "X_genetext"
    prior = record["ontology_prior"]
    assert prior == "" or prior.startswith("CL:")
    if not case.ontology_prior or case.gene_text == "none":
        assert prior == ""
    if prior == "":  # the plain cosine with the encoded text
        vec = ENCODER.encode([case.text])[0]
        cells = np.asarray(_values(adata.obsm["X_genetext"]), dtype=np.float64)
        norms = np.maximum(np.linalg.norm(cells, axis=1), 1e-12)
        np.testing.assert_allclose(scores, cells @ vec / norms, atol=1e-4)


@props(40)
@given(st.one_of(query_cases(hostile=False), query_cases(hostile=True)))
def test_query_refuses_or_scores_every_cell(case):
    check_query(case)


@pytest.mark.parametrize(
    "case",
    [
        QueryCase(rep="csr"),  # np.asarray of a sparse matrix raised ValueError
        QueryCase(poison="nan"),  # NaN scores were written to obs
        QueryCase(gene_text="other_dim"),  # (8,) + (16,) broadcast ValueError
        QueryCase(gene_text="no_flags"),  # KeyError 'kbfm_has_knowledge'
        QueryCase(gene_text="nan", text="B cell"),  # NaN query vector, NaN scores
    ],
    ids=["sparse-obsm", "nan-obsm", "gene-text-other-dim", "gene-text-no-flags", "nan-gene-text"],
)
def test_query_regressions_found_by_the_properties(case):
    check_query(case)


def test_query_on_backed_data(tmp_path):
    """Regression: copy=True on a backed AnnData raised anndata's ValueError."""
    adata, _ = build_query(QueryCase())
    adata.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    try:
        result = _run(kbfm.tl.query, [backed], backed, "T cell", encoder=ENCODER, copy=True)
        _check_outcome(result, [r"copy=True cannot copy an AnnData backed by"], must_fail=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kbfm.tl.query(backed, "T cell", encoder=ENCODER, key_added="t")
        assert backed.obs["t"].shape == (6,) and np.isfinite(backed.obs["t"]).all()
    finally:
        backed.file.close()


# --- tl.embed_image ---------------------------------------------------------------------

SLIDE_W, SLIDE_H, FIELD_UM = 400, 300, 112.0
IMAGE_DIM = 84  # the color-texture encoder


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    """A small H&E-like PNG (no resolution metadata: mpp must be passed)."""
    from _histology import texture_image
    from PIL import Image

    path = tmp_path_factory.mktemp("he") / "he.png"
    Image.fromarray(texture_image(SLIDE_W, SLIDE_H)).save(path)
    return path


@dataclass(frozen=True)
class ImageCase:
    """Spots (from :class:`Case`) on the generated slide and the embed_image arguments."""

    n_obs: int = 4
    n_vars: int = 3
    spatial: str = "grid"
    dup_obs: bool = False
    view: bool = False
    mpp: float | None = 0.5
    context: tuple[float, ...] = (1.0,)
    stain_norm: str | None = None
    key_added: str = "X_image"


IMAGE_SPATIAL = ("grid", "grid_int", "three_columns", "stacked")
IMAGE_SPATIAL_BAD = ("none", "nan", "inf", "one_column", "off")


def build_spots(case: ImageCase) -> tuple[AnnData, list[AnnData]]:
    n_obs = case.n_obs + 2 * case.view
    spatial = "grid" if case.spatial == "off" else case.spatial
    adata, _ = build(Case(n_obs=n_obs, n_vars=case.n_vars, spatial=spatial, dup_obs=case.dup_obs))
    if case.spatial == "off" and case.n_obs:
        adata.obsm["spatial"][case.n_obs - 1] = [50 * SLIDE_W, 50.0]
    if case.view:
        return adata[: case.n_obs], [adata[: case.n_obs], adata]
    return adata, [adata]


@st.composite
def image_cases(draw, *, hostile: bool) -> ImageCase:
    pick = st.sampled_from
    return ImageCase(
        n_obs=draw(pick([9, 4, 1, 0] if hostile else [9, 4, 1])),
        n_vars=draw(pick([3, 0] if hostile else [3])),
        spatial=draw(pick(IMAGE_SPATIAL + IMAGE_SPATIAL_BAD if hostile else IMAGE_SPATIAL)),
        dup_obs=draw(st.booleans()),
        view=draw(st.booleans()),
        mpp=draw(pick([0.5, 1.0, None, 0.0, -1.0, math.nan] if hostile else [0.5, 1.0])),
        context=draw(pick([(1.0,), (1.0, 0.5), (), (0.0,)] if hostile else [(1.0,), (1.0, 0.5)])),
        stain_norm=draw(pick([None, "reinhard", "macenko"] if hostile else [None, "reinhard"])),
        key_added=draw(pick(["X_image", "X_he"])),
    )


def _expected_pad(centers: np.ndarray, field: float) -> np.ndarray:
    """Part of a ``field`` x ``field`` square around each centre outside the slide."""
    lo, hi = centers - field / 2, centers + field / 2
    inside_w = np.clip(np.minimum(hi[:, 0], SLIDE_W) - np.maximum(lo[:, 0], 0), 0, None)
    inside_h = np.clip(np.minimum(hi[:, 1], SLIDE_H) - np.maximum(lo[:, 1], 0), 0, None)
    return 1 - inside_w * inside_h / field**2


def check_embed_image(case: ImageCase, slide: Path) -> None:
    adata, keep = build_spots(case)
    result = _run(
        kbfm.tl.embed_image,
        keep,
        adata,
        slide=slide,
        model="color-texture",
        mpp=case.mpp,
        context=case.context,
        stain_norm=case.stain_norm,
        key_added=case.key_added,
        copy=True,
        repeat=case.key_added,
        facts="image/slides/",
    )
    allowed = [
        EMPTY,  # also for spots without genes (n_vars=0), though no gene is read
        r"mpp must be a positive number of microns per pixel",
        r"context must be positive field-of-view multipliers",
        r"stain_norm must be None or 'reinhard', got 'macenko'",
        r"mpp=",
        r"outside",
    ]
    spots = case.n_obs > 0 and case.n_vars > 0
    errors = [
        not spots,
        case.mpp is not None and not case.mpp > 0,
        not case.context or min(case.context) <= 0,
        case.stain_norm == "macenko",
        case.mpp is None,
        case.spatial == "off",
    ]
    if case.spatial in SPATIAL_ERRORS:
        allowed.append(SPATIAL_ERRORS[case.spatial])
        errors.append(spots)
    if not _check_outcome(result, allowed, must_fail=any(errors)):
        return
    emb = result.obsm[case.key_added]
    width = IMAGE_DIM * len(case.context)
    assert emb.dtype == np.float32 and emb.shape == (case.n_obs, width)
    assert np.isfinite(emb).all()
    assert list(result.obs_names) == list(adata.obs_names)
    centers = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]
    pad = result.obs["kbfm_image_pad_fraction"].to_numpy()
    np.testing.assert_allclose(pad, _expected_pad(centers, FIELD_UM / case.mpp), atol=1e-5)
    tissue = result.obs["kbfm_image_tissue_fraction"].to_numpy()
    assert ((tissue >= 0) & (tissue <= 1)).all()
    same_place = (centers[:, None] == centers[None]).all(-1)
    for i, j in zip(*np.nonzero(same_place), strict=True):
        np.testing.assert_allclose(emb[i], emb[j], atol=1e-6, err_msg="same spot, other patch")
    record = result.uns["kbfm"]["embed_image"]
    assert record["dim"] == width and record["key_added"] == case.key_added
    assert record["context"] == list(case.context) and record["stain_norm"] == str(case.stain_norm)
    assert record["slide_mpp"] == case.mpp and record["mpp_source"] == "user"


@props(20)
@given(st.one_of(image_cases(hostile=False), image_cases(hostile=True)))
def test_embed_image_refuses_or_embeds_every_spot(slide, case):
    check_embed_image(case, slide)


def test_embed_image_on_backed_spots(slide, tmp_path):
    """Regression: copy=True on a backed AnnData raised anndata's ValueError."""
    adata, _ = build_spots(ImageCase())
    adata.write_h5ad(tmp_path / "spots.h5ad")
    backed = ad.read_h5ad(tmp_path / "spots.h5ad", backed="r")
    try:
        result = _run(
            kbfm.tl.embed_image,
            [backed],
            backed,
            slide=slide,
            model="color-texture",
            mpp=0.5,
            copy=True,
        )
        if isinstance(result, KbfmInputError):
            _check_outcome(result, [r"backed"], must_fail=True)
        else:
            assert result.obsm["X_image"].shape == (4, IMAGE_DIM)
    finally:
        backed.file.close()


# --- tl.fit_expression_predictor / predict_expression (public API only) ----------------


@dataclass(frozen=True)
class PredictCase:
    """Expression (a :class:`Case`), image features in ``obsm['X_image']`` and options."""

    features: str = "dense"
    n_genes: int = 3
    n_pcs: int = 4
    alpha: float | None = None


def build_features(case: Case, pcase: PredictCase) -> tuple[AnnData, list[AnnData]]:
    adata, keep = build(replace(case, view="none", spatial="grid"))
    rng = np.random.default_rng(case.seed)
    feats = rng.normal(size=(adata.n_obs, 6))
    if pcase.features == "nan" and adata.n_obs:
        feats[0, 0] = np.nan
    if pcase.features != "missing":
        adata.obsm["X_image"] = feats.astype(np.float16 if pcase.features == "float16" else float)
    return adata, keep


PREDICT_REFUSALS = [
    EMPTY,
    NOT_FINITE,
    REPEATED,
    r"adata\.X holds negative values",
    r"adata\.obsm\['X_image'\] holds NaN or infinite values",
    r"adata\.obsm\['X_image'\] is missing \(available: \['spatial'\]\); run kbfm\.im\.embed_image",
    r"Need at least 2 training spots to fit, got 1",
    r"2-fold cross-validation over spots needs at least 2 spots; adata has 1\.",
]


def _predict_errors(case: Case, pcase: PredictCase, adata: AnnData) -> list[bool]:
    return [
        case.empty,
        _not_finite(adata),
        case.repeated_genes,
        case.negative,
        pcase.features in ("missing", "nan"),
        case.n_obs == 1,
    ]


def _check_predictions(
    pred: object, n_obs: int, genes: list[str], var_names, *, out_of_fold: bool = False
) -> None:
    """Spots x genes predictions; out of fold, NaN where a spot's fold skipped the gene."""
    assert isinstance(pred, pd.DataFrame) and pred.shape == (n_obs, len(genes))
    assert list(pred.columns) == list(genes) and set(genes) <= set(var_names)
    values = pred.to_numpy(dtype=float)
    if out_of_fold:
        assert not np.isinf(values).any() and np.isfinite(values).any(axis=1).all()
    else:
        assert np.isfinite(values).all()


def check_predictor(case: Case, pcase: PredictCase) -> None:
    adata, keep = build_features(case, pcase)
    fit = _run(
        kbfm.tl.fit_expression_predictor,
        keep,
        adata,
        n_genes=pcase.n_genes,
        n_pcs=pcase.n_pcs,
        alpha=pcase.alpha,
    )
    if not _check_outcome(
        fit, PREDICT_REFUSALS, must_fail=any(_predict_errors(case, pcase, adata))
    ):
        return
    assert 1 <= len(fit.genes) <= min(pcase.n_genes, case.n_vars)
    new = AnnData(np.zeros((adata.n_obs, 1), dtype=np.float32))  # an image-only slide
    new.obsm["X_image"] = np.asarray(adata.obsm["X_image"])
    fit.predict(new)
    _check_predictions(
        new.obsm["kbfm_predicted_expression"], case.n_obs, fit.genes, adata.var_names
    )


def check_cross_validated(case: Case, pcase: PredictCase) -> None:
    adata, keep = build_features(case, pcase)
    result = _run(
        kbfm.tl.predict_expression,
        keep,
        adata,
        n_genes=pcase.n_genes,
        n_pcs=pcase.n_pcs,
        alpha=pcase.alpha,
        n_splits=2,
        copy=True,
    )
    errors = _predict_errors(case, pcase, adata)
    if not _check_outcome(result, PREDICT_REFUSALS, must_fail=any(errors)):
        return
    report = result.uns["kbfm_predict_expression"]
    pred = result.obsm["kbfm_predicted_expression"]
    _check_predictions(pred, case.n_obs, list(pred.columns), adata.var_names, out_of_fold=True)
    assert set(report["genes"]) == set(pred.columns)
    r = report["pearson"].to_numpy(dtype=float)
    assert (np.isnan(r) | (np.abs(r) <= 1 + 1e-6)).all()


PREDICT_CASES = cases(n_obs=(9, 4, 2, 0), n_vars=(8, 2, 0), spatial=("grid",), names=("human",))
PREDICT_OPTIONS = st.builds(
    PredictCase,
    features=st.sampled_from(["dense", "float16", "nan", "missing"]),
    n_genes=st.sampled_from([3, 1, 50]),
    n_pcs=st.sampled_from([4, 1, 256]),
    alpha=st.sampled_from([None, 1.0]),
)


@pytest.mark.slow
@props(10)
@given(PREDICT_CASES, PREDICT_OPTIONS)
def test_fit_expression_predictor_refuses_or_predicts_every_spot(case, pcase):
    check_predictor(case, pcase)


@pytest.mark.slow
@props(10)
@given(PREDICT_CASES, PREDICT_OPTIONS)
def test_predict_expression_refuses_or_scores_every_spot(case, pcase):
    check_cross_validated(case, pcase)


def test_fit_expression_predictor_on_one_spot_is_refused():
    check_predictor(Case(n_obs=1, spatial="grid"), PredictCase())


def test_predict_expression_on_one_spot_is_refused():
    check_cross_validated(Case(n_obs=1, spatial="grid"), PredictCase())
