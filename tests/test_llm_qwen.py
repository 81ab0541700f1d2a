"""Qwen LLMs from the model store: GGUF -> safetensors cache, KV-reuse scoring, tool calls.

The light tests build a tiny random Qwen2 (2 layers, hidden 64) and a character-level
tokenizer in memory, so prefix-KV scoring and the tool-call path are checked in CI
without any weights. Tests that need the real models are marked ``slow`` and ``llm``
and skip when the model is not installed; the 1.5B ones also need
``KBFM_TEST_BIG_LLM=1`` (``make bench-llm`` sets it).
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from pathlib import Path

import pytest

import kbfm
from kbfm._errors import KbfmInputError, KbfmUnavailableError
from kbfm._settings import _default_cache_dir
from kbfm.encoders import _gguf_cache as gc
from kbfm.encoders.llm import (
    LLM,
    LLM_SPECS,
    ChatResult,
    HFCausalLM,
    choose_threads,
    get_llm,
    parse_tool_calls,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if tools %}<|im_start|>tools\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(with_tools: bool = True):
    """A character-level fast tokenizer with a ChatML-like template (no files needed)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable))
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, "[UNK]", *chars])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<|im_end|>", unk_token="[UNK]"
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:3]})
    tok.add_tokens(SPECIALS[3:])
    tok.chat_template = TEMPLATE if with_tools else TEMPLATE.replace("tools", "nothing")
    return tok


def tiny_qwen2(vocab_size: int, seed: int = 0):
    """A randomly initialised 2-layer Qwen2 causal LM (float32)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=1,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_llm():
    tok = tiny_tokenizer()
    return HFCausalLM.from_model("tiny-qwen2", tiny_qwen2(len(tok)), tok, threads=1)


MESSAGES = [
    {"role": "system", "content": "You annotate cell clusters."},
    {"role": "user", "content": "Markers: CD3E, CD3D, CD2. Which cell type?"},
]
OPTIONS = [
    "T cell",
    "B cell",
    "monocyte",
    "natural killer cell",
    "X",
    "CD4-positive, alpha-beta T cell",
    "platelet",
    "erythrocyte",
    "dendritic cell",
    "hepatocyte",
]


# ---------------------------------------------------------------- prefix-KV scoring


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_kv_reuse_scores_equal_full_sequence_scores(tiny_llm, batch_size):
    cached = tiny_llm.score_options(MESSAGES, OPTIONS, batch_size=batch_size)
    naive = tiny_llm.score_options(MESSAGES, OPTIONS, reuse_prefix=False)
    assert len(cached) == len(OPTIONS)
    assert all(isinstance(s, float) for s in cached)
    assert max(abs(a - b) for a, b in zip(cached, naive, strict=True)) < 1e-4


def test_kv_reuse_matches_a_hand_computed_log_likelihood(tiny_llm):
    prompt = tiny_llm._prompt_ids(MESSAGES)
    answer = tiny_llm._option_ids("B cell")
    ids = torch.cat([prompt, torch.tensor([answer])], dim=1)
    with torch.inference_mode():
        logp = torch.log_softmax(tiny_llm.model(ids).logits[0].float(), dim=-1)
    start = prompt.shape[1] - 1
    expected = sum(float(logp[start + j, t]) for j, t in enumerate(answer)) / len(answer)
    (got,) = tiny_llm.score_options(MESSAGES, ["B cell"])
    assert got == pytest.approx(expected, abs=1e-4)


def test_scoring_edge_cases(tiny_llm):
    assert tiny_llm.score_options(MESSAGES, []) == []
    with pytest.raises(KbfmInputError, match="no tokens"):
        tiny_llm.score_options(MESSAGES, ["T cell", ""])
    # order is kept whatever the batching by length does
    forward = tiny_llm.score_options(MESSAGES, OPTIONS, batch_size=2)
    backward = tiny_llm.score_options(MESSAGES, OPTIONS[::-1], batch_size=2)
    assert forward == pytest.approx(backward[::-1], abs=1e-5)


def test_scoring_leaves_threads_as_they_were(tiny_llm):
    before = torch.get_num_threads()
    tiny_llm.threads = 1
    tiny_llm.score_options(MESSAGES, OPTIONS[:3])
    assert torch.get_num_threads() == before


def test_choose_threads_rules(monkeypatch):
    assert choose_threads(3) == 3
    monkeypatch.setenv("KBFM_LLM_THREADS", "1")
    assert choose_threads("auto") == 1
    monkeypatch.delenv("KBFM_LLM_THREADS")
    assert 1 <= choose_threads("auto") <= max(1, torch.get_num_threads())
    for bad in (0, -2, "many", 1.5, True):
        with pytest.raises(KbfmInputError, match="threads"):
            choose_threads(bad)


# ---------------------------------------------------------------- chat and tool calls


def test_chat_is_greedy_and_bounded(tiny_llm):
    first = tiny_llm.chat(MESSAGES, max_tokens=5)
    again = tiny_llm.chat(MESSAGES, max_tokens=5)
    assert first.content == again.content
    assert 0 < first.completion_tokens <= 5
    assert first.prompt_tokens == tiny_llm._prompt_ids(MESSAGES).shape[1]
    with pytest.raises(KbfmInputError, match="max_tokens"):
        tiny_llm.chat(MESSAGES, max_tokens=0)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "qc_summary",
            "description": "QC metrics",
            "parameters": {"type": "object", "properties": {}, "required": []},
        },
    }
]


def _scripted_generate(llm: HFCausalLM, answer: str):
    """Make ``llm.model.generate`` append ``answer``'s tokens to the prompt."""

    def generate(ids, **kwargs):
        new = llm.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return torch.cat([ids, new[:, : kwargs["max_new_tokens"]]], dim=1)

    return generate


