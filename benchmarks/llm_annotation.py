"""LLM cluster annotation (GPTCelltype-style) vs kbfm zero-shot embeddings vs marker scoring.

Datasets (loaded by ``benchmarks/annotation_breadth.py``): scanpy's ``pbmc68k_reduced``
(human blood), the human lymph node reference and the mouse hippocampus reference from
``../shared/data``. Each set uses its CLOSED candidate set (exactly its own truth Cell
Ontology ids), the same list for every method, so prompts stay short.

Leiden clusters are computed once per set (``kbfm.tl.annotate(groupby="auto")``, which
writes ``obs["kbfm_clusters"]``); every method then annotates those clusters
(``groupby="kbfm_clusters"``). Each cluster's truth is its majority label. Agreement per
cluster is full / partial (ancestor or descendant in the Cell Ontology) / none, as
GPTCelltype reports; cell-level accuracy and macro-F1 are given too.

Methods: kbfm zero-shot embeddings (``method="zero_shot"``), marker scoring
(``method="marker_score"``), and ``method="llm"`` for SmolLM2-135M, Qwen2.5-Coder-0.5B
and Qwen2.5-Coder-1.5B (bf16), each free text (answer mapped onto the ontology; answers
outside the candidates are unmapped) and constrained (log-likelihood of each candidate),
with retrieval (prompt ``celltype_annotation.v2``: retrieved marker facts + the allowed
candidates) and without (v1: genes only). One extra row reproduces constrained scoring as
it was before the fix (the bare label scored as the start of the answer instead of the
``"<cluster>: <label>"`` line the prompt asks for) for Qwen 1.5B with retrieval, on the
two human sets.

Each LLM configuration runs in its own subprocess (the model loaded once, all three sets),
which reports its peak RSS (``ru_maxrss``), model load time, seconds per cluster and the
load average. Free-text answers go through kbfm's LLM answer cache; a row says whether
its answers were computed in this run ("cold") or read from the cache ("warm": the
seconds then do not measure the model).

Run: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/llm_annotation.py
     (``--models qwen1.5b``, ``--datasets pbmc68k_reduced``, ``--no-cache`` to recompute
     free-text answers, ``--no-before`` to skip the pre-fix scoring row)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import annotation_breadth as ab
from anndata import AnnData

import kbfm
from kbfm.encoders.llm import LLM
from kbfm.knowledge import CellOntology

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python"
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ["pbmc68k_reduced", "lymph_node", "mouse_hippocampus"]
MODELS = ["smollm2", "qwen0.5b", "qwen1.5b"]
CHILD_TIMEOUT_S = 1800
BEFORE_SETS = ["pbmc68k_reduced", "lymph_node"]


# ---------------------------------------------------------------- scoring


def cluster_agreement(adata, key: str, ontology) -> dict:
    """GPTCelltype-style full / partial / none per cluster, plus cell-level scores."""
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


def per_cluster(adata, key: str) -> dict[str, str]:
    """Predicted CL id per cluster ("" = unmapped)."""
    frame = adata.obs[["kbfm_clusters", f"{key}_id"]].astype(str)
    return frame.groupby("kbfm_clusters", observed=True)[f"{key}_id"].first().to_dict()


# ---------------------------------------------------------------- child process


class BareLabelScoring(LLM):
    """Constrained scoring as before the fix: the bare label, not the answer line.

    ``llm_cluster_answers`` now asks for ``"<cluster>: <label>"``; this wrapper strips
    the ``"<cluster>: "`` part before scoring, reproducing the old behaviour exactly.
    """

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.name = f"{inner.name} (bare-label scoring)"
        self.model_id = f"{inner.model_id} (bare-label scoring)"

    def chat(self, messages, *, tools=None, max_tokens=256):
        return self.inner.chat(messages, tools=tools, max_tokens=max_tokens)

    def score_options(self, messages, options):
        return self.inner.score_options(messages, [o.split(": ", 1)[1] for o in options])


def _llm_cache_files() -> int:
    folder = kbfm.settings.cache_dir / "llm"
    return sum(1 for _ in folder.rglob("*.json")) if folder.exists() else 0


def child(args: argparse.Namespace) -> None:
    """Run one LLM configuration on every prepared set; write its result JSON."""
    from kbfm.encoders.llm import get_llm

    kbfm.settings.progress = False
    work = Path(args.work)
    spec = json.loads((work / "sets.json").read_text())
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    threads = args.threads if args.threads == "auto" else int(args.threads)
    llm = get_llm(args.model, threads=threads)
    load_s = time.perf_counter() - t0
    model_id = llm.model_id
    if args.before:
        llm = BareLabelScoring(llm)
    out: dict = {
        "model_id": model_id,
        "threads": getattr(llm, "threads", None),
        "load_s": round(load_s, 2),
        "sets": {},
    }
    for name, info in spec.items():
        import anndata as ad

        if args.only_sets and name not in args.only_sets:
            continue
        adata = ad.read_h5ad(work / f"{name}.h5ad")
        before_files = _llm_cache_files()
        t = time.perf_counter()
        error = None
        try:
            kbfm.tl.annotate(
                adata,
                method="llm",
                llm=llm,
                groupby="kbfm_clusters",
                candidates=info["candidates"],
                species=info["species"],
                tissue=info["tissue"],
                constrained=args.constrained,
                retrieval=args.retrieval,
                cache=not args.no_cache,
                key_added="pred",
            )
        except Exception as err:  # recorded, the other sets still run
            error = f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - t
        row: dict = {"seconds": round(seconds, 2), "error": error}
        if error is None:
            record = adata.uns["kbfm"]["annotate"]
            row.update(
                pred=per_cluster(adata, "pred"),
                raw=dict(record.get("answers", {})),
                mapping=(
                    adata.obs[["kbfm_clusters", "pred_mapping"]]
                    .astype(str)
                    .groupby("kbfm_clusters", observed=True)["pred_mapping"]
                    .first()
                    .to_dict()
                ),
                prompt=record.get("prompt"),
                mode=record.get("mode"),
                scored_answer=record.get("scored_answer"),
                n_unmapped=int(record.get("n_unmapped", 0)),
            )
            if not args.constrained:
                new = _llm_cache_files() - before_files
                row["free_text_cache"] = "cold" if (new > 0 or args.no_cache) else "warm"
        out["sets"][name] = row
        print(f"  {args.model} {name}: {seconds:.1f}s {error or ''}", flush=True)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    out["loadavg_start"] = [round(x, 2) for x in load_start]
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    ab.write_atomic(Path(args.out), json.dumps(out, indent=2))


# ---------------------------------------------------------------- parent


def prepare(names: list[str], ontology, work: Path) -> tuple[dict, dict]:
    """Load the sets, cluster once, run the embedding baselines; save what children need."""
    sets, results = {}, {}
    for name in names:
        adata, path = ab.load(name, ab.DATA_ROOT)
        if adata is None:
            results[name] = {"skipped": f"files absent: {path}"}
            print(f"{name}: skipped ({path} absent)", flush=True)
            continue
        truth_ids = sorted(set(adata.obs["cell_type_id"].astype(str)))
        species, tissue = ab.SPECIES[name], ab.TISSUE[name]
        t = time.perf_counter()
        kbfm.tl.annotate(
            adata, candidates=truth_ids, groupby="auto", species=species, key_added="auto"
        )
        cluster_s = time.perf_counter() - t
        clusters = adata.obs["kbfm_clusters"].astype(str)
        order = sorted(clusters.unique(), key=lambda c: (len(c), c))
        majority = {
            c: str(adata.obs["cell_type_id"].astype(str)[clusters == c].value_counts().index[0])
            for c in order
        }
        rows = {}
        for label, method in (
            ("kbfm zero-shot embeddings", "zero_shot"),
            ("kbfm marker score", "marker_score"),
        ):
            t = time.perf_counter()
            kbfm.tl.annotate(
                adata,
                method=method,
                candidates=truth_ids,
                groupby="kbfm_clusters",
                species=species,
                tissue=tissue,
                key_added="base",
            )
            seconds = time.perf_counter() - t
            row = cluster_agreement(adata, "base", ontology)
            row.update(
                kind="embedding baseline",
                seconds=round(seconds, 2),
                seconds_per_cluster=round(seconds / len(order), 3),
                pred=per_cluster(adata, "base"),
                peak_rss_gb=None,
            )
            rows[label] = row
        dry = {}
        for retrieval in (False, True):
            kbfm.tl.annotate(
                adata,
                method="llm",
                llm="dry-run",
                groupby="kbfm_clusters",
                candidates=truth_ids,
                species=species,
                tissue=tissue,
                retrieval=retrieval,
            )
            rec = adata.uns["kbfm"]["annotate_llm_dry_run"]
            dry[rec["prompt"]] = {
                "estimated_prompt_tokens": int(rec["estimated_prompt_tokens"]),
                "prompt": rec["dry_run_prompts"][0],
            }
        small = AnnData(
            adata.X.copy(),
            obs=adata.obs[["cell_type_id", "kbfm_clusters"]].astype(str).copy(),
        )
        small.var_names = adata.var_names
        small.write_h5ad(work / f"{name}.h5ad")
        sets[name] = {"candidates": truth_ids, "species": species, "tissue": tissue}
        results[name] = {
            "source": path,
            "n_cells": int(adata.n_obs),
            "n_genes": int(adata.n_vars),
            "species": species,
            "tissue": tissue,
            "candidates": {c: ontology.term(c).label for c in truth_ids},
            "n_clusters": len(order),
            "clustering_seconds": round(cluster_s, 2),
            "cluster_truth": {
                c: f"{majority[c]} {ontology.term(majority[c]).label}" for c in order
            },
            "dry_run": dry,
            "rows": rows,
            "_adata": adata,
        }
        print(f"{name}: {adata.n_obs} cells, {len(order)} clusters", flush=True)
    (work / "sets.json").write_text(json.dumps(sets))
    return sets, results


def configs(models: list[str], before: bool) -> list[dict]:
    out = []
    for model in models:
        for retrieval in (False, True):
            for constrained in (False, True):
                out.append({"model": model, "constrained": constrained, "retrieval": retrieval})
        if before and model == "qwen1.5b":
            # The pre-fix row on the two human sets only (keeps the run under ~35 min).
            out.append(
                {
                    "model": model,
                    "constrained": True,
                    "retrieval": True,
                    "before": True,
                    "sets": BEFORE_SETS,
                }
            )
    return out


def config_label(cfg: dict) -> str:
    mode = "constrained" if cfg["constrained"] else "free text"
    retr = "retrieval" if cfg["retrieval"] else "no retrieval"
    extra = ", bare-label scoring (before the fix)" if cfg.get("before") else ""
    return f"LLM {cfg['model']}, {mode}, {retr}{extra}"


def run_config(cfg: dict, work: Path, no_cache: bool, threads: str) -> tuple[dict, float]:
    out = work / f"child_{len(list(work.glob('child_*.json')))}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--model",
        cfg["model"],
        "--work",
        str(work),
        "--out",
        str(out),
        "--threads",
        threads,
    ]
    cmd += ["--constrained"] if cfg["constrained"] else []
    cmd += ["--retrieval"] if cfg["retrieval"] else []
    cmd += ["--before"] if cfg.get("before") else []
    cmd += ["--only-sets", *cfg["sets"]] if cfg.get("sets") else []
    cmd += ["--no-cache"] if no_cache else []
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, timeout=CHILD_TIMEOUT_S, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout)[-2000:]
        return {"error": f"child exited {proc.returncode}: {tail}"}, wall
    return json.loads(out.read_text()), wall


def add_llm_rows(results: dict, cfg: dict, res: dict, wall: float, ontology) -> None:
    label = config_label(cfg)
    for name, data in results.items():
        if "rows" not in data:
            continue
        row: dict = {
            "kind": "llm",
            "model": cfg["model"],
            "constrained": cfg["constrained"],
            "retrieval": cfg["retrieval"],
            "before_fix": bool(cfg.get("before")),
        }
        if cfg.get("sets") and name not in cfg["sets"]:
            continue
        got = res.get("sets", {}).get(name)
        if "error" in res and got is None:
            row["error"] = res["error"]
            data["rows"][label] = row
            continue
        if got is None or got.get("error"):
            row["error"] = (got or {}).get("error", "not run")
            data["rows"][label] = row
            continue
        adata = data["_adata"]
        clusters = adata.obs["kbfm_clusters"].astype(str)
        adata.obs["llm_id"] = clusters.map(got["pred"]).fillna("").astype(str)
        row.update(cluster_agreement(adata, "llm", ontology))
        row.update(
            seconds=got["seconds"],
            seconds_per_cluster=round(got["seconds"] / data["n_clusters"], 2),
            peak_rss_gb=res["peak_rss_gb"],
            load_s=res["load_s"],
            process_wall_s=round(wall, 1),
            model_id=res["model_id"],
            threads=res.get("threads"),
            loadavg_start=res["loadavg_start"],
            loadavg_end=res["loadavg_end"],
            prompt=got["prompt"],
            mode=got["mode"],
            scored_answer=got.get("scored_answer"),
            n_unmapped=got["n_unmapped"],
            pred=got["pred"],
            raw=got["raw"],
            mapping=got["mapping"],
        )
        if "free_text_cache" in got:
            row["free_text_cache"] = got["free_text_cache"]
        data["rows"][label] = row


def _f(x, nd=2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def to_markdown(payload: dict) -> str:
    meta = payload["meta"]
    out = [
        "# LLM cluster annotation (issue 13)\n",
        f"Command: `{meta['command']}`\n",
        f"Date {meta['date']}; {meta['machine']['cpus']} CPUs; load average at start "
        f"{meta['loadavg_start']}, at end {meta['loadavg_end']}; total {meta['total_s']:.0f} s. "
        "Closed candidate sets (each set's own truth CL ids); all methods on the same "
        "Leiden clusters. full / partial / none: per-cluster agreement with the majority "
        "label (partial = ancestor or descendant in the Cell Ontology). s/cluster for LLM "
        "rows excludes model loading (load s); RSS is the subprocess peak.\n",
    ]
    names = [n for n in payload["datasets"] if "rows" in payload["datasets"][n]]
    # Summary: full+partial per set.
    labels: list[str] = []
    for n in names:
        labels += [k for k in payload["datasets"][n]["rows"] if k not in labels]
    out.append("## Full+partial agreement per set\n")
    out.append("| method | " + " | ".join(names) + " | mean |")
    out.append("|---|" + "---|" * (len(names) + 1))
    for label in labels:
        vals = [
            payload["datasets"][n]["rows"].get(label, {}).get("full_plus_partial") for n in names
        ]
        ok = [v for v in vals if v is not None]
        mean = sum(ok) / len(ok) if len(ok) == len(vals) and ok else None
        out.append(f"| {label} | " + " | ".join(_f(v) for v in vals) + f" | {_f(mean)} |")
    for n in names:
        data = payload["datasets"][n]
        out.append(
            f"\n## {n} ({data['n_cells']} cells, {data['n_clusters']} Leiden clusters, "
            f"{len(data['candidates'])} candidates, {data['species']} {data['tissue']})\n"
        )
        out.append(
            "| method | prompt | full | partial | none | full+partial | cell acc | cell F1 | "
            "unmapped | s/cluster | load s | peak RSS GB | load avg |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for label, m in data["rows"].items():
            if m.get("error"):
                out.append(f"| {label} | – | error: {m['error'][:80]} |" + " |" * 10)
                continue
            spc = _f(m.get("seconds_per_cluster"), 2)
            if m.get("free_text_cache") == "warm":
                spc += " (cached)"
            la = m.get("loadavg_start")
            out.append(
                f"| {label} | {m.get('prompt') or '–'} | {_f(m['full'])} | {_f(m['partial'])} | "
                f"{_f(m['none'])} | {_f(m['full_plus_partial'])} | {_f(m['cell_accuracy'], 3)} | "
                f"{_f(m['cell_macro_f1'], 3)} | {m.get('n_unmapped', '–')} | {spc} | "
                f"{_f(m.get('load_s'), 1)} | {_f(m.get('peak_rss_gb'), 1)} | "
                f"{_f(la[0], 1) if la else '–'} |"
            )
        # Per-cluster answers of the main rows.
        show = [
            "kbfm zero-shot embeddings",
            "kbfm marker score",
            "LLM qwen1.5b, constrained, retrieval",
            "LLM qwen1.5b, free text, retrieval",
            "LLM qwen1.5b, constrained, retrieval, bare-label scoring (before the fix)",
        ]
        show = [s for s in show if s in data["rows"] and "pred" in data["rows"][s]]
        if show:
            cands = data["candidates"]
            out.append("\nPer cluster (predicted label; * = full, ~ = partial agreement):\n")
            heads = [s.replace("LLM qwen1.5b, ", "qwen1.5b ") for s in show]
            out.append("| cluster | truth (majority) | " + " | ".join(heads) + " |")
            out.append("|---|---|" + "---|" * len(show))
            onto = payload["_ontology"]
            for c, truth in data["cluster_truth"].items():
                tid = truth.split(" ", 1)[0]
                cells = []
                for s in show:
                    row = data["rows"][s]
                    pid = row["pred"].get(c, "")
                    if not pid:
                        raw = (row.get("raw") or {}).get(c, "")
                        cells.append(f"unmapped ({raw[:30]!r})" if raw else "unmapped")
                        continue
                    rel = onto.relation(pid, tid)
                    mark = {"full": "*", "partial": "~"}.get(rel, "")
                    cells.append(f"{cands.get(pid, pid)}{mark}")
                out.append(f"| {c} | {truth.split(' ', 1)[1]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _clean(results: dict) -> dict:
    return {n: {k: v for k, v in d.items() if not k.startswith("_")} for n, d in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--no-cache", action="store_true", help="recompute free-text answers")
    parser.add_argument("--no-before", action="store_true", help="skip the pre-fix scoring row")
    parser.add_argument(
        "--threads",
        default="1",
        help="torch threads per LLM ('auto' or a count; 1 is fastest on a busy 2-core box)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--constrained", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--retrieval", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--before", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only-sets", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    kbfm.settings.progress = False
    command = " ".join([f"{COMMAND} benchmarks/llm_annotation.py", *sys.argv[1:]])
    ontology = CellOntology.load()
    start, load_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="kbfm-llm-bench-") as tmp:
        work = Path(tmp)
        _, results = prepare(args.datasets, ontology, work)
        for cfg in configs(args.models, before=not args.no_before):
            print(config_label(cfg), flush=True)
            res, wall = run_config(cfg, work, args.no_cache, args.threads)
            if "error" in res:
                print("  " + res["error"][-500:], flush=True)
            add_llm_rows(results, cfg, res, wall, ontology)
    payload = {
        "benchmark": "llm_annotation",
        "meta": {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "total_s": round(time.perf_counter() - start, 1),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kbfm": kbfm.__version__,
            },
            "candidates": "closed: each set's own truth Cell Ontology ids",
            "clusters": "kbfm.tl.annotate(groupby='auto') Leiden, computed once per set",
            "llm_dtype": "bfloat16 for qwen (store default); smollm2 as shipped (GGUF)",
            "llm_threads": args.threads,
            "constrained_scoring": "'<cluster id>: <label>' line, mean log-likelihood per "
            "token (before the fix: bare label)",
        },
        "datasets": _clean(results),
    }
    payload["_ontology"] = ontology
    md = to_markdown(payload)
    del payload["_ontology"]
    ab.write_atomic(RESULTS / "llm_annotation.json", json.dumps(payload, indent=2, default=str))
    ab.write_atomic(RESULTS / "llm_annotation.md", md)
    print(md)


if __name__ == "__main__":
    main()
