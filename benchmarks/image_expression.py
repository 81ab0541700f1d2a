"""HER2ST leave-one-section-out: expression from H&E, HEST protocol, all configurations in one run.

Run: ``python benchmarks/image_expression.py`` (needs ../shared/data/histology/her2st).
Writes benchmarks/results/image_expression.json and image_expression.md.

Protocol: 4 sections (C2-C5, one patient), 224 px patches at 0.5 µm/px (112 µm) around
each spot, PCA to 256 fitted on the training sections, ridge alpha = 100/(256*50), Pearson
r per gene on the 50 most variable genes (log1p counts per 10k, variance over all
spots), each section held out once. Rows are measured in the same run on the same machine.
``@ring`` rows append the mean embedding of the spots one grid step around each spot
(``kbfm.tl.spatial_context``, within each section).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import anndata as ad
from _data import DATA_ROOT, require

import kbfm
from kbfm.im.combine_embeddings import combine_embeddings
from kbfm.im.embed_image import embed_image
from kbfm.im.predict_expression import predict_expression
from kbfm.io.legacy_st import read_legacy_st
from kbfm.tl.spatial_context import spatial_context

ROOT = Path(__file__).resolve().parents[1]
HER2ST = DATA_ROOT / "histology" / "her2st"
OUT = ROOT / "benchmarks" / "results"
SECTIONS = ["C2", "C3", "C4", "C5"]

# name -> (list of (obsm key, embed_image kwargs)); several keys are combined.
EMBEDDINGS = {
    "ct": {"model": "color-texture"},
    "ct_ctx2": {"model": "color-texture", "context": (1.0, 2.0)},
    "rand": {"model": "efficientnet_lite0", "pretrained": False},
    "lite0": {"model": "efficientnet_lite0"},
    "lite0_stain": {"model": "efficientnet_lite0", "stain_norm": "reinhard"},
    "lite0_ctx2": {"model": "efficientnet_lite0", "context": (1.0, 2.0)},
    "lite0_tta": {"model": "efficientnet_lite0", "tta": True},
    "lite0_ctx2_tta": {"model": "efficientnet_lite0", "context": (1.0, 2.0), "tta": True},
}
ROWS = [
    ("colour/texture features (baseline)", ["ct"]),
    ("efficientnet_lite0, random init (same architecture)", ["rand"]),
    ("efficientnet_lite0, ImageNet (kbfm default)", ["lite0"]),
    ("  + Reinhard stain normalisation", ["lite0_stain"]),
    ("  + multi-scale context (112 + 224 µm)", ["lite0_ctx2"]),
    ("  + test-time augmentation (8 flips/rotations)", ["lite0_tta"]),
    ("  + colour/texture features", ["lite0", "ct"]),
    ("colour/texture, multi-scale context", ["ct_ctx2"]),
    ("lite0 context + colour/texture context (no TTA)", ["lite0_ctx2", "ct_ctx2"]),
    ("lite0 context + TTA + colour/texture context", ["lite0_ctx2_tta", "ct_ctx2"]),
    ("lite0 + neighbouring spots (ring 1)", ["lite0@ring"]),
    ("colour/texture + neighbouring spots (ring 1)", ["ct@ring"]),
    (
        "kbfm pipeline: lite0 context + colour/texture context, each + neighbouring spots",
        ["lite0_ctx2@ring", "ct_ctx2@ring"],
    ),
]


def load_sections() -> list[ad.AnnData]:
    out = []
    for s in SECTIONS:
        image = next((HER2ST / "imgs").glob(f"{s}_*.jpg"))
        a = read_legacy_st(HER2ST / f"cnts/{s}.tsv.gz", HER2ST / f"spots/{s}_selection.tsv", image)
        a.obs_names = [f"{s}_{n}" for n in a.obs_names]
        out.append(a)
    return out


def main() -> None:
    require(HER2ST, "image_expression benchmark")
    kbfm.settings.progress = False
    sections = load_sections()
    timings = {}
    for key, kwargs in EMBEDDINGS.items():
        t0 = time.perf_counter()
        for a in sections:
            embed_image(a, key_added=key, **kwargs)
        timings[key] = round(time.perf_counter() - t0, 1)
        print(f"embedded {key} in {timings[key]} s", flush=True)
    adata = ad.concat(sections, join="inner", label="section", keys=SECTIONS)
    for key in {k for _, keys in ROWS for k in keys if k.endswith("@ring")}:
        spatial_context(adata, use_rep=key.removesuffix("@ring"), groupby="section", key_added=key)
    rows = []
    for label, keys in ROWS:
        rep = keys[0]
        if len(keys) > 1:
            rep = "+".join(keys)
            combine_embeddings(adata, keys, key_added=rep)
        predict_expression(adata, use_rep=rep, groupby="section")
        res = adata.uns["kbfm_predict_expression"]
        row = {
            "config": label,
            "embeddings": keys,
            "dim": int(adata.obsm[rep].shape[1]),
            "mean_r": round(res["mean_r_overall"], 4),
            "per_section": {k: round(v, 4) for k, v in res["mean_r"].items()},
            "embed_seconds": sum(timings[k.removesuffix("@ring")] for k in keys),
        }
        rows.append(row)
        print(f"{label:62s} {row['mean_r']:.3f} {row['per_section']}", flush=True)
    genes = list(adata.uns["kbfm_predict_expression"]["pearson"].index)
    result = {
        "benchmark": "HER2ST leave-one-section-out expression from H&E (HEST protocol)",
        "command": "python benchmarks/image_expression.py",
        "protocol": {
            "patch": "224 px at 0.5 um/px (112 um)",
            "pca": 256,
            "ridge_alpha": "100 / (n_pcs * n_genes)",
            "genes": "top-50 by variance of log1p counts per 10k over all spots",
            "cv": "leave one section out (C2-C5, one patient: optimistic)",
        },
        "n_spots": int(adata.n_obs),
        "genes": genes,
        "rows": rows,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "device": kbfm.settings.resolve_device(),
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "image_expression.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, OUT / "image_expression.json")
    lines = [
        "| configuration | dim | mean r | C2 | C3 | C4 | C5 | embed s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ps = r["per_section"]
        lines.append(
            f"| {r['config'].strip()} | {r['dim']} | **{r['mean_r']:.3f}** | "
            + " | ".join(f"{ps[s]:.3f}" for s in SECTIONS)
            + f" | {r['embed_seconds']:.0f} |"
        )
    md = OUT / "image_expression.md.tmp"
    md.write_text("\n".join(lines) + "\n")
    os.replace(md, OUT / "image_expression.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