def test_chat_passes_tools_to_the_template_and_parses_tool_calls(monkeypatch):
    tok = tiny_tokenizer()
    llm = HFCausalLM.from_model("tiny", tiny_qwen2(len(tok)), tok, threads=1)
    assert llm.supports_tools
    prompt_with = tok.decode(llm._prompt_ids(MESSAGES, TOOLS)[0])
    assert "qc_summary" in prompt_with
    answer = 'Checking.\n<tool_call>\n{"name": "qc_summary", "arguments": {}}\n</tool_call>'
    monkeypatch.setattr(llm.model, "generate", _scripted_generate(llm, answer))
    result = llm.chat(MESSAGES, tools=TOOLS, max_tokens=200)
    assert result.content == "Checking."
    assert result.errors == []
    assert result.tool_calls == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "qc_summary", "arguments": "{}"},
        }
    ]
    # without tools the same text is plain content
    plain = llm.chat(MESSAGES, max_tokens=200)
    assert plain.tool_calls == [] and "<tool_call>" in plain.content


def test_tool_messages_render_for_a_tool_template(tiny_llm):
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "qc", "arguments": '{"a": 1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    converted = HFCausalLM._tool_messages(history)
    assert converted[2]["content"] == ""
    assert converted[2]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert history[2]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'  # not modified
    tiny_llm._prompt_ids(history, TOOLS)  # renders


def test_template_without_tools_ignores_them(monkeypatch):
    tok = tiny_tokenizer(with_tools=False)
    llm = HFCausalLM.from_model("tiny", tiny_qwen2(len(tok)), tok, threads=1)
    assert not llm.supports_tools
    answer = '<tool_call>{"name": "qc_summary", "arguments": {}}</tool_call>'
    monkeypatch.setattr(llm.model, "generate", _scripted_generate(llm, answer))
    result = llm.chat(MESSAGES, tools=TOOLS, max_tokens=100)
    assert result.tool_calls == []


def test_parse_tool_calls_valid_and_multiple():
    text = (
        "I will look.\n<tool_call>\n"
        '{"name": "plot_embedding", "arguments": {"color": "kbfm_celltype"}}\n</tool_call>\n'
        '<tool_call>{"name": "qc_summary", "arguments": "{}"}</tool_call>'
    )
    content, calls, errors = parse_tool_calls(text)
    assert content == "I will look."
    assert errors == []
    assert [c["function"]["name"] for c in calls] == ["plot_embedding", "qc_summary"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"color": "kbfm_celltype"}
    assert calls[1]["function"]["arguments"] == "{}"
    assert [c["id"] for c in calls] == ["call_1", "call_2"]


