"""A real HTTP server on 127.0.0.1 speaking the OpenAI embeddings schema, for tests."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

DIM = 12


def fake_vector(text: str) -> list[float]:
    """Deterministic vector for a text (seeded by its hash)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(DIM).round(6).tolist()


class EmbeddingsServer:
    """Serves POST /v1/embeddings; ``fail_first`` answers that many requests with 429."""

    def __init__(self, fail_first: int = 0, status: int = 429):
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.fail_first = fail_first
        self.status = status
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.auth_headers.append(self.headers.get("Authorization"))
                if self.path != "/v1/embeddings":
                    self.send_error(404)
                    return
                if server.fail_first > 0:
                    server.fail_first -= 1
                    self.send_error(server.status)
                    return
                data = [
                    {"object": "embedding", "index": i, "embedding": fake_vector(t)}
                    for i, t in enumerate(body["input"])
                ]
                payload = json.dumps({"object": "list", "data": data[::-1], "model": body["model"]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
