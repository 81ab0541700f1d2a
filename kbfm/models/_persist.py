"""Saved FusionModel folders: where a save may go, what a folder holds, gene matching on load.

A folder holds two files. ``model.safetensors``: the module's weights and buffers, the
genes' text embeddings among them (buffer ``gene_text``), so they are stored once.
``config.json``: ``{"config": FusionConfig fields, "format": 2}``. Folders written before
format 2 repeated the gene text embeddings in ``config.json`` (key ``"gene_text"``); they
load as before. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .._errors import KbfmInputError, preview

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SAVED_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE})
FORMAT = 2
GENE_TEXT_BUFFER = "gene_text"
_TEMP_MARK = "kbfm-tmp"  # temporary files of kbfm._atomic writes


def check_save_folder(folder: str | Path, *, overwrite: bool) -> Path:
    """Refuse to save into ``folder`` when it is a file or holds files and not ``overwrite``.

    A folder holding exactly a saved FusionModel (``config.json`` and
    ``model.safetensors``, nothing else) is still replaced without ``overwrite``, with a
    ``FutureWarning``: earlier versions replaced it silently and scripts that save
    several models into one folder keep working for now.

    Parameters
    ----------
    folder
        Where the model is to be saved.
    overwrite
        Write into an existing, non-empty folder.

    Returns
    -------
    ``folder`` as a :class:`~pathlib.Path`.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        msg = f"Cannot save a FusionModel to {folder}: it is a file, not a folder."
        raise KbfmInputError(msg)
    if overwrite or not folder.is_dir():
        return folder
    names = {p.name for p in folder.iterdir() if _TEMP_MARK not in p.name}
    if not names:
        return folder
    if names == SAVED_FILES:
        warnings.warn(
            f"Replacing the FusionModel saved in {folder} because overwrite=False still "
            "replaces an earlier saved model; a future version will refuse. Pass "
            "overwrite=True to replace it, or save to a new folder.",
            FutureWarning,
            stacklevel=3,
        )
        return folder
    msg = (
        f"{folder} already exists and is not empty ({preview(sorted(names))}); pass "
        "overwrite=True to write the model into it, or choose a new folder."
    )
    raise KbfmInputError(msg)


def write_config(path: str | Path, config: dict) -> None:
    """Write the ``config.json`` text to ``path`` (gene text embeddings: weights file).

    :meth:`FusionModel.save` passes a temporary path and moves it into place together
    with the weights, so a folder never holds one without the other.
    """
    Path(path).write_text(json.dumps({"config": config, "format": FORMAT}), encoding="utf-8")


def read_folder(folder: str | Path) -> tuple[dict, dict, np.ndarray]:
    """Read a saved folder: ``(config fields, weights, gene text embeddings)``.

    Raises
    ------
    KbfmInputError
        When a file is missing or unreadable, or no gene text embeddings are found.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights_path.is_file():
        msg = f"{folder} is not a saved FusionModel (needs config.json and model.safetensors)."
        raise KbfmInputError(msg)
    try:
        payload = json.loads(cfg_path.read_text())
        fields = dict(payload["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        msg = f"{cfg_path} is not a valid FusionModel config: {err}"
        raise KbfmInputError(msg) from None
    try:
        state = load_file(str(weights_path))
    except (OSError, SafetensorError) as err:
        msg = f"{weights_path} is not a readable safetensors file: {str(err)[:300]}"
        raise KbfmInputError(msg) from None
    if "gene_text" in payload:  # format 1: a copy of the embeddings in config.json
        gene_text = np.asarray(payload["gene_text"], dtype=np.float32)
    elif GENE_TEXT_BUFFER in state:
        gene_text = state[GENE_TEXT_BUFFER].numpy().astype(np.float32)
    else:
        msg = f"{weights_path} holds no {GENE_TEXT_BUFFER!r} tensor (gene text embeddings)."
        raise KbfmInputError(msg)
    return fields, state, gene_text


def check_gene_match(
    folder: str | Path, genes: list[str], missing: list[str], *, allow_missing_genes: bool
) -> str:
    """Say how many of the model's genes this data lacks; refuse when that is not allowed.

    Returns
    -------
    A log line (empty when every gene is found).
    """
    if not missing:
        return ""
    n, k = len(genes), len(missing)
    found = 100 * (n - k) / n
    if not allow_missing_genes:
        msg = (
            f"{k} of the {n} genes of the model in {folder} are missing from "
            f"adata.var_names ({found:.1f}% found), e.g. {preview(missing)}; pass "
            "allow_missing_genes=True to fill them with the training mean, or add them."
        )
        raise KbfmInputError(msg)
    return (
        f"{k} of the model's {n} genes are missing from this data (filled with the "
        f"training mean; {found:.1f}% found): {preview(missing)}"
    )
