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
