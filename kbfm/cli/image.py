"""``kbfm embed-image`` and ``kbfm predict-expression``: plain functions kbfm.cli registers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .._keys import IMAGE_KEY
from ._choices import StainNorm


def _read_input(path: Path, slide: Path | None, spots: Path | None, mpp: float | None):
    """Read an .h5ad, a Space Ranger folder or a legacy ST counts table."""
    from .._errors import KbfmInputError

    if path.is_dir():
        from ..io.visium import read_visium

        return read_visium(path, source_image_path=slide)
    if path.suffix == ".h5ad":
        from ..io.h5ad import read_h5ad

        return read_h5ad(path)
    if spots is not None:
        from ..io.legacy_st import read_legacy_st

        return read_legacy_st(path, spots, slide, mpp=mpp)
    msg = (
        f"Cannot tell how to read {path}: pass an .h5ad, a Space Ranger folder, or a legacy "
        "ST counts table together with --spots (and --slide for its H&E image)."
    )
    raise KbfmInputError(msg)


def embed_image_cmd(
    path: Annotated[
        Path,
        typer.Argument(help=".h5ad, Space Ranger folder, or legacy ST counts (.tsv[.gz])."),
    ],
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--out", "-o", help="Output .h5ad (default: <input>.kbfm.h5ad next to an .h5ad input)."
        ),
    ] = None,
    slide: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Full-resolution H&E / whole-slide image of the spots."),
    ] = None,
    spots: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Legacy ST spot file (x y pixel_x pixel_y ...)."),
    ] = None,
    model: Annotated[str, typer.Option(help="Image encoder (see `kbfm info`).")] = (
        "efficientnet_lite0"
    ),
    weights: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Local weights file for the encoder (instead of the hub)."),
    ] = None,
    mpp: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Microns per slide pixel (default: metadata or spot size)."),
    ] = None,
    patch_px: Annotated[int, typer.Option(help="Patch side in pixels.")] = 224,
    patch_mpp: Annotated[float, typer.Option(help="Patch microns per pixel.")] = 0.5,
    context: Annotated[
        str, typer.Option(help="Comma-separated field-of-view multipliers, e.g. 1,2.")
    ] = "1",
    stain_norm: Annotated[
        Optional[StainNorm],  # noqa: UP045
        typer.Option(help="Stain normalisation."),
    ] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average 8 flips/rotations.")] = False,
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Patches per forward pass."),
    ] = None,
    num_workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="DataLoader workers reading patches."),
    ] = None,
    key_added: Annotated[str, typer.Option(help="obsm key of the embedding.")] = IMAGE_KEY,
) -> None:
    """Embed the H&E around every spot with an image encoder into obsm[KEY_ADDED]."""
    from .._errors import KbfmInputError
    from ..im.embed_image import embed_image
    from ..io.h5ad import write_h5ad
    from ..io.patches import PatchSpec
    from ._common import output_path, run_guarded

    def go():
        from ..io.patches import check_mpp

        check_mpp(mpp, "--mpp")  # before any file is read
        if out is None and path.suffix != ".h5ad":
            msg = "Pass --out FILE.h5ad when the input is not an .h5ad file."
            raise KbfmInputError(msg)
        try:
            factors = tuple(float(c) for c in context.split(","))
        except ValueError as err:
            msg = f"--context must be comma-separated numbers, got {context!r}."
            raise KbfmInputError(msg) from err
        adata = _read_input(path, slide, spots, mpp)
        embed_image(
            adata,
            slide=slide if path.suffix == ".h5ad" else None,
            model=model,
            weights=weights,
            mpp=mpp,
            patch=PatchSpec(patch_px, patch_mpp),
            context=factors,
            stain_norm=stain_norm.value if stain_norm else None,
            tta=tta,
            batch_size=batch_size,
            num_workers=num_workers,
            key_added=key_added,
        )
        dest = write_h5ad(adata, output_path(path, out))
        shape = adata.obsm[key_added].shape
        typer.echo(f"obsm[{key_added!r}] {shape[0]} x {shape[1]} ({model}); wrote {dest}")

    run_guarded(go)


def predict_expression_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Training .h5ad files with expression and embeddings."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder.")] = Path(
        "predict_expression"
    ),
    groupby: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="obs column with sections (default: one section per file)."),
    ] = None,
    use_rep: Annotated[str, typer.Option(help="obsm key of the embedding.")] = IMAGE_KEY,
    n_genes: Annotated[int, typer.Option(help="Most variable genes to predict.")] = 50,
    n_pcs: Annotated[int, typer.Option(help="PCA components (HEST: 256).")] = 256,
    predict: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="Image-only .h5ad to predict (repeatable); fitted on all inputs."),
    ] = None,
    rings: Annotated[
        float,
        typer.Option(
            "--neighbour-rings",
            help="Append the mean embedding of spots this many grid steps around (0 = off).",
        ),
    ] = 0.0,
) -> None:
    """Cross-validated expression prediction from image embeddings (HEST protocol)."""
    from ._common import run_guarded, sample_name

    def go():
        import anndata as ad

        from .._atomic import atomic_write, atomic_write_text
        from ..im.predict_expression import fit_expression_predictor, predict_expression
        from ..io.h5ad import read_h5ad, write_h5ad
        from ..tl.spatial_context import spatial_context

        rep = f"{use_rep}_context" if rings > 0 else use_rep

        def with_context(data, group_key):
            if rings > 0:
                spatial_context(
                    data, use_rep=use_rep, rings=rings, groupby=group_key, key_added=rep
                )

        parts = [read_h5ad(p) for p in paths]
        if len(parts) > 1:
            names = [sample_name(p) for p in paths]
            for name, part in zip(names, parts, strict=True):
                part.obs_names = [f"{name}:{o}" for o in part.obs_names]
            adata = ad.concat(parts, join="inner", label="kbfm_section", keys=names)
            group = groupby or "kbfm_section"
        else:
            adata, group = parts[0], groupby
        with_context(adata, group)
        predict_expression(adata, use_rep=rep, groupby=group, n_genes=n_genes, n_pcs=n_pcs)
        res = adata.uns["kbfm_predict_expression"]
        out.mkdir(parents=True, exist_ok=True)
        table = out / "pearson_per_gene.csv"
        atomic_write(table, res["pearson"].to_csv)
        summary = {k: res[k] for k in ("mean_r", "mean_r_overall", "scheme", "use_rep")}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        for name, r in res["mean_r"].items():
            typer.echo(f"{name:24s} mean Pearson r {r:.3f}")
        typer.echo(f"overall {res['mean_r_overall']:.3f} ({res['scheme']}); results in {out}/")
        if predict:
            genes = list(res["pearson"].index)
            model = fit_expression_predictor(adata, use_rep=rep, genes=genes, n_pcs=n_pcs)
            for p in predict:
                new = read_h5ad(p)
                with_context(new, None)
                model.predict(new)
                dest = out / f"{sample_name(p)}.predicted.h5ad"
                typer.echo(f"wrote {write_h5ad(new, dest)}")

    run_guarded(go)
