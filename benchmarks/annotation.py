"""Annotation benchmark: zero-shot vs marker-score baseline vs 10-NN, with an ablation.

Datasets (real, labelled): scanpy's ``pbmc68k_reduced`` (700 cells, 10 sorted
populations) and the human lymph node reference in
``../shared/data/deconv/spacexr/Reference/Visium_Lymph_Ref/`` (330 cells, 11 types;
counts, log-normalised here). Every row is measured in the same run.

Rows 0a-0d (when ../shared/data is present) use NCBI RefSeq summaries of all genes as the
gene knowledge, as GenePT does; rows 1-6 use kbfm's offline builtin knowledge (curated
marker facts joined to Cell Ontology definitions; marker genes only).

Zero-shot ablation (each row adds one step to the previous):
  1. text only: GenePT-w (raw expression weights) vs Cell Ontology cards without markers
  2. + marker genes written into the cards
  3. + marker-gene prototype (mean text embedding of the markers) added to the card
  4. + relative expression (per-gene z-score, negative part 0) instead of raw values
  5. + cluster-level aggregation (Leiden) before matching
  6. + ontology-restricted candidates (tissue-plausible roots instead of all curated types)
  7. + centering of cells and prototypes (the default for broad knowledge, not for builtin)
Baselines: ``scanpy.tl.score_genes`` on the same markers (cell and cluster level, with
the step-6 candidates) and 10-NN on GenePT-w embeddings (5-fold stratified CV; supervised).

Run: python benchmarks/annotation.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import scanpy as sc
from _data import DATA_ROOT, skipped

import kbfm
from kbfm.knowledge import CellOntology, marker_sets
from kbfm.tl.annotate._prototypes import resolve_candidates

RESULTS = Path(__file__).parent / "results"
SKIPPED: list[dict] = []
SHARED = DATA_ROOT
REFSEQ = SHARED / "genes/refseq_summaries_human.tsv.gz"
LYMPH_REF = SHARED / "deconv/spacexr/Reference/Visium_Lymph_Ref/ref_downsampled.h5ad"

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
RESTRICTED_ROOTS = {
    "pbmc68k_reduced": ["hematopoietic cell"],
    "lymph_node": ["hematopoietic cell", "endothelial cell", "smooth muscle cell", "fibroblast"],
}


def load_datasets() -> dict:
    data = {"pbmc68k_reduced": kbfm.datasets.pbmc68k_reduced()}
    if LYMPH_REF.exists():
        ln = sc.read_h5ad(LYMPH_REF)
        sc.pp.normalize_total(ln, target_sum=1e4)
        sc.pp.log1p(ln)
        ln.obs["cell_type_id"] = ln.obs["cell_type"].astype(str).map(LYMPH_LABEL_TO_CL)
        data["lymph_node"] = ln
    else:
        skipped("lymph node annotation rows", LYMPH_REF, SKIPPED)
    return data


def restricted(name: str, ontology) -> list[str]:
    curated = set(marker_sets())
    ids: set[str] = set()
    for root in RESTRICTED_ROOTS[name]:
        ids |= set(ontology.descendants(root)) & curated
    return sorted(ids)


def knn_cv(emb: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    min_class = np.unique(labels, return_counts=True)[1].min()
    cv = StratifiedKFold(n_splits=min(5, int(min_class)), shuffle=True, random_state=0)
    pred = cross_val_predict(
        KNeighborsClassifier(n_neighbors=10, metric="cosine"), emb, labels, cv=cv
    )
    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, average="macro")),
    }


def run_dataset(name: str, adata, ontology) -> dict:
    truth = adata.obs["cell_type_id"].astype(str).to_numpy()
    wide, narrow = None, restricted(name, ontology)
    # (label, source, prototype, weighting, groupby, candidates, markers_in_card, center)
    plan = [
        (
            "1 text only (cards without markers, raw weights)",
            "builtin",
            "card",
            "expression",
            None,
            wide,
            False,
            False,
        ),
        ("2 + markers in cards", "builtin", "card", "expression", None, wide, True, False),
        (
            "3 + marker-gene prototype",
            "builtin",
            "card+markers",
            "expression",
            None,
            wide,
            True,
            False,
        ),
        ("4 + relative expression", "builtin", "card+markers", "relative", None, wide, True, False),
        (
            "5 + cluster aggregation",
            "builtin",
            "card+markers",
            "relative",
            "auto",
            wide,
            True,
            False,
        ),
        (
            "6 + ontology-restricted candidates (default recipe, builtin)",
            "builtin",
            "card+markers",
            "relative",
            "auto",
            narrow,
            True,
            None,
        ),
        ("7 = 6 + centering", "builtin", "card+markers", "relative", "auto", narrow, True, True),
    ]
    if REFSEQ.exists():
        refseq = str(REFSEQ)
        plan = [
            (
                "0a GenePT-w on RefSeq summaries (all genes) vs definition cards",
                refseq,
                "card",
                "expression",
                None,
                wide,
                False,
                False,
            ),
            (
                "0b = 0a + centering of both spaces",
                refseq,
                "card",
                "expression",
                None,
                wide,
                False,
                True,
            ),
            (
                "0c kbfm recipe with RefSeq summaries (steps 2-6, centered: the default)",
                refseq,
                "card+markers",
                "relative",
                "auto",
                narrow,
                True,
                None,
            ),
            (
                "0d = 0c without centering",
                refseq,
                "card+markers",
                "relative",
                "auto",
                narrow,
                True,
                False,
            ),
            *plan,
        ]
    keys = (
        "source",
        "prototype",
        "weighting",
        "groupby",
        "candidates",
        "markers_in_card",
        "center",
    )
    steps = [(row[0], dict(zip(keys, row[1:], strict=True))) for row in plan]
    rows = {}
    for label, kw in steps:
        t = time.perf_counter()
        kbfm.tl.annotate(adata, key_added="pred", **kw)
        pred = adata.obs["pred_id"].astype(str).to_numpy()
        rows[label] = kbfm.tl.evaluate_annotation(truth, pred, ontology=ontology)
        rows[label]["seconds"] = round(time.perf_counter() - t, 1)
    clusters = adata.obs["kbfm_clusters"].copy()
    for label, groupby in (
        ("baseline: marker score (cell level)", None),
        ("baseline: marker score (cluster level)", "kbfm_clusters"),
    ):
        adata.obs["kbfm_clusters"] = clusters
        kbfm.tl.annotate(
            adata, method="marker_score", candidates=narrow, groupby=groupby, key_added="pred"
        )
        pred = adata.obs["pred_id"].astype(str).to_numpy()
        rows[label] = kbfm.tl.evaluate_annotation(truth, pred, ontology=ontology)
    kbfm.tl.embed_cells(adata, weighting="expression")
    rows["reference: 10-NN on GenePT-w (5-fold CV, supervised)"] = knn_cv(
        adata.obsm["X_genetext"], truth
    )
    kbfm.tl.embed_cells(adata, weighting="relative")
    rows["reference: 10-NN on relative GenePT-w (5-fold CV, supervised)"] = knn_cv(
        adata.obsm["X_genetext"], truth
    )
    return {
        "n_cells": int(adata.n_obs),
        "n_types": len(set(truth)),
        "n_candidates_all": len(resolve_candidates(None, ontology)),
        "n_candidates_restricted": len(narrow),
        "rows": rows,
    }


def to_markdown(results: dict) -> str:
    out = []
    for name, res in results.items():
        if name in ("meta", "skipped"):
            continue
        out.append(
            f"\n**{name}** ({res['n_cells']} cells, {res['n_types']} types; candidates: "
            f"{res['n_candidates_all']} all / {res['n_candidates_restricted']} restricted)\n"
        )
        out.append("| method | accuracy | macro-F1 | ontology-aware |")
        out.append("|---|---|---|---|")
        for label, m in res["rows"].items():
            onto = f"{m['ontology_accuracy']:.3f}" if "ontology_accuracy" in m else "—"
            out.append(f"| {label} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {onto} |")
    return "\n".join(out)


def main() -> None:
    kbfm.settings.progress = False
    ontology = CellOntology.load()
    results = {name: run_dataset(name, adata, ontology) for name, adata in load_datasets().items()}
    results["meta"] = {
        "encoder": "minilm",
        "knowledge": "builtin",
        "ontology": ontology.version,
        "kbfm_version": kbfm.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    results["skipped"] = SKIPPED
    (RESULTS / "annotation.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "annotation.md").write_text(to_markdown(results) + "\n")
    print(to_markdown(results))
    for row in SKIPPED:
        print(f"SKIPPED {row['row']}: {row['missing']} not found")


if __name__ == "__main__":
    main()
