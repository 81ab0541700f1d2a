"""``kbfm.tl.describe_regions``: an LLM describes each spatial domain (QuST-LLM style)."""

from __future__ import annotations

from anndata import AnnData

from .._errors import KbfmInputError
from .._keys import CELLTYPE_KEY, DOMAIN_KEY
from .._provenance import record_step
from .._validate import expression_matrix


def describe_regions(
    adata: AnnData,
    *,
    groupby: str = DOMAIN_KEY,
    composition_key: str | None = None,
    llm: object = "smollm2",
    llm_options: dict | None = None,
    tissue: str = "unknown tissue",
    species: str = "auto",
    top_n: int = 10,
    retrieval: bool = True,
    layer: str | None = None,
    use_raw: bool = False,
    cache: bool = True,
    key_added: str = "kbfm_region_descriptions",
) -> dict[str, str]:
    """Describe each domain from its marker genes and cell-type composition with an LLM.

    Parameters
    ----------
    adata
        Data with domain labels in ``obs[groupby]``.
    groupby
        Domain column (e.g. from :func:`kbfm.tl.domains` or any clustering).
    composition_key
        ``obs`` column of cell types whose fractions per domain go into the prompt
        (default: ``"kbfm_celltype"`` when :func:`kbfm.tl.annotate` has run, else none).
    llm, llm_options
        Backend (see :func:`kbfm.encoders.llm.get_llm`); ``"dry-run"`` stores the prompts.
    tissue, species
        Context named in the prompt (``region_description``); ``species="auto"``
        reads it off the gene names.
    retrieval
        Put after each marker gene the cell types kbfm's knowledge says it marks
        (prompt ``region_description`` v2); ``False``: genes alone (v1).
    top_n
        Marker genes per domain.
    layer, use_raw
        Where to read expression.
    cache
        Reuse cached answers.
    key_added
        ``uns`` key receiving ``{domain: description}``.

    Returns
    -------
    ``{domain: description}`` (the prompts themselves for a dry run).
    """
    from ..encoders._llm_cache import cached_chat
    from ..encoders.llm import DryRunLLM, get_llm
    from ..knowledge.retrieval import marker_facts
    from ..knowledge.species import resolve_species
    from ..prompts import load_prompt
    from .annotate.llm import top_markers

    if groupby not in adata.obs:
        msg = f"obs[{groupby!r}] not found; run kbfm.tl.domains first or pass groupby=."
        raise KbfmInputError(msg)
    if composition_key is None and CELLTYPE_KEY in adata.obs:
        composition_key = CELLTYPE_KEY
    if composition_key is not None and composition_key not in adata.obs:
        msg = f"composition_key={composition_key!r} is not a column of adata.obs."
        raise KbfmInputError(msg)
    X, names = expression_matrix(adata, layer=layer, use_raw=use_raw)
    species = resolve_species(species, names)
    groups = adata.obs[groupby].astype(str).to_numpy()
    markers = top_markers(X, names, groups, top_n=top_n)
    model = get_llm(llm, **(llm_options or {}))
    template = load_prompt("region_description", version=2 if retrieval else 1)
    facts: dict[str, list[str]] = {}
    if retrieval:
        every = {g for genes in markers.values() for g in genes}
        facts = marker_facts(every, species)
    out: dict[str, str] = {}
    for domain, genes in markers.items():
        composition = "not given"
        if composition_key is not None:
            fractions = adata.obs.loc[groups == domain, composition_key].astype(str)
            top = fractions.value_counts(normalize=True).head(5)
            composition = ", ".join(f"{k} {v:.0%}" for k, v in top.items())
        prompt = template.render(
            species=species,
            tissue=tissue,
            domain_id=domain,
            marker_genes=", ".join(
                f"{g} [{'; '.join(facts[g])}]" if facts.get(g) else g for g in genes
            ),
            composition=composition,
        )
        messages = [{"role": "user", "content": prompt}]
        if isinstance(model, DryRunLLM):
            out[domain] = prompt
        else:
            out[domain] = cached_chat(model, messages, cache=cache).strip()
    adata.uns[key_added] = dict(out)
    record_step(
        adata,
        "describe_regions",
        groupby=groupby,
        prompt=template.key,
        llm=model.name,
        llm_model_id=model.model_id,
        dry_run=isinstance(model, DryRunLLM),
    )
    return out
