"""auto_qc benchmark: inject known failures into real spot data, measure recall/precision.

Data (raw counts, real): four HER2+ breast sections (legacy ST, contiguous grid, 732
spots, batch = section) and the human lymph node Visium spots (1,000 sub-sampled spots,
not a contiguous grid). Neither matrix has mitochondrial genes (filtered upstream), so 13
synthetic ``MT-`` genes are added to every spot first, holding a realistic fraction of
counts (log-normal around 3%); this part is simulated and said so in the results.

Injected failures, each in a disjoint random 5% of spots:
- low_counts: counts thinned to 5% (binomial);
- high_mito: non-mitochondrial counts thinned to 50% and mitochondrial counts raised to
  15-40% of the spot (a damaged spot);
- doublet: the spot's counts plus those of another random spot of the same section.

Recall: share of injected spots that fail QC (any reason) and that carry the expected
reason. Precision: share of failing spots that were injected; spots that already failed
before injection are reported separately (they may be truly poor spots, not errors).

Run: .venv/bin/python benchmarks/auto_qc.py
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from _data import DATA_ROOT, require
from anndata import AnnData

from kbfm.pp.auto_qc import auto_qc, qc_table

ROOT = Path(__file__).resolve().parents[1]
SHARED = DATA_ROOT
HER2 = SHARED / "histology" / "her2st"
LYMPH = SHARED / "deconv" / "spacexr" / "SpatialRNA" / "VisiumLymphVignette" / "visium_lymph.h5ad"
OUT = ROOT / "benchmarks" / "results"
EXPECTED = {"low_counts": ("low_counts",), "high_mito": ("high_mito",), "doublet": ()}


def load_her2st() -> AnnData:
    parts = []
    for s in ("C2", "C3", "C4", "C5"):
        counts = pd.read_csv(HER2 / "cnts" / f"{s}.tsv.gz", sep="\t", index_col=0)
        sel = pd.read_csv(HER2 / "spots" / f"{s}_selection.tsv", sep="\t")
        sel.index = [f"{x}x{y}" for x, y in zip(sel["x"], sel["y"], strict=True)]
        common = [i for i in counts.index if i in sel.index]
        a = AnnData(sp.csr_matrix(counts.loc[common].to_numpy(dtype=np.float32)))
        a.var_names = [str(g) for g in counts.columns]
        a.obs_names = [f"{s}_{i}" for i in common]
        a.obs["section"] = s
        a.obsm["spatial"] = sel.loc[common, ["pixel_x", "pixel_y"]].to_numpy(float)
        parts.append(a)
    adata = ad.concat(parts, join="inner")
    adata.var_names_make_unique()
    return adata


def add_mito_genes(adata: AnnData, rng) -> AnnData:
    X = sp.csr_matrix(adata.X)
    total = np.asarray(X.sum(axis=1)).ravel()
    frac = np.clip(rng.lognormal(np.log(0.03), 0.3, adata.n_obs), 0, 0.2)
    mito_total = rng.poisson(total * frac / (1 - frac))
    weights = rng.dirichlet(np.ones(13))
    M = np.vstack([rng.multinomial(n, weights) for n in mito_total]).astype(np.float32)
    out = AnnData(sp.hstack([X, sp.csr_matrix(M)]).tocsr(), obs=adata.obs.copy())
    out.var_names = list(adata.var_names) + [f"MT-SIM{i}" for i in range(13)]
    out.obsm["spatial"] = adata.obsm["spatial"]
    return out


def inject(adata: AnnData, rng, *, batch_key: str | None, share: float = 0.05):
    X = sp.csr_matrix(adata.X).toarray()
    mito = np.array([g.startswith("MT-") for g in adata.var_names])
    n = adata.n_obs
    order = rng.permutation(n)
    k = max(1, round(share * n))
    groups = {name: order[i * k : (i + 1) * k] for i, name in enumerate(EXPECTED)}
    clean = X.copy()
    batches = adata.obs[batch_key].to_numpy() if batch_key else np.zeros(n)
    for i in groups["low_counts"]:
        X[i] = rng.binomial(clean[i].astype(int), 0.05)
    for i in groups["high_mito"]:
        nuclear = rng.binomial(clean[i, ~mito].astype(int), 0.5)
        target = rng.uniform(0.15, 0.4)
        mito_total = int(nuclear.sum() * target / (1 - target))
        X[i, ~mito] = nuclear
        X[i, mito] = rng.multinomial(mito_total, np.ones(mito.sum()) / mito.sum())
    for i in groups["doublet"]:
        same = np.flatnonzero(batches == batches[i])
        j = rng.choice(same[same != i])
        X[i] = clean[i] + clean[j]
    out = adata.copy()
    out.X = sp.csr_matrix(X.astype(np.float32))
    return out, groups


def evaluate(name: str, adata: AnnData, batch_key: str | None, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    adata = add_mito_genes(adata, rng)
    before = adata.copy()
    auto_qc(before, batch_key=batch_key)
    pre_fail = ~qc_table(before)["pass"].to_numpy(bool)
    injected, groups = inject(adata, rng, batch_key=batch_key)
    auto_qc(injected, batch_key=batch_key)
    table = qc_table(injected)
    fail = ~table["pass"].to_numpy(bool)
    reasons = table["reason"].astype(str).to_numpy()
    is_injected = np.zeros(adata.n_obs, bool)
    res: dict = {"n_spots": int(adata.n_obs), "batch_key": batch_key}
    for kind, idx in groups.items():
        is_injected[idx] = True
        hit = fail[idx]
        entry = {"n": len(idx), "recall_any_flag": float(hit.mean())}
        if EXPECTED[kind]:
            exp = [any(e in reasons[i].split(";") for e in EXPECTED[kind]) for i in idx]
            entry["recall_expected_reason"] = float(np.mean(exp))
        entry["reasons"] = pd.Series(reasons[idx]).value_counts().head(5).to_dict()
        res[kind] = entry
    n_fail = int(fail.sum())
    clean_fail = fail & ~is_injected
    res["overall"] = {
        "recall": float(fail[is_injected].mean()),
        "precision": float(is_injected[fail].mean()) if n_fail else float("nan"),
        "precision_ignoring_spots_failing_before_injection": (
            float(is_injected[fail & ~pre_fail].mean()) if (fail & ~pre_fail).any() else 1.0
        ),
        "n_fail": n_fail,
        "n_clean_spots_failing": int(clean_fail.sum()),
        "n_clean_spots_failing_before_injection_too": int((clean_fail & pre_fail).sum()),
        "n_failing_before_injection": int(pre_fail.sum()),
        "clean_spot_fail_reasons": pd.Series(reasons[clean_fail]).value_counts().head(8).to_dict(),
    }
    print(name, json.dumps(res["overall"]))
    return res


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main() -> None:
    if not HER2.exists() or not LYMPH.exists():
        require(HER2, "auto_qc benchmark")
        require(LYMPH, "auto_qc benchmark")
    seeds = (0, 1, 2)
    runs = {
        "her2st_4_sections": (load_her2st(), "section"),
        "lymph_node_visium": (ad.read_h5ad(LYMPH), None),
    }
    results = {
        name: {f"seed{s}": evaluate(name, a, key, s) for s in seeds}
        for name, (a, key) in runs.items()
    }
    command = ".venv/bin/python benchmarks/auto_qc.py"
    payload = {
        "benchmark": "auto_qc injected failures",
        "command": command,
        "defaults": "nmads=5, nmads_mito=3, nmads_local=4, spatial checks on",
        "simulated_part": "13 MT- genes added (real data has none); failures injected",
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "results": results,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_atomic(OUT / "auto_qc.json", json.dumps(payload, indent=2))
    lines = [
        "# auto_qc benchmark: injected failures",
        "",
        f"Command: `{command}`",
        "",
        "Real raw counts; 13 synthetic MT- genes added (the matrices have none); 5% of spots "
        "per failure kind; mean over seeds 0-2. Recall = injected spots failing QC "
        "(in brackets: with the expected reason); precision = failing spots that were "
        "injected (in brackets: ignoring spots that already failed before injection).",
        "",
        "| data | spots | low counts (5%) | high mito | doublet-like | overall recall "
        "| precision | clean spots failing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, per_seed in results.items():
        runs_ = list(per_seed.values())

        def mean(f, runs_=runs_):
            return float(np.mean([f(r) for r in runs_]))

        lo = mean(lambda r: r["low_counts"]["recall_any_flag"])
        lo_e = mean(lambda r: r["low_counts"]["recall_expected_reason"])
        mi = mean(lambda r: r["high_mito"]["recall_any_flag"])
        mi_e = mean(lambda r: r["high_mito"]["recall_expected_reason"])
        db = mean(lambda r: r["doublet"]["recall_any_flag"])
        rec = mean(lambda r: r["overall"]["recall"])
        prec = mean(lambda r: r["overall"]["precision"])
        prec2 = mean(lambda r: r["overall"]["precision_ignoring_spots_failing_before_injection"])
        fp = mean(lambda r: r["overall"]["n_clean_spots_failing"])
        lines.append(
            f"| {name} | {runs_[0]['n_spots']} | {lo:.2f} ({lo_e:.2f}) | {mi:.2f} ({mi_e:.2f}) "
            f"| {db:.2f} | {rec:.2f} | {prec:.2f} ({prec2:.2f}) | {fp:.1f} |"
        )
    lines.append("")
    write_atomic(OUT / "auto_qc.md", "\n".join(lines))


if __name__ == "__main__":
    main()
