"""Offline LLM speed and sanity on CPU: SmolLM2-135M vs Qwen2.5-Coder 0.5B and 1.5B.

Per configuration (model, compute dtype, torch threads), in a fresh subprocess so that
peak memory is that process's own ``ru_maxrss``:

- cold load: the first use of a store model, i.e. the GGUF dequantised and saved as
  safetensors (:mod:`kbfm.encoders._gguf_cache`) plus the load; measured in a
  throw-away cache folder (the model store is linked in, the real cache is untouched);
- warm load: reading the cached safetensors (SmolLM2 has no cache: transformers
  parses its GGUF at every load);
- prefill speed and generation speed over a fixed 64-token greedy answer;
- constrained scoring of 10 candidate answers with and without prefix-KV reuse, and
  the largest difference between the two (they must agree);
- an 8-question marker -> cell-type quiz (marker triplet -> cell type), free text
  (correct when an accepted name of the cell type appears in the answer) and
  constrained (the 8 cell types as candidates, highest log-likelihood wins).

The load average (other jobs share the 2 cores) is recorded next to every row.

Run: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python benchmarks/llm_speed.py
     [--models smollm2,qwen0.5b,qwen1.5b] [--no-cold] [--no-sweep]
Writes benchmarks/results/llm_speed.json (atomically) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "llm_speed.json"
MARK = "LLM_SPEED_RESULT:"
GEN_TOKENS = 64
WORKER_TIMEOUT_S = 1800

QUIZ = [
    ("CD3E, CD3D, CD2", "T cell", ["t cell", "t-cell", "t lymphocyte"]),
    ("CD19, MS4A1, CD79A", "B cell", ["b cell", "b-cell", "b lymphocyte"]),
    ("GFAP, AQP4, SLC1A3", "astrocyte", ["astrocyte"]),
    ("PECAM1, VWF, CDH5", "endothelial cell", ["endothelial"]),
    ("NKG7, GNLY, KLRD1", "natural killer cell", ["natural killer", "nk cell", "nk-cell"]),
    ("MBP, PLP1, MOG", "oligodendrocyte", ["oligodendrocyte"]),
    ("COL1A1, DCN, LUM", "fibroblast", ["fibroblast"]),
    ("ALB, APOA1, TTR", "hepatocyte", ["hepatocyte"]),
]
CANDIDATES = [
    "T cell",
    "B cell",
    "monocyte",
    "natural killer cell",
    "dendritic cell",
    "platelet",
    "erythrocyte",
    "hepatocyte",
    "astrocyte",
    "fibroblast",
]
GEN_PROMPT = "Explain in a detailed paragraph what T cells do in the immune system."
SCORE_MESSAGES = [
    {
        "role": "system",
        "content": "You are an expert in single-cell biology. Answer with one cell type name.",
    },
    {
        "role": "user",
        "content": (
            "A cluster of human peripheral blood cells has these top marker genes: "
            "CD3E, CD3D, CD2, IL7R, LTB, CD27, TRAC, CD5, CCR7, LEF1. "
            "Which cell type is it?"
        ),
    },
]


def quiz_question(markers: str) -> list[dict]:
    """The free-text quiz prompt for one marker triplet."""
    return [
        {
            "role": "user",
            "content": (
                f"Which cell type is marked by the genes {markers}? "
                "Answer with the cell type name only."
            ),
        }
    ]


def configurations(models: list[str], cold: bool, sweep: bool) -> list[dict]:
    """The runs, in order: cold loads first (they also warm the page cache)."""
    runs: list[dict] = []
    for model in models:
        if model == "smollm2":
            runs.append({"model": "smollm2", "dtype": None, "threads": "auto"})
            continue
        if cold:
            runs.append({"model": model, "dtype": "bfloat16", "threads": "auto", "cold": True})
        runs.append({"model": model, "dtype": "bfloat16", "threads": "auto"})
        runs.append({"model": model, "dtype": "float32", "storage": "bfloat16", "threads": "auto"})
    if sweep and "qwen1.5b" in models:
        for threads, env in ((1, {}), (2, {}), (2, {"OMP_WAIT_POLICY": "PASSIVE"})):
            runs.append(
                {
                    "model": "qwen1.5b",
                    "dtype": "bfloat16",
                    "threads": threads,
                    "env": env,
                    "quiz": False,
                }
            )
    return runs


# ---------------------------------------------------------------- worker (one process)


def _cold_cache(model: str) -> Path:
    """A throw-away cache folder that links in the installed model (no conversion yet)."""
    import kbfm
    from kbfm import _model_store as ms

    if not ms.is_installed(model):
        msg = f"{model} is not installed; run `kbfm models install {model}`"
        raise SystemExit(msg)
    real = ms.model_dir(model)
    tmp = Path(tempfile.mkdtemp(prefix=".bench-cold-", dir=Path(kbfm.settings.cache_dir)))
    (tmp / "models").mkdir()
    (tmp / "models" / model).symlink_to(real, target_is_directory=True)
    kbfm.settings.cache_dir = tmp
    return tmp


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def worker(cfg: dict) -> dict:
    """Measure one configuration; returns the row (printed as JSON by ``main``)."""
    import torch

    from kbfm.encoders.llm import _torch_threads, get_llm

    options = {"threads": cfg.get("threads", "auto")}
    if cfg.get("dtype"):
        options["dtype"] = cfg["dtype"]
    if cfg.get("storage"):
        options["storage"] = cfg["storage"]
    row: dict = {"config": cfg, "loadavg_start": os.getloadavg()}
    tmp = _cold_cache(cfg["model"]) if cfg.get("cold") else None
    try:
        llm, seconds = _timed(lambda: get_llm(cfg["model"], **options))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    row.update(model_id=llm.model_id, threads_used=llm.threads, load_s=round(seconds, 2))
    if cfg.get("cold"):
        row["loadavg_end"] = os.getloadavg()
        return row

    llm.chat([{"role": "user", "content": "Hi"}], max_tokens=1)  # warm-up (first-call costs)
    ids = llm._prompt_ids([{"role": "user", "content": GEN_PROMPT}])
    with _torch_threads(torch, llm.threads), torch.inference_mode():
        _, prefill = _timed(lambda: llm.model(ids, use_cache=False))
        out, gen = _timed(
            lambda: llm.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                min_new_tokens=GEN_TOKENS,
                max_new_tokens=GEN_TOKENS,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=llm._pad_id,
            )
        )
    new_tokens = int(out.shape[1] - ids.shape[1])
    row.update(
        prompt_tokens=int(ids.shape[1]),
        prefill_s=round(prefill, 3),
        prefill_tok_s=round(ids.shape[1] / prefill, 1),
        gen_tokens=new_tokens,
        gen_s=round(gen, 2),
        gen_tok_s=round(new_tokens / gen, 2),
        gen_text=llm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True),
    )

    cached, t_cached = _timed(lambda: llm.score_options(SCORE_MESSAGES, CANDIDATES))
    naive, t_naive = _timed(
        lambda: llm.score_options(SCORE_MESSAGES, CANDIDATES, reuse_prefix=False)
    )
    row.update(
        score10_kv_s=round(t_cached, 2),
        score10_naive_s=round(t_naive, 2),
        score_speedup=round(t_naive / t_cached, 1),
        score_max_abs_diff=float(max(abs(a - b) for a, b in zip(cached, naive, strict=True))),
        score_top=CANDIDATES[max(range(len(cached)), key=cached.__getitem__)],
    )

    if cfg.get("quiz", True):
        answers, free_ok, constrained_ok = [], 0, 0
        names = [q[1] for q in QUIZ]
        start = time.perf_counter()
        for markers, truth, accepted in QUIZ:
            reply = llm.chat(quiz_question(markers), max_tokens=24)
            hit = any(a in reply.content.lower() for a in accepted)
            scores = llm.score_options(quiz_question(markers), names)
            picked = names[max(range(len(names)), key=scores.__getitem__)]
            free_ok += hit
            constrained_ok += picked == truth
            answers.append(
                {
                    "markers": markers,
                    "truth": truth,
                    "answer": reply.content,
                    "free_correct": hit,
                    "constrained": picked,
                }
            )
        row.update(
            quiz_free=f"{free_ok}/{len(QUIZ)}",
            quiz_constrained=f"{constrained_ok}/{len(QUIZ)}",
            quiz_s=round(time.perf_counter() - start, 1),
            quiz_answers=answers,
        )
    row["loadavg_end"] = os.getloadavg()
    return row


# ---------------------------------------------------------------- driver


def run_config(cfg: dict) -> dict:
    """Run one configuration in a subprocess (it reports its own peak RSS)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(TOKENIZERS_PARALLELISM="false", **cfg.get("env", {}))
    cmd = [sys.executable, __file__, "--worker", json.dumps(cfg)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"config": cfg, "error": f"timed out after {WORKER_TIMEOUT_S} s"}
    wall = time.perf_counter() - start
    line = next((ln for ln in stdout.decode().splitlines()[::-1] if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        return {"config": cfg, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    row = json.loads(line[len(MARK) :])
    row["wall_s"] = round(wall, 1)
    return row


def _fmt(value, spec: str = "") -> str:
    if value is None:
        return "–"
    return format(value, spec) if spec else str(value)


def to_markdown(payload: dict) -> str:
    """The summary table (one row per model/dtype/threads)."""
    cold = {
        (r["config"]["model"], r["config"]["dtype"]): r
        for r in payload["runs"]
        if r["config"].get("cold") and "error" not in r
    }
    lines = [
        "| model | dtype | threads | cold load s (peak RSS GB) | warm load s | peak RSS GB "
        "| prefill tok/s | gen tok/s (64 greedy) | score 10: KV s / naive s (max Δ) "
        "| quiz free | quiz constrained | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["runs"]:
        cfg = r["config"]
        if cfg.get("cold"):
            continue
        dtype = cfg.get("dtype") or "default"
        if cfg.get("storage") and cfg["storage"] != cfg.get("dtype"):
            dtype += f" (from {cfg['storage']})"
        threads = str(cfg.get("threads"))
        if "threads_used" in r and cfg.get("threads") == "auto":
            threads = f"auto→{r['threads_used']}"
        if cfg.get("env"):
            threads += " " + " ".join(f"{k}={v}" for k, v in cfg["env"].items())
        if "error" in r:
            lines.append(f"| {cfg['model']} | {dtype} | {threads} | error: {r['error']} |")
            continue
        default_threads = cfg.get("threads") == "auto" and not cfg.get("env")
        c = cold.get((cfg["model"], cfg.get("dtype"))) if default_threads else None
        cold_txt = f"{c['load_s']:.0f} ({c['peak_rss_gb']:.1f})" if c else "–"
        la = r.get("loadavg_start", [None])[0]
        lines.append(
            f"| {cfg['model']} | {dtype} | {threads} | {cold_txt} | {r['load_s']:.1f} "
            f"| {r['peak_rss_gb']:.1f} | {_fmt(r.get('prefill_tok_s'))} "
            f"| {_fmt(r.get('gen_tok_s'))} "
            f"| {r['score10_kv_s']:.2f} / {r['score10_naive_s']:.2f} "
            f"({r['score_max_abs_diff']:.1e}) "
            f"| {_fmt(r.get('quiz_free'))} | {_fmt(r.get('quiz_constrained'))} "
            f"| {_fmt(la, '.1f')} |"
        )
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,qwen0.5b,qwen1.5b")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold conversions")
    parser.add_argument("--no-sweep", action="store_true", help="skip the threads sweep")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import resource

        row = worker(json.loads(args.worker))
        row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        print(MARK + json.dumps(row), flush=True)
        return 0

    from kbfm import _model_store as ms

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    skipped = {}
    for m in models:
        if m != "smollm2" and not ms.is_installed(m):
            skipped[m] = f"not installed (kbfm models install {m})"
    models = [m for m in models if m not in skipped]
    runs = []
    for cfg in configurations(models, cold=not args.no_cold, sweep=not args.no_sweep):
        print(f"-- {json.dumps(cfg)} (load avg {os.getloadavg()[0]:.1f})", flush=True)
        row = run_config(cfg)
        brief = {k: row.get(k) for k in ("load_s", "gen_tok_s", "score10_kv_s", "quiz_free")}
        print(f"   {row.get('error') or json.dumps(brief)}", flush=True)
        runs.append(row)
    import torch
    import transformers

    payload = {
        "benchmark": "llm_speed",
        "command": "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python benchmarks/llm_speed.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "gen_tokens": GEN_TOKENS,
        "quiz": [{"markers": m, "truth": t, "accepted": a} for m, t, a in QUIZ],
        "score_candidates": CANDIDATES,
        "skipped": skipped,
        "runs": runs,
    }
    payload["table"] = to_markdown(payload)
    write_atomic(args.out, json.dumps(payload, indent=2) + "\n")
    print(payload["table"])
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
