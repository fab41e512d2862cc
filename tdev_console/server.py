"""The console's HTTP server: the static page, a JSON API over backend.py, and Watch streams as server-sent events.

It keeps nothing of its own: every answer is read from the services when asked, and every live update is a
service event passed on as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from aiohttp import web

from tdev_common.auth import TokenTable
from tdev_common.config import CommonSettings
from tdev_common.runtime import load_security
from tdev_console.backend import Backend
from tdev_console.config import ConsoleSettings
from tdev_console.views import code_diff, dag_layers, evolution_lineage

log = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "tdev_console_session"
HEARTBEAT_SECONDS = 15.0
# The lineage tree reads at most this many of a run's candidates (1,000 is a whole run at the default settings).
MAX_CANDIDATES = 2000
# The page loads only its own files: even a missed escape could not pull in or run foreign script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_HTTP_OF = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400,
            grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504}
BACKEND: web.AppKey[Backend] = web.AppKey("backend")
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")


class Sessions:
    """Signed login cookies: ``expiry.principal.mac`` under a key made at start (a restart logs everyone out);
    the token itself never reaches the browser's storage."""

    def __init__(self, tokens: TokenTable, lifetime_seconds: float) -> None:
        self.tokens = tokens
        self._key = os.urandom(32)
        self._lifetime = lifetime_seconds

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, principal: str) -> str:
        """A cookie value for ``principal`` valid for the session lifetime."""
        name = principal.encode().hex()
        payload = f"{int(time.time() + self._lifetime)}.{name}"
        return f"{payload}.{self._mac(payload)}"

    def valid(self, cookie: str | None) -> bool:
        """True for an unexpired cookie this process issued."""
        if not cookie or cookie.count(".") != 2:
            return False
        payload, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(payload)):
            return False
        expiry = payload.split(".", 1)[0]
        return expiry.isdigit() and int(expiry) > time.time()


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _page(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _auth_middleware(sessions: Sessions | None) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
        if sessions is None or request.path in ("/login", "/static/console.css"):
            return await handler(request)
        token = _bearer(request)
        if (token and sessions.tokens.lookup(token)) or sessions.valid(request.cookies.get(SESSION_COOKIE)):
            return await handler(request)
        if request.path.startswith("/api/"):
            return web.json_response({"code": "UNAUTHENTICATED", "message": "send 'Authorization: Bearer <token>' "
                                      "or log in at /login"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        return web.Response(text=_page("login.html"), content_type="text/html", status=401,
                            headers={"WWW-Authenticate": "Bearer"})

    return auth


@web.middleware
async def _headers_and_errors(request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        response = await handler(request)
    except grpc.aio.AioRpcError as error:
        response = web.json_response({"code": error.code().name, "message": error.details() or ""},
                                     status=_HTTP_OF.get(error.code(), 502))
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


def _backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


async def _index(_request: web.Request) -> web.Response:
    return web.Response(text=_page("index.html"), content_type="text/html")


async def _login_form(_request: web.Request) -> web.Response:
    return web.Response(text=_page("login.html"), content_type="text/html")


async def _login(request: web.Request, sessions: Sessions | None) -> web.Response:
    if sessions is None:
        raise web.HTTPFound("/")
    form = await request.post()
    principal = sessions.tokens.lookup(str(form.get("token", "")))
    if principal is None:
        return web.Response(text=_page("login.html").replace("<!--error-->", "<p class=error>That token is not "
                            "accepted.</p>"), content_type="text/html", status=401)
    response = web.HTTPSeeOther("/")
    response.set_cookie(SESSION_COOKIE, sessions.issue(principal.name), httponly=True, samesite="Strict",
                        secure=request.secure, path="/")
    raise response


async def _logout(_request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# JSON API: one read of a service each, shaped by views.py


async def _agents(request: web.Request) -> web.Response:
    query = request.query.get("q", "").strip()
    if query:
        return web.json_response({"results": await _backend(request).search_agents(query)})
    page = await _backend(request).list_agents(request.query.get("page_token", ""))
    return web.json_response({"results": [{"agent": agent} for agent in page.get("agents", [])],
                              "next_page_token": page.get("next_page_token", "")})


async def _agent(request: web.Request) -> web.Response:
    backend = _backend(request)
    agent_id, version = request.match_info["agent_id"], request.query.get("version", "")
    agent = await backend.get_agent(agent_id, version)
    versions, lineage = await asyncio.gather(backend.list_agent_versions(agent_id),
                                             backend.get_agent_lineage(agent_id, agent["version"]))
    diffs = []
    for parent in agent.get("parents", []):
        parent_agent = await backend.get_agent(parent["agent_id"], parent["version"])
        diffs.append({"parent": parent, "lines": code_diff(
            parent_agent.get("code", ""), agent.get("code", ""),
            f"{parent_agent.get('name')} {parent['version']}", f"{agent.get('name')} {agent['version']}")})
    return web.json_response({"agent": agent, "versions": versions, "lineage": lineage, "diffs": diffs})


async def _executions(request: web.Request) -> web.Response:
    return web.json_response(await _backend(request).list_executions(request.query.get("page_token", ""),
                                                                     request.query.get("workflow_id", "")))


async def _execution(request: web.Request) -> web.Response:
    backend = _backend(request)
    execution = await backend.get_execution(request.match_info["execution_id"])
    try:
        workflow: dict[str, Any] = await backend.get_workflow(execution["workflow_id"])
        nodes = workflow.get("nodes", [])
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        workflow, nodes = {}, [{"id": run["node_id"]} for run in execution.get("nodes", [])]
    return web.json_response({"execution": execution, "workflow": workflow, "layers": dag_layers(nodes)})


async def _builds(request: web.Request) -> web.Response:
    return web.json_response(await _backend(request).list_builds(request.query.get("page_token", "")))


async def _build(request: web.Request) -> web.Response:
    return web.json_response({"build": await _backend(request).get_build(request.match_info["build_id"])})


async def _evolutions(request: web.Request) -> web.Response:
    return web.json_response(await _backend(request).list_evolutions(request.query.get("page_token", "")))


async def _evolution(request: web.Request) -> web.Response:
    backend = _backend(request)
    run = await backend.get_evolution(request.match_info["run_id"])
    seed = await backend.get_agent(run["agent_id"], run["agent_version"])
    best = run.get("best") or {}
    diff: dict[str, Any] | None = None
    if best.get("code"):
        direct = seed["code_hash"] in best.get("parent_hashes", [])
        diff = {"from": seed["code_hash"], "to": best["code_hash"], "direct_parent": direct,
                "lines": code_diff(seed.get("code", ""), best["code"], f"seed {seed['version']}",
                                   f"best (generation {best.get('generation', 0)})")}
    candidates, complete = await backend.list_candidates(run["run_id"], MAX_CANDIDATES)
    return web.json_response({"run": run, "seed": {k: seed.get(k) for k in ("agent_id", "name", "version",
                                                                             "code_hash")},
                              "lineage": evolution_lineage(run, seed["code_hash"], candidates, complete=complete),
                              "diff": diff})


# Live updates


def _sse(kind: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(request: web.Request, watch: Callable[[int], AsyncIterator[dict[str, Any]]]) -> web.StreamResponse:
    # EventSource reconnects with Last-Event-ID: the service replays from there, so the page misses nothing.
    raw_after = request.headers.get("Last-Event-ID") or request.query.get("after", "0")
    after = int(raw_after) if raw_after.isdigit() else 0
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async for event in watch(after):
                await queue.put(_sse("event", event, int(event.get("sequence", 0))))
            await queue.put(_sse("end", {}))
        except grpc.aio.AioRpcError as error:
            await queue.put(_sse("failure", {"code": error.code().name, "message": error.details() or ""}))
        await queue.put(None)

    task = asyncio.create_task(pump())
    request.app[STREAMS].add(task)
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                chunk = b": keep-alive\n\n"
            if chunk is None:
                break
            await response.write(chunk)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        task.cancel()
        request.app[STREAMS].discard(task)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return response


async def _execution_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, lambda after: _backend(request).watch_execution(
        request.match_info["execution_id"], after))


async def _build_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, lambda after: _backend(request).watch_build(request.match_info["build_id"], after))


async def _evolution_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, lambda after: _backend(request).watch_evolution(request.match_info["run_id"],
                                                                                  after))


def create_app(backend: Backend, tokens: TokenTable | None, settings: ConsoleSettings) -> web.Application:
    """The console as an aiohttp application; ``tokens`` None means no login (embedded mode without tokens)."""
    sessions = Sessions(tokens, settings.session_hours * 3600) if tokens else None
    app = web.Application(middlewares=[_headers_and_errors, _auth_middleware(sessions)])
    app[BACKEND] = backend
    app[STREAMS] = set()

    async def login(request: web.Request) -> web.Response:
        return await _login(request, sessions)

    async def stop_streams(app: web.Application) -> None:
        open_streams = app[STREAMS]
        for task in [*open_streams]:
            task.cancel()

    app.on_shutdown.append(stop_streams)
    app.router.add_get("/", _index)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/api/agents", _agents)
    app.router.add_get("/api/agents/{agent_id}", _agent)
    app.router.add_get("/api/executions", _executions)
    app.router.add_get("/api/executions/{execution_id}", _execution)
    app.router.add_get("/api/executions/{execution_id}/events", _execution_events)
    app.router.add_get("/api/builds", _builds)
    app.router.add_get("/api/builds/{build_id}", _build)
    app.router.add_get("/api/builds/{build_id}/events", _build_events)
    app.router.add_get("/api/evolutions", _evolutions)
    app.router.add_get("/api/evolutions/{run_id}", _evolution)
    app.router.add_get("/api/evolutions/{run_id}/events", _evolution_events)
    app.router.add_static("/static", str(STATIC), append_version=False)
    return app


@dataclass
class RunningConsole:
    """A started console: its URL and how to stop it."""

    runner: web.AppRunner
    backend: Backend
    url: str
    port: int

    async def close(self) -> None:
        """Stops listening, ends the live streams, closes the channels."""
        await self.runner.cleanup()
        await self.backend.close()


async def start_console(common: CommonSettings, settings: ConsoleSettings) -> RunningConsole:
    """Loads the mesh's tokens and client security the way the services do and starts listening.

    Raises:
        AuthConfigError: production mode without tokens (the console, like the services, refuses to run open).
        TlsConfigError: incomplete TLS settings for the channels.
        OSError: the port is taken.
    """
    security = await load_security(common)
    backend = Backend(common, security.client)
    if security.server.tokens is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("console_open_on_non_loopback", host=settings.host)
    runner = web.AppRunner(create_app(backend, security.server.tokens, settings), access_log=None,
                           shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        await backend.close()
        raise
    port = runner.addresses[0][1]
    return RunningConsole(runner, backend, f"http://{settings.host}:{port}/", port)


async def serve(common: CommonSettings, settings: ConsoleSettings, ready: Callable[[str], None],
                stop: asyncio.Event | None = None) -> None:
    """Runs the console until ``stop`` is set (or the task is cancelled); ``ready`` gets its URL once it listens."""
    console = await start_console(common, settings)
    ready(console.url)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await console.close()
