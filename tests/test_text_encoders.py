"""Text-encoder registry and backends: offline default, HF pooling, OpenAI HTTP."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from _openai_server import DIM, EmbeddingsServer, fake_vector

from kbfm._errors import KbfmInputError, KbfmUnavailableError
from kbfm.encoders import encode_texts, get_text_encoder, list_text_encoders


def test_default_encoder_loads_offline_and_is_semantic(minilm):
    assert minilm.dim == 384
    vecs = minilm.encode(["T lymphocyte", "T cell", "hepatocyte in the liver"])
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


def test_registry_lists_default_first():
    specs = list_text_encoders()
    assert specs[0].name == "minilm" and specs[0].offline


def test_unknown_encoder_names_the_choices():
    with pytest.raises(KbfmInputError, match=r"Unknown text encoder 'minlm'.*minilm"):
        get_text_encoder("minlm")


def test_api_key_is_refused_as_a_value():
    with pytest.raises(KbfmInputError, match="environment variable"):
        get_text_encoder("openai:x", api_key="sk-secret")


def test_sentence_transformers_path_prefix(minilm):
    from kbfm.encoders.text import _minilm_path

    enc = get_text_encoder(f"st:{_minilm_path()}")
    np.testing.assert_allclose(enc.encode(["B cell"]), minilm.encode(["B cell"]), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
    """A small random BERT saved as a local transformers folder (no download)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kbfm.encoders.text import _minilm_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_hf_mean_pooling_backend(tiny_hf_model):
    enc = get_text_encoder(f"hf:{tiny_hf_model}")
    assert enc.dim == 32
    a = enc.encode(["CD3E marks T cells", "short"])
    b = get_text_encoder(str(tiny_hf_model)).encode(["short", "CD3E marks T cells"])
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)  # padding does not change the result
    assert len(enc.revision) == 16


def test_openai_endpoint_roundtrip_and_key_from_env(monkeypatch):
    monkeypatch.setenv("KBFM_TEST_KEY", "sk-test-123")
    with EmbeddingsServer() as server:
        enc = get_text_encoder(
            "openai:fake-embed", base_url=server.base_url, api_key_env="KBFM_TEST_KEY"
        )
        assert enc.dim == DIM
        out = encode_texts(["alpha", "beta"], enc, cache=False)
    expected = np.asarray([fake_vector("alpha"), fake_vector("beta")], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert server.requests[-1]["model"] == "fake-embed"
    assert server.auth_headers[-1] == "Bearer sk-test-123"


def test_openai_endpoint_retries_on_429():
    with EmbeddingsServer(fail_first=2) as server:
        enc = get_text_encoder(
            "openai:retry-model", base_url=server.base_url, dim=DIM, backoff=0.01
        )
        out = enc.encode(["gamma"])
    assert out.shape == (1, DIM)
    assert len(server.requests) == 3


def test_openai_endpoint_gives_up_with_url_and_no_key(monkeypatch):
    monkeypatch.setenv("KBFM_TEST_KEY", "sk-never-shown")
    with EmbeddingsServer(fail_first=100, status=500) as server:
        enc = get_text_encoder(
            "openai:broken",
            base_url=server.base_url,
            dim=DIM,
            backoff=0.01,
            max_retries=2,
            api_key_env="KBFM_TEST_KEY",
        )
        with pytest.raises(KbfmUnavailableError) as err:
            enc.encode(["delta"])
    assert server.base_url in str(err.value) and "sk-never-shown" not in str(err.value)


def test_unreachable_endpoint_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    enc = get_text_encoder("openai:nobody", base_url=url, dim=4, max_retries=0, timeout=2)
    with pytest.raises(KbfmUnavailableError, match=f"127.0.0.1:{port}/v1/embeddings"):
        enc.encode(["x"])
