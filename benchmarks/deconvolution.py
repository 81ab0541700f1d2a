"""Deconvolution benchmark: pseudo-spots mixed from held-out lymph node cells.

Protocol (one run, same machine, same pseudo-spots for every method):
- reference: ../shared/data/deconv/spacexr/Reference/Visium_Lymph_Ref (330 cells, 11 types
  x 30); per type, half of the cells (15) form the reference and the other half is used
  only to build pseudo-spots, so no mixed cell is in the reference;
- pseudo-spot: 2-10 held-out cells, types drawn from a Dirichlet(0.5) mixture; the summed
  counts get a gene platform effect exp(N(0, sd)) and Poisson resampling at 25% depth
  (Visium spots hold fewer counts than the sum of their cells); truth = fraction of cells;
- two gene sets: all 10,237 reference genes, and the 558 genes shared with the real
  lymph node Visium spots (the panel the real data has);
- metrics: RMSE and Pearson r over all (spot, type) proportions, mean Jensen-Shannon
  divergence per spot (base 2);
- methods: NNLS (baseline), NB count model, knowledge-aware (text-neighbour signature
  smoothing; RefSeq summaries when --source is given), and zero-shot (no reference: Cell
  Ontology markers from kbfm.knowledge).
Then the real 1,000 lymph node spots are deconvolved for a proportion-map figure.

Run: .venv/bin/python benchmarks/deconvolution.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
from _data import DATA_ROOT, require
from anndata import AnnData

from kbfm.tl.deconvolve import deconvolve

ROOT = Path(__file__).resolve().parents[1]
DATA = DATA_ROOT / "deconv" / "spacexr"
REF = DATA / "Reference" / "Visium_Lymph_Ref" / "ref_downsampled.h5ad"
SPOTS = DATA / "SpatialRNA" / "VisiumLymphVignette" / "visium_lymph.h5ad"
OUT = ROOT / "benchmarks" / "results"

# Reference labels -> Cell Ontology terms, for the zero-shot run.
CL_TERMS = {
    "B": "B cell",
    "B_Plasma": "plasma cell",
    "DC": "dendritic cell",
    "Endo": "endothelial cell",
    "ILC": "innate lymphoid cell",
    "Macrophages": "macrophage",
    "Monocytes": "monocyte",
    "NK": "natural killer cell",
    "T_CD4": "CD4-positive, alpha-beta T cell",
    "T_CD8": "CD8-positive, alpha-beta T cell",
    "VSMC": "vascular associated smooth muscle cell",
}


def split_reference(ref: AnnData, seed: int) -> tuple[AnnData, AnnData]:
    rng = np.random.default_rng(seed)
    ref_idx, mix_idx = [], []
    for t in sorted(ref.obs["cell_type"].unique()):
        idx = rng.permutation(np.flatnonzero(ref.obs["cell_type"].to_numpy() == t))
        ref_idx += list(idx[: len(idx) // 2])
        mix_idx += list(idx[len(idx) // 2 :])
    return ref[sorted(ref_idx)].copy(), ref[sorted(mix_idx)].copy()


def pseudo_spots(pool: AnnData, n_spots: int, *, platform_sd: float, depth: float, seed: int):
    rng = np.random.default_rng(seed)
    types = sorted(pool.obs["cell_type"].unique())
    labels = pool.obs["cell_type"].to_numpy()
    X = sp.csr_matrix(pool.X)
    by_type = {t: np.flatnonzero(labels == t) for t in types}
    truth = np.zeros((n_spots, len(types)))
    Y = np.zeros((n_spots, pool.n_vars))
    for i in range(n_spots):
        n_cells = rng.integers(2, 11)
        ks = rng.choice(len(types), size=n_cells, p=rng.dirichlet(np.full(len(types), 0.5)))
        cells = [rng.choice(by_type[types[k]]) for k in ks]
        for k in ks:
            truth[i, k] += 1
        Y[i] = np.asarray(X[cells].sum(axis=0)).ravel()
    truth /= truth.sum(axis=1, keepdims=True)
    effect = np.exp(rng.normal(0.0, platform_sd, pool.n_vars))
    counts = rng.poisson(Y * effect[None, :] * depth).astype(np.float32)
    spots = AnnData(sp.csr_matrix(counts))
    spots.var_names = pool.var_names.copy()
    spots.obs_names = [f"pseudo{i}" for i in range(n_spots)]
    return spots, truth, types


def metrics(P: np.ndarray, truth: np.ndarray) -> dict:
    from scipy.spatial.distance import jensenshannon

    jsd = [jensenshannon(p, t, base=2) ** 2 for p, t in zip(P, truth, strict=True)]
    return {
        "rmse": float(np.sqrt(((P - truth) ** 2).mean())),
        "pearson": float(np.corrcoef(P.ravel(), truth.ravel())[0, 1]),
        "jsd": float(np.mean(jsd)),
    }


def run_method(name: str, spots: AnnData, ref: AnnData | None, types: list[str], args) -> dict:
    kw: dict = {"n_epochs": args.epochs}
    if name == "nnls":
        kw = {"method": "nnls"}
    elif name == "nb_count_model":
        kw["method"] = "poisson"
    elif name == "knowledge_smoothing":
        kw.update(method="knowledge", knowledge_source=args.source or "builtin")
    elif name == "zero_shot":
        kw.update(method="knowledge", cell_types=[CL_TERMS[t] for t in types])
    t0 = time.perf_counter()
    out = deconvolve(spots, ref, copy=True, **kw)
    P = out.obsm["kbfm_proportions"]
    if name == "zero_shot":
        P.columns = [next(k for k, v in CL_TERMS.items() if v == c) for c in P.columns]
    step = out.uns["kbfm"]["deconvolve"]
    extra = {"n_genes_used": int(step["n_genes_used"]), "seconds": time.perf_counter() - t0}
    if "signature_smoothing" in step:
        sm = step["signature_smoothing"]
        extra["smoothing"] = {k: sm[k] for k in sm if k != "knowledge"}
    return {"P": P[types].to_numpy(), **extra}


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-spots", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--platform-sd", type=float, default=0.5)
    parser.add_argument("--depth", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default=None, help="gene knowledge for smoothing")
    parser.add_argument("--methods", default="nnls,nb_count_model,knowledge_smoothing,zero_shot")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    require(REF, "deconvolution benchmark")
    require(SPOTS, "deconvolution benchmark")
    full = ad.read_h5ad(REF)
    real = ad.read_h5ad(SPOTS)
    ref, pool = split_reference(full, args.seed)
    spots_all, truth, types = pseudo_spots(
        pool, args.n_spots, platform_sd=args.platform_sd, depth=args.depth, seed=args.seed + 1
    )
    panel = [g for g in spots_all.var_names if g in set(real.var_names)]
    settings = {"all_reference_genes": spots_all, "visium_panel_genes": spots_all[:, panel].copy()}
    methods = args.methods.split(",")
    results: dict = {}
    for setting, spots in settings.items():
        results[setting] = {"n_genes": int(spots.n_vars)}
        for name in methods:
            try:
                r = run_method(name, spots, None if name == "zero_shot" else ref, types, args)
            except Exception as err:  # a method that cannot run is reported, not hidden
                results[setting][name] = {"error": f"{type(err).__name__}: {err}"[:300]}
                print(f"{setting:22s} {name:20s} failed: {err}")
                continue
            m = metrics(r.pop("P"), truth)
            results[setting][name] = {**m, **r}
            print(
                f"{setting:22s} {name:20s} rmse {m['rmse']:.4f} r {m['pearson']:.3f} "
                f"jsd {m['jsd']:.4f} genes {r['n_genes_used']} {r['seconds']:.1f}s"
            )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kbfm.pl.proportions import proportions

    deconvolve(real, full, method="poisson", n_epochs=args.epochs)
    fig = proportions(real)
    fig.suptitle("Real lymph node Visium spots (1,000), NB count model, full reference", y=1.01)
    fig_path = OUT / "deconvolution_lymph_proportions.png"
    fig.savefig(fig_path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    mean_real = real.obsm["kbfm_proportions"].mean().round(4).to_dict()

    payload = {
        "benchmark": "deconvolution",
        "command": "MPLBACKEND=Agg .venv/bin/python benchmarks/deconvolution.py"
        + (f" --source {args.source}" if args.source else ""),
        "protocol": {
            "reference_cells": int(ref.n_obs),
            "held_out_mixing_cells": int(pool.n_obs),
            "n_pseudo_spots": args.n_spots,
            "cells_per_spot": "2-10",
            "type_mixture": "Dirichlet(0.5)",
            "platform_effect_log_sd": args.platform_sd,
            "depth": args.depth,
            "epochs": args.epochs,
            "seed": args.seed,
            "knowledge_source": args.source or "builtin",
        },
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared)",
        "results": results,
        "real_lymph_node_mean_proportions": mean_real,
        "figure": str(fig_path.relative_to(ROOT)),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_atomic(OUT / "deconvolution.json", json.dumps(payload, indent=2))
    lines = [
        "# Deconvolution benchmark",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"{args.n_spots} pseudo-spots of 2-10 held-out lymph node cells (reference: "
        f"{ref.n_obs} other cells, 11 types), gene platform effect log-sd {args.platform_sd}, "
        f"Poisson resampling at {args.depth:.0%} depth. Lower RMSE/JSD and higher r are better.",
        "",
        "| genes | method | RMSE | Pearson r | JSD | genes used | seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for setting, res in results.items():
        for name in methods:
            r = res.get(name, {})
            if "error" in r:
                why = r["error"][:110]
                lines.append(f"| {setting} ({res['n_genes']}) | {name} | not run: {why}... |||||")
                continue
            lines.append(
                f"| {setting} ({res['n_genes']}) | {name} | {r['rmse']:.4f} | "
                f"{r['pearson']:.3f} | {r['jsd']:.4f} | {r['n_genes_used']} | {r['seconds']:.1f} |"
            )
    lines += [
        "",
        "NNLS is the baseline, measured in the same run on the same pseudo-spots.",
        f"Real lymph node spots: proportion maps in `{payload['figure']}`.",
        "",
    ]
    write_atomic(OUT / "deconvolution.md", "\n".join(lines))


if __name__ == "__main__":
    main()
