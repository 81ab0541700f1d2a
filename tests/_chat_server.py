"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions + tools schema.

Answers come from a queue of scripted replies, so tests control exactly what "the
model" says: plain text, tool calls, malformed JSON, HTTP errors or a slow answer.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def text_reply(content: str) -> dict:
    return {"message": {"role": "assistant", "content": content}}


def tool_reply(name: str, arguments: str) -> dict:
    call = {
        "id": f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return {"message": {"role": "assistant", "content": None, "tool_calls": [call]}}


class ChatServer:
    """Serves POST /v1/chat/completions from scripted ``replies`` (dicts or tuples)."""

    def __init__(self, replies: list) -> None:
        self.replies = list(replies)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                reply = server.replies.pop(0) if server.replies else text_reply("no more replies")
                if isinstance(reply, tuple) and reply[0] == "status":
                    self.send_error(reply[1])
                    return
                if isinstance(reply, tuple) and reply[0] == "sleep":
                    time.sleep(reply[1])
                    reply = reply[2]
                if isinstance(reply, tuple) and reply[0] == "raw":
                    payload = reply[1]
                else:
                    payload = json.dumps(
                        {
                            "choices": [reply],
                            "usage": {"prompt_tokens": 50, "completion_tokens": 10},
                        }
                    )
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
