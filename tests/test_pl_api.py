"""Every kbfm.pl plot takes scanpy's ax= / show= / save= / return_fig= and means the same."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from _histology import spots_adata, texture_image, write_pyramid
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from test_pp_qc import make_spots

import kbfm
from kbfm._errors import KbfmInputError
from kbfm.pl import _save

PLOTS = [
    "embedding_panels",
    "patch_mosaic",
    "proportions",
    "qc_metrics",
    "qc_spatial",
    "spatial_scatter",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Small generated spots with an embedding, proportions, QC results and a slide."""
    spots = spots_adata(step=200)
    rng = np.random.default_rng(0)
    spots.obsm["X_umap"] = rng.normal(size=(spots.n_obs, 2))
    spots.obs["score"] = rng.random(spots.n_obs)
    spots.obsm["kbfm_proportions"] = pd.DataFrame(
        rng.dirichlet(np.ones(3), spots.n_obs), index=spots.obs_names, columns=["A", "B", "C"]
    )
    qc = kbfm.pp.auto_qc(make_spots(8, 8), copy=True)
    slide = write_pyramid(tmp_path_factory.mktemp("slide") / "tex.tif", texture_image())
    return {"spots": spots, "qc": qc, "slide": slide}


def draw(name: str, data: dict, **kwargs):
    """Call kbfm.pl.<name> on the generated data."""
    spots, qc = data["spots"], data["qc"]
    calls = {
        "embedding_panels": lambda: kbfm.pl.embedding_panels(
            spots, color=["region", "score"], **kwargs
        ),
        "patch_mosaic": lambda: kbfm.pl.patch_mosaic(
            spots, n=4, ncols=2, slide=data["slide"], **kwargs
        ),
        "proportions": lambda: kbfm.pl.proportions(spots, **kwargs),
        "qc_metrics": lambda: kbfm.pl.qc_metrics(qc, **kwargs),
        "qc_spatial": lambda: kbfm.pl.qc_spatial(qc, **kwargs),
        "spatial_scatter": lambda: kbfm.pl.spatial_scatter(spots, "region", **kwargs),
    }
    return calls[name]()


def n_panels(name: str, data: dict) -> int:
    if name == "qc_metrics":  # one histogram per QC metric auto_qc wrote
        metrics = ("total_counts", "n_genes", "pct_mito", "pct_ribo", "pct_hb")
        return sum(f"kbfm_qc_{m}" in data["qc"].obs for m in metrics)
    return {"embedding_panels": 2, "patch_mosaic": 4, "proportions": 3}.get(name, 1)


@pytest.fixture(autouse=True)
def no_figures_left():
    yield
    plt.close("all")


@pytest.fixture
def shows(monkeypatch):
    """Count plt.show() calls instead of showing."""
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    return calls


def drawn(ax: Axes) -> bool:
    return bool(ax.collections or ax.images or ax.patches)


@pytest.mark.parametrize("name", PLOTS)
def test_ax_draws_into_the_given_axes(name, data):
    n = n_panels(name, data)
    fig, axes = plt.subplots(1, n, squeeze=False)
    before = plt.get_fignums()
    ax = axes[0, 0] if n == 1 else axes[0]
    result = draw(name, data, ax=ax, show=False, return_fig=True)
    assert result is fig
    assert all(drawn(a) for a in axes[0])
    assert plt.get_fignums() == before  # no new figure, the caller's stays open


@pytest.mark.parametrize("name", PLOTS)
def test_ax_with_too_few_axes_names_the_function(name, data):
    n = n_panels(name, data)
    if n == 1:
        with pytest.raises(KbfmInputError, match=f"kbfm.pl.{name}: ax= must be"):
            draw(name, data, ax="not axes")
        return
    _, axes = plt.subplots(1, n - 1, squeeze=False)
    with pytest.raises(KbfmInputError, match=f"kbfm.pl.{name}: draws {n} panels"):
        draw(name, data, ax=axes[0])


@pytest.mark.parametrize("name", PLOTS)
def test_save_writes_a_png_atomically_and_closes_its_figure(name, data, tmp_path, shows):
    before = plt.get_fignums()
    draw(name, data, save=tmp_path / "out" / "plot.png")
    written = tmp_path / "out" / "plot.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written.stat().st_size > 1000
    assert [p.name for p in written.parent.iterdir()] == ["plot.png"]  # no temp file left
    assert plt.get_fignums() == before
    assert shows == []  # saved, so show=None does not show


@pytest.mark.parametrize("name", PLOTS)
def test_save_true_writes_figures_function_png(name, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    draw(name, data, save=True)
    assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 0


@pytest.mark.parametrize("name", PLOTS)
def test_return_fig_returns_the_figure(name, data):
    assert isinstance(draw(name, data, show=False, return_fig=True), Figure)


@pytest.mark.parametrize("name", PLOTS)
def test_default_return_is_unchanged(name, data):
    expected = Axes if name == "spatial_scatter" else Figure
    assert isinstance(draw(name, data, show=False), expected)


@pytest.mark.parametrize("name", PLOTS)
def test_show_false_leaves_figures_open_and_does_not_show(name, data, shows):
    other = plt.figure()
    before = plt.get_fignums()
    fig = draw(name, data, show=False, return_fig=True)
    assert plt.get_fignums() == [*before, fig.number]
    assert plt.fignum_exists(other.number)
    assert shows == []


@pytest.mark.parametrize("name", PLOTS)
def test_show_none_does_not_show_outside_an_interactive_session(name, data, shows):
    draw(name, data)
    assert shows == []


def test_show_none_shows_a_new_unsaved_figure_in_an_interactive_session(
    data, shows, monkeypatch, tmp_path
):
    monkeypatch.setattr(_save, "interactive_session", lambda: True)
    draw("qc_spatial", data)
    assert shows == [1]
    draw("qc_spatial", data, ax=plt.subplots()[1])  # your axes: you show them
    draw("qc_spatial", data, save=tmp_path / "a.png")
    assert shows == [1]
    draw("qc_spatial", data, show=True, save=tmp_path / "b.png")
    assert shows == [1, 1]


def test_agg_is_not_an_interactive_session():
    plt.ion()
    try:
        assert not _save.interactive_session()
    finally:
        plt.ioff()


def test_saving_into_your_axes_keeps_your_figure_open(data, tmp_path):
    fig, ax = plt.subplots()
    assert draw("spatial_scatter", data, ax=ax, save=tmp_path / "a.png") is ax
    assert plt.fignum_exists(fig.number)
    assert (tmp_path / "a.png").stat().st_size > 0


def test_embedding_panels_keeps_path_as_the_older_name_of_save(data, tmp_path):
    fig = kbfm.pl.embedding_panels(data["spots"], color=["region"], path=tmp_path / "a.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "a.png").stat().st_size > 0
    assert not plt.fignum_exists(fig.number)
    with pytest.raises(KbfmInputError, match="not both"):
        kbfm.pl.embedding_panels(
            data["spots"], color=["region"], path=tmp_path / "b.png", save=tmp_path / "c.png"
        )
