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


def _gene_list(value: str | None) -> list[str] | None:
    """``--genes``: a comma-separated list, or a file with one gene per line."""
    from .._errors import KbfmInputError

    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        genes = [g.strip() for g in lines if g.strip() and not g.lstrip().startswith("#")]
        where = f"{path} lists"
    else:
        genes = [g.strip() for g in value.split(",") if g.strip()]
        where = "--genes lists"
    if not genes:
        msg = f"--genes {value!r} names no gene (a comma-separated list or a file)."
        raise KbfmInputError(msg)
    doubled = sorted({g for g in genes if genes.count(g) > 1})
    if doubled:
        msg = f"{where} some genes twice: {', '.join(doubled[:20])}."
        raise KbfmInputError(msg)
    return genes


def _check_known(genes: list[str], var_names, what: str) -> None:
    from .._errors import KbfmInputError

    known = set(var_names)
    unknown = [g for g in genes if g not in known]
    if unknown:
        shown = ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else "")
        msg = f"{len(unknown)} of the --genes are not in {what}: {shown}."
        raise KbfmInputError(msg)


def _score_slide(predictor, new, name: str, out: Path, groupby: str | None) -> str:
    """Score a --predict slide that has expression; write its scores; return the line."""
    from .._atomic import atomic_write, atomic_write_text
    from .._errors import KbfmInputError

    try:
        r = predictor.score(new, groupby=groupby)
    except KbfmInputError as err:
        return f"{name}: not scored ({err})"
    if r.empty or r.isna().all():
        return f"{name}: not scored (no counts for the predicted genes)"
    missing = [g for g in predictor.genes if g not in r.index]
    score = {
        "slide": name,
        "mean_r": float(r.mean()),
        "n_genes_scored": int(r.notna().sum()),
        "n_genes_predicted": len(predictor.genes),
        "genes_missing": missing,
        "normalize": predictor.normalize,
    }
    frame = r.rename("pearson_r").rename_axis("gene").to_frame()
    atomic_write(out / f"{name}.pearson_per_gene.csv", frame.to_csv)
    atomic_write_text(out / f"{name}.score.json", json.dumps(score, indent=2) + "\n")
    new.uns["kbfm_predict_expression_score"] = {"pearson": frame, **score}
    return (
        f"{name}: mean Pearson r {score['mean_r']:.3f} over {score['n_genes_scored']} of "
        f"{score['n_genes_predicted']} predicted genes (the slide's own counts)"
    )


