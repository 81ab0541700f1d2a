"""Preprocessing: automated QC and normalisation (scanpy-style ``pp``)."""

from ._detect import ScaleInfo, detect_scale
from .auto_qc import FLAGS, auto_qc, qc_table
from .normalize import choose_method, normalize
from .spatially_variable import morans_i, spatially_variable_genes

__all__ = [
    "FLAGS",
    "ScaleInfo",
    "auto_qc",
    "choose_method",
    "detect_scale",
    "morans_i",
    "normalize",
    "qc_table",
    "spatially_variable_genes",
]
