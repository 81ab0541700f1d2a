"""Prompt-based cluster annotation with an LLM (GPTCelltype-style), mapped onto the Cell Ontology.

Top markers per cluster (``scanpy.tl.rank_genes_groups``) go into the versioned prompt
``celltype_annotation``; each answer is mapped onto a Cell Ontology term — exact label
or synonym first, then the nearest term by text embedding above a threshold — or
reported as unmapped, never silently accepted. The raw answer is kept. With
``constrained=True`` the model instead scores each candidate cell type by
log-likelihood, so small local models give usable answers.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._errors import KbfmInputError
from ..._keys import AUTO_CLUSTER_KEY, CELLTYPE_KEY
from ._inputs import prepare_inputs

if TYPE_CHECKING:
    from ...encoders.llm import LLM

logger = logging.getLogger(__name__)

UNMAPPED = "unmapped"


def top_markers(
    X, gene_names: list[str], groups: np.ndarray, *, top_n: int = 10
) -> dict[str, list[str]]:
    """Top ``top_n`` marker genes per group (Wilcoxon, scanpy), most specific first."""
    import scanpy as sc

    from ..._expression import log_normalise
    from ..._scale import looks_like_counts

    tmp = AnnData(log_normalise(X) if looks_like_counts(X) else X.astype(np.float32))
    tmp.var_names = [str(g) for g in gene_names]
    tmp.var_names_make_unique()
    tmp.obs["group"] = pd.Categorical(groups.astype(str))
    if tmp.obs["group"].nunique() < 2:
        msg = "LLM annotation needs at least two groups to rank marker genes."
        raise KbfmInputError(msg)
    sc.tl.rank_genes_groups(tmp, "group", method="wilcoxon", n_genes=top_n)
    names = tmp.uns["rank_genes_groups"]["names"]
    return {g: [str(x) for x in names[g]] for g in names.dtype.names}


def _clean(answer: str) -> str:
    text = re.sub(r"[*`\"']", "", answer).strip().rstrip(".").strip()
    return re.sub(r"\s+", " ", text)


def parse_answer_lines(text: str, group_ids: list[str]) -> dict[str, str]:
    """Parse ``id: name`` lines; groups without a line get an empty answer."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:cluster\s*)?([^:]+?)\s*[:\-–]\s*(.+)$", line, flags=re.IGNORECASE)
        if m and m.group(1).strip() in group_ids:
            found[m.group(1).strip()] = _clean(m.group(2))
    return {g: found.get(g, "") for g in group_ids}


def map_to_ontology(
    answers: list[str], ontology, *, candidates: list[str] | None = None, threshold: float = 0.8
) -> list[tuple[str | None, str, float]]:
    """Map free-text answers onto Cell Ontology ids.

    Returns
    -------
    ``(id or None, how, similarity)`` per answer; ``how`` is ``"exact"`` (label or
    synonym, also after dropping a plural "s"), ``"embedding"`` (nearest label by text
    embedding with cosine >= ``threshold``) or ``"unmapped"``.
    """
    from ...encoders import encode_texts

    out: list[tuple[str | None, str, float]] = []
    pool = candidates or sorted(ontology.terms)
    labels = [ontology.terms[i].label for i in pool]
    label_vecs = None
    for answer in answers:
        text = _clean(answer)
        cid = ontology.lookup(text) if text else None
        if cid is None and text.endswith("s"):
            cid = ontology.lookup(text[:-1])
        if cid is not None and candidates is not None and cid not in candidates:
            out.append((None, "outside candidates", 0.0))
            continue
        if cid is not None:
            out.append((cid, "exact", 1.0))
            continue
        if not text:
            out.append((None, UNMAPPED, 0.0))
            continue
        if label_vecs is None:
            label_vecs = encode_texts(labels, "minilm")
        sims = label_vecs @ encode_texts([text], "minilm")[0]
        best = int(np.argmax(sims))
        if sims[best] >= threshold:
            out.append((pool[best], "embedding", float(sims[best])))
        else:
            out.append((None, UNMAPPED, float(sims[best])))
    return out


SCORED_ANSWER = "'<cluster id>: <candidate label>', mean log-likelihood per token"
"""What constrained annotation scores: the answer line the prompt asks for."""


def answer_line(group: str, label: str) -> str:
    """The answer line ``"<group>: <label>"`` that the celltype prompts ask for.

    Constrained annotation scores this whole line, not the bare label: the prompts ask
    for ``cluster_id: cell type name`` lines, so a model that follows them puts the
    cluster id first, and a bare label scored as the start of the answer is an
    unlikely continuation whatever the label (measured with Qwen2.5-1.5B on
    pbmc68k_reduced: 1 of 10 clusters right with bare labels, 6 of 10 with the line).
    """
    return f"{group}: {label}"


