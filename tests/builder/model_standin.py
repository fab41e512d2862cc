"""A model stand-in: a local HTTP server speaking the OpenAI chat-completions wire format.

It reads the JSON payload at the end of each prompt (as a model would read it), answers like the offline rules
would, and lets a test script faults per purpose: broken code, repairs that fix or never fix, delays, and the
token usage each answer reports.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tdev_common.llm.base import Message
from tdev_common.llm.offline.codegen import generate
from tdev_common.llm.offline.planner import plan
from tdev_common.llm.offline.repair import repair
from tdev_common.llm.offline.requirements import analyse_requirements
from tdev_common.llm.prompts import read_payload
from tests.llm.llm_wire_server import error_body, openai_chat

JSON = dict[str, Any]
Answer = Callable[[JSON, int], JSON]


def purpose_of(payload: JSON) -> str:
    """analyse, plan, codegen or repair, from the payload's fields."""
    if "task" in payload:
        return str(payload["task"])
    if "failure" in payload:
        return "repair"
    if "spec" in payload:
        return "codegen"
    return "other"


def broken(code: str, draft: int) -> str:
    """The code with ``execute`` raising at once (still valid Python that loads)."""
    match = re.search(r"^( +)def execute\(self, inputs[^\n]*\n", code, flags=re.MULTILINE)
    assert match is not None, "no execute method to break"
    indent = match.group(1) * 2
    line = f'{indent}raise RuntimeError("draft {draft}: execute is not implemented")\n'
    return code[: match.end()] + line + code[match.end():]


def offline_answer(purpose: str, payload: JSON) -> JSON:
    """What the offline rules answer (a competent model, for the purposes the builder asks)."""
    if purpose == "analyse":
        return analyse_requirements(payload["requirements"])
    if purpose == "plan":
        return plan(payload["requirements"], payload.get("catalogue") or [])
    if purpose == "codegen":
        return generate(payload["spec"])
    if purpose == "repair":
        return repair(payload["code"], payload["failure"], payload.get("spec"))
    raise AssertionError(f"the stand-in does not answer {purpose}")


@dataclass
class Script:
    """Per purpose: an answer override (payload, 0-based call index) -> answer, a delay, reported usage."""

    answers: dict[str, Answer] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)


class ModelStandIn:
    """Serves /v1/chat/completions; records (purpose, payload) of every request."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[tuple[str, JSON]] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, reply = stand_in._answer(self.path.split("?", 1)[0], body)
                data = json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (cancelled build, stopped server)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def _answer(self, path: str, body: JSON) -> tuple[int, JSON]:
        if path != "/v1/chat/completions":
            return 404, error_body(f"no route {path}")
        messages = [Message(m["role"], m["content"]) for m in body.get("messages", [])]
        payload = read_payload(messages)
        purpose = purpose_of(payload)
        with self._lock:
            index = sum(1 for p, _ in self.requests if p == purpose)
            self.requests.append((purpose, payload))
            self._arrived.notify_all()
        delay = self.script.delays.get(purpose, 0.0)
        if delay:
            time.sleep(delay)
        override = self.script.answers.get(purpose)
        answer = override(payload, index) if override else offline_answer(purpose, payload)
        prompt_tokens, completion_tokens = self.script.usage.get(purpose, (100, 50))
        return 200, openai_chat(json.dumps(answer), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                model="test-model")

    def count(self, purpose: str) -> int:
        """Requests received for a purpose."""
        with self._lock:
            return sum(1 for p, _ in self.requests if p == purpose)

    def wait_for(self, purpose: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Blocks until ``count`` requests for a purpose arrived; False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(lambda: sum(1 for p, _ in self.requests if p == purpose) >= count, timeout)

    @property
    def url(self) -> str:
        """Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:43210/v1."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> ModelStandIn:
        """Starts serving in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving."""
        self._server.shutdown()
        self._server.server_close()
