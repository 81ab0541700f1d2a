"""Knowledge retrieved for LLM prompts: what each marker gene is known to mark."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache


@lru_cache(maxsize=2)
def _marks(species: str) -> dict[str, tuple[str, ...]]:
    from .gene_cards import marked_types

    return {g.upper(): tuple(v) for g, v in marked_types(species).items()}


def marker_facts(
    genes: Iterable[str],
    species: str = "human",
    *,
    candidates: Sequence[str] | None = None,
    per_gene: int = 3,
) -> dict[str, list[str]]:
    """Return, per gene, the cell types kbfm's knowledge says it marks.

    The same facts the ``atlas`` gene cards carry (kbfm's curated markers, then
    cellconsensus). Cell types among ``candidates`` (labels) come first, so a prompt
    shows the facts that bear on the choice it asks for.

    Parameters
    ----------
    genes
        Gene symbols (case-insensitive).
    species
        ``"human"`` or ``"mouse"``.
    candidates
        Candidate cell-type labels to put first.
    per_gene
        Cell types kept per gene.

    Returns
    -------
    ``{gene: [cell type labels]}``; genes without marker facts map to ``[]``.

    Examples
    --------
    >>> marker_facts(["MS4A1"])["MS4A1"][0]
    'B cell'
    """
    table = _marks(species)
    wanted = {c.lower() for c in candidates or ()}
    out = {}
    for gene in genes:
        types = list(table.get(str(gene).upper(), ()))
        types.sort(key=lambda t: t.lower() not in wanted)
        out[str(gene)] = types[:per_gene]
    return out