def predict_expression_cmd(
    paths: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Argument(help="Training .h5ad files with expression and embeddings."),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            "-d",
            help="Results folder: summary.json, per-gene r, <slide>.predicted.h5ad.",
        ),
    ] = Path("predict_expression"),
    groupby: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="obs column with sections (default: one section per file)."),
    ] = None,
    use_rep: Annotated[
        str,
        typer.Option(
            help="obsm key of the embedding; several comma-separated keys are combined "
            "(each standardised with the training spots' statistics)."
        ),
    ] = IMAGE_KEY,
    genes: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Genes to predict: comma-separated, or a file with one gene per line "
            "(default: the --n-genes most variable, chosen on each fold's training spots)."
        ),
    ] = None,
    n_genes: Annotated[int, typer.Option(help="Most variable genes to predict.")] = 50,
    n_pcs: Annotated[int, typer.Option(help="PCA components (HEST: 256).")] = 256,
    predict: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(
            help="Slide .h5ad to predict (repeatable); fitted on all inputs. A slide with "
            "counts for the predicted genes is also scored."
        ),
    ] = None,
    rings: Annotated[
        float,
        typer.Option(
            "--neighbour-rings",
            help="Append the mean embedding of spots this many grid steps around (0 = off).",
        ),
    ] = 0.0,
    save_model: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Save the predictor fitted on all inputs to this folder."),
    ] = None,
    model: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Predict with a saved predictor (--save-model) instead of training."),
    ] = None,
) -> None:
    """Cross-validated expression prediction from image embeddings (HEST protocol).

    Every fold fits genes, scaling, PCA and ridge on its training sections only. With
    --predict, the same pipeline (neighbouring-spot context, scaling, PCA, ridge) is fitted
    on all inputs and applied to each slide; a slide with counts is scored too.
    """
    from ._common import run_guarded, sample_name

    def go():
        import anndata as ad

        from .._atomic import atomic_write, atomic_write_text
        from .._errors import KbfmInputError
        from ..im.predict_expression import (
            ExpressionPredictor,
            fit_expression_predictor,
            predict_expression,
        )
        from ..io.h5ad import read_h5ad, write_h5ad

        inputs = [k.strip() for k in use_rep.split(",") if k.strip()]
        gene_list = _gene_list(genes)
        targets = {p: out_dir / f"{sample_name(p)}.predicted.h5ad" for p in predict or []}
        if len(set(targets.values())) != len(targets):
            msg = "Two --predict slides share a name; their predictions would collide."
            raise KbfmInputError(msg)
        read_paths = {p.resolve() for p in [*(paths or []), *targets]}
        for dest in targets.values():
            if dest.resolve() in read_paths:
                msg = f"{dest} is an input; pick another --out-dir."
                raise KbfmInputError(msg)
        if model is not None:
            if paths:
                msg = "Pass either training .h5ad files or --model, not both."
                raise KbfmInputError(msg)
            if not predict:
                msg = "--model predicts slides: pass --predict FILE.h5ad."
                raise KbfmInputError(msg)
            if gene_list is not None:
                msg = "A saved --model predicts its own genes; drop --genes."
                raise KbfmInputError(msg)
            predictor = ExpressionPredictor.load(model)
            typer.echo(
                f"loaded {model}: {len(predictor.genes)} genes from {predictor.inputs} "
                f"(neighbour rings {predictor.rings:g})"
            )
        else:
            if not paths:
                msg = "Pass training .h5ad files (or --model with --predict)."
                raise KbfmInputError(msg)
            parts = [read_h5ad(p) for p in paths]
            if len(parts) > 1:
                names = [sample_name(p) for p in paths]
                for name, part in zip(names, parts, strict=True):
                    part.obs_names = [f"{name}:{o}" for o in part.obs_names]
                adata = ad.concat(parts, join="inner", label="kbfm_section", keys=names)
                group = groupby or "kbfm_section"
            else:
                adata, group = parts[0], groupby
            if gene_list is not None:  # before any fitting
                what = "the training files" if len(parts) > 1 else str(paths[0])
                _check_known(gene_list, adata.var_names, what)
            options = {"use_rep": inputs, "n_pcs": n_pcs, "rings": rings}
            predict_expression(adata, groupby=group, genes=gene_list, n_genes=n_genes, **options)
            res = adata.uns["kbfm_predict_expression"]
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(out_dir / "pearson_per_gene.csv", res["pearson"].to_csv)
            keys = ("mean_r", "mean_r_overall", "scheme", "use_rep", "gene_selection")
            summary = {k: res[k] for k in keys}
            summary |= {"inputs": inputs, "neighbour_rings": rings}
            summary["genes_per_fold"] = res["genes_per_fold"]
            atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
            for name, r in res["mean_r"].items():
                typer.echo(f"{name:24s} mean Pearson r {r:.3f}")
            overall = f"overall {res['mean_r_overall']:.3f} ({res['scheme']})"
            typer.echo(f"{overall}; results in {out_dir}/")
            if not (predict or save_model):
                return
            predictor = fit_expression_predictor(
                adata, groupby=group, genes=gene_list, n_genes=n_genes, **options
            )
            if save_model is not None:
                typer.echo(f"saved the predictor to {predictor.save(save_model)}/")
        out_dir.mkdir(parents=True, exist_ok=True)
        for p, dest in targets.items():
            new = read_h5ad(p)
            by = groupby if groupby is not None and groupby in new.obs else None
            predictor.predict(new, groupby=by)
            line = _score_slide(predictor, new, sample_name(p), out_dir, by)
            typer.echo(line)
            typer.echo(f"wrote {write_h5ad(new, dest)}")

    run_guarded(go)
