"""Consensus marker genes for 1,375 Cell Ontology types, from the ``cellconsensus`` wheel.

``cellconsensus`` (PyPI, MIT) ships, per Cell Ontology id, marker genes with a weight
that sums the evidence of the marker databases it aggregates (``consensus``), how many
sources back each type (``n_sources``), names/parents/depth for 3,238 CL terms
(``ct_info``) and a three-level grouping of types into lineages (``cl_to_meta.json``).
kbfm reads only these data files (hash-pinned, restricted unpickler: see
:mod:`kbfm.knowledge._packaged`); the package's own code is never imported.

Markers are ranked per type by a specificity-weighted score, computed here:
``(weight / max weight of the type) * log(n_types / n_types listing the gene in their
top 200)``, so genes listed for hundreds of types (``CD24``, ``VIM``, HLA class II)
sink below the type's own markers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

from .._errors import KbfmInputError
from ._packaged import load_verified_pickle, package_file, verified_bytes

PACKAGE = "cellconsensus"
PACKAGE_VERSION = "1.2.0"
_FILES = {
    "data/consensus_cache_full.pkl": (
        "572046bc2f1724fc074714d0bf67450cc7aa5ac1c3299dbb30dcf34ec51d7980"
    ),
    "data/cl_to_meta.json": "a17f5400bcf8c04bb8820296b9b7ec005062c33af158c131f3d0d958624025d5",
}
_LINEAGE_FILE = (
    "data/consensus_cache_meta.pkl",
    "740ae96eb6a96d25ccfe4124723571bbdbb0b08241b2ef35929c8efcec8e72c6",
)
#: Lineage keys that are not a lineage of normal cells.
_NOT_LINEAGES = ("other", "parathyroid")
#: Genes kept per cell type (ranked); callers usually take the first 20-50.
MAX_MARKERS = 100
_DF_TOP = 200


@dataclass(frozen=True)
class ConsensusKnowledge:
    """The cellconsensus tables, read once.

    Attributes
    ----------
    markers
        ``{CL id: [(gene, score), ...]}`` best first, at most :data:`MAX_MARKERS`.
    n_sources
        ``{CL id: number of marker sources behind the type}``.
    names
        ``{CL id: name}`` for the 3,238 CL terms cellconsensus knows.
    lineage
        ``{CL id: lineage key}`` (cellconsensus level-1 groups such as ``"neural"``,
        ``"t_cell"``, ``"epithelial"``), for 1,168 types.
    lineage_names
        ``{lineage key: readable name}``.
    version
        Package name and version.
    """

    markers: dict[str, list[tuple[str, float]]]
    n_sources: dict[str, int]
    names: dict[str, str]
    lineage: dict[str, str]
    lineage_names: dict[str, str]
    version: str

    def marker_genes(self, cl_id: str, top_n: int = 30) -> list[str]:
        """Return the ``top_n`` best-ranked marker genes of a type (empty when unknown)."""
        return [g for g, _ in self.markers.get(cl_id, [])[:top_n]]

    def cell_types_of(self, top_n: int = 30) -> dict[str, list[str]]:
        """Return ``{gene: [CL ids]}``: the types in whose top ``top_n`` a gene is.

        Types where the gene ranks in the top 5 come first, then by how many sources
        back the type (well-studied types before obscure ones).
        """
        hits: dict[str, list[tuple[int, int, str]]] = {}
        for cid, ranked in self.markers.items():
            for rank, (gene, _) in enumerate(ranked[:top_n]):
                key = (rank // 5, -self.n_sources.get(cid, 0), cid)
                hits.setdefault(gene, []).append(key)
        return {g: [cid for *_, cid in sorted(v)] for g, v in hits.items()}


def _ranked(weights: dict[str, float], df: dict[str, int], n_types: int) -> list:
    top = max(weights.values(), default=0.0)
    if top <= 0:
        return []
    scored = {g: (w / top) * math.log(n_types / max(df.get(g, 1), 1)) for g, w in weights.items()}
    best = sorted(scored, key=lambda g: (-scored[g], g))[:MAX_MARKERS]
    return [(g, round(scored[g], 4)) for g in best if scored[g] > 0]


@lru_cache(maxsize=1)
def load_consensus_knowledge() -> ConsensusKnowledge:
    """Read the cellconsensus marker tables (hash-checked) and rank the markers.

    Returns
    -------
    A :class:`ConsensusKnowledge`.

    Raises
    ------
    KbfmInputError
        When a file does not match its pinned hash (it is then not unpickled).
    KbfmUnavailableError
        When ``cellconsensus`` is not installed.

    Examples
    --------
    >>> ck = load_consensus_knowledge()
    >>> ck.marker_genes("CL:0000127", 3)  # astrocyte
    ['GFAP', 'AQP4', 'SLC1A3']
    """
    cache_rel, meta_rel = list(_FILES)
    raw = load_verified_pickle(package_file(PACKAGE, cache_rel), _FILES[cache_rel])
    if not isinstance(raw, dict) or not {"consensus", "n_sources", "ct_info"} <= set(raw):
        msg = f"{cache_rel} of {PACKAGE} does not hold the expected marker tables."
        raise KbfmInputError(msg)
    meta = json.loads(verified_bytes(package_file(PACKAGE, meta_rel), _FILES[meta_rel]))
    consensus: dict[str, dict[str, float]] = raw["consensus"]
    df: dict[str, int] = {}
    for weights in consensus.values():
        for gene in sorted(weights, key=weights.get, reverse=True)[:_DF_TOP]:
            df[gene] = df.get(gene, 0) + 1
    markers = {cid: _ranked(w, df, len(consensus)) for cid, w in consensus.items()}
    return ConsensusKnowledge(
        markers={c: m for c, m in markers.items() if m},
        n_sources={str(k): int(v) for k, v in raw["n_sources"].items()},
        names={str(k): str(v.get("name", "")) for k, v in raw["ct_info"].items()},
        lineage={k: v["meta"] for k, v in meta.get("cl_to_meta", {}).items()},
        lineage_names=dict(meta.get("meta_groups", {})),
        version=f"{PACKAGE}-{PACKAGE_VERSION}",
    )


@lru_cache(maxsize=1)
def load_lineage_markers() -> dict[str, list[str]]:
    """Return marker genes per cellconsensus lineage (``"neural"``, ``"t_cell"``, ...).

    Read from the package's level-1 consensus table (hash-checked) and ranked like the
    cell-type markers. Cancer groups and catch-alls are left out.

    Returns
    -------
    ``{lineage key: [genes, best first]}``, at most :data:`MAX_MARKERS` each.

    Examples
    --------
    >>> load_lineage_markers()["endothelial"][:2]
    ['PECAM1', 'CDH5']
    """
    relative, sha256 = _LINEAGE_FILE
    raw = load_verified_pickle(package_file(PACKAGE, relative), sha256)
    if not isinstance(raw, dict) or "consensus" not in raw:
        msg = f"{relative} of {PACKAGE} does not hold the expected lineage tables."
        raise KbfmInputError(msg)
    groups = {
        k: v
        for k, v in raw["consensus"].items()
        if not k.startswith("cancer") and k not in _NOT_LINEAGES
    }
    df: dict[str, int] = {}
    for weights in groups.values():
        for gene in sorted(weights, key=weights.get, reverse=True)[:_DF_TOP]:
            df[gene] = df.get(gene, 0) + 1
    # log(n / df) is 0 for genes every lineage lists; n + 1 keeps them, ranked last.
    return {k: [g for g, _ in _ranked(w, df, len(groups) + 1)] for k, w in groups.items()}
