"""Spatial domains on three DLPFC slices: baselines vs FusionModel, one protocol for all rows.

Protocol (issue 18): every representation is computed from ALL spots of a slice (the
labels never choose the training data); unannotated spots are dropped only when scoring.
k = the number of annotated layers of the slice. Median ARI over seeds 0-4 (model seed =
mixture seed), min-max shown. Every row is clustered the same two ways in the same run,
each with 10 mixture restarts (highest likelihood kept, no label looked at): the
``kbfm.tl.domains`` default (tied covariance, the mclust ``EEE`` analogue) and a full
covariance. Each FusionModel configuration trains on each slice in its own process, so
its peak memory is measured alone.

Run::

    HF_HUB_OFFLINE=1 python benchmarks/dlpfc_domains.py                 # everything
    HF_HUB_OFFLINE=1 python benchmarks/dlpfc_domains.py --rows baselines base --slices 151673

Rows computed in a run replace the same rows in ``benchmarks/results/dlpfc_domains.json``;
the others are kept (each row records when it was run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

import numpy as np

# $KBFM_DATA, else ../shared/data beside the repository (as every benchmark, via _data).
SHARED = Path(
    os.environ.get("KBFM_DATA") or Path(__file__).resolve().parents[1].parent / "shared/data"
)
RESULTS = Path(__file__).parent / "results"
SLICES = ("151673", "151674", "151675")
SEEDS = range(5)
LABEL = "layer_guess_reordered"
CLUSTERINGS = {"default": {}, "full": {"covariance": "full"}}
if os.environ.get("DLPFC_CLUSTERINGS") == "default":
    CLUSTERINGS.pop("full")

# FusionModel rows: label -> (FusionModel.setup kwargs, train kwargs, note)
MODELS: dict[str, tuple[dict, dict, str]] = {
    "base": ({"preset": "base"}, {}, "FusionModel base (default settings)"),
    "tiny": ({"preset": "tiny"}, {}, "FusionModel tiny"),
    "large": ({"preset": "large"}, {}, "FusionModel large"),
    "base_full_batch": (
        {"preset": "base"},
        {"batch_size": None},
        "FusionModel base, full batch (one step per epoch over all spots)",
    ),
    "base_minibatch": (
        {"preset": "base"},
        {"batch_size": 512},
        "FusionModel base, mini-batch (512 spots + their 2-hop neighbourhoods)",
    ),
    "base_atlas": (
        {"preset": "base", "knowledge_source": "atlas"},
        {},
        "FusionModel base, atlas gene cards instead of builtin",
    ),
    "base_gcn": (
        {"preset": "base", "encoder": "gcn"},
        {},
        "FusionModel base, graph-convolutional expression encoder",
    ),
    "base_gcn_atlas": (
        {"preset": "base", "encoder": "gcn", "knowledge_source": "atlas"},
        {},
        "FusionModel base, graph-convolutional encoder + atlas gene cards",
    ),
}


def load(slice_id: str, data_root: Path):
    """All spots of a slice (annotated or not)."""
    import anndata as ad

    return ad.read_h5ad(data_root / f"spatial/dlpfc_{slice_id}/dlpfc_{slice_id}.h5ad")


def n_layers(adata) -> int:
    return int(adata.obs[LABEL].dropna().nunique())


def ari(adata, rep: str, seed: int, clustering: str) -> float:
    """Cluster all spots, score the annotated ones."""
    import kbfm

    kbfm.tl.domains(
        adata, n_domains=n_layers(adata), use_rep=rep, seed=seed, key_added="d",
        **CLUSTERINGS[clustering],
    )  # fmt: skip
    return kbfm.tl.evaluate_domains(adata, LABEL, key="d")["ari"]


def ari_over_seeds(adata, rep: str) -> dict[str, list[float]]:
    return {c: [ari(adata, rep, s, c) for s in SEEDS] for c in CLUSTERINGS}


def neighbourhood_mean(rep: np.ndarray, coords: np.ndarray, k: int, *, self_included: bool):
    """Mean of each spot's ``k`` nearest other spots, plus the spot itself if asked."""
    from sklearn.neighbors import NearestNeighbors

    # kneighbors() without X leaves each point out of its own neighbour list
    idx = NearestNeighbors(n_neighbors=k).fit(coords).kneighbors(return_distance=False)
    if self_included:
        idx = np.hstack([np.arange(len(coords))[:, None], idx])
    return rep[idx].mean(1)


