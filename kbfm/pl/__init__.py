"""Plots (matplotlib).

Every plotting function takes scanpy's four options, handled in one place
(``kbfm.pl._save.finish_figure``):

- ``ax=``: draw into existing axes (one Axes, or a list/array of them where the function
  draws several panels); the figure stays yours: no title, layout or closing.
- ``show=``: ``True`` shows, ``False`` never; ``None`` (default) shows only in an
  interactive matplotlib session, for a figure the function made and did not save, so
  scripts, tests and CI never block.
- ``save=``: a path, format from its suffix, written atomically; ``True`` writes
  ``figures/<function>.png``. A figure the function made is closed once saved.
- ``return_fig=True``: return the Figure. By default each function returns what it
  always did: :func:`spatial_scatter` its Axes, the others their Figure (unlike scanpy,
  also after showing).

:func:`write_qc_report` writes a report folder, not one figure, and takes none of them;
its figures come from :func:`qc_metrics` and :func:`qc_spatial`.
"""

from .embedding import embedding_panels
from .proportions import proportions
from .qc import qc_metrics, qc_spatial
from .qc_report import write_qc_report
from .spatial import patch_mosaic, spatial_scatter

__all__ = [
    "embedding_panels",
    "patch_mosaic",
    "proportions",
    "qc_metrics",
    "qc_spatial",
    "spatial_scatter",
    "write_qc_report",
]
