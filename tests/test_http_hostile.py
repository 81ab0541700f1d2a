"""Hostile OpenAI-compatible peers on 127.0.0.1: redirects must not carry the key, big answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kbfm._errors import KbfmUnavailableError
from kbfm._http import MAX_RESPONSE_BYTES, post_json

SECRET = "sk-kbfm-test-marker-7f3a91"


class _Server:
    """A loopback server that answers every request with ``respond(handler)``."""

    def __init__(self, respond):
        self.seen_headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                outer.seen_headers.append(dict(self.headers))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                respond(self)

            do_POST = do_GET = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _json(handler, payload: bytes, status: int = 200):
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def test_redirect_to_another_origin_never_receives_the_key(monkeypatch):
    monkeypatch.setenv("KBFM_TEST_KEY", SECRET)
    with _Server(lambda h: _json(h, b'{"ok": 1}')) as other:

        def redirect(handler):
            handler.send_response(302)
            handler.send_header("Location", other.url + "/v1/chat/completions")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with _Server(redirect) as first:
            with pytest.raises(KbfmUnavailableError, match="redirect") as err:
                post_json(
                    first.url + "/v1/chat/completions",
                    {"q": 1},
                    api_key_env="KBFM_TEST_KEY",
                    what="Chat endpoint",
                    timeout=5,
                    max_retries=0,
                    backoff=0.01,
                )
            assert first.seen_headers[0]["Authorization"] == f"Bearer {SECRET}"
        assert other.seen_headers == []  # the key never reached the other origin
        assert SECRET not in str(err.value)


def test_oversized_answer_is_refused_not_read():
    big = json.dumps({"content": "x" * (MAX_RESPONSE_BYTES + 10)}).encode()
    with _Server(lambda h: _json(h, big)) as server:
        with pytest.raises(KbfmUnavailableError, match="refusing to read"):
            post_json(
                server.url,
                {},
                api_key_env="KBFM_UNSET_KEY",
                what="Chat endpoint",
                timeout=10,
                max_retries=0,
                backoff=0.01,
            )


def _chat(server, **options):
    from kbfm.encoders.llm import OpenAIChatLLM

    llm = OpenAIChatLLM(
        "openai:t", "t", base_url=server.url, api_key_env="KBFM_TEST_KEY", backoff=0.01, **options
    )
    return llm.chat([{"role": "user", "content": "hi"}])


def _raw(handler, payload: bytes, content_type: str, status: int = 200):
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@pytest.mark.parametrize(
    ("payload", "content_type", "match"),
    [
        (b'{"choices": [', "application/json", "after 2 attempts .*not JSON"),
        (b'{"choices": []}', "application/json", "without the chat-completions schema"),
        (b'{"choices": [{"message": "text"}]}', "application/json", "chat-completions schema"),
        (b'{"choices": [{"message": {"content": 5}}]}', "application/json", "schema"),
        (b"<html><body>Login</body></html>", "text/html", "not JSON"),
    ],
)
def test_malformed_answers_are_clear_errors(payload, content_type, match):
    with _Server(lambda h: _raw(h, payload, content_type)) as server:
        with pytest.raises(KbfmUnavailableError, match=match):
            _chat(server, max_retries=1, timeout=5)


def test_429_then_success_is_retried_and_logged(caplog):
    answers = iter([429, 200])

    def respond(handler):
        status = next(answers)
        body = b'{"error": "slow down"}'
        if status == 200:
            body = json.dumps({"choices": [{"message": {"content": "ok"}}]}).encode()
        _json(handler, body, status)

    with _Server(respond) as server:
        caplog.set_level("WARNING", logger="kbfm._http")
        reply = _chat(server, max_retries=2, timeout=5)
    assert reply.content == "ok"
    assert "Waiting for chat endpoint" in caplog.text and "HTTP 429" in caplog.text
    assert "attempt 1 of 3" in caplog.text and "KBFM_HTTP_TIMEOUT" in caplog.text


def test_500_forever_gives_up_after_the_attempts():
    with _Server(lambda h: _json(h, b"{}", 500)) as server:
        with pytest.raises(KbfmUnavailableError, match=r"after 3 attempts \(HTTP 500\)"):
            _chat(server, max_retries=2, timeout=5)
        assert len(server.seen_headers) == 3


def test_a_stalled_server_hits_the_timeout(monkeypatch):
    import time

    release = threading.Event()

    def stall(handler):
        release.wait(10)  # never answers within the client's timeout

    monkeypatch.setenv("KBFM_HTTP_TIMEOUT", "0.5")
    monkeypatch.setenv("KBFM_HTTP_RETRIES", "1")
    from kbfm._settings import KbfmSettings

    monkeypatch.setattr("kbfm.encoders.llm.settings", KbfmSettings())
    with _Server(stall) as server:
        start = time.perf_counter()
        with pytest.raises(KbfmUnavailableError, match=r"after 2 attempts .*timed out"):
            _chat(server)
        elapsed = time.perf_counter() - start
        release.set()
    assert elapsed < 5  # 2 x 0.5 s + back-off, not 5 minutes


def test_bad_timeout_values_are_refused():
    from kbfm._errors import KbfmInputError
    from kbfm.encoders.llm import OpenAIChatLLM

    for bad in (0, -1, float("nan"), "soon"):
        with pytest.raises(KbfmInputError, match="positive number of seconds"):
            OpenAIChatLLM("openai:t", "t", base_url="http://127.0.0.1:1", timeout=bad)


def test_under_reported_tokens_are_counted_from_the_text():
    answer = {
        "choices": [{"message": {"content": "word " * 4000}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 15},
    }
    with _Server(lambda h: _json(h, json.dumps(answer).encode())) as server:
        reply = _chat(server, max_retries=0, timeout=5)
    assert reply.completion_tokens >= 4000 and reply.prompt_tokens == 3


def test_the_api_key_never_reaches_files_uns_transcripts_or_logs(monkeypatch, tmp_path, caplog):
    import anndata as ad
    import numpy as np

    import kbfm
    from kbfm.agent import run_agent

    monkeypatch.setenv("KBFM_TEST_KEY", SECRET)
    monkeypatch.setenv("KBFM_CACHE_DIR", str(tmp_path / "cache"))
    caplog.set_level("DEBUG")
    clusters = ["0", "1"]
    text = "\n".join(f"{c}: T cell" for c in clusters)
    answer = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
    adata = ad.AnnData(np.random.default_rng(0).poisson(1.0, (20, 5)).astype(np.float32))
    adata.var_names = ["CD3E", "CD3D", "MS4A1", "CD19", "LYZ"]
    adata.obs["cluster"] = (["0"] * 10) + (["1"] * 10)
    with _Server(lambda h: _json(h, answer)) as server:
        options = {"base_url": server.url, "api_key_env": "KBFM_TEST_KEY"}
        kbfm.tl.annotate(
            adata,
            method="llm",
            groupby="cluster",
            candidates=["T cell", "B cell"],
            llm="openai:t",
            llm_options=options,
            constrained=False,
        )
        run_agent(
            "What is here?",
            adata=adata,
            llm="openai:t",
            llm_options=options,
            out_dir=tmp_path / "agent",
            max_steps=1,
        )
        assert all(h["Authorization"] == f"Bearer {SECRET}" for h in server.seen_headers)
    kbfm.io.write_h5ad(adata, tmp_path / "out.h5ad")
    assert SECRET not in repr(adata.uns) and SECRET not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