def baselines(slice_id: str, data_root: Path, genept: bool) -> dict:
    import scanpy as sc
    from sklearn.decomposition import PCA

    import kbfm

    kbfm.settings.progress = False
    adata = load(slice_id, data_root)
    coords = np.asarray(adata.obsm["spatial"], float)
    logn = adata.copy()
    sc.pp.log1p(logn)
    sc.pp.highly_variable_genes(logn, n_top_genes=2000, flavor="seurat")
    pca = PCA(30, random_state=0).fit_transform(logn[:, logn.var["highly_variable"]].X.toarray())
    kbfm.pp.spatially_variable_genes(logn, n_top_genes=2000)
    svg = PCA(30, random_state=0).fit_transform(
        logn[:, logn.var["kbfm_spatially_variable"]].X.toarray()
    )
    reps = {
        "pca_hvg": ("expression PCA (log1p, 2000 HVG, PCA 30)", pca),
        "pca_hvg_smooth": (
            "  same, mean of the spot and its 6 nearest spots (spot included)",
            neighbourhood_mean(pca, coords, 6, self_included=True),
        ),
        "pca_svg": ("PCA of 2000 spatially variable genes (Moran's I, PCA 30)", svg),
        "pca_svg_smooth": (
            "  same, mean of the spot and its 6 nearest spots (spot included)",
            neighbourhood_mean(svg, coords, 6, self_included=True),
        ),
        "pca_svg_smooth_excl": (
            "  same, mean of the 6 nearest spots (spot excluded)",
            neighbourhood_mean(svg, coords, 6, self_included=False),
        ),
        "pca_svg_smooth7_excl": (
            "  same, mean of the 7 nearest spots (spot excluded; the previous benchmark's row)",
            neighbourhood_mean(svg, coords, 7, self_included=False),
        ),
    }
    if genept:
        kbfm.tl.embed_cells(
            logn, source=str(data_root / "genes/refseq_summaries_human.tsv.gz"),
            weighting="relative",
        )  # fmt: skip
        gt = PCA(30, random_state=0).fit_transform(logn.obsm["X_genetext"])
        z = lambda m: (m - m.mean(0)) / (m.std(0) + 1e-9)  # noqa: E731
        reps["genept"] = ("GenePT-w alone (RefSeq summaries, relative weights, PCA 30)", gt)
        reps["concat"] = (
            "concatenation of HVG PCA and GenePT-w (spEMO-style)",
            np.hstack([z(pca), z(gt)]),
        )
    rows = {}
    for key, (label, rep) in reps.items():
        adata.obsm["X_rep"] = rep
        rows[key] = {"label": label, "aris": ari_over_seeds(adata, "X_rep")}
    return rows


