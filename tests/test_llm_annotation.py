"""LLM backends and prompt-based annotation against a local chat server and the offline model."""

from __future__ import annotations

import numpy as np
import pytest
from _chat_server import ChatServer, text_reply

import kbfm
from kbfm._errors import KbfmInputError, KbfmUnavailableError
from kbfm.encoders.llm import get_llm
from kbfm.prompts import list_prompts, load_prompt
from kbfm.tl.annotate.llm import map_to_ontology, parse_answer_lines


@pytest.fixture
def pbmc():
    adata = kbfm.datasets.pbmc68k_reduced()
    adata.obs["cluster"] = adata.obs["louvain"].astype(str)
    return adata


def test_prompts_are_versioned_templates():
    keys = set(list_prompts())
    assert {
        "celltype_annotation.v1",
        "region_description.v1",
        "gene_description.v1",
        "agent_system.v1",
    } <= keys
    with pytest.raises(KbfmInputError, match="missing values"):
        load_prompt("celltype_annotation").render(species="human")


def test_parse_and_map_answers():
    onto = kbfm.knowledge.CellOntology.load()
    parsed = parse_answer_lines(
        "0: B cells\n1: **CD14+ monocyte**\nnoise\n2: Zorgblat", ["0", "1", "2", "3"]
    )
    assert parsed == {"0": "B cells", "1": "CD14+ monocyte", "2": "Zorgblat", "3": ""}
    mapped = map_to_ontology(list(parsed.values()), onto)
    assert mapped[0][:2] == ("CL:0000236", "exact")
    assert mapped[2][1] == "unmapped" and mapped[3][1] == "unmapped"


def test_dry_run_returns_prompts_without_calling(pbmc):
    kbfm.tl.annotate(pbmc, method="llm", llm="dry-run", groupby="cluster", tissue="blood")
    record = pbmc.uns["kbfm"]["annotate_llm_dry_run"]
    assert "human blood" in record["dry_run_prompts"][0]
    assert record["estimated_prompt_tokens"] > 50 and record["prompt"] == "celltype_annotation.v2"
    prompt = record["dry_run_prompts"][0]
    assert "allowed Cell Ontology types" in prompt
    assert "MS4A1 [B cell" in prompt or "[" in prompt.split("\n")[-1]  # retrieved facts
    assert "kbfm_celltype" not in pbmc.obs
    kbfm.tl.annotate(
        pbmc, method="llm", llm="dry-run", groupby="cluster", tissue="blood", retrieval=False
    )
    plain = pbmc.uns["kbfm"]["annotate_llm_dry_run"]
    assert plain["prompt"] == "celltype_annotation.v1"
    assert "[" not in plain["dry_run_prompts"][0].split("\n")[-1]


def test_llm_answer_outside_candidates_is_unmapped(pbmc):
    clusters = sorted(pbmc.obs["cluster"].unique(), key=int)
    answer = "\n".join(f"{c}: {'B cell' if i == 0 else 'neuron'}" for i, c in enumerate(clusters))
    with ChatServer([text_reply(answer)]) as server:
        kbfm.tl.annotate(
            pbmc,
            method="llm",
            groupby="cluster",
            candidates="leukocyte",
            llm="openai:outside",
            llm_options={"base_url": server.base_url},
        )
    first = pbmc.obs["cluster"] == clusters[0]
    assert (pbmc.obs.loc[first, "kbfm_celltype"] == "B cell").all()
    assert (pbmc.obs.loc[~first, "kbfm_celltype"] == "unmapped").all()
    assert (pbmc.obs.loc[~first, "kbfm_celltype_mapping"] == "outside candidates").all()
    assert (pbmc.obs.loc[~first, "kbfm_celltype_score"] == 0).all()


