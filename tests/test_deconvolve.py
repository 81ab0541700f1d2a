"""deconvolve on generated mixtures with known proportions, and its input errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _paths import SHARED as SHARED_PATH
from anndata import AnnData

from kbfm._errors import KbfmInputError
from kbfm.tl.deconvolve import _inputs as _deconv_inputs
from kbfm.tl.deconvolve import deconvolve
from kbfm.tl.deconvolve._signatures import smooth_signatures

SHARED = SHARED_PATH
LYMPH = SHARED / "deconv" / "spacexr"


def make_pair(*, n_types=4, n_genes=300, n_ref=25, n_spots=60, platform_sd=0.3, seed=0):
    """Reference cells and spots mixing 2-10 of them, with a gene platform effect.

    Each type over-expresses its own block of 20 genes (``G{20k}..G{20k+19}``) 8-fold.
    Returns ``(spots, reference, true_proportions, log_platform_effect)``.
    """
    rng = np.random.default_rng(seed)
    types = [f"type{k}" for k in range(n_types)]
    prof = np.tile(rng.gamma(0.6, 1.0, n_genes) + 0.05, (n_types, 1))
    for k in range(n_types):
        prof[k, 20 * k : 20 * k + 20] *= 8.0
    prof /= prof.sum(1, keepdims=True)
    size = rng.uniform(0.7, 1.5, n_types) * 2000

    def cells(k, n):
        mu = size[k] * prof[k]
        return rng.negative_binomial(5, 5 / (5 + mu), size=(n, n_genes))

    genes = [f"G{i}" for i in range(n_genes)]
    reference = AnnData(sp.csr_matrix(np.vstack([cells(k, n_ref) for k in range(n_types)])))
    reference.X = reference.X.astype(np.float32)
    reference.obs["cell_type"] = np.repeat(types, n_ref)
    reference.var_names = genes
    truth, Y = np.zeros((n_spots, n_types)), np.zeros((n_spots, n_genes))
    log_platform = rng.normal(0, platform_sd, n_genes)
    for i in range(n_spots):
        ks = rng.choice(n_types, size=rng.integers(2, 11), p=rng.dirichlet(np.ones(n_types)))
        for k in ks:
            truth[i, k] += 1
            Y[i] += cells(k, 1)[0]
    truth /= truth.sum(1, keepdims=True)
    spots = AnnData(sp.csr_matrix(rng.poisson(Y * np.exp(log_platform) * 0.5).astype(np.float32)))
    spots.var_names = genes
    return spots, reference, truth, log_platform


def rmse(a, b):
    return float(np.sqrt(((np.asarray(a) - b) ** 2).mean()))


@pytest.fixture(scope="module")
def pair():
    return make_pair()


def test_nnls_recovers_proportions(pair):
    spots, reference, truth, _ = pair
    out = deconvolve(spots, reference, method="nnls", copy=True)
    P = out.obsm["kbfm_proportions"]
    assert list(P.columns) == ["type0", "type1", "type2", "type3"]
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-6)
    assert rmse(P, truth) < 0.08
    assert "kbfm_proportions" not in spots.obsm  # copy=True leaves the input alone


def test_count_model_recovers_proportions_and_platform_effects(pair):
    spots, reference, truth, log_platform = pair
    out = deconvolve(spots, reference, method="poisson", n_epochs=400, copy=True)
    P = out.obsm["kbfm_proportions"].to_numpy()
    assert rmse(P, truth) < 0.05
    assert np.corrcoef(P.ravel(), truth.ravel())[0, 1] > 0.97
    used = out.var["kbfm_proportions_used"].to_numpy()
    gamma = out.var["kbfm_proportions_platform_effect"].to_numpy()[used]
    assert np.corrcoef(gamma, log_platform[used])[0, 1] > 0.6
    step = out.uns["kbfm"]["deconvolve"]
    assert step["method"] == "poisson"
    assert step["gene_match"]["n_shared"] == 300
    assert step["n_genes_used"] == int(used.sum()) == len(step["genes_used"])


def test_poisson_likelihood_option(pair):
    spots, reference, truth, _ = pair
    out = deconvolve(spots, reference, likelihood="poisson", n_epochs=300, copy=True)
    assert rmse(out.obsm["kbfm_proportions"], truth) < 0.06


def test_zero_shot_from_markers_without_reference(pair):
    spots, _, truth, _ = pair
    markers = {f"type{k}": [f"G{i}" for i in range(20 * k, 20 * k + 20)] for k in range(4)}
    out = deconvolve(spots, method="knowledge", markers=markers, n_epochs=400, copy=True)
    P = out.obsm["kbfm_proportions"].to_numpy()
    assert np.corrcoef(P.ravel(), truth.ravel())[0, 1] > 0.9
    assert out.uns["kbfm"]["deconvolve"]["mode"] == "zero-shot"


def test_smoothing_pulls_poorly_measured_genes_towards_text_neighbours():
    # Genes 0-2 share a description direction; gene 2 is barely measured and its profile
    # is wrong; genes 3-4 are elsewhere.
    S = np.array([[9.0, 8.0, 0.0, 1.0, 1.0], [1.0, 2.0, 5.0, 9.0, 9.0]])
    emb = np.array([[1, 0], [0.95, 0.05], [0.9, 0.1], [0, 1], [0.05, 0.95]], dtype=float)
    reliability = np.array([500.0, 500.0, 2.0, 500.0, 500.0])
    out, report = smooth_signatures(S, reliability, emb, np.ones(5, bool), smoothing=20)
    np.testing.assert_allclose(out.sum(0), S.sum(0))  # totals kept
    assert out[0, 2] / out[:, 2].sum() > 0.7  # now looks like genes 0-1
    assert abs(out[0, 0] - S[0, 0]) < 0.5  # well-measured genes barely move
    assert report["n_smoothed"] >= 1


def test_knowledge_variant_with_text_neighbours(pair, monkeypatch):
    spots, reference, truth, _ = pair
    from kbfm.knowledge import _gene_vectors

    def fake_vectors(names, **_):
        # Genes of one marker block get similar "descriptions".
        idx = np.array([int(n[1:]) for n in names])
        block = np.minimum(idx // 20, 5)
        M = np.eye(6)[block] + 0.01 * np.random.default_rng(0).normal(size=(len(names), 6))
        return _gene_vectors.GeneVectors(
            M.astype(np.float32), np.ones(len(names), bool), list(names), None, {"source": "fake"}
        )

    monkeypatch.setattr(_gene_vectors, "gene_vectors", fake_vectors)
    out = deconvolve(spots, reference, method="knowledge", n_epochs=400, copy=True)
    assert rmse(out.obsm["kbfm_proportions"], truth) < 0.05
    report = out.uns["kbfm"]["deconvolve"]["signature_smoothing"]
    assert report["n_with_knowledge"] > 0


def test_knowledge_variant_skips_text_work_when_every_gene_is_well_measured(pair, monkeypatch):
    spots, reference, _, _ = pair
    from kbfm.knowledge import _gene_vectors

    def must_not_run(*args, **kwargs):
        raise AssertionError("gene text was embedded although smoothing changes nothing")

    monkeypatch.setattr(_gene_vectors, "gene_vectors", must_not_run)
    # smoothing=0.5: a gene borrows 0.5 / (0.5 + counts) of its profile; every selected
    # gene has >= 10 reference counts here, so the weight is < 5% everywhere.
    kw = {"n_epochs": 300, "copy": True, "seed": 0}
    out = deconvolve(spots, reference, method="knowledge", smoothing=0.5, **kw)
    report = out.uns["kbfm"]["deconvolve"]["signature_smoothing"]
    assert report["skipped"] is True and "enough reference counts" in report["reason"]
    plain = deconvolve(spots, reference, method="poisson", **kw)
    np.testing.assert_allclose(
        np.asarray(out.obsm["kbfm_proportions"]), np.asarray(plain.obsm["kbfm_proportions"])
    )


def test_error_missing_label_column(pair):
    spots, reference, _, _ = pair
    with pytest.raises(KbfmInputError, match=r"no obs\['celltype'\].*Did you mean"):
        deconvolve(spots, reference, label_key="celltype", method="nnls")


def test_error_one_cell_per_type(pair):
    spots, reference, _, _ = pair
    small = reference[[0, 30, 60, 80]].copy()
    with pytest.raises(KbfmInputError, match="fewer than 2 reference cells"):
        deconvolve(spots, small, method="nnls")


def test_error_no_shared_genes(pair):
    spots, reference, _, _ = pair
    other = reference.copy()
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    with pytest.raises(KbfmInputError, match="Only 0 genes are shared"):
        deconvolve(spots, other, method="nnls")


def test_error_negative_values(pair):
    spots, reference, _, _ = pair
    bad = spots.copy()
    bad.X = bad.X.toarray() - 1.0
    with pytest.raises(KbfmInputError, match="negative values"):
        deconvolve(bad, reference, method="nnls")


def test_error_log_transformed_spatial_passed_as_counts(pair):
    spots, reference, _, _ = pair
    logged = spots.copy()
    X = logged.X.toarray()
    logged.X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    with pytest.raises(KbfmInputError, match=r"looks log-transformed.*layer="):
        deconvolve(logged, reference)


def test_error_species_without_orthologs(pair, monkeypatch):
    spots, reference, _, _ = pair
    monkeypatch.setattr(
        _deconv_inputs, "_convert_orthologs", lambda names, source, target: [None] * len(names)
    )
    with pytest.raises(KbfmInputError, match="looks human and the reference mouse"):
        deconvolve(spots, reference, method="nnls", reference_species="mouse")


def test_error_method_without_reference(pair):
    spots, _, _, _ = pair
    with pytest.raises(KbfmInputError, match="needs reference="):
        deconvolve(spots, method="poisson")
    with pytest.raises(KbfmInputError, match="Did you mean"):
        deconvolve(spots, method="nnl")


@pytest.mark.skipif(not LYMPH.exists(), reason=f"shared data not found at {LYMPH}")
def test_lymph_node_pair_runs():
    import anndata as ad

    ref = ad.read_h5ad(LYMPH / "Reference" / "Visium_Lymph_Ref" / "ref_downsampled.h5ad")
    spots = ad.read_h5ad(LYMPH / "SpatialRNA" / "VisiumLymphVignette" / "visium_lymph.h5ad")
    deconvolve(spots, ref, method="poisson", n_epochs=200)
    P = spots.obsm["kbfm_proportions"]
    assert P.shape == (1000, 11)
    # B and T cells dominate lymph node spots.
    top = P.mean().sort_values(ascending=False).index[:4]
    assert {"B", "T_CD4"} & set(top)


def test_zero_shot_with_cell_ontology_markers():
    from kbfm.knowledge import CellOntology, marker_sets

    names = ["B cell", "macrophage", "natural killer cell"]
    onto = CellOntology.load()
    sets = marker_sets(cell_types=names, ontology=onto)
    markers = [sets[onto.term(n).id] for n in names]
    rng = np.random.default_rng(0)
    genes = sorted({g for m in markers for g in m}) + [f"BG{i}" for i in range(50)]
    truth = rng.dirichlet(np.ones(3) * 0.7, size=80)
    base = rng.gamma(2.0, 1.0, len(genes))
    lift = np.zeros((3, len(genes)))
    for k, m in enumerate(markers):
        lift[k, [genes.index(g) for g in m]] = 6.0
    mu = 20 * base * (1 + truth @ lift)
    spots = AnnData(sp.csr_matrix(rng.poisson(mu).astype(np.float32)))
    spots.var_names = genes
    deconvolve(spots, method="knowledge", cell_types=names, n_epochs=400)
    P = spots.obsm["kbfm_proportions"][names].to_numpy()
    assert np.corrcoef(P.ravel(), truth.ravel())[0, 1] > 0.8
    step = spots.uns["kbfm"]["deconvolve"]
    assert step["cl_ids"]["B cell"] == "CL:0000236"


def test_mouse_spatial_against_human_reference_through_orthologs():
    from kbfm.knowledge import human_to_mouse, marker_table

    human = list(dict.fromkeys(marker_table("human")["gene"]))
    mapping = human_to_mouse(human)
    by_mouse = {}  # one human gene per mouse gene: names must be unique in an AnnData
    for h in human:
        if h in mapping:
            by_mouse.setdefault(mapping[h], h)
    pairs = [(h, m) for m, h in by_mouse.items()][:120]
    spots, reference, truth, _ = make_pair(n_genes=len(pairs), n_spots=40)
    reference.var_names = [h for h, _ in pairs]
    spots.var_names = [m for _, m in pairs]
    deconvolve(spots, reference, method="poisson", n_epochs=300)
    step = spots.uns["kbfm"]["deconvolve"]
    assert step["gene_match"]["how"] == "orthologs"
    assert step["gene_match"]["species"] == "mouse"
    assert rmse(spots.obsm["kbfm_proportions"], truth) < 0.08


def _same_deconvolution(a, b):
    np.testing.assert_array_equal(a.obsm["kbfm_proportions"], b.obsm["kbfm_proportions"])
    assert (
        a.obsm["kbfm_proportions"].columns.tolist() == b.obsm["kbfm_proportions"].columns.tolist()
    )
    assert a.var.equals(b.var)
    first, second = (dict(x.uns["kbfm"]["deconvolve"]) for x in (a, b))
    first.pop("timestamp"), second.pop("timestamp")
    assert first == second


@pytest.mark.parametrize(
    ("method", "function", "kw"),
    [
        ("nnls", "deconvolve_nnls", {}),
        ("poisson", "deconvolve_poisson", {"n_epochs": 50, "seed": 1}),
        ("knowledge", "deconvolve_knowledge", {"n_epochs": 50, "smoothing": 0.5}),
    ],
)
def test_method_function_equals_the_dispatcher(pair, method, function, kw):
    import kbfm

    spots, reference, _, _ = pair
    via_dispatcher = deconvolve(spots, reference, method=method, copy=True, **kw)
    direct = getattr(kbfm.tl, function)(spots, reference, copy=True, **kw)
    _same_deconvolution(via_dispatcher, direct)


def test_zero_shot_function_equals_the_dispatcher(pair):
    from kbfm.tl import deconvolve_knowledge

    spots, _, _, _ = pair
    markers = {f"type{k}": [f"G{i}" for i in range(20 * k, 20 * k + 20)] for k in range(4)}
    kw = {"markers": markers, "n_epochs": 50, "copy": True}
    _same_deconvolution(
        deconvolve(spots, method="knowledge", **kw), deconvolve_knowledge(spots, **kw)
    )


def test_dispatcher_refuses_an_option_of_another_method(pair):
    spots, reference, _, _ = pair
    with pytest.raises(KbfmInputError, match=r"n_epochs=200 \(method='poisson' or method='kn"):
        deconvolve(spots, reference, method="nnls", n_epochs=200)
    with pytest.raises(KbfmInputError, match=r"smoothing=5.0 \(method='knowledge'\)"):
        deconvolve(spots, reference, method="poisson", smoothing=5.0)
    assert "kbfm" not in spots.uns  # refused before any work


def test_method_functions_take_only_their_own_options(pair):
    from kbfm.tl import deconvolve_nnls

    spots, reference, _, _ = pair
    with pytest.raises(TypeError, match="n_epochs"):
        deconvolve_nnls(spots, reference, n_epochs=10)
    with pytest.raises(KbfmInputError, match="needs reference="):
        deconvolve_nnls(spots, None)


def test_knowledge_refuses_options_of_the_other_mode(pair):
    """Zero-shot ignores reference options, and a reference ignores cell_types: refused."""
    from kbfm.tl import deconvolve_knowledge

    spots, reference, _, _ = pair
    markers = {f"type{k}": [f"G{i}" for i in range(20 * k, 20 * k + 20)] for k in range(4)}
    with pytest.raises(KbfmInputError, match="does not use n_genes_per_type, smoothing"):
        deconvolve_knowledge(spots, markers=markers, n_genes_per_type=50, smoothing=5.0)
    with pytest.raises(KbfmInputError, match="does not use genes"):
        deconvolve(spots, method="knowledge", markers=markers, genes=["G1", "G2"])
    with pytest.raises(KbfmInputError, match="cell_types only apply zero-shot"):
        deconvolve_knowledge(spots, reference, cell_types=["B cell"])
    assert "kbfm" not in spots.uns  # refused before any work
