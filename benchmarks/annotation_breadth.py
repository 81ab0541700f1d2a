"""Annotation at atlas breadth (issue 12): every method on the same candidates, per set.

Labelled sets (real): scanpy's ``pbmc68k_reduced`` (human, 700 cells), the human lymph
node reference (330 cells, 11 types), the mouse hippocampus reference (510 cells, 17
types, 307 genes) and the mouse hypothalamus MERFISH reference (1,120 cells after dropping
"Ambiguous" and "Unstable", 134 genes), all from the shared data folder (``$KBFM_DATA``,
else ``<repo>/../shared/data``); a set whose files are absent is skipped and recorded.

Candidate sets (the same list for every method of a row group):
  closed  exactly the set's own truth Cell Ontology ids;
  branch  descendants with marker knowledge of tissue-plausible ontology roots, plus
          the truth ids (so every truth is reachable);
  auto    ``kbfm.tl.annotate(candidates="auto")``: the list it resolves (from
          ``uns["kbfm"]["annotate"]["candidates"]``) is then given to every other method;
  auto (tissue=...)  the same with the set's tissue word ("blood", "lymph node",
          "hippocampus", "hypothalamus") choosing the lineages instead of the data.

Methods: kbfm zero-shot (default "atlas" gene knowledge; encoders minilm and mpnet,
cluster level on Leiden "auto" clusters), kbfm marker scoring (cluster and cell level),
``scanpy.tl.marker_gene_overlap`` with the same markers on the same clusters (overlap
coefficient and Jaccard; the better one is reported, and which), and a supervised
ceiling: 10-NN (cosine, 5-fold stratified CV) on GenePT-w cell embeddings (minilm).
marker_gene_overlap compares with the top min(100, max(10, n_genes / 10)) Wilcoxon genes
per cluster (scanpy's default of 100 would be most of the 134-gene MERFISH panel).
Metrics: accuracy, macro-F1, ontology-aware accuracy (``kbfm.tl.evaluate_annotation``).

Deconvolution (mouse sets): ~200 seeded pseudo-spots of 5-10 held-out cells; reference
NNLS and the count model (reference = the other half of the cells) vs zero-shot
(no reference, markers of the truth ids); RMSE of proportions in Cell Ontology id space.

Run: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/annotation_breadth.py
     (``--datasets pbmc68k_reduced`` for one set, ``--encoders minilm`` to skip mpnet)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from _data import DATA_ROOT
from anndata import AnnData

import kbfm
from kbfm.knowledge import CellOntology, marker_sets
from kbfm.tl.annotate._prototypes import resolve_candidates

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SEED = 0

# Same map as benchmarks/annotation.py.
LYMPH_LABEL_TO_CL = {
    "B": "CL:0000236",  # B cell
    "B_Plasma": "CL:0000786",  # plasma cell
    "DC": "CL:0000451",  # dendritic cell
    "Endo": "CL:0000115",  # endothelial cell
    "ILC": "CL:0001065",  # innate lymphoid cell
    "Macrophages": "CL:0000235",  # macrophage
    "Monocytes": "CL:0000576",  # monocyte
    "NK": "CL:0000623",  # natural killer cell
    "T_CD4": "CL:0000624",  # CD4-positive, alpha-beta T cell
    "T_CD8": "CL:0000625",  # CD8-positive, alpha-beta T cell
    "VSMC": "CL:0000359",  # vascular associated smooth muscle cell
}
# Mouse hippocampus (DropViz clusters of Saunders et al. 2018, spacexr's Visium_Ref).
HIPPOCAMPUS_LABEL_TO_CL = {
    "Astrocyte": "CL:0002604",  # hippocampal astrocyte
    "CA1": "CL:1001571",  # hippocampal pyramidal neuron (CL has no CA1-specific term)
    "CA3": "CL:1001571",  # hippocampal pyramidal neuron (CL has no CA3-specific term)
    "Cajal_Retzius": "CL:0000695",  # Cajal-Retzius cell
    "Choroid": "CL:0000706",  # choroid plexus epithelial cell
    "Denate": "CL:2000089",  # dentate gyrus granule cell
    "Endothelial_Stalk": "CL:0002671",  # endothelial stalk cell
    "Endothelial_Tip": "CL:0000704",  # endothelial tip cell
    # No entorhinal term in CL; the entorhinal cortex is part of the cerebral cortex.
    "Entorihinal": "CL:0010012",  # cerebral cortex neuron
    "Ependymal": "CL:0000065",  # ependymal cell
    "Interneuron": "CL:1001569",  # hippocampal interneuron
    "Microglia_Macrophages": "CL:0000129",  # microglial cell
    "Mural": "CL:0008034",  # mural cell
    "Neurogenesis": "CL:1000042",  # forebrain neuroblast
    "Neuron.Slc17a6": "CL:0000679",  # glutamatergic neuron
    "Oligodendrocyte": "CL:0000128",  # oligodendrocyte
    "Polydendrocyte": "CL:0002453",  # oligodendrocyte precursor cell
}
# Mouse hypothalamic preoptic region MERFISH (Moffitt et al. 2018, spacexr's Merfish_Ref).
MERFISH_LABEL_TO_CL = {
    "Astrocytes": "CL:0012000",  # astrocyte of the forebrain (hypothalamus is forebrain)
    "Endothelial": "CL:0000071",  # blood vessel endothelial cell
    "Ependymal": "CL:0000065",  # ependymal cell
    "Excitatory": "CL:0000679",  # glutamatergic neuron
    "Fibroblast": "CL:0000057",  # fibroblast
    # Pdgfra+, Cspg5+, Mki67+ in this panel: Moffitt's "immature" ODs are OPCs.
    "Immature oligodendrocyte": "CL:0002453",  # oligodendrocyte precursor cell
    "Inhibitory": "CL:0000617",  # GABAergic neuron
    "Macrophage": "CL:0000878",  # central nervous system macrophage
    "Mature oligodendrocyte": "CL:4072003",  # mature myelinating oligodendrocyte
    "Microglia": "CL:0000129",  # microglial cell
    "Mural": "CL:0008034",  # mural cell
    "Newly formed oligodendrocyte": "CL:4072001",  # newly formed oligodendrocyte
}
MERFISH_DROP = ("Ambiguous", "Unstable")
NEURAL_ROOTS = [
    "neural cell",
    "endothelial cell",
    "mural cell",
    "fibroblast",
    "macrophage",
    "microglial cell",
    "ependymal cell",
    "choroid plexus epithelial cell",
]
BRANCH_ROOTS = {
    "pbmc68k_reduced": ["hematopoietic cell"],
    "lymph_node": ["hematopoietic cell", "endothelial cell", "smooth muscle cell", "fibroblast"],
    "mouse_hippocampus": NEURAL_ROOTS,
    "mouse_merfish": NEURAL_ROOTS,
}
TISSUE = {
    "pbmc68k_reduced": "blood",
    "lymph_node": "lymph node",
    "mouse_hippocampus": "hippocampus",
    "mouse_merfish": "hypothalamus",
}
SPECIES = {
    "pbmc68k_reduced": "human",
    "lymph_node": "human",
    "mouse_hippocampus": "mouse",
    "mouse_merfish": "mouse",
}
PATHS = {
    "lymph_node": "deconv/spacexr/Reference/Visium_Lymph_Ref/ref_downsampled.h5ad",
    "mouse_hippocampus": "deconv/spacexr/Reference/Visium_Ref",
    "mouse_merfish": "deconv/spacexr/Reference/Merfish_Ref",
}
LABEL_MAPS = {
    "lymph_node": LYMPH_LABEL_TO_CL,
    "mouse_hippocampus": HIPPOCAMPUS_LABEL_TO_CL,
    "mouse_merfish": MERFISH_LABEL_TO_CL,
}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    Path(tmp).chmod(0o644)  # mkstemp creates 0600
    os.replace(tmp, path)


def _log_normalise(adata: AnnData) -> AnnData:
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def _read_spacexr_csv(folder: Path, drop: tuple[str, ...] = ()) -> AnnData:
    counts = pd.read_csv(folder / "counts.csv", index_col=0)  # genes x cells
    labels = pd.read_csv(folder / "cell_types.csv", index_col=0)["x"].astype(str)
    labels = labels.reindex(counts.columns)
    keep = ~labels.isin(drop).to_numpy()
    adata = AnnData(sp.csr_matrix(counts.to_numpy().T[keep].astype(np.float32)))
    adata.obs_names = counts.columns[keep].astype(str)
    adata.var_names = counts.index.astype(str)
    adata.obs["cell_type"] = labels.to_numpy()[keep]
    numi = folder / "nUMI.csv"
    if numi.exists():
        adata.obs["nUMI"] = pd.read_csv(numi, index_col=0)["x"].reindex(adata.obs_names).to_numpy()
    return adata


def load(name: str, data: Path) -> tuple[AnnData | None, str]:
    """Return ``(adata, path)``; ``adata`` is None when the files are absent."""
    if name == "pbmc68k_reduced":
        adata = kbfm.datasets.pbmc68k_reduced()  # log-normalised X (from the shipped raw)
        adata.obs["cell_type_id"] = adata.obs["cell_type_id"].astype(str)
        return adata, "scanpy package (kbfm.datasets.pbmc68k_reduced)"
    path = data / PATHS[name]
    if not path.exists():
        return None, str(path)
    if name == "lymph_node":
        adata = sc.read_h5ad(path)
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    else:
        adata = _read_spacexr_csv(path, MERFISH_DROP if name == "mouse_merfish" else ())
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs["cell_type_id"] = adata.obs["cell_type"].map(LABEL_MAPS[name])
    if adata.obs["cell_type_id"].isna().any():
        missing = sorted(set(adata.obs.loc[adata.obs["cell_type_id"].isna(), "cell_type"]))
        raise SystemExit(f"{name}: labels without a CL id: {missing}")
    return _log_normalise(adata), str(path)


def branch_candidates(name: str, truth_ids: list[str], ontology) -> list[str]:
    """Knowledge-bearing descendants of the set's roots (kbfm's rule), plus the truth."""
    # resolve_candidates(None) = every type kbfm accepts as knowledge-bearing; taking the
    # descendants here instead of resolve_candidates(root) per root avoids its "need at
    # least two types" error for narrow roots such as "microglial cell".
    bearing = set(resolve_candidates(None, ontology, species=SPECIES[name]))
    ids: set[str] = set(truth_ids)
    for root in BRANCH_ROOTS[name]:
        ids |= set(ontology.descendants(ontology.term(root).id, include_self=True)) & bearing
    return sorted(ids)


def knn_cv(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    min_class = np.unique(labels, return_counts=True)[1].min()
    cv = StratifiedKFold(n_splits=min(5, int(min_class)), shuffle=True, random_state=SEED)
    clf = KNeighborsClassifier(n_neighbors=10, metric="cosine")
    return cross_val_predict(clf, emb, labels, cv=cv)


def ranked_clusters(adata: AnnData, clusters: np.ndarray) -> AnnData:
    """Wilcoxon ``rank_genes_groups`` per cluster on the log-normalised ``X``."""
    tmp = AnnData(adata.X.copy(), obs=pd.DataFrame(index=adata.obs_names))
    tmp.var_names = adata.var_names
    tmp.obs["clusters"] = pd.Categorical(clusters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(tmp, "clusters", method="wilcoxon", use_raw=False)
    return tmp


def overlap_predictions(ranked: AnnData, markers: dict, method: str):
    """Argmax of ``sc.tl.marker_gene_overlap`` per cluster; returns (pred ids, info)."""
    upper = {g.upper(): g for g in ranked.var_names}
    ref = {
        cid: {upper[g.upper()] for g in genes if g.upper() in upper}
        for cid, genes in markers.items()
    }
    ref = {cid: genes for cid, genes in ref.items() if genes}
    # scanpy's default (top 100 genes per cluster) would be most of a 134-gene panel.
    top_n = min(100, max(10, ranked.n_vars // 10))
    overlap = sc.tl.marker_gene_overlap(ranked, ref, method=method, top_n_markers=top_n)
    best = overlap.idxmax(axis=0)  # rows: cell types, columns: clusters
    zero = int((overlap.max(axis=0) <= 0).sum())
    clusters = ranked.obs["clusters"].astype(str)
    pred = clusters.map(best.astype(str).to_dict()).to_numpy()
    info = {
        "top_n_markers": top_n,
        "n_types_with_markers_in_data": len(ref),
        "n_clusters_without_overlap": zero,
    }
    return pred.astype(str), info


def _scores(truth: np.ndarray, pred: np.ndarray, ontology) -> dict:
    m = kbfm.tl.evaluate_annotation(truth, pred, ontology=ontology)
    return {k: m[k] for k in ("accuracy", "macro_f1", "ontology_accuracy", "partial")}


def run_dataset(name: str, adata: AnnData, ontology, encoders: list[str]) -> tuple[list, dict]:
    species = SPECIES[name]
    truth = adata.obs["cell_type_id"].astype(str).to_numpy()
    truth_ids = sorted(set(truth))
    # Gene knowledge coverage (default "atlas" source; independent of the encoder).
    kbfm.tl.embed_genes(adata, species=species, encoder="minilm")
    has = np.asarray(adata.var["kbfm_has_knowledge"], dtype=bool)
    X = adata.X
    detected = np.asarray((X > 0).mean(axis=0)).ravel() >= 0.01
    frac_k = float(has.mean())
    frac_ek = float(has[detected].mean()) if detected.any() else float("nan")
    info: dict = {
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "n_types": len(truth_ids),
        "n_labels": int(adata.obs["cell_type"].nunique()),
        "species": species,
        "frac_genes_knowledge": frac_k,
        "n_expressed_genes": int(detected.sum()),
        "frac_expressed_genes_knowledge": frac_ek,
        "branch_roots": BRANCH_ROOTS[name],
        "branch_rule": "union of kbfm resolve_candidates(root) (knowledge-bearing "
        "descendants; kbfm's default marker-source minimum) plus the truth ids",
        "truth_ids_without_markers": [
            t for t, g in marker_sets(species=species, cell_types=truth_ids).items() if not g
        ],
    }
    base = {
        "dataset": name,
        "frac_genes_knowledge": frac_k,
        "frac_expressed_genes_knowledge": frac_ek,
    }
    rows: list[dict] = []

    def add(cand_set, n_cand, method, encoder, t0, pred=None, **extra):
        row = {**base, "candidate_set": cand_set, "n_candidates": n_cand, "method": method}
        row["encoder"] = encoder
        if pred is not None:
            row.update(_scores(truth, pred, ontology))
            ids, counts = np.unique(pred, return_counts=True)
            top = np.argsort(-counts)[:3]
            row["top_predictions"] = {
                f"{ids[i]} {ontology.term(ids[i]).label}": round(counts[i] / len(pred), 3)
                for i in top
            }
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row.update(extra)
        rows.append(row)
        acc = f"acc {row['accuracy']:.3f} F1 {row['macro_f1']:.3f}" if pred is not None else ""
        print(
            f"  {name} {cand_set:6s} n={n_cand} {method:34s} {encoder or '':6s} {acc} "
            f"{extra.get('error', '')} ({row['seconds']}s)",
            flush=True,
        )

    # (name, spec, tissue): "auto" lists are resolved by the first zero-shot call and
    # then given, as a list, to every other method.
    cand_sets: list[tuple[str, object, str | None]] = [
        ("closed", truth_ids, None),
        ("branch", branch_candidates(name, truth_ids, ontology), None),
        ("auto", "auto", None),
        (f"auto (tissue={TISSUE[name]!r})", "auto", TISSUE[name]),
    ]
    clusters, ranked = None, None
    for cand_name, cands, tissue in cand_sets:
        for enc in encoders:
            auto = isinstance(cands, str)
            t0 = time.perf_counter()
            try:
                kbfm.tl.annotate(
                    adata,
                    method="zero_shot",
                    candidates=cands,
                    groupby="auto",
                    species=species,
                    encoder=enc,
                    tissue=tissue,
                    key_added="pred",
                )
            except Exception as err:  # a method that cannot run is a finding
                msg = f"{type(err).__name__}: {err}"[:400]
                if auto:
                    msg = f"not available ({msg})"
                add(cand_name, None, "kbfm zero-shot (clusters)", enc, t0, error=msg)
                if auto:
                    break  # no auto list to share with the other methods
                continue
            prov = adata.uns["kbfm"]["annotate"]
            extra = {}
            if auto:
                cands = [str(c) for c in prov["candidates"]]
                extra = {
                    "candidates_how": prov.get("candidates_how"),
                    "candidate_lineages": list(prov.get("candidate_lineages", [])),
                }
            got = adata.obs["kbfm_clusters"].astype(str).to_numpy()
            if clusters is None:
                clusters = got
            pred = adata.obs["pred_id"].astype(str).to_numpy()
            add(
                cand_name,
                int(prov.get("n_candidates", len(prov["candidates"]))),
                "kbfm zero-shot (clusters)",
                enc,
                t0,
                pred,
                frac_genes_knowledge=prov["n_genes_with_knowledge"] / prov["n_genes"],
                clusters_identical=bool(np.array_equal(got, clusters)),
                knowledge_source=prov.get("knowledge_source"),
                truth_reachable=float(np.isin(truth, list(prov["candidates"])).mean()),
                **extra,
            )
        if isinstance(cands, str):
            print(f"  {name}: no candidate list for {cand_name!r}; other methods skipped")
            continue
        if clusters is None:
            from kbfm.tl.annotate import auto_clusters

            clusters = auto_clusters(X)
        n_cand = len(cands)
        reach = float(np.isin(truth, cands).mean())
        adata.obs["kbfm_clusters"] = pd.Categorical(clusters)
        for label, groupby in (
            ("kbfm marker score (clusters)", "kbfm_clusters"),
            ("kbfm marker score (cells)", None),
        ):
            t0 = time.perf_counter()
            try:
                kbfm.tl.annotate(
                    adata,
                    method="marker_score",
                    candidates=cands,
                    groupby=groupby,
                    species=species,
                    key_added="pred",
                )
            except Exception as err:
                msg = f"{type(err).__name__}: {err}"[:400]
                add(cand_name, n_cand, label, None, t0, error=msg, truth_reachable=reach)
                continue
            pred = adata.obs["pred_id"].astype(str).to_numpy()
            add(cand_name, n_cand, label, None, t0, pred, truth_reachable=reach)
        t0 = time.perf_counter()
        try:
            if ranked is None:
                ranked = ranked_clusters(adata, clusters)
            markers = marker_sets(species=species, cell_types=cands)
            best = None
            for m in ("overlap_coef", "jaccard"):
                pred, extra = overlap_predictions(ranked, markers, m)
                s = _scores(truth, pred, ontology)
                if best is None or s["accuracy"] > best[1]["accuracy"]:
                    other = best
                    best = (m, s, pred, extra)
                else:
                    other = (m, s, pred, extra)
            m, s, pred, extra = best
            extra = {
                **extra,
                "truth_reachable": reach,
                "overlap_method": m,
                "other_overlap": {"method": other[0], **other[1]},
            }
            add(cand_name, n_cand, f"scanpy marker_gene_overlap ({m})", None, t0, pred, **extra)
        except Exception as err:
            msg = f"{type(err).__name__}: {err}"[:400]
            add(
                cand_name,
                n_cand,
                "scanpy marker_gene_overlap",
                None,
                t0,
                error=msg,
                truth_reachable=reach,
            )
    t0 = time.perf_counter()
    kbfm.tl.embed_cells(adata, species=species, encoder="minilm")
    pred = knn_cv(np.asarray(adata.obsm["X_genetext"]), truth)
    add(
        "(supervised)",
        len(truth_ids),
        "10-NN on GenePT-w (5-fold CV)",
        "minilm",
        t0,
        pred,
        truth_reachable=1.0,
    )
    info["n_clusters"] = len(set(clusters)) if clusters is not None else None
    return rows, info


# ----------------------------------------------------------------------------------------
# Deconvolution on pseudo-spots


def split_reference(adata: AnnData, seed: int) -> tuple[AnnData, AnnData]:
    rng = np.random.default_rng(seed)
    labels = adata.obs["cell_type"].to_numpy()
    ref_idx, mix_idx = [], []
    for t in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == t))
        ref_idx += list(idx[: len(idx) // 2])
        mix_idx += list(idx[len(idx) // 2 :])
    return adata[sorted(ref_idx)].copy(), adata[sorted(mix_idx)].copy()


def pseudo_spots(pool: AnnData, label_map: dict, n_spots: int, seed: int):
    """Counts of 5-10 pool cells (types ~ Dirichlet(0.5)); truth as fractions per CL id."""
    rng = np.random.default_rng(seed)
    labels = pool.obs["cell_type"].to_numpy()
    types = sorted(set(labels))
    ids = sorted(set(label_map[t] for t in types))
    by_type = {t: np.flatnonzero(labels == t) for t in types}
    X = sp.csr_matrix(pool.layers["counts"])
    truth = np.zeros((n_spots, len(ids)))
    Y = np.zeros((n_spots, pool.n_vars))
    for i in range(n_spots):
        n_cells = rng.integers(5, 11)
        ks = rng.choice(len(types), size=n_cells, p=rng.dirichlet(np.full(len(types), 0.5)))
        cells = [rng.choice(by_type[types[k]]) for k in ks]
        for k in ks:
            truth[i, ids.index(label_map[types[k]])] += 1
        Y[i] = np.asarray(X[cells].sum(axis=0)).ravel()
    truth /= truth.sum(axis=1, keepdims=True)
    spots = AnnData(sp.csr_matrix(Y.astype(np.float32)))
    spots.var_names = pool.var_names.copy()
    spots.obs_names = [f"pseudo{i}" for i in range(n_spots)]
    return spots, truth, ids


def _to_ids(P: pd.DataFrame, label_map: dict, ids: list[str]) -> np.ndarray:
    out = pd.DataFrame(0.0, index=P.index, columns=ids)
    for col in P.columns:
        out[label_map.get(col, col)] += P[col].to_numpy()
    return out.to_numpy()


def _deconv_one(name, label, spots, truth, ids, label_map, kw) -> dict:
    from kbfm.tl.deconvolve import deconvolve

    t0 = time.perf_counter()
    try:
        out = deconvolve(spots, species="mouse", copy=True, seed=SEED, **kw)
    except Exception as err:  # a method that cannot run is a finding, not a crash
        print(f"  {name} deconv {label}: failed: {err}", flush=True)
        return {"ran": False, "error": f"{type(err).__name__}: {err}"[:600]}
    P = _to_ids(out.obsm["kbfm_proportions"], label_map, ids)
    rmse = float(np.sqrt(((P - truth) ** 2).mean()))
    r = float(np.corrcoef(P.ravel(), truth.ravel())[0, 1])
    step = out.uns["kbfm"]["deconvolve"]
    print(f"  {name} deconv {label}: rmse {rmse:.4f} r {r:.3f}", flush=True)
    result = {
        "ran": True,
        "rmse": rmse,
        "pearson": r,
        "n_genes_used": int(step["n_genes_used"]),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if step.get("marker_origin"):
        result["marker_origin"] = step["marker_origin"]
    return result


def run_deconvolution(name: str, adata: AnnData, n_spots: int) -> dict:
    label_map = LABEL_MAPS[name]
    ref, pool = split_reference(adata, SEED)
    ref.X = ref.layers["counts"].copy()
    spots, truth, ids = pseudo_spots(pool, label_map, n_spots, SEED + 1)
    res: dict = {
        "n_spots": n_spots,
        "cells_per_spot": "5-10",
        "type_mixture": "Dirichlet(0.5) over reference labels",
        "reference_cells": int(ref.n_obs),
        "pool_cells": int(pool.n_obs),
        "n_ids": len(ids),
        "space": "proportions summed per Cell Ontology id",
        "methods": {},
    }
    zero_shot = {"reference": None, "method": "knowledge"}
    plan = [
        ("nnls (reference)", {"reference": ref, "method": "nnls"}),
        ("count model (reference, default)", {"reference": ref}),
        ("zero-shot (no reference, truth ids)", {**zero_shot, "cell_types": ids}),
    ]
    panel = {g.upper() for g in spots.var_names}
    markers = marker_sets(species="mouse", cell_types=ids)
    measured = [i for i in ids if {g.upper() for g in markers.get(i, [])} & panel]
    for label, kw in plan:
        res["methods"][label] = _deconv_one(name, label, spots, truth, ids, label_map, kw)
    if not res["methods"][plan[-1][0]]["ran"] and 2 <= len(measured) < len(ids):
        # Fallback finding: zero-shot on the truth types whose markers the panel measures;
        # the other types are then predicted at proportion 0.
        label = f"zero-shot (no reference, {len(measured)} truth ids with measured markers)"
        kw = {**zero_shot, "cell_types": measured}
        res["methods"][label] = _deconv_one(name, label, spots, truth, ids, label_map, kw)
        res["methods"][label]["types_left_out"] = sorted(set(ids) - set(measured))
    uniform = np.full_like(truth, 1.0 / truth.shape[1])
    res["uniform_rmse"] = float(np.sqrt(((uniform - truth) ** 2).mean()))
    return res


# ----------------------------------------------------------------------------------------
# Output


def _f(x, nd=3) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def to_markdown(payload: dict) -> str:
    out = [
        "# Annotation at atlas breadth (issue 12)",
        "",
        f"Command: `{payload['command']}`  ",
        f"kbfm {payload['kbfm_version']}, Cell Ontology {payload['ontology']}, "
        f"{payload['machine']}; total {payload['total_seconds']:.0f} s.",
        "",
        "Same candidate list for every method within a (dataset, candidate set) group. "
        "Zero-shot and marker methods annotate the same Leiden clusters (`kbfm_clusters`). "
        "frac kn = fraction of genes with gene knowledge; frac expr kn = same among genes "
        "detected in >=1% of cells. Ontology-aware: exact 1, ancestor/descendant 0.5. "
        "truth in cand = fraction of cells whose true id is among the candidates.",
        "",
        "| dataset | candidates | n cand | method | encoder | accuracy | macro-F1 | "
        "ontology-aware | truth in cand | frac kn | frac expr kn | s |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        if "error" in r:
            why = r["error"][:140].replace("|", "/").replace("\n", " ")
            acc = f"not run: {why} | |"
        else:
            acc = f"{_f(r['accuracy'])} | {_f(r['macro_f1'])} | {_f(r['ontology_accuracy'])}"
        out.append(
            f"| {r['dataset']} | {r['candidate_set']} | {r['n_candidates'] or '—'} | "
            f"{r['method']} | {r['encoder'] or '—'} | {acc} | {_f(r.get('truth_reachable'), 2)} | "
            f"{_f(r['frac_genes_knowledge'])} | "
            f"{_f(r['frac_expressed_genes_knowledge'])} | {r['seconds']:.1f} |"
        )
    out.append("")
    for name, d in payload["datasets"].items():
        autos = {
            r["candidate_set"]: (r.get("candidates_how"), r.get("candidate_lineages"))
            for r in payload["rows"]
            if r["dataset"] == name and r.get("candidates_how")
        }
        how = "; ".join(f"{k}: {v[0]} {v[1]}" for k, v in autos.items())
        out.append(
            f"- {name}: {d['n_cells']} cells, {d['n_genes']} genes, {d['n_labels']} labels -> "
            f"{d['n_types']} CL ids, {d['n_clusters']} clusters; truth ids without markers: "
            f"{d['truth_ids_without_markers'] or 'none'}; {how}"
        )
    for s in payload["skipped"]:
        out.append(f"\nskipped: {s['dataset']} ({s['path']} not found)")
    if payload["deconvolution"]:
        out += [
            "",
            "## Zero-shot vs reference-based deconvolution (pseudo-spots)",
            "",
            "| dataset | method | ran | RMSE | Pearson r | genes used | s |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for name, res in payload["deconvolution"].items():
            for label, m in res["methods"].items():
                if m["ran"]:
                    out.append(
                        f"| {name} | {label} | yes | {m['rmse']:.4f} | {m['pearson']:.3f} | "
                        f"{m['n_genes_used']} | {m['seconds']:.1f} |"
                    )
                else:
                    why = m["error"][:200].replace("|", "/").replace("\n", " ")
                    out.append(f"| {name} | {label} | no: {why} | | | | |")
            out.append(f"| {name} | uniform proportions | — | {res['uniform_rmse']:.4f} | | | |")
        out.append(
            f"\n{next(iter(payload['deconvolution'].values()))['n_spots']} seeded pseudo-spots "
            "of 5-10 held-out cells per mouse reference; the reference-based methods use the "
            "other half of the cells; RMSE over all (spot, CL id) proportions."
        )
    out += ["", "## Label maps", ""]
    onto_labels = payload["label_maps_cl_labels"]
    for name, m in payload["label_maps"].items():
        out.append(
            f"**{name}**: "
            + "; ".join(f"{k} -> {v} ({onto_labels.get(v, '?')})" for k, v in m.items())
        )
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", default="pbmc68k_reduced,lymph_node,mouse_hippocampus,mouse_merfish"
    )
    parser.add_argument("--encoders", default="minilm,mpnet")
    parser.add_argument("--n-spots", type=int, default=200)
    args = parser.parse_args()
    kbfm.settings.progress = False
    sc.settings.verbosity = 0
    start = time.perf_counter()
    ontology = CellOntology.load()
    data = DATA_ROOT
    encoders, encoder_notes = [], {}
    for enc in args.encoders.split(","):
        try:
            kbfm.encoders.get_text_encoder(enc)
            encoders.append(enc)
        except Exception as err:
            encoder_notes[enc] = f"{enc} not installed ({type(err).__name__}: {err})"[:300]
            print(f"skipped encoder: {encoder_notes[enc]}")
    command = (
        "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/annotation_breadth.py"
    )
    default_ds = parser.get_default("datasets")
    if args.datasets != default_ds:
        command += f" --datasets {args.datasets}"
    if args.encoders != parser.get_default("encoders"):
        command += f" --encoders {args.encoders}"
    payload: dict = {
        "benchmark": "annotation_breadth",
        "issue": 12,
        "command": command,
        "kbfm_version": kbfm.__version__,
        "ontology": ontology.version,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "data_folder": str(data),
        "seed": SEED,
        "encoders": encoders,
        "encoder_notes": encoder_notes,
        "datasets": {},
        "skipped": [],
        "rows": [],
        "deconvolution": {},
        "label_maps": {k: v for k, v in LABEL_MAPS.items()},
        "total_seconds": 0.0,
    }
    payload["label_maps"]["pbmc68k_reduced"] = dict(kbfm.datasets.PBMC68K_LABEL_TO_CL)
    payload["label_maps_cl_labels"] = {
        v: ontology.term(v).label for m in payload["label_maps"].values() for v in m.values()
    }

    def save() -> None:
        payload["total_seconds"] = round(time.perf_counter() - start, 1)
        write_atomic(RESULTS / "annotation_breadth.json", json.dumps(payload, indent=2))
        write_atomic(RESULTS / "annotation_breadth.md", to_markdown(payload) + "\n")

    for name in args.datasets.split(","):
        adata, path = load(name, data)
        if adata is None:
            print(f"skipped: {name} ({path} not found)")
            payload["skipped"].append({"dataset": name, "path": path})
            continue
        print(f"{name}: {adata.n_obs} cells x {adata.n_vars} genes ({path})", flush=True)
        t0 = time.perf_counter()
        try:
            rows, info = run_dataset(name, adata, ontology, encoders)
        except Exception:
            traceback.print_exc()
            raise
        info["path"] = path
        info["seconds"] = round(time.perf_counter() - t0, 1)
        payload["rows"] += rows
        payload["datasets"][name] = info
        if SPECIES[name] == "mouse":
            payload["deconvolution"][name] = run_deconvolution(name, adata, args.n_spots)
        save()
    save()
    print(to_markdown(payload))


if __name__ == "__main__":
    main()