def test_http_llm_annotation_maps_and_reports_unmapped(pbmc):
    clusters = sorted(pbmc.obs["cluster"].unique(), key=int)
    lines = [f"{c}: B cells" if i == 0 else f"{c}: Zorgblat cell" for i, c in enumerate(clusters)]
    with ChatServer([("status", 429), text_reply("\n".join(lines))]) as server:
        kbfm.tl.annotate(
            pbmc,
            method="llm",
            groupby="cluster",
            llm="openai:fake-chat",
            llm_options={"base_url": server.base_url, "backoff": 0.01},
        )
    first = pbmc.obs["cluster"] == clusters[0]
    assert (pbmc.obs.loc[first, "kbfm_celltype"] == "B cell").all()
    assert (pbmc.obs.loc[~first, "kbfm_celltype"] == "unmapped").all()
    assert (pbmc.obs.loc[~first, "kbfm_celltype_raw"] == "Zorgblat cell").all()
    assert pbmc.uns["kbfm"]["annotate"]["n_unmapped"] == len(clusters) - 1
    assert len(server.requests) == 2  # one retry after HTTP 429


def test_answers_are_cached(pbmc):
    clusters = sorted(pbmc.obs["cluster"].unique(), key=int)
    answer = "\n".join(f"{c}: T cell" for c in clusters)
    with ChatServer([text_reply(answer)]) as server:
        opts = {"base_url": server.base_url}
        kbfm.tl.annotate(
            pbmc, method="llm", groupby="cluster", llm="openai:cached", llm_options=opts
        )
        kbfm.tl.annotate(
            pbmc, method="llm", groupby="cluster", llm="openai:cached", llm_options=opts
        )
    assert len(server.requests) == 1


def test_server_errors_and_bad_schema_are_clear(pbmc):
    with ChatServer([("status", 500)] * 3) as server:
        llm = get_llm("openai:err", base_url=server.base_url, max_retries=2, backoff=0.01)
        with pytest.raises(KbfmUnavailableError, match="after 3 attempts"):
            llm.chat([{"role": "user", "content": "hi"}])
    with ChatServer([("raw", '{"nothing": 1}')]) as server:
        llm = get_llm("openai:schema", base_url=server.base_url)
        with pytest.raises(KbfmUnavailableError, match="chat-completions schema"):
            llm.chat([{"role": "user", "content": "hi"}])


def test_timeout_is_retried_then_reported():
    with ChatServer([("sleep", 1.5, text_reply("late"))] * 2) as server:
        llm = get_llm(
            "openai:slow", base_url=server.base_url, timeout=0.3, max_retries=1, backoff=0.01
        )
        with pytest.raises(KbfmUnavailableError, match=r"timed out|TimeoutError"):
            llm.chat([{"role": "user", "content": "hi"}])


def test_llm_without_groupby_annotates_leiden_clusters(pbmc, caplog):
    caplog.set_level("INFO", logger="kbfm.tl.annotate")
    kbfm.tl.annotate(pbmc, method="llm", llm="dry-run", candidates="leukocyte")
    assert "groupby='auto'" in caplog.text
    clusters = pbmc.obs["kbfm_clusters"]
    assert 1 < clusters.nunique() < pbmc.n_obs  # clusters, not single cells
    assert pbmc.uns["kbfm"]["annotate_llm_dry_run"]["groupby"] == "auto"
    # the prompt names the clusters, not single cells
    prompts = "\n".join(map(str, pbmc.uns["kbfm"]["annotate_llm_dry_run"]["dry_run_prompts"]))
    assert all(f"{c}:" in prompts for c in clusters.cat.categories)


@pytest.mark.slow
def test_offline_smollm2_constrained_annotation(pbmc):
    small = pbmc[pbmc.obs["cluster"].isin(["0", "1", "2"])].copy()
    kbfm.tl.annotate(
        small, method="llm", groupby="cluster", candidates=["B cell", "T cell", "monocyte"]
    )
    labels = set(small.obs["kbfm_celltype"].astype(str))
    assert labels <= {"B cell", "T cell", "monocyte"}
    assert small.uns["kbfm"]["annotate"]["constrained"] is True
    assert np.isfinite(small.obs["kbfm_celltype_score"]).all()


