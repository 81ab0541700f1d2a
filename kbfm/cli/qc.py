"""``kbfm qc`` and ``kbfm deconvolve``: plain functions that kbfm.cli registers as commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def qc_cmd(
    path: Annotated[Path, typer.Argument(help="Input .h5ad file (raw counts).")],
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-d", help="Folder for the report and figures.")
    ] = Path("qc"),
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--out",
            "-o",
            help="Also write the .h5ad with the QC columns here (implies --write-h5ad).",
        ),
    ] = None,
    batch_key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="obs column with the sample; thresholds are per sample."),
    ] = None,
    species: Annotated[str, typer.Option(help="human, mouse or auto.")] = "auto",
    layer: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Layer with raw counts."),
    ] = None,
    nmads: Annotated[float, typer.Option(help="Threshold width in MADs.")] = 5.0,
    remove: Annotated[
        bool, typer.Option("--remove", help="Drop failing spots in the written .h5ad.")
    ] = False,
    write_h5ad: Annotated[
        bool,
        typer.Option(
            "--write-h5ad",
            help="Also write the .h5ad with the QC columns (to --out, default "
            "<input>.kbfm.h5ad next to the input).",
        ),
    ] = False,
) -> None:
    """Automated QC: per-spot flags with reasons, figures and a markdown report in --out-dir."""
    from ..io import read_h5ad
    from ..io import write_h5ad as write
    from ..pl.qc_report import write_qc_report
    from ..pp.auto_qc import auto_qc
    from ._common import output_path, run_guarded

    def go():
        adata = read_h5ad(path)
        auto_qc(adata, batch_key=batch_key, species=species, layer=layer, nmads=nmads)
        report = write_qc_report(
            adata, out_dir, batch_key=batch_key, title=f"QC report: {path.name}"
        )
        step = adata.uns["kbfm"]["auto_qc"]
        typer.echo(f"{step['n_fail']} of {step['n_obs']} spots fail QC; report: {report}")
        if write_h5ad or out is not None:
            if remove:
                adata = adata[adata.obs["kbfm_qc_pass"].to_numpy(bool)].copy()
            typer.echo(f"wrote {write(adata, output_path(path, out))}")

    run_guarded(go)


def deconvolve_cmd(
    path: Annotated[Path, typer.Argument(help="Spatial .h5ad (raw counts).")],
    reference: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Labelled single-cell reference .h5ad (omit for zero-shot)."),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", "-o", help="Output .h5ad (default: <input>.kbfm.h5ad)."),
    ] = None,
    label_key: Annotated[str, typer.Option(help="Reference obs column with labels.")] = "cell_type",
    method: Annotated[str, typer.Option(help="nnls, poisson or knowledge.")] = "poisson",
    cell_types: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Zero-shot: comma-separated Cell Ontology cell types."),
    ] = None,
    layer: Annotated[Optional[str], typer.Option(help="Spatial layer with counts.")] = None,  # noqa: UP045
    reference_layer: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Reference layer with counts."),
    ] = None,
    n_epochs: Annotated[int, typer.Option(help="Count-model optimisation steps.")] = 1000,
    source: Annotated[str, typer.Option(help="Gene knowledge for method=knowledge.")] = "atlas",
    table: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Also write the proportions as CSV here."),
    ] = None,
    figure: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Also draw proportion maps into this PNG."),
    ] = None,
) -> None:
    """Cell-type proportions per spot into obsm['kbfm_proportions']."""
    from .._atomic import atomic_write
    from .._keys import UNS_KEY
    from ..io import read_h5ad, write_h5ad
    from ..pl._save import save_figure
    from ..tl.deconvolve import PROPORTIONS_KEY, check_method_options, deconvolve
    from ._common import output_path, run_guarded

    types = [c.strip() for c in cell_types.split(",")] if cell_types else None
    # Refuse another method's options before reading any file.
    run_guarded(
        lambda: check_method_options(
            method, cell_types=types, n_epochs=n_epochs, knowledge_source=source
        )
    )

    def go():
        spots = read_h5ad(path)
        ref = read_h5ad(reference) if reference is not None else None
        deconvolve(
            spots,
            ref,
            label_key=label_key,
            method=method,
            cell_types=types,
            layer=layer,
            reference_layer=reference_layer,
            n_epochs=n_epochs,
            knowledge_source=source,
        )
        P = spots.obsm[PROPORTIONS_KEY]
        step = spots.uns[UNS_KEY]["deconvolve"]
        typer.echo(
            f"{method}: {P.shape[1]} cell types, {step['n_genes_used']} genes; mean proportions: "
            + ", ".join(f"{c} {v:.2f}" for c, v in P.mean().sort_values(ascending=False).items())
        )
        if table is not None:
            table.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(table, P.to_csv)
            typer.echo(f"wrote {table}")
        if figure is not None:
            import matplotlib

            matplotlib.use("Agg", force=False)
            from ..pl.proportions import proportions

            figure.parent.mkdir(parents=True, exist_ok=True)
            save_figure(proportions(spots), figure, dpi=120)
            typer.echo(f"wrote {figure}")
        typer.echo(f"wrote {write_h5ad(spots, output_path(path, out))}")

    run_guarded(go)