@pytest.mark.parametrize(
    ("body", "name", "error"),
    [
        ('{"name": "qc_summary", "arguments": {"x": 1', "qc_summary", "invalid JSON"),
        ("not json at all", "", "invalid JSON"),
        ('["qc_summary"]', "", "string 'name'"),
        ('{"arguments": {}}', "", "string 'name'"),
        ('{"name": "qc_summary", "arguments": [1, 2]}', "qc_summary", "JSON object"),
    ],
)
def test_parse_tool_calls_records_broken_calls_as_errors(body, name, error):
    content, calls, errors = parse_tool_calls(f"<tool_call>\n{body}\n</tool_call>")
    assert content == ""
    assert len(calls) == 1 and calls[0]["function"]["name"] == name
    assert len(errors) == 1 and error in errors[0]


def test_parse_tool_calls_unclosed_block_and_plain_text():
    content, calls, errors = parse_tool_calls('Sure <tool_call>{"name": "qc_summary", "argu')
    assert content == "Sure"
    assert calls[0]["function"]["name"] == "qc_summary"
    assert errors and "invalid JSON" in errors[0]
    assert parse_tool_calls("  just an answer ") == ("just an answer", [], [])
    fenced = '<tool_call>```json\n{"name": "qc_summary", "arguments": {}}\n```</tool_call>'
    assert parse_tool_calls(fenced)[1][0]["function"]["name"] == "qc_summary"


def test_parse_tool_calls_bare_json_of_an_offered_tool():
    fenced = 'Sure.\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    content, calls, errors = parse_tool_calls(fenced, ["get_weather"])
    assert content == "Sure." and errors == []
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    bare = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
    assert parse_tool_calls(bare, ["get_weather"])[1][0]["function"]["name"] == "get_weather"
    # only offered tools, only valid JSON, only when tools were offered
    assert parse_tool_calls(bare, ["other"]) == (bare, [], [])
    assert parse_tool_calls(bare) == (bare, [], [])
    assert parse_tool_calls("```json\n{broken}\n```", ["get_weather"])[1] == []


def test_parse_tool_calls_several_objects_in_one_fenced_block():
    names = ["run_qc", "find_domains"]
    text = (
        "First QC, then domains.\n```json\n"
        '{"name": "run_qc", "arguments": {}}\n'
        '{"name": "find_domains", "arguments": {"n_domains": 4}}\n```\nDone.'
    )
    content, calls, errors = parse_tool_calls(text, names)
    assert [c["function"]["name"] for c in calls] == ["run_qc", "find_domains"]
    assert calls[1]["function"]["arguments"] == '{"n_domains": 4}'
    assert [c["id"] for c in calls] == ["call_1", "call_2"]
    assert content == "First QC, then domains.\n\nDone." and errors == []
    # a JSON list of calls, comma-separated objects, and bare objects on their own lines
    listed = '```json\n[{"name": "run_qc", "arguments": {}}, {"name": "find_domains"}]\n```'
    assert len(parse_tool_calls(listed, names)[1]) == 2
    commas = '{"name": "run_qc", "arguments": {}},\n{"name": "find_domains", "arguments": {}}'
    assert len(parse_tool_calls(commas, names)[1]) == 2
    # an object naming no offered tool is skipped, the others are kept, in order
    mixed = '```\n{"name": "rm_rf"}\n{"name": "run_qc"}\n```'
    content, calls, _ = parse_tool_calls(mixed, names)
    assert [c["function"]["name"] for c in calls] == ["run_qc"]
    # reading stops at broken JSON: what came before it still counts
    broken = '```json\n{"name": "run_qc", "arguments": {}}\n{"name": "find_dom\n```'
    assert [c["function"]["name"] for c in parse_tool_calls(broken, names)[1]] == ["run_qc"]


class _Replay(LLM):
    """Answers with parsed Qwen-format text, one reply per call."""

    def __init__(self, texts: list[str]) -> None:
        self.name = self.model_id = "replay"
        self.texts = list(texts)

    def chat(self, messages, *, tools=None, max_tokens=256) -> ChatResult:
        content, calls, errors = parse_tool_calls(self.texts.pop(0))
        return ChatResult(content, calls, 10, 10, errors)


