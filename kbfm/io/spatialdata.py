"""SpatialData in and out: a table with its shapes and image as kbfm's AnnData layout.

:func:`read_spatialdata` turns one table of a :class:`spatialdata.SpatialData` (e.g. from
``spatialdata-io``'s Visium, Visium HD or Xenium readers) into the AnnData layout the rest
of kbfm reads, the one :func:`~kbfm.io.read_visium` writes: spot or cell centres in
``obsm["spatial"]`` in pixels of the chosen image, ``uns["spatial"][library_id]`` with
``images`` (hires/lowres thumbnails), ``scalefactors`` and ``metadata`` (microns per
pixel and ``source_image_path``). The image element is written once to a tiled
pyramidal TIFF, so :func:`kbfm.im.embed_image` cuts its patches in physical units through
the same code as for any slide. Centres are mapped from the shapes into image pixels
through the coordinate system the two elements share.

:func:`write_spatialdata` goes back: kbfm's results (``obsm``, ``obs``, ``uns["kbfm"]``)
into the table of an existing SpatialData, or a new store with table, shapes and images.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._errors import KbfmInputError, closest_names
from .._keys import MPP_KEY, SOURCE_IMAGE_KEY, SPATIAL_KEY
from .._provenance import record_step
from ._sdata_image import channels_first, export_tiff, image_levels, slide_as_dask, thumbnail
from ._spatial import library_id_for
from .visium import VISIUM_SPOT_DIAMETER_UM

if TYPE_CHECKING:
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

#: Longest side of the ``hires`` / ``lowres`` thumbnails put into ``uns["spatial"]``.
HIRES_PX, LOWRES_PX = 2000, 600
_BIN_UM = re.compile(r"square_(\d+)um$")  # spatialdata-io's Visium HD bin tables
_REGION_COL, _INSTANCE_COL = "kbfm_region", "kbfm_instance"  # table columns of new stores


def _spatialdata():
    try:
        import spatialdata
    except ImportError as err:
        msg = "SpatialData support needs the optional extra: pip install 'kbfm[spatial]'."
        raise KbfmInputError(msg) from err
    return spatialdata


def _pick(kind: str, name: str | None, choices: list[str], what: str) -> str:
    if not choices:
        msg = f"The SpatialData object has no {kind}; {what}"
        raise KbfmInputError(msg)
    if name is None:
        if len(choices) > 1:
            msg = (
                f"Unable to determine which {kind[:-1]} to use. Please specify one from: {choices}."
            )
            raise KbfmInputError(msg)
        return choices[0]
    if name not in choices:
        hint = closest_names(name, choices)
        msg = f"{kind[:-1].capitalize()} {name!r} not found; choose from {choices}.{hint}"
        raise KbfmInputError(msg)
    return name


def _affine(element: Any, cs: str) -> np.ndarray:
    """3x3 matrix from the element's intrinsic (x, y) to coordinate system ``cs``."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), float)


def _coordinate_systems(element: Any) -> list[str]:
    from spatialdata.transformations import get_transformation

    return sorted(get_transformation(element, get_all=True))


def _to_image(sdata, region: str, image_key: str, cs_hint: str | None) -> tuple[np.ndarray, str]:
    """Affine from the shapes' intrinsic coordinates to the image's pixels, via a shared system."""
    shapes, image = sdata[region], sdata.images[image_key]
    common = sorted(set(_coordinate_systems(shapes)) & set(_coordinate_systems(image)))
    if cs_hint is not None:
        common = [cs for cs in common if cs == cs_hint]
    if not common:
        msg = (
            f"The coordinate systems of {region!r} ({_coordinate_systems(shapes)}) and of image "
            f"{image_key!r} ({_coordinate_systems(image)}) do not connect"
            + (f" through {cs_hint!r}" if cs_hint else "")
            + ": add a transformation of one into the other's system "
            "(spatialdata.transformations.set_transformation), or pick another image_key."
        )
        raise KbfmInputError(msg)
    cs = "global" if "global" in common else common[0]
    to_cs, image_to_cs = _affine(shapes, cs), _affine(image, cs)
    if abs(np.linalg.det(image_to_cs[:2, :2])) < 1e-12:
        msg = f"The transformation of image {image_key!r} into {cs!r} is not invertible."
        raise KbfmInputError(msg)
    return np.linalg.inv(image_to_cs) @ to_cs, cs