def llm_cluster_answers(
    markers: dict[str, list[str]],
    *,
    llm: LLM,
    ontology,
    candidates: list[str],
    species: str,
    tissue: str,
    constrained: bool,
    retrieval: bool = True,
    batch_size: int = 15,
    max_workers: int = 4,
    cache: bool = True,
) -> tuple[dict[str, str], dict[str, float], dict]:
    """Ask the LLM for each group's cell type.

    With ``retrieval`` (prompt ``celltype_annotation`` v2) each marker gene carries the
    cell types kbfm's knowledge says it marks, and the prompt lists the allowed
    candidates; without it, v1 gives the genes alone (GPTCelltype's prompt shape).
    With ``constrained``, each group gets its own prompt and every candidate is scored
    as the answer line that prompt asks for, ``"<group>: <label>"`` (see
    :func:`answer_line`), by mean log-likelihood per token; the answer is the label.

    Returns
    -------
    ``(raw answer per group, confidence per group, info)``; ``info`` holds prompt id,
    version and, for a dry run, the prompts and a token estimate.
    """
    from ...encoders._llm_cache import cached_chat
    from ...encoders.llm import DryRunLLM, estimate_tokens
    from ...prompts import load_prompt

    template = load_prompt("celltype_annotation", version=2 if retrieval else 1)
    groups = list(markers)
    info: dict = {"prompt": template.key, "prompt_sha256": template.sha256}
    labels = [ontology.terms[c].label for c in candidates]
    facts: dict[str, list[str]] = {}
    if retrieval:
        from ...knowledge.retrieval import marker_facts

        every = {g for genes in markers.values() for g in genes}
        facts = marker_facts(every, species, candidates=labels)
        info["retrieval"] = "cell types marked by each gene (curated + cellconsensus)"

    def gene_text(gene: str) -> str:
        known = facts.get(gene)
        return f"{gene} [{'; '.join(known)}]" if known else gene

    def messages_for(ids: list[str]) -> list[dict]:
        lines = "\n".join(f"{g}: {', '.join(gene_text(x) for x in markers[g])}" for g in ids)
        values = {"species": species, "tissue": tissue, "n_clusters": len(ids)}
        if retrieval:
            values["candidate_list"] = "; ".join(labels)
        text = template.render(marker_lines=lines, **values)
        return [{"role": "user", "content": text}]

    if constrained:
        answers, confidence = {}, {}
        for g in groups:
            options = [answer_line(g, label) for label in labels]
            scores = np.asarray(llm.score_options(messages_for([g]), options))
            probs = np.exp(scores - scores.max())
            probs /= probs.sum()
            answers[g] = labels[int(np.argmax(scores))]
            confidence[g] = float(probs.max())
        info["mode"] = "constrained log-likelihood over candidates"
        info["scored_answer"] = SCORED_ANSWER
        return answers, confidence, info
    batches = [groups[i : i + batch_size] for i in range(0, len(groups), batch_size)]
    if isinstance(llm, DryRunLLM):
        prompts = [messages_for(b)[0]["content"] for b in batches]
        info.update(
            dry_run_prompts=prompts, estimated_prompt_tokens=sum(map(estimate_tokens, prompts))
        )
        return {g: "" for g in groups}, {g: 0.0 for g in groups}, info
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        texts = list(pool.map(lambda b: cached_chat(llm, messages_for(b), cache=cache), batches))
    answers: dict[str, str] = {}
    for batch, text in zip(batches, texts, strict=True):
        answers.update(parse_answer_lines(text, batch))
    info["mode"] = "free-text answers mapped onto the Cell Ontology"
    return answers, {g: 1.0 if answers[g] else 0.0 for g in groups}, info


def annotate_groups_with_llm(
    adata: AnnData,
    X,
    names: list[str],
    groups: np.ndarray,
    candidate_ids: list[str],
    *,
    ontology,
    llm,
    llm_options: dict | None,
    species: str,
    tissue: str,
    constrained: bool | None,
    top_n: int,
    key_added: str,
    cache: bool,
    params: dict,
    retrieval: bool = True,
) -> None:
    """Run LLM annotation of ``groups`` and write the results into ``adata``."""
    from ..._provenance import record_step
    from ...encoders.llm import DryRunLLM, HFCausalLM, get_llm

    model = get_llm(llm, **(llm_options or {}))
    use_constrained = isinstance(model, HFCausalLM) if constrained is None else bool(constrained)
    markers = top_markers(X, names, groups, top_n=top_n)
    answers, confidence, info = llm_cluster_answers(
        markers,
        llm=model,
        ontology=ontology,
        candidates=candidate_ids,
        species=species,
        tissue=tissue,
        constrained=use_constrained,
        retrieval=retrieval,
        cache=cache,
    )
    params.update(info, llm=model.name, llm_model_id=model.model_id, constrained=use_constrained)
    if isinstance(model, DryRunLLM):
        record_step(adata, "annotate_llm_dry_run", **params)
        return
    group_ids = list(answers)
    # An answer outside the candidate set is unmapped, never accepted as a match.
    mapped = map_to_ontology(
        [answers[g] for g in group_ids], ontology, candidates=list(candidate_ids)
    )
    label, cid, score, how = {}, {}, {}, {}
    for g, (term, route, sim) in zip(group_ids, mapped, strict=True):
        label[g] = ontology.terms[term].label if term else UNMAPPED
        cid[g] = term or ""
        how[g] = route
        score[g] = confidence[g] * sim if term else 0.0
    keys = pd.Series(groups.astype(str), index=adata.obs_names)
    adata.obs[key_added] = pd.Categorical(keys.map(label))
    adata.obs[f"{key_added}_id"] = pd.Categorical(keys.map(cid))
    adata.obs[f"{key_added}_score"] = keys.map(score).astype(np.float32)
    adata.obs[f"{key_added}_raw"] = pd.Categorical(keys.map(answers))
    adata.obs[f"{key_added}_mapping"] = pd.Categorical(keys.map(how))
    params.update(
        n_groups=len(group_ids),
        n_unmapped=sum(1 for g in group_ids if not cid[g]),
        answers={g: answers[g] for g in group_ids},
    )
    record_step(adata, "annotate", key_added=key_added, **params)