def test_agent_records_broken_and_unknown_qwen_calls_without_crashing(tmp_path):
    from kbfm.agent.loop import run_agent

    policy = _Replay(
        [
            '<tool_call>{"name": "run_qc", "arguments": {"x": </tool_call>',
            '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
            '<tool_call>{"arguments": {}}</tool_call>',
            "I cannot answer without data.",
        ]
    )
    transcript, _ = run_agent("Summarise QC.", llm=policy, out_dir=tmp_path)
    assert [s.ok for s in transcript.steps] == [False, False, False]
    assert "not valid JSON" in transcript.steps[0].result
    assert "unknown tool" in transcript.steps[1].result
    assert "unknown tool" in transcript.steps[2].result
    assert transcript.stop_reason == "answered"


# ---------------------------------------------------------------- GGUF conversion cache


@pytest.fixture
def fake_gguf(tmp_path):
    path = tmp_path / "src" / "model.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + os.urandom(1000))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_converter(calls: list):
    def convert(gguf_path: Path, out_dir: Path, dtype: str) -> None:
        calls.append((gguf_path, dtype))
        tok = tiny_tokenizer()
        model = tiny_qwen2(len(tok)).to(getattr(torch, dtype))
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)

    return convert


def test_conversion_runs_once_and_records_the_source_sha(fake_gguf, tmp_path):
    gguf, sha = fake_gguf
    calls: list = []
    dest = tmp_path / "models" / "tiny-hf-float32"
    out = gc.ensure_hf_folder(
        gguf, dest, source_sha256=sha, dtype="float32", converter=_tiny_converter(calls)
    )
    assert out == dest and len(calls) == 1
    manifest = gc.read_cache_manifest(dest)
    assert manifest["source_sha256"] == sha and manifest["dtype"] == "float32"
    assert any(name.endswith(".safetensors") for name in manifest["files"])
    gc.ensure_hf_folder(
        gguf, dest, source_sha256=sha, dtype="float32", converter=_tiny_converter(calls)
    )
    assert len(calls) == 1  # warm: read from the cache
    assert sorted(p.name for p in dest.parent.iterdir()) == [".tiny-hf-float32.lock", dest.name]
    llm = HFCausalLM("tiny", str(dest), dtype="float32", threads=1)
    assert llm.supports_tools
    assert len(llm.score_options(MESSAGES, OPTIONS[:3])) == 3


