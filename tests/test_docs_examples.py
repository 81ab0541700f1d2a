"""Every ```python block in README.md and docs/*.md runs, so examples cannot rot (issue 15).

The blocks of one file run in order in one namespace, in a temporary working folder,
after that file's setup below (which provides the ``adata`` a guide talks about). A block
that cannot run here (a hub model, a paid API, the user's own files) is preceded by
``<!-- docs-test: skip <reason> -->``; the reason is required and reported as the skip
reason, so nothing is skipped silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _paths import SHARED

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK_RE = re.compile(
    r"(?:<!--\s*docs-test:\s*skip(?P<reason>[^>]*)-->\s*\n)?```python\n(?P<code>.*?)```",
    re.DOTALL,
)
DATA = SHARED


def blocks(path: Path) -> list[tuple[str, str | None]]:
    """``(code, skip reason or None)`` for each python block of a Markdown file."""
    found = []
    for match in _BLOCK_RE.finditer(path.read_text()):
        reason = match.group("reason")
        found.append((match.group("code"), reason.strip() if reason is not None else None))
    return found


def _setup_fusion(ns: dict, tmp: Path) -> None:
    import kbfm

    names = ["CD3E", "FOXP3", *[f"GENE{i}" for i in range(2, 60)]]
    adata = kbfm.datasets.synthetic_spatial(n_side=14, n_genes=60, gene_names=names, seed=0)
    adata.obs["layer"] = adata.obs["domain"]
    ns["adata"] = adata
    ns["other_adata"] = kbfm.datasets.synthetic_spatial(
        n_side=10, n_genes=60, gene_names=names, seed=1
    )


def _setup_pbmc(ns: dict, tmp: Path) -> None:
    import kbfm

    ns["adata"] = kbfm.datasets.pbmc68k_reduced()[:300].copy()


def _setup_qc(ns: dict, tmp: Path) -> None:
    from test_deconvolve import make_pair

    import kbfm

    spots = kbfm.datasets.synthetic_spatial(n_side=12, n_genes=60, seed=0)
    spots.obs["sample"] = ["a" if i % 2 else "b" for i in range(spots.n_obs)]
    ns["adata"] = spots
    pair_spots, cells, _, _ = make_pair(n_spots=40)
    # real marker names on the first genes, so the zero-shot call finds its markers
    markers = ["MS4A1", "CD79A", "CD79B", "CD19", "CD3E", "CD3D", "CD2", "CD68", "CD14", "LYZ"]
    names = markers + list(pair_spots.var_names[len(markers) :])
    pair_spots.var_names = cells.var_names = names
    ns["spots"], ns["cells"] = pair_spots, cells


def _setup_histology(ns: dict, tmp: Path) -> None:
    her2st = DATA / "histology" / "her2st"
    files = {
        "C2.tsv.gz": her2st / "cnts" / "C2.tsv.gz",
        "C2_selection.tsv": her2st / "spots" / "C2_selection.tsv",
        "C2.jpg": her2st / "imgs" / "C2_5714_HE_BT_C2.jpg",
    }
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        pytest.skip(f"HER2ST section C2 not found under {her2st} (set KBFM_DATA): {missing[0]}")
    for name, source in files.items():
        (tmp / name).symlink_to(source)


def _setup_scale(ns: dict, tmp: Path) -> None:
    import kbfm

    small = kbfm.datasets.pbmc68k_reduced()[:200, :80].copy()  # log-normalised, >= 0
    small.write_zarr(tmp / "cells.zarr")
    ns["obs"], ns["var"] = small.obs, small.var


SETUP = {
    "README.md": _setup_pbmc,
    "fusion.md": _setup_fusion,
    "knowledge.md": _setup_pbmc,
    "llm_agent.md": _setup_pbmc,
    "qc_deconvolution.md": _setup_qc,
    "histology.md": _setup_histology,
    "scale.md": _setup_scale,
}


def test_every_guide_with_python_blocks_has_a_setup():
    with_blocks = [p.name for p in DOCS if blocks(p)]
    assert with_blocks, "no python blocks found: the block pattern is broken"
    assert sorted(set(with_blocks) - set(SETUP)) == []


def test_skip_markers_give_a_reason():
    for path in DOCS:
        for _, reason in blocks(path):
            assert reason is None or len(reason) > 10, f"{path.name}: skip without a reason"


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in DOCS if blocks(p)], ids=lambda p: p.name)
def test_doc_blocks_run(path, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KBFM_PROGRESS", "0")
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    SETUP[path.name](namespace, tmp_path)
    ran, skipped = 0, []
    for index, (code, reason) in enumerate(blocks(path), start=1):
        if reason is not None:
            skipped.append(f"block {index}: {reason}")
            continue
        try:
            exec(compile(code, f"{path.name} block {index}", "exec"), namespace)
        except Exception as err:
            pytest.fail(f"{path.name} block {index} raised {type(err).__name__}: {err}")
        ran += 1
    if not ran:
        pytest.skip("; ".join(skipped))
