"""Gene descriptions written by an LLM (Geneverse-style), as a knowledge source."""

from __future__ import annotations

from collections.abc import Iterable

from .gene_descriptions import GeneKnowledge


def generate_gene_descriptions(
    symbols: Iterable[str],
    *,
    llm: object = "smollm2",
    llm_options: dict | None = None,
    species: str = "human",
    cache: bool = True,
) -> GeneKnowledge:
    """Ask an LLM to describe genes (prompt ``gene_description``) and return them as knowledge.

    Answers are cached on disk by (model, prompt), so a second call costs nothing; genes
    the model answers ``unknown`` (or nothing) for are left out. Use the result as
    ``source=`` of :func:`kbfm.tl.embed_genes`, alone or merged with another source.

    Parameters
    ----------
    symbols
        Gene symbols.
    llm, llm_options
        Backend (see :func:`kbfm.encoders.llm.get_llm`). The offline default is tiny and
        writes poor descriptions; use a large model for real knowledge.
    species
        Named in the prompt.
    cache
        Reuse cached answers.

    Returns
    -------
    A :class:`GeneKnowledge` with source ``llm:<model id>`` and the prompt version.

    Examples
    --------
    >>> gk = generate_gene_descriptions(["CD3E"], llm="dry-run")  # doctest: +SKIP
    """
    from ..encoders._llm_cache import cached_chat
    from ..encoders.llm import get_llm
    from ..prompts import load_prompt

    model = get_llm(llm, **(llm_options or {}))
    template = load_prompt("gene_description")
    texts = {}
    for symbol in dict.fromkeys(str(s) for s in symbols):
        prompt = template.render(species=species, symbol=symbol)
        answer = cached_chat(model, [{"role": "user", "content": prompt}], cache=cache).strip()
        if answer and answer.lower().strip(" .`") != "unknown":
            texts[symbol] = answer
    return GeneKnowledge(
        texts, source=f"llm:{model.model_id}", version=template.key, species=species
    )