def _centres(element: Any, region: str, instances: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of each instance in the element's intrinsic coordinates, and its size.

    The size is the circle diameter or the side of the polygon's square of equal area.
    """
    import geopandas as gpd

    if isinstance(element, gpd.GeoDataFrame):
        missing = instances.difference(element.index)
        if len(missing):
            msg = (
                f"{len(missing)} table rows name instances that {region!r} lacks (e.g. "
                f"{list(missing[:3])}); the table and the shapes do not belong together."
            )
            raise KbfmInputError(msg)
        shapes = element.loc[instances]
        geoms = shapes.geometry
        if (geoms.geom_type == "Point").all():
            size = 2.0 * shapes["radius"].to_numpy(dtype=float)
        else:
            size = np.sqrt(geoms.area.to_numpy(dtype=float))
            geoms = geoms.centroid
        return np.column_stack([geoms.x.to_numpy(), geoms.y.to_numpy()]), size
    msg = (
        f"Region {region!r} is a {type(element).__name__}; kbfm reads tables that annotate "
        "shapes (circles or polygons). Convert labels with spatialdata.to_circles(...) first."
    )
    raise KbfmInputError(msg)


def _pixel_scale(affine: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))


def _resolve_mpp(
    mpp: float | None,
    microns_per_unit: float | None,
    image_to_cs: np.ndarray | None,
    *,
    table: AnnData,
    region: str,
    size_px: np.ndarray,
) -> tuple[float | None, str]:
    from .patches import check_mpp

    if mpp is not None:
        return check_mpp(mpp), "user"
    if microns_per_unit is not None and image_to_cs is not None:
        unit = check_mpp(microns_per_unit, "microns_per_unit")
        return unit * _pixel_scale(image_to_cs), "coordinate_system"
    diameter = float(np.median(size_px)) if len(size_px) else 0.0
    if diameter > 0 and {"array_row", "array_col"} <= set(table.obs.columns):
        return VISIUM_SPOT_DIAMETER_UM / diameter, "spot_diameter"
    match = _BIN_UM.search(region)
    if diameter > 0 and match:
        return float(match.group(1)) / diameter, "bin_size"
    return None, "unknown"


def read_spatialdata(
    sdata_or_path: SpatialData | str | os.PathLike,
    table_key: str | None = None,
    image_key: str | None = None,
    *,
    region: str | None = None,
    coordinate_system: str | None = None,
    mpp: float | None = None,
    microns_per_unit: float | None = None,
    load_images: bool = True,
    image_path: str | os.PathLike | None = None,
) -> AnnData:
    """Read one table of a SpatialData object into kbfm's AnnData layout.

    Parameters
    ----------
    sdata_or_path
        A :class:`spatialdata.SpatialData` or the path of its zarr store.
    table_key
        Which table (needed when there are several).
    image_key
        Which image the patches come from; default: among the images that share a
        coordinate system with the shapes, an RGB one before others, then the finest
        (a log line names it).
    region
        Which annotated shapes element, when the table annotates several.
    coordinate_system
        Go through this coordinate system from shapes to image (default: ``"global"``
        when both have it, else the first shared one).
    mpp
        Microns per pixel of the image. Default, in order: ``microns_per_unit`` times the
        image pixel size; the 55 µm spot (Visium tables, with ``array_row`` /
        ``array_col``); the bin size named by spatialdata-io's Visium HD tables
        (``square_008um``); otherwise unknown (``embed_image(..., mpp=)`` then asks).
    microns_per_unit
        Microns per unit of the shared coordinate system (e.g. 0.2125 for Xenium's
        ``"global"``, which is in morphology-image pixels).
    load_images
        Export the image and put thumbnails into ``uns["spatial"]``; ``False`` keeps
        only the table, with ``obsm["spatial"]`` in the coordinate system's units.
    image_path
        Where to write the image as a tiled TIFF (default: under
        ``kbfm.settings.cache_dir / "spatialdata"``, keyed by content, written once).

    Returns
    -------
    The table rows of ``region`` as an AnnData with ``obsm["spatial"]`` (image pixels,
    x then y), ``uns["spatial"][region]`` (``images``, ``scalefactors``,
    ``metadata``) and ``uns["kbfm"]["read_spatialdata"]``.

    Examples
    --------
    >>> import kbfm
    >>> path = "visium_hd.zarr"  # e.g. spatialdata_io.visium_hd(folder).write(path)
    >>> adata = kbfm.io.read_spatialdata(path, table_key="square_008um")  # doctest: +SKIP
    >>> kbfm.im.embed_image(adata)  # doctest: +SKIP
    """
    sd = _spatialdata()
    source = None
    if not isinstance(sdata_or_path, sd.SpatialData):
        source = Path(sdata_or_path).expanduser()
        if not source.exists():
            msg = f"SpatialData store not found: {source}."
            raise KbfmInputError(msg)
        sdata_or_path = sd.read_zarr(source)
    sdata = sdata_or_path
    table_key = _pick(
        "tables", table_key, list(sdata.tables), "kbfm needs a table (the expression matrix)."
    )
    table = sdata.tables[table_key]
    attrs = table.uns.get("spatialdata_attrs", {})
    regions = attrs.get("region")
    regions = [regions] if isinstance(regions, str) else list(regions or [])
    region = _pick("regions", region, regions, f"table {table_key!r} annotates no shapes (region).")
    if region not in sdata:
        msg = f"Table {table_key!r} annotates {region!r}, which the SpatialData object lacks."
        raise KbfmInputError(msg)
    rows = table.obs[attrs["region_key"]].astype(str).to_numpy() == region
    adata = table[rows].copy()
    instances = pd.Index(adata.obs[attrs["instance_key"]].to_numpy())
    adata.obs = adata.obs.drop(columns=[_REGION_COL, _INSTANCE_COL], errors="ignore")
    xy, size = _centres(sdata[region], region, instances)
    images = sorted(sdata.images) if load_images else []
    if image_key is not None:
        _pick("images", image_key, sorted(sdata.images), "pass image_key=None.")
    meta: dict[str, Any] = {
        "platform": "spatialdata",
        "spatialdata_table": table_key,
        "spatialdata_region": region,
    }
    if source is not None:
        meta["spatialdata_path"] = str(source.resolve())
    lib: dict[str, Any] = {"images": {}, "scalefactors": {}, "metadata": meta}
    if images:
        image_key, to_pixels, cs = _choose_image(sdata, region, image_key, coordinate_system)
        pixels = (to_pixels @ np.column_stack([xy, np.ones(len(xy))]).T).T[:, :2]
        size_px = size * _pixel_scale(to_pixels)
        image = sdata.images[image_key]
        mpp, mpp_source = _resolve_mpp(
            mpp, microns_per_unit, _affine(image, cs), table=adata, region=region, size_px=size_px
        )
        tiff = export_tiff(image, image_key, mpp, Path(image_path) if image_path else None)
        meta.update(spatialdata_image=image_key, coordinate_system=cs, mpp_source=mpp_source)
        meta[SOURCE_IMAGE_KEY] = str(tiff.resolve())
        if mpp is not None:
            meta[MPP_KEY] = mpp
        for res, max_px in (("hires", HIRES_PX), ("lowres", LOWRES_PX)):
            lib["images"][res], lib["scalefactors"][f"tissue_{res}_scalef"] = thumbnail(
                tiff, max_px
            )
        if len(size_px) and np.median(size_px) > 0:
            lib["scalefactors"]["spot_diameter_fullres"] = float(np.median(size_px))
        affine = to_pixels
    else:
        cs = coordinate_system or _default_cs(sdata[region])
        if load_images:
            logger.info("The SpatialData object has no image: obsm['spatial'] is in %r units.", cs)
        affine = _affine(sdata[region], cs)
        pixels = (affine @ np.column_stack([xy, np.ones(len(xy))]).T).T[:, :2]
        meta["coordinate_system"] = cs
    if SPATIAL_KEY in adata.uns:
        logger.info("Replacing the table's uns['spatial'] with the layout of image %r.", image_key)
    adata.obsm[SPATIAL_KEY] = pixels
    adata.uns[SPATIAL_KEY] = {region: lib}
    record_step(
        adata,
        "read_spatialdata",
        table=table_key,
        region=region,
        image=image_key or "",
        coordinate_system=meta["coordinate_system"],
        affine_to_pixels=[float(v) for v in affine[:2].ravel()],
        mpp=meta.get(MPP_KEY, "unknown"),
        mpp_source=meta.get("mpp_source", "unknown"),
    )
    return adata


def _default_cs(element: Any) -> str:
    systems = _coordinate_systems(element)
    return "global" if "global" in systems else systems[0]


def _choose_image(
    sdata, region: str, image_key: str | None, cs_hint: str | None
) -> tuple[str, np.ndarray, str]:
    """The requested image, or the best image connected to the shapes (RGB, then finest)."""
    if image_key is not None:
        affine, cs = _to_image(sdata, region, image_key, cs_hint)
        return image_key, affine, cs
    connected = {}
    for name in sorted(sdata.images):
        try:
            connected[name] = _to_image(sdata, region, name, cs_hint)
        except KbfmInputError:
            continue
    if not connected:
        systems = {n: _coordinate_systems(sdata.images[n]) for n in sorted(sdata.images)}
        msg = (
            f"No image shares a coordinate system with {region!r} "
            f"({_coordinate_systems(sdata[region])}); images and their systems: {systems}. "
            "Add a transformation (spatialdata.transformations.set_transformation) or pass "
            "load_images=False."
        )
        raise KbfmInputError(msg)

    # H&E patches need colour: prefer RGB(A) images, then the finest (most image pixels
    # per unit of the shapes' own coordinates).
    def rank(n: str) -> tuple[bool, float]:
        rgb = image_levels(sdata.images[n])[0].sizes["c"] in (3, 4)
        return rgb, _pixel_scale(connected[n][0])

    name = max(connected, key=rank)
    if len(connected) > 1:
        logger.info(
            "Using image %r (finest of %s); pass image_key= to choose.", name, list(connected)
        )
    return name, *connected[name]


def _dense_rows(values: Any, positions: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``values`` placed at ``positions`` of an ``n``-row array (NaN elsewhere)."""
    import scipy.sparse as sp

    from .._dask import is_dask

    if is_dask(values):
        values = values.compute()
    values = values.toarray() if sp.issparse(values) else np.asarray(values)
    if len(positions) == n and np.array_equal(positions, np.arange(n)):
        return values
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    out = np.full((n, *values.shape[1:]), np.nan, dtype=dtype)
    out[positions] = values
    return out


def _update_table(adata: AnnData, sdata, table_key: str | None) -> tuple[str, list[str]]:
    """Copy kbfm's results from ``adata`` into the matching table of ``sdata``."""
    import copy

    if table_key is None:
        try:
            recorded = next(iter(adata.uns[SPATIAL_KEY].values()))["metadata"]["spatialdata_table"]
        except (KeyError, StopIteration, TypeError, AttributeError):
            recorded = None
        table_key = recorded if recorded in sdata.tables else None
    key = _pick("tables", table_key, list(sdata.tables), "write a new store to a path instead.")
    table = sdata.tables[key]
    positions = table.obs_names.get_indexer(adata.obs_names)
    if (positions < 0).any():
        missing = adata.obs_names[positions < 0]
        msg = (
            f"{len(missing)} observations of adata are not rows of table {key!r} (e.g. "
            f"{list(missing[:3])}); write_spatialdata matches rows by obs_names."
        )
        raise KbfmInputError(msg)
    written = []
    for name, values in adata.obsm.items():
        if name != SPATIAL_KEY:
            table.obsm[name] = _dense_rows(values, positions, table.n_obs)
            written.append(f"obsm[{name!r}]")
    for col in adata.obs.columns:
        if col not in table.obs.columns or col.startswith("kbfm_"):
            table.obs[col] = adata.obs[col].reindex(table.obs_names)
            written.append(f"obs[{col!r}]")
    if table.var_names.equals(adata.var_names):
        for name, values in adata.varm.items():
            table.varm[name] = np.asarray(values)
            written.append(f"varm[{name!r}]")
        for col in adata.var.columns:
            if col.startswith("kbfm_"):
                table.var[col] = adata.var[col].to_numpy()
                written.append(f"var[{col!r}]")
    if "kbfm" in adata.uns:
        table.uns["kbfm"] = copy.deepcopy(adata.uns["kbfm"])
    record_step(table, "write_spatialdata", table=key, written=written)
    return key, written


def _from_anndata(adata: AnnData, library_id: str | None, spot_diameter: float | None):
    """A new SpatialData (table, circles, images) from kbfm's AnnData layout."""
    sd = _spatialdata()
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    from ._spatial import spatial_coords

    coords = spatial_coords(adata)
    has_lib = isinstance(adata.uns.get(SPATIAL_KEY), dict) and adata.uns[SPATIAL_KEY]
    lib = library_id_for(adata, library_id) if has_lib else (library_id or "spots")
    entry = adata.uns[SPATIAL_KEY][lib] if has_lib else {}
    factors = dict(entry.get("scalefactors", {}))
    meta = dict(entry.get("metadata", {}))
    diameter = spot_diameter or factors.get("spot_diameter_fullres")
    if not diameter or float(diameter) <= 0:
        msg = (
            f"No spot size: uns['spatial'][{lib!r}]['scalefactors'] has no "
            "'spot_diameter_fullres'; pass spot_diameter= (in obsm['spatial'] pixels)."
        )
        raise KbfmInputError(msg)
    name = sd.sanitize_name(str(lib))
    shape_cs: dict[str, Any] = {"global": Identity()}
    images = {}
    for res in ("hires", "lowres"):
        thumb, scale = entry.get("images", {}).get(res), factors.get(f"tissue_{res}_scalef")
        if thumb is not None and scale:
            cs = f"downscaled_{res}"
            shape_cs[cs] = Scale([float(scale), float(scale)], axes=("x", "y"))
            images[f"{name}_{res}_image"] = Image2DModel.parse(
                channels_first(thumb), dims=("c", "y", "x"), transformations={cs: Identity()}
            )
    source = meta.get(SOURCE_IMAGE_KEY)
    if source and Path(source).exists():
        full, scale_factors = slide_as_dask(source)
        images[f"{name}_full_image"] = Image2DModel.parse(
            full,
            dims=("c", "y", "x"),
            scale_factors=scale_factors or None,
            transformations={"global": Identity()},
        )
    n = adata.n_obs
    shapes = ShapesModel.parse(
        np.ascontiguousarray(coords),
        geometry=0,
        radius=np.full(n, float(diameter) / 2.0),
        index=np.arange(n),
        transformations=shape_cs,
    )
    table = adata.copy()
    if has_lib:
        table.uns[SPATIAL_KEY] = {lib: {"scalefactors": factors, "metadata": meta}}
    table.obs[_REGION_COL] = pd.Categorical([name] * n)
    table.obs[_INSTANCE_COL] = np.arange(n)
    table = TableModel.parse(table, region=name, region_key=_REGION_COL, instance_key=_INSTANCE_COL)
    return sd.SpatialData(images=images, shapes={name: shapes}, tables={"table": table})


def write_spatialdata(
    adata: AnnData,
    path_or_sdata: SpatialData | str | os.PathLike,
    *,
    table_key: str | None = None,
    library_id: str | None = None,
    spot_diameter: float | None = None,
    overwrite: bool = False,
) -> SpatialData:
    """Write kbfm's results into a SpatialData table, or kbfm's AnnData as a new store.

    Parameters
    ----------
    adata
        Data in kbfm's layout, e.g. from :func:`read_spatialdata` or
        :func:`~kbfm.io.read_visium`, with results of kbfm's tools.
    path_or_sdata
        A :class:`spatialdata.SpatialData` or the path of an existing store: its table
        gets ``adata``'s ``obsm`` (except ``spatial``), new and ``kbfm_*`` ``obs``
        columns, ``varm`` and ``kbfm_*`` ``var`` columns (same genes only) and
        ``uns["kbfm"]``, matched by ``obs_names`` (rows ``adata`` lacks get NaN); a
        backed object is written to disk. A new path (or ``overwrite=True``) gets a new
        store: the table, the spots as circles in ``"global"`` (full-resolution pixels),
        the hires/lowres images in ``"downscaled_hires"`` / ``"downscaled_lowres"`` and
        the full-resolution ``source_image_path`` image in ``"global"``, as
        spatialdata-io lays out Visium.
    table_key
        Table to update (default: the one ``adata`` was read from, else the only one).
    library_id
        Which ``uns["spatial"]`` library a new store is built from.
    spot_diameter
        Spot diameter in ``obsm["spatial"]`` pixels, when the scale factors lack it.
    overwrite
        Replace an existing store at the path with a new one.

    Returns
    -------
    The SpatialData object that was written or updated.

    Examples
    --------
    >>> import kbfm
    >>> sdata = kbfm.io.write_spatialdata(adata, "spots.zarr")  # doctest: +SKIP
    >>> adata = kbfm.io.read_spatialdata("spots.zarr")  # doctest: +SKIP
    >>> kbfm.im.embed_image(adata, model="color-texture")  # doctest: +SKIP
    >>> kbfm.io.write_spatialdata(adata, "spots.zarr")  # doctest: +SKIP
    """
    sd = _spatialdata()
    if isinstance(path_or_sdata, sd.SpatialData):
        key, written = _update_table(adata, path_or_sdata, table_key)
        if path_or_sdata.path is not None:
            # spatialdata refuses to overwrite an element of the store it reads from;
            # the table is in memory, so delete it on disk and write it again.
            path_or_sdata.delete_element_from_disk(key)
            path_or_sdata.write_element(key)
        logger.info("write_spatialdata: table %r got %s", key, ", ".join(written))
        return path_or_sdata
    path = Path(path_or_sdata).expanduser()
    if path.exists() and not overwrite:
        try:
            sdata = sd.read_zarr(path)
        except Exception as err:
            msg = f"{path} exists and is not a SpatialData store ({err}); choose another path."
            raise KbfmInputError(msg) from err
        return write_spatialdata(adata, sdata, table_key=table_key)
    sdata = _from_anndata(adata, library_id, spot_diameter)
    sdata.write(path, overwrite=overwrite)
    logger.info("write_spatialdata: wrote %s", path)
    return sd.read_zarr(path)
