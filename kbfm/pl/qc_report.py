"""A QC report folder: figures, the per-spot QC table and a markdown summary."""

from __future__ import annotations

import os
from pathlib import Path

from anndata import AnnData

from .._atomic import atomic_write
from .._errors import KbfmInputError
from ._save import save_figure


def _fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def write_qc_report(
    adata: AnnData,
    out: str | os.PathLike,
    *,
    key: str = "kbfm_qc",
    batch_key: str | None = None,
    title: str = "QC report",
) -> Path:
    """Write ``report.md``, ``qc_table.csv`` and figures for data after :func:`kbfm.pp.auto_qc`.

    Parameters
    ----------
    adata
        Data with ``obs["{key}_*"]`` from auto_qc.
    out
        Output folder (created).
    key
        auto_qc's ``key_added``.
    batch_key
        Colour the metric histograms by this column.
    title
        Report heading.

    Returns
    -------
    Path of ``report.md``.

    Example
    -------
    >>> kbfm.pp.auto_qc(adata)  # doctest: +SKIP
    >>> write_qc_report(adata, "qc/")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from ..pp.auto_qc import FLAGS, qc_table
    from .qc import qc_metrics, qc_spatial

    table = qc_table(adata, key=key)
    step = adata.uns.get("kbfm", {}).get("auto_qc")
    if not isinstance(step, dict):
        msg = "uns['kbfm']['auto_qc'] is missing; run kbfm.pp.auto_qc(adata) first."
        raise KbfmInputError(msg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "qc_table.csv", table.to_csv)
    figures = {"qc_metrics.png": qc_metrics(adata, key=key, batch_key=batch_key, show=False)}
    if "spatial" in adata.obsm:
        figures["qc_spatial.png"] = qc_spatial(adata, key=key, show=False)
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=120)

    n = len(table)
    n_fail = int((~table["pass"].astype(bool)).sum())
    lines = [
        f"# {title}",
        "",
        f"{n} spots; **{n_fail} fail** ({100 * n_fail / max(n, 1):.1f}%); nothing was removed "
        "unless `remove=True` was asked" + (" (it was)." if step.get("removed") is True else "."),
        "",
        f"- counts read from `{step.get('counts_source')}`; input values: "
        f"{step.get('input_scale')} ({step.get('input_scale_reason')})",
        f"- adaptation: {step.get('adaptation')}",
        f"- species for mito/ribo/hb genes: {step.get('species')}",
        f"- thresholds: median -/+ {step.get('nmads')} MAD (mito: {step.get('nmads_mito')}, "
        f"local checks: {step.get('nmads_local')}), per `{step.get('batch_key')}`",
        f"- spatial checks: {step.get('spatial_checks')}",
        "",
        "## Flags",
        "",
        "| flag | spots | fails a spot |",
        "|---|---:|---|",
    ]
    fail_on = set(step.get("fail_on", []))
    for flag in FLAGS:
        if flag in table.columns:
            count = int(table[flag].astype(bool).sum())
            lines.append(f"| {flag} | {count} | {'yes' if flag in fail_on else 'no'} |")
    lines += ["", "## Thresholds", "", "| batch | metric | low | high |", "|---|---|---:|---:|"]
    for batch, metrics in (step.get("thresholds") or {}).items():
        for metric, (lo, hi) in metrics.items():
            lines.append(f"| {batch} | {metric} | {_fmt(lo)} | {_fmt(hi)} |")
    spatial_summary = step.get("spatial_summary") or {}
    if spatial_summary:
        lines += ["", "## Spatial", ""]
        for batch, summ in spatial_summary.items():
            items = ", ".join(f"{k}: {_fmt(v)}" for k, v in summ.items())
            lines.append(f"- {batch}: {items}")
    reasons = table.loc[~table["pass"].astype(bool), "reason"].astype(str).value_counts()
    lines += ["", "## Most common reasons", "", "| reason | spots |", "|---|---:|"]
    lines += [f"| {r} | {c} |" for r, c in reasons.head(15).items()]
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in figures]
    lines += ["", "Per-spot metrics, flags and reasons: `qc_table.csv`.", ""]
    report = out / "report.md"
    atomic_write(report, lambda tmp: Path(tmp).write_text("\n".join(lines)))
    return report
