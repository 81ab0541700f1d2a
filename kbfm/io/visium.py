"""Read Space Ranger (10x Visium) output folders into AnnData."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import MPP_KEY, SOURCE_IMAGE_KEY, SPATIAL_KEY
from ._spatial import on_tissue_fraction, warn_if_off_tissue

#: Diameter of a Visium spot in microns (used to derive microns per pixel).
VISIUM_SPOT_DIAMETER_UM = 55.0
_POSITION_COLUMNS = [
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
]


def _parse(path: Path, read, what: str):
    """``read(path)``, with any parse failure turned into an error naming the file."""
    try:
        return read(path)
    except KbfmInputError:
        raise
    except Exception as err:  # readers raise many types for one cause
        msg = f"Could not read {path} ({what}): corrupt, truncated or not that format ({err})."
        raise KbfmInputError(msg) from err


def _read_positions(spatial: Path) -> tuple[pd.DataFrame, str]:
    v2 = spatial / "tissue_positions.csv"
    v1 = spatial / "tissue_positions_list.csv"
    if v2.exists():
        table = _parse(v2, pd.read_csv, "spot positions")
        missing = set(_POSITION_COLUMNS) - set(table.columns)
        if missing:
            msg = f"{v2} lacks columns {sorted(missing)}; expected {_POSITION_COLUMNS}."
            raise KbfmInputError(msg)
        return table.set_index("barcode"), "2.x"
    if v1.exists():
        table = _parse(v1, lambda p: pd.read_csv(p, header=None), "spot positions")
        if table.shape[1] != 6:
            msg = f"{v1} has {table.shape[1]} columns; Space Ranger 1.x writes 6 without a header."
            raise KbfmInputError(msg)
        table.columns = _POSITION_COLUMNS
        return table.set_index("barcode"), "1.x"
    msg = (
        f"No tissue_positions.csv (Space Ranger >= 2.0) or tissue_positions_list.csv (1.x) "
        f"in {spatial}."
    )
    raise KbfmInputError(msg)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_visium(
    path: str | os.PathLike,
    *,
    count_file: str = "filtered_feature_bc_matrix.h5",
    library_id: str | None = None,
    source_image_path: str | os.PathLike | None = None,
    load_images: bool = True,
) -> AnnData:
    """Read a Space Ranger output folder (1.x or 2.x layout).

    Parameters
    ----------
    path
        Folder holding ``count_file`` and ``spatial/``.
    count_file
        Counts in 10x HDF5 format.
    library_id
        Key under ``uns['spatial']`` (default: the folder name).
    source_image_path
        The full-resolution H&E or whole-slide image the spot pixels refer to; stored
        in ``uns['spatial'][library_id]['metadata']['source_image_path']`` for
        :func:`kbfm.im.embed_image`.
    load_images
        Load ``tissue_hires_image.png`` / ``tissue_lowres_image.png``.

    Returns
    -------
    AnnData with raw counts in ``X``, ``obsm['spatial']`` (full-resolution pixels, x then
    y), ``obs['in_tissue', 'array_row', 'array_col']`` and ``uns['spatial'][library_id]``
    with ``images``, ``scalefactors`` and ``metadata`` (``microns_per_pixel`` derived
    from the 55 µm spot diameter, ``positions_format``).

    Examples
    --------
    >>> adata = read_visium("visium_folder")  # doctest: +SKIP
    >>> adata.uns["spatial"]["visium_folder"]["metadata"]["microns_per_pixel"]  # doctest: +SKIP
    0.615
    """
    import scanpy as sc

    path = Path(path).expanduser()
    if not path.is_dir():
        msg = f"Visium folder not found: {path}."
        raise KbfmInputError(msg)
    counts = path / count_file
    if not counts.exists():
        found = sorted(p.name for p in path.glob("*.h5"))
        msg = f"Count file {counts} not found; .h5 files in the folder: {found}."
        raise KbfmInputError(msg)
    spatial = path / "spatial"
    adata = _parse(counts, sc.read_10x_h5, "10x counts .h5")
    adata.var_names_make_unique()
    positions, layout = _read_positions(spatial)
    missing = adata.obs_names.difference(positions.index)
    if len(missing):
        msg = f"{len(missing)} barcodes of {count_file} have no row in the tissue positions file."
        raise KbfmInputError(msg)
    positions = positions.loc[adata.obs_names]
    for col in ("in_tissue", "array_row", "array_col"):
        adata.obs[col] = positions[col].to_numpy()
    adata.obsm[SPATIAL_KEY] = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(
        dtype=np.float64
    )
    factors_path = spatial / "scalefactors_json.json"
    if not factors_path.exists():
        msg = f"{factors_path} not found; it gives the spot diameter and image scale factors."
        raise KbfmInputError(msg)
    scalefactors = _parse(factors_path, lambda p: json.loads(p.read_text()), "scale factors")
    if not isinstance(scalefactors, dict):
        msg = f"{factors_path} must hold a JSON object of scale factors."
        raise KbfmInputError(msg)
    diameter = float(scalefactors.get("spot_diameter_fullres", 0) or 0)
    metadata: dict = {"positions_format": layout, "platform": "visium"}
    if diameter > 0:
        metadata[MPP_KEY] = VISIUM_SPOT_DIAMETER_UM / diameter
        metadata["mpp_source"] = "spot_diameter"
    if source_image_path is not None:
        source = Path(source_image_path).expanduser()
        if not source.exists():
            msg = f"source_image_path {source} does not exist."
            raise KbfmInputError(msg)
        metadata[SOURCE_IMAGE_KEY] = str(source.resolve())
    images: dict[str, np.ndarray] = {}
    if load_images:
        for res in ("hires", "lowres"):
            image_path = spatial / f"tissue_{res}_image.png"
            if image_path.exists():
                images[res] = _parse(image_path, _read_image, f"{res} image")
    library_id = library_id or path.name
    adata.uns[SPATIAL_KEY] = {
        library_id: {"images": images, "scalefactors": scalefactors, "metadata": metadata}
    }
    _check_alignment(adata, images, scalefactors, library_id)
    return adata


def _check_alignment(
    adata: AnnData, images: dict[str, np.ndarray], scalefactors: dict, library_id: str
) -> None:
    for res in ("hires", "lowres"):
        if res not in images:
            continue
        scale = float(scalefactors.get(f"tissue_{res}_scalef", 0) or 0)
        if scale <= 0:
            msg = f"scalefactors_json.json has no positive tissue_{res}_scalef."
            raise KbfmInputError(msg)
        in_tissue = adata.obs["in_tissue"].to_numpy() == 1
        coords = adata.obsm[SPATIAL_KEY][in_tissue] * scale
        if len(coords) == 0:
            return
        diameter = float(scalefactors.get("spot_diameter_fullres", 0) or 0)
        fraction = on_tissue_fraction(images[res], coords, diameter * scale / 2)
        if not np.isfinite(fraction):  # blank image (no tissue detected): try the next one
            continue
        adata.uns[SPATIAL_KEY][library_id]["metadata"]["spots_on_tissue_fraction"] = fraction
        warn_if_off_tissue(fraction, f"tissue_{res}_image.png of {library_id}")
        return
