"""HER2ST leave-one-section-out: expression from H&E, HEST protocol, all configurations in one run.

Run: ``KBFM_DATA=/path/to/shared/data python benchmarks/image_expression.py [--skip-tta]``
(needs histology/her2st). Writes benchmarks/results/image_expression.json and .md.

Protocol: 4 sections (C2-C5, one patient), 224 px patches at 0.5 µm/px (112 µm) around
each spot, PCA to 256 fitted on the training sections, ridge alpha = 100/(256*50), Pearson
r per gene on the 50 most variable genes (log1p counts per 10k), each section held out
once. Everything fitted comes from the three training sections of a fold: the 50 genes
(variance over the training spots; each fold is scored on its own genes), the scaling of
combined embeddings, PCA and ridge (``kbfm.im.predict_expression``). ``@ring`` rows append
the mean embedding of the spots one grid step around each spot, within each section.

Each row is also scored with the protocol used before issue 15 ("old protocol": the 50
genes chosen by variance over all four sections, held-out one included, and combined
embeddings standardised with all spots' statistics), so the two columns differ only in
what the held-out section may influence. ``--skip-tta`` leaves out the two rows that need
the 8x test-time-augmentation embeddings (listed under "skipped").
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import anndata as ad
from _data import DATA_ROOT, require

import kbfm
from kbfm._cache import EmbeddingCache
from kbfm.im.combine_embeddings import combine_embeddings
from kbfm.im.embed_image import embed_image
from kbfm.im.predict_expression import (
    normalized_expression,
    predict_expression,
    top_variable_genes,
)
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


def old_protocol(adata: ad.AnnData, keys: list[str], rings: float, genes: list[str]) -> dict:
    """The pre-issue-15 protocol: genes and block scaling from all spots (held-out included)."""
    reps = []
    for key in keys:
        if rings > 0:
            spatial_context(adata, use_rep=key, groupby="section", key_added=f"{key}@ring")
            key = f"{key}@ring"
        reps.append(key)
    rep = reps[0]
    if len(reps) > 1:
        rep = "+".join(reps)
        combine_embeddings(adata, reps, key_added=rep)
    predict_expression(adata, use_rep=rep, groupby="section", genes=genes, key_added="old")
    return adata.uns["kbfm_predict_expression"]


def main() -> None:
    require(HER2ST, "image_expression benchmark")
    skip_tta = "--skip-tta" in sys.argv[1:]
    kbfm.settings.progress = False
    sections = load_sections()
    timings, cache_hits, skipped = {}, {}, []
    for key, kwargs in EMBEDDINGS.items():
        if skip_tta and kwargs.get("tta"):
            continue
        store = EmbeddingCache(kbfm.settings.cache_dir / "image")
        t0 = time.perf_counter()
        for a in sections:
            embed_image(a, key_added=key, cache=store, **kwargs)
        timings[key] = round(time.perf_counter() - t0, 1)
        lookups = store.stats.hits + store.stats.misses
        cache_hits[key] = f"{store.stats.hits}/{lookups}"
        print(f"embedded {key} in {timings[key]} s (cache hits {cache_hits[key]})", flush=True)
    adata = ad.concat(sections, join="inner", label="section", keys=SECTIONS)
    X, names = normalized_expression(adata)
    all_spot_genes = top_variable_genes(X, names, 50)  # the old protocol's gene list
    rows = []
    for label, keys in ROWS:
        embeddings = [k.removesuffix("@ring") for k in keys]
        if any(k not in timings for k in embeddings):
            skipped.append({"row": label, "reason": "--skip-tta: TTA embeddings not computed"})
            print(f"SKIPPED {label}: --skip-tta", flush=True)
            continue
        rings = 1.0 if all(k.endswith("@ring") for k in keys) else 0.0
        predict_expression(adata, use_rep=embeddings, rings=rings, groupby="section")
        res = adata.uns["kbfm_predict_expression"]
        genes_per_fold = res["genes_per_fold"]  # expression only: the same for every row
        old = old_protocol(adata, embeddings, rings, all_spot_genes)
        row = {
            "config": label,
            "embeddings": keys,
            "dim": int(sum(adata.obsm[k].shape[1] for k in embeddings) * (2 if rings else 1)),
            "mean_r": round(res["mean_r_overall"], 4),
            "per_section": {k: round(v, 4) for k, v in res["mean_r"].items()},
            "mean_r_old_protocol": round(old["mean_r_overall"], 4),
            "per_section_old_protocol": {k: round(v, 4) for k, v in old["mean_r"].items()},
            "embed_seconds": sum(timings[k] for k in embeddings),
            "embed_cache_hits": {k: cache_hits[k] for k in embeddings},
        }
        rows.append(row)
        print(
            f"{label:62s} {row['mean_r']:.3f} (old protocol {row['mean_r_old_protocol']:.3f}) "
            f"{row['per_section']}",
            flush=True,
        )
    result = {
        "benchmark": "HER2ST leave-one-section-out expression from H&E (HEST protocol)",
        "command": "python benchmarks/image_expression.py" + (" --skip-tta" if skip_tta else ""),
        "protocol": {
            "patch": "224 px at 0.5 um/px (112 um)",
            "pca": 256,
            "ridge_alpha": "100 / (n_pcs * n_genes)",
            "genes": "top-50 by variance of log1p counts per 10k over each fold's training "
            "spots; each fold scored on its own genes; mean_r = mean over folds",
            "scaling": (
                "combined embeddings standardised with the training spots' statistics; "
                "held-out spots clipped to the training range first"
            ),
            "cv": "leave one section out (C2-C5, one patient: optimistic)",
            "old_protocol": "genes by variance over all spots (held-out section included), "
            "combined embeddings standardised over all spots",
        },
        "n_spots": int(adata.n_obs),
        "genes_per_fold": genes_per_fold,
        "genes_old_protocol": all_spot_genes,
        "genes_shared_with_old_protocol": {
            k: len(set(v) & set(all_spot_genes)) for k, v in genes_per_fold.items()
        },
        "rows": rows,
        "skipped": skipped,
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
        "| configuration | dim | mean r | C2 | C3 | C4 | C5 | old protocol | embed s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ps = r["per_section"]
        lines.append(
            f"| {r['config'].strip()} | {r['dim']} | **{r['mean_r']:.3f}** | "
            + " | ".join(f"{ps[s]:.3f}" for s in SECTIONS)
            + f" | {r['mean_r_old_protocol']:.3f} | {r['embed_seconds']:.0f} |"
        )
    lines += [f"| {row['row'].strip()} | skipped ({row['reason']}) |" for row in skipped]
    md = OUT / "image_expression.md.tmp"
    md.write_text("\n".join(lines) + "\n")
    os.replace(md, OUT / "image_expression.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
