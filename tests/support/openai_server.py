"""An OpenAI-compatible HTTP server for tests, on a real loopback socket.

So far it serves ``POST /v1/embeddings`` (vectors from the hashing embedder, so they are deterministic)
and can be told to fail the next requests with given status codes, or to answer with a wrong dimension.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from memory.embeddings import HashingEmbedder


class ScriptedOpenAIServer:
    """Start with ``with ScriptedOpenAIServer() as server:``; point a client at ``server.base_url``."""

    def __init__(self, dimension: int = 384) -> None:
        self.embedder = HashingEmbedder(dimension)
        self.failures: deque[int] = deque()
        self.wrong_dimension = False
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ScriptedOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append({"path": self.path, "body": body})
                if server.failures:
                    status = server.failures.popleft()
                    self._reply(status, {"error": {"message": f"scripted failure {status}", "type": "server_error"}})
                    return
                if self.path != "/v1/embeddings":
                    self._reply(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                vectors = [server.embedder.embed_one(text) for text in texts]
                if server.wrong_dimension:
                    vectors = [vector[:-1] for vector in vectors]
                self._reply(
                    200,
                    {
                        "object": "list",
                        "model": body.get("model", "test"),
                        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                        "usage": {"prompt_tokens": sum(len(t.split()) for t in texts), "total_tokens": 0},
                    },
                )

        return Handler