def test_cli_llm_annotation_against_loopback_server(pbmc, tmp_path):
    from typer.testing import CliRunner

    from kbfm.cli import app

    path = tmp_path / "pbmc.h5ad"
    pbmc.write_h5ad(path)
    clusters = sorted(pbmc.obs["cluster"].unique(), key=int)
    with ChatServer([text_reply("\n".join(f"{c}: monocytes" for c in clusters))]) as server:
        result = CliRunner().invoke(
            app,
            [
                "annotate",
                str(path),
                "--method",
                "llm",
                "--groupby",
                "cluster",
                "--llm",
                "openai:cli",
                "--base-url",
                server.base_url,
                "--tissue",
                "blood",
            ],
        )
    assert result.exit_code == 0, result.output
    done = kbfm.io.read_h5ad(tmp_path / "pbmc.kbfm.h5ad")
    assert set(done.obs["kbfm_celltype"].astype(str)) == {"monocyte"}
    assert "human blood" in server.requests[0]["messages"][0]["content"]


def test_llm_gene_descriptions_feed_the_knowledge_cache():
    from kbfm.knowledge import generate_gene_descriptions

    replies = [
        text_reply("CD3E encodes the CD3 epsilon chain of the T cell receptor."),
        text_reply("unknown"),
    ]
    with ChatServer(replies) as server:
        opts = {"base_url": server.base_url}
        gk = generate_gene_descriptions(["CD3E", "FAKE1"], llm="openai:genes", llm_options=opts)
        again = generate_gene_descriptions(["CD3E", "FAKE1"], llm="openai:genes", llm_options=opts)
    assert "CD3E" in gk and "FAKE1" not in gk  # "unknown" answers are dropped
    assert gk.source.startswith("llm:") and gk.version == "gene_description.v1"
    assert again.get("CD3E") == gk.get("CD3E") and len(server.requests) == 2  # second call cached


def test_describe_regions_prompts_and_answers(pbmc):
    answers = [text_reply(f"Region {i}: immune niche.") for i in range(20)]
    with ChatServer(answers) as server:
        out = kbfm.tl.describe_regions(
            pbmc,
            groupby="cluster",
            composition_key="cell_type",
            tissue="blood",
            llm="openai:regions",
            llm_options={"base_url": server.base_url},
        )
    assert set(out) == set(pbmc.obs["cluster"].unique())
    assert pbmc.uns["kbfm_region_descriptions"] == out
    prompt = server.requests[0]["messages"][0]["content"]
    assert "over-expresses these genes" in prompt and "%" in prompt
    dry = kbfm.tl.describe_regions(pbmc, groupby="cluster", llm="dry-run")
    assert all("Spatial domain" in p for p in dry.values())


def test_annotate_llm_equals_the_dispatcher(pbmc):
    kw = {"llm": "dry-run", "groupby": "cluster", "tissue": "blood", "copy": True}
    via_dispatcher = kbfm.tl.annotate(pbmc, method="llm", **kw)
    direct = kbfm.tl.annotate_llm(pbmc, **kw)
    a, b = (x.uns["kbfm"]["annotate_llm_dry_run"] for x in (via_dispatcher, direct))
    a.pop("timestamp"), b.pop("timestamp")
    assert a == b


def test_cli_refuses_an_llm_option_for_marker_score(tmp_path):
    from typer.testing import CliRunner

    from kbfm.cli import app

    missing = tmp_path / "never_read.h5ad"  # not there: the check comes before reading
    args = ["annotate", str(missing), "--method", "marker_score", "--llm", "openai:gpt-4"]
    result = CliRunner().invoke(app, [*args, "--tissue", "brain"])
    assert result.exit_code == 2
    assert "llm='openai:gpt-4' (method='llm')" in result.output
    result = CliRunner().invoke(app, ["annotate", str(missing), "--base-url", "http://x/v1"])
    assert result.exit_code == 2 and "method='llm'" in result.output
