"""A local HTTP server speaking the OpenAI and Anthropic wire formats: records requests, plays scripts."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
MESSAGES = "/v1/messages"


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    """One request as received."""

    path: str
    headers: dict[str, str]
    body: Any


def openai_chat(text: str, *, prompt_tokens: int = 12, completion_tokens: int = 5,
                model: str = "test-model") -> dict[str, Any]:
    """A chat.completion body."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def openai_embeddings(vectors: list[list[float]], *, tokens: int = 8, model: str = "embed-model") -> dict[str, Any]:
    """An embeddings list body."""
    return {"object": "list", "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]}


def anthropic_message(text: str, *, input_tokens: int = 20, output_tokens: int = 7,
                      model: str = "claude-test") -> dict[str, Any]:
    """A Messages API body."""
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


def error_body(message: str, kind: str = "error") -> dict[str, Any]:
    """An error body both SDKs understand."""
    return {"type": "error", "error": {"message": message, "type": kind}}


class WireServer:
    """Serves scripted replies per path (in order); unscripted requests get a 599 so tests notice."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append(Recorded(path, {k.lower(): v for k, v in self.headers.items()}, body))
                    queue = server._scripts.get(path)
                    reply = queue.popleft() if queue else Reply(599, error_body(f"nothing scripted for {path}"))
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, bytes | str) else json.dumps(reply.body)
                data = payload.encode("utf-8") if isinstance(payload, str) else payload
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:43210."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, path: str, *replies: Reply) -> None:
        """Queues replies for a path."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(replies)

    def to(self, path: str) -> list[Recorded]:
        """Requests received on a path."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> WireServer:
        """Starts serving in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving."""
        self._server.shutdown()
        self._server.server_close()