def annotate_llm(
    adata: AnnData,
    *,
    candidates: object = "auto",
    groupby: str | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    species: str = "auto",
    tissue: str | None = None,
    llm: object = "smollm2",
    llm_options: dict | None = None,
    constrained: bool | None = None,
    top_n: int = 10,
    retrieval: bool = True,
    key_added: str = CELLTYPE_KEY,
    cache: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Annotate clusters by asking an LLM to name them from their top marker genes.

    GPTCelltype-style: the top markers of each group (Wilcoxon) go into the versioned
    prompt ``celltype_annotation``; each answer is mapped onto the Cell Ontology (exact
    label or synonym, else the nearest candidate by text embedding) or reported as
    unmapped, and the raw answer is kept. ``llm="dry-run"`` only records the prompts
    and a token estimate. ``annotate(method="llm")`` calls this function.

    Parameters
    ----------
    adata
        Non-negative log-normalised expression (or counts) in ``X``, a layer or ``raw``.
    candidates
        ``"auto"``, an ontology branch, ``None`` (every type with markers) or a list of
        ids/labels, as in :func:`kbfm.tl.annotate_zero_shot`.
    groupby
        The groups to name: an ``obs`` column, or ``"auto"`` (also for ``None``: an LLM
        names clusters, never single cells) for Leiden clusters computed here (stored
        in ``obs["kbfm_clusters"]``).
    layer, use_raw
        Where to read expression (see :func:`kbfm.tl.annotate_zero_shot`).
    species
        Species named in the prompt; ``"auto"``: detected from the gene names.
    tissue
        Tissue of the sample: chooses the ``candidates="auto"`` lineages and is named in
        the prompt.
    llm, llm_options
        ``"smollm2"`` (offline, tiny), ``"dry-run"``, ``"hf:<id or path>"``,
        ``"openai:<model>"``, and backend options such as
        ``{"base_url": ..., "api_key_env": ...}``.
    constrained
        Score the candidates by log-likelihood instead of free text (default: on for
        local models, off for HTTP endpoints).
    top_n
        Marker genes per group in the prompt.
    retrieval
        Put, after each marker gene, the cell types kbfm's knowledge says it marks, and
        list the allowed candidates in the prompt (``celltype_annotation`` v2);
        ``False`` gives the genes alone (v1).
    key_added
        Prefix of the ``obs`` keys written.
    cache
        Reuse cached answers of the same model to the same prompt.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Writes ``obs[key_added]`` (label),
    ``obs[key_added + "_id"]`` (CL id), ``obs[key_added + "_score"]`` (confidence),
    ``obs[key_added + "_raw"]`` (the answer), ``obs[key_added + "_mapping"]`` (how it was
    mapped) and ``uns["kbfm"]["annotate"]``; a dry run writes only
    ``uns["kbfm"]["annotate_llm_dry_run"]``.

    Examples
    --------
    >>> import scanpy as sc, kbfm
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> kbfm.tl.annotate_llm(adata, groupby="louvain", tissue="blood", llm="dry-run")
    >>> adata.uns["kbfm"]["annotate_llm_dry_run"]["estimated_prompt_tokens"]  # doctest: +SKIP
    """
    if groupby is None:
        groupby = "auto"
        logger.info("method='llm' annotates clusters: groupby='auto' (Leiden) is used.")
    inputs = prepare_inputs(
        adata,
        method="llm",
        candidates=candidates,
        groupby=groupby,
        layer=layer,
        use_raw=use_raw,
        species=species,
        tissue=tissue,
    )
    adata = adata.copy() if copy else adata
    if groupby == "auto":
        adata.obs[AUTO_CLUSTER_KEY] = pd.Categorical(inputs.groups)
    annotate_groups_with_llm(
        adata,
        inputs.X,
        inputs.names,
        inputs.groups,
        inputs.candidate_ids,
        ontology=inputs.ontology,
        llm=llm,
        llm_options=llm_options,
        species=inputs.species,
        tissue=tissue or "unknown tissue",
        constrained=constrained,
        top_n=top_n,
        key_added=key_added,
        cache=cache,
        params=inputs.params,
        retrieval=retrieval,
    )
    return adata if copy else None
