# %% [markdown]
# # FusionModel: spatial domains, and transfer to a new slice
#
# 1. Generate a spatial slice with known layered domains (`kbfm.datasets.synthetic_spatial`;
#    real gene symbols, so the model's gene-text decoder has knowledge to use).
# 2. Train a `tiny` FusionModel, cluster its latent into domains, compare with the truth.
# 3. Save the model, load it onto a second slice generated with another seed, find domains
#    there without retraining, and score them.
#
# On real Visium data (e.g. DLPFC) the same calls apply with `n_domains=7` and
# `preset="base"`; see `docs/fusion.md`. Figures go to `$KBFM_TUTORIAL_OUT`, else a new
# temporary folder (printed below).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import kbfm

OUT = Path(os.environ.get("KBFM_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="kbfm_tutorial_"))
OUT = OUT / "04_fusion_domains_transfer"
OUT.mkdir(parents=True, exist_ok=True)
print("outputs ->", OUT)

genes = list(kbfm.datasets.pbmc68k_reduced().var_names[:150])
SLICE = dict(n_side=20, n_domains=4, n_genes=150, markers_per_domain=3, noise=2.0, gene_names=genes)
adata = kbfm.datasets.synthetic_spatial(**SLICE, seed=0)
adata

# %% [markdown]
# ## Train
#
# `setup` checks the inputs, selects genes (Moran's I over the spot graph when
# `obsm["spatial"]` exists), embeds their knowledge and builds the model; `train` uses
# AdamW with early stopping on held-out spots; `to_adata` writes `obsm["X_kbfm"]`.
# `knowledge_source="builtin"` (the default here) describes few of these genes and setup
# says so; `knowledge_source="atlas"` has a card for every gene.

# %%
model = kbfm.models.FusionModel.setup(adata, preset="tiny", n_top_genes=150, seed=0)
model.train(max_epochs=80)
model.to_adata()
print("epochs:", len(model.history), "latent:", adata.obsm["X_kbfm"].shape)

# %% [markdown]
# ## Domains
#
# `kbfm.tl.domains` fits a Gaussian mixture (shared covariance, 10 restarts) on the latent;
# `evaluate_domains` gives ARI and NMI against a label column.

# %%
kbfm.tl.domains(adata, n_domains=4)
scores = kbfm.tl.evaluate_domains(adata, "domain")
print(f"slice 1: ARI {scores['ari']:.3f} NMI {scores['nmi']:.3f}")


def plot_domains(a, title, path):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    kbfm.pl.spatial_scatter(a, "domain", spot_size=90, ax=axes[0])
    axes[0].set_title("truth")
    kbfm.pl.spatial_scatter(a, "kbfm_domain", spot_size=90, ax=axes[1])
    axes[1].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


plot_domains(adata, f"kbfm domains (ARI {scores['ari']:.2f})", OUT / "slice1_domains.png")

# %% [markdown]
# ## Save, then load onto a new slice
#
# `save` writes `model.safetensors` and `config.json` (genes, scaling, preset, gene text
# embeddings). `FusionModel.load(folder, new_adata)` aligns genes by name (missing ones
# are filled with the training mean and reported) and never unpickles.

# %%
model.save(OUT / "model")
slice2 = kbfm.datasets.synthetic_spatial(**SLICE, seed=1)
transferred = kbfm.models.FusionModel.load(OUT / "model", slice2)
transferred.to_adata()
kbfm.tl.domains(slice2, n_domains=4)
scores2 = kbfm.tl.evaluate_domains(slice2, "domain")
print(f"slice 2 (no retraining): ARI {scores2['ari']:.3f} NMI {scores2['nmi']:.3f}")
plot_domains(slice2, f"transferred model (ARI {scores2['ari']:.2f})", OUT / "slice2_domains.png")

# %% [markdown]
# The training curve is in `model.history`; provenance of every step (setup, training,
# domains) is in `adata.uns["kbfm"]["history"]`.

# %%
print(adata.uns["kbfm"]["history"])