def test_conversion_is_redone_when_the_source_or_format_changes(fake_gguf, tmp_path):
    gguf, sha = fake_gguf
    calls: list = []
    dest = tmp_path / "tiny-hf-bfloat16"
    conv = _tiny_converter(calls)
    gc.ensure_hf_folder(gguf, dest, source_sha256=sha, dtype="bfloat16", converter=conv)
    manifest_path = dest / gc.CACHE_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = gc.CACHE_FORMAT + 1
    manifest_path.write_text(json.dumps(manifest))
    gc.ensure_hf_folder(gguf, dest, source_sha256=sha, dtype="bfloat16", converter=conv)
    assert len(calls) == 2
    # a truncated weights file is noticed without re-hashing
    weights = next(dest.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert not gc.is_valid_cache(dest, sha, "bfloat16")
    gc.ensure_hf_folder(gguf, dest, source_sha256=sha, dtype="bfloat16", converter=conv)
    assert len(calls) == 3 and gc.is_valid_cache(dest, sha, "bfloat16")


def test_conversion_refuses_a_corrupt_source_and_cleans_up(fake_gguf, tmp_path):
    gguf, sha = fake_gguf
    calls: list = []
    dest = tmp_path / "out" / "tiny-hf-bfloat16"
    with pytest.raises(KbfmInputError, match="sha256 mismatch"):
        gc.ensure_hf_folder(
            gguf, dest, source_sha256="0" * 64, dtype="bfloat16", converter=_tiny_converter(calls)
        )
    assert calls == [] and not dest.exists()

    def broken(gguf_path, out_dir, dtype):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KbfmUnavailableError("disk full")

    with pytest.raises(KbfmUnavailableError, match="disk full"):
        gc.ensure_hf_folder(gguf, dest, source_sha256=sha, dtype="bfloat16", converter=broken)
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == [".tiny-hf-bfloat16.lock"]

    def no_weights(gguf_path, out_dir, dtype):
        (out_dir / "config.json").write_text("{}")

    with pytest.raises(KbfmUnavailableError, match=r"no \.safetensors"):
        gc.ensure_hf_folder(gguf, dest, source_sha256=sha, dtype="bfloat16", converter=no_weights)
    with pytest.raises(KbfmInputError, match="dtype"):
        gc.ensure_hf_folder(gguf, dest, source_sha256=sha, dtype="int4")


def test_store_llms_are_registered_and_explain_how_to_install():
    assert {"qwen1.5b", "qwen0.5b", "smollm2"} <= set(LLM_SPECS)
    assert kbfm.encoders.llm.DEFAULT_LLM == "smollm2"
    for name in ("qwen1.5b", "qwen0.5b"):
        with pytest.raises(KbfmUnavailableError, match=f"kbfm models install {name}"):
            get_llm(name)
    with pytest.raises(KbfmInputError, match="dtype"):
        get_llm("qwen0.5b", dtype="int4")
    with pytest.raises(KbfmInputError, match="not a GGUF LLM"):
        gc.ensure_converted("mpnet")


# ---------------------------------------------------------------- real models (slow)

BIG = os.environ.get("KBFM_TEST_BIG_LLM", "").strip() in {"1", "true", "yes"}


def _real_llm(name: str, **options):
    """Load a store LLM from the real kbfm cache, or skip with the reason."""
    from kbfm import _model_store as ms

    saved = kbfm.settings.cache_dir
    kbfm.settings.cache_dir = _default_cache_dir()
    try:
        if not ms.is_installed(name):
            pytest.skip(
                f"{name} is not installed in {ms.model_dir(name)} (`kbfm models list`); "
                f"run `kbfm models install {name}`"
            )
        return get_llm(name, **options)
    finally:
        kbfm.settings.cache_dir = saved


@pytest.fixture(scope="module")
def qwen05_fp32():
    # fp32 compute from the bf16 cache: bf16 rounding differs between the two paths.
    return _real_llm("qwen0.5b", dtype="float32", storage="bfloat16")


@pytest.fixture(scope="module")
def qwen15():
    if not BIG:
        pytest.skip("set KBFM_TEST_BIG_LLM=1 (make bench-llm does) to run qwen1.5b tests")
    return _real_llm("qwen1.5b")


@pytest.mark.slow
@pytest.mark.llm
def test_qwen05_kv_reuse_equals_full_sequence_scoring(qwen05_fp32):
    options = OPTIONS[:6]
    cached = qwen05_fp32.score_options(MESSAGES, options)
    naive = qwen05_fp32.score_options(MESSAGES, options, reuse_prefix=False)
    assert max(abs(a - b) for a, b in zip(cached, naive, strict=True)) < 1e-3


@pytest.mark.slow
@pytest.mark.llm
def test_qwen05_chat_uses_the_qwen_template(qwen05_fp32):
    result = qwen05_fp32.chat(
        [{"role": "user", "content": "Reply with the single word: hello"}], max_tokens=8
    )
    assert qwen05_fp32.supports_tools
    assert 0 < result.completion_tokens <= 8
    assert "hello" in result.content.lower()


@pytest.mark.slow
@pytest.mark.llm
def test_qwen15_calls_a_tool_in_qwen_format(qwen15):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "What is the weather in Paris right now?"}]
    result = qwen15.chat(messages, tools=tools, max_tokens=48)
    assert result.errors == []
    assert [c["function"]["name"] for c in result.tool_calls] == ["get_weather"]
    assert json.loads(result.tool_calls[0]["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.slow
@pytest.mark.llm
def test_qwen15_constrained_scoring_prefers_t_cell(qwen15):
    messages = [
        {
            "role": "user",
            "content": "Which cell type expresses CD3E, CD3D and CD2? Answer with the name.",
        }
    ]
    scores = qwen15.score_options(messages, ["T cell", "hepatocyte", "astrocyte", "platelet"])
    assert max(range(4), key=scores.__getitem__) == 0