def fusion(name: str, slice_id: str, data_root: Path) -> dict:
    import kbfm
    from kbfm.models import FusionModel

    setup_kw, train_kw, _ = MODELS[name]
    kbfm.settings.progress = False
    adata = load(slice_id, data_root)
    aris: dict[str, list[float]] = {c: [] for c in CLUSTERINGS}
    seconds, epochs, per_epoch, latents = [], [], [], []
    for s in SEEDS:
        t = time.perf_counter()
        model = FusionModel.setup(adata, seed=s, **setup_kw)
        model.train(**train_kw)
        seconds.append(time.perf_counter() - t)
        epochs.append(len(model.history))
        per_epoch.append(model.train_seconds / max(len(model.history), 1))
        model.to_adata()
        latents.append(adata.obsm["X_kbfm"])
        for c in CLUSTERINGS:
            aris[c].append(ari(adata, "X_kbfm", s, c))
    knowledge = float(np.mean(np.abs(model.gene_text).sum(1) > 0))
    # consensus over the 5 seeds: their standardised latents side by side, PCA back to one
    from sklearn.decomposition import PCA

    z = np.hstack([(m - m.mean(0)) / (m.std(0) + 1e-9) for m in latents])
    adata.obsm["X_consensus"] = PCA(latents[0].shape[1], random_state=0).fit_transform(z)
    return {
        "aris": aris,
        "consensus_aris": ari_over_seeds(adata, "X_consensus"),
        "train_seconds_median": float(np.median(seconds)),
        "seconds_per_epoch_median": float(np.median(per_epoch)),
        "epochs_median": float(np.median(epochs)),
        "parameters": model.n_parameters(),
        "genes_with_knowledge_fraction": knowledge,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def transfer(target: str, data_root: Path) -> dict:
    """Train base on the two other slices together, embed ``target`` without retraining."""
    import tempfile

    import anndata as ad

    import kbfm
    from kbfm.models import FusionModel

    kbfm.settings.progress = False
    parts = [load(s, data_root) for s in SLICES if s != target]
    for i, part in enumerate(parts):  # side by side, far apart: no graph edge between slices
        part.obsm["spatial"] = np.asarray(part.obsm["spatial"], float) + np.array([i * 1e6, 0.0])
    train_data = ad.concat(parts, join="inner", index_unique="-")
    adata = load(target, data_root)
    aris: dict[str, list[float]] = {c: [] for c in CLUSTERINGS}
    matched = []
    with tempfile.TemporaryDirectory() as folder:
        for s in SEEDS:
            model = FusionModel.setup(train_data, preset="base", seed=s).train()
            model.save(folder, overwrite=True)  # one temporary folder, one seed after another
            applied = FusionModel.embed(folder, adata)
            matched.append(len(applied.config.genes) - len(applied.missing_genes))
            for c in CLUSTERINGS:
                aris[c].append(ari(adata, "X_kbfm", s, c))
    return {
        "aris": aris,
        "trained_on": [s for s in SLICES if s != target],
        "training_spots": int(train_data.n_obs),
        "genes_matched_median": float(np.median(matched)),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def summarise(row: dict) -> None:
    row["median_ari"] = {c: float(np.median(v)) for c, v in row["aris"].items()}
    row["range"] = [float(min(row["aris"]["default"])), float(max(row["aris"]["default"]))]


def table(result: dict) -> str:
    slices = result["slices"]
    head = " | ".join(f"{s} median (min-max)" for s in slices)
    lines = [
        f"| representation | {head} | mean of medians | mean, full-cov. mixture "
        "| train s / epochs (median) | peak RSS GiB |",
        "|---|" + "---|" * (len(slices) + 4),
    ]
    for row in result["rows"].values():
        cells, full, extra = [], [], "— | —"
        for s in slices:
            r = row["per_slice"].get(s)
            if r is None:
                cells.append("—")
                continue
            lo, hi = r["range"]
            cells.append(f"{r['median_ari']['default']:.3f} ({lo:.2f}-{hi:.2f})")
            full.append(r["median_ari"].get("full", np.nan))
            if "train_seconds_median" in r:
                extra = f"{r['train_seconds_median']:.0f} / {r['epochs_median']:.0f} | "
                extra += f"{r['peak_rss_gib']:.2f}"
        mean = row.get("mean_median_ari")
        lines.append(
            f"| {row['label'].strip()} | " + " | ".join(cells)
            + (f" | **{mean:.3f}**" if mean is not None else " | —")
            + (f" | {np.mean(full):.3f}" if len(full) == len(slices) and
               not np.isnan(full).any() else " | —")
            + f" | {extra} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def write(rows: dict, out: Path) -> str:
    """Write the JSON (and its markdown table) with every row computed so far."""
    for row in rows.values():
        medians = [row["per_slice"][s]["median_ari"]["default"] for s in SLICES if
                   s in row["per_slice"]]  # fmt: skip
        row["mean_median_ari"] = float(np.mean(medians)) if len(medians) == len(SLICES) else None
    result = {
        "protocol": "all_spots",
        "description": (
            "Representations from all spots of each slice; unannotated spots dropped only "
            "when scoring; k = number of annotated layers; median ARI over seeds 0-4 (model "
            "seed = mixture seed); every row clustered by kbfm.tl.domains default (tied "
            "covariance, 10 restarts) and, where 'full' is present, a full-covariance "
            "mixture (10 restarts)."
        ),
        "slices": list(SLICES),
        "seeds": list(SEEDS),
        "machine": "CPU, 2 cores shared with three other workers (timings are noisy)",
        "command": "python benchmarks/dlpfc_domains.py --rows ...",
        "rows": rows,
    }
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    md = table(result)
    out.with_suffix(".md").write_text(md)
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", nargs="+", default=list(SLICES))
    parser.add_argument("--rows", nargs="+", default=["baselines", "genept", "base"])
    parser.add_argument("--data-root", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=RESULTS / "dlpfc_domains.json")
    parser.add_argument(
        "--default-clustering-only", action="store_true",
        help="skip the full-covariance mixture (halves the clustering time)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.default_clustering_only:
        os.environ["DLPFC_CLUSTERINGS"] = "default"  # read again by the spawned workers
        CLUSTERINGS.pop("full", None)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows: dict = old.get("rows", {}) if old.get("protocol") == "all_spots" else {}
    stamp = time.strftime("%Y-%m-%d %H:%M")
    ctx = mp.get_context("spawn")
    for slice_id in args.slices:
        if "baselines" in args.rows or "genept" in args.rows:
            t = time.perf_counter()
            for key, r in baselines(slice_id, args.data_root, "genept" in args.rows).items():
                if key in ("genept", "concat") or "baselines" in args.rows:
                    summarise(r)
                    row = rows.setdefault(key, {"label": r.pop("label"), "per_slice": {}})
                    row["per_slice"][slice_id] = {**r, "run": stamp}
            write(rows, args.out)
            print(f"{slice_id}: baselines {time.perf_counter() - t:.0f} s", flush=True)
        for name in (r for r in args.rows if r in MODELS):
            with ctx.Pool(1) as pool:
                res = pool.apply(fusion, (name, slice_id, args.data_root))
            consensus = {"aris": res.pop("consensus_aris")}
            summarise(res)
            summarise(consensus)
            row = rows.setdefault(name, {"label": MODELS[name][2], "per_slice": {}})
            row["label"] = MODELS[name][2]
            row["per_slice"][slice_id] = {**res, "run": stamp}
            label = MODELS[name][2] + ", consensus of seeds 0-4 (latents side by side, PCA)"
            row = rows.setdefault(name + "_consensus", {"label": label, "per_slice": {}})
            row["per_slice"][slice_id] = {**consensus, "run": stamp}
            write(rows, args.out)
            print(f"{slice_id}: {name} median {res['median_ari']['default']:.3f}", flush=True)
        if "transfer" in args.rows:
            with ctx.Pool(1) as pool:
                res = pool.apply(transfer, (slice_id, args.data_root))
            summarise(res)
            label = "FusionModel base trained on the two other slices, applied without retraining"
            row = rows.setdefault("transfer", {"label": label, "per_slice": {}})
            row["per_slice"][slice_id] = {**res, "run": stamp}
            write(rows, args.out)
            print(f"{slice_id}: transfer median {res['median_ari']['default']:.3f}", flush=True)
    print(write(rows, args.out))


if __name__ == "__main__":
    main()
