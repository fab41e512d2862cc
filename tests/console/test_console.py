"""The web console end to end: the four services in this process (SQLite, real sandbox), the console in front of
them, and Debian's headless Chromium driven by Playwright. Screenshots go to tests/artifacts/console/."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from tdev_client import Connection, Mesh
from tdev_common.config import CommonSettings
from tdev_console.backend import Backend
from tdev_console.config import ConsoleSettings
from tdev_console.server import RunningConsole, start_console
from tests.support.inprocess_mesh import inprocess_mesh
from tests.support.netproxy import tcp_proxy
from tests.workflow.conftest import AGENTS

pytestmark = pytest.mark.mesh

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
TOKEN = "console-token-0123456789abcdef"
TOKENS = json.dumps({"tokens": [{"name": "ops", "token": TOKEN, "permissions": ["*"]}]})
# Slow enough (0.1 s per case in the sandbox) that the page sees the generations arrive one by one.
SCALER = '''
import time


class Scaler:
    """Scales x by a factor."""

    def get_capabilities(self):
        return {"name": "scaler", "description": "scales a number"}

    def execute(self, inputs):
        time.sleep(0.1)
        return {"y": inputs["x"] * 2}
'''
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
HOSTILE_AGENT = f'''
class Hostile:
    """{HOSTILE}"""

    def get_capabilities(self):
        return {{"name": "hostile", "description": {HOSTILE!r}}}

    def execute(self, inputs):
        return {{"html": {HOSTILE!r}}}
'''


@dataclass
class Stack:
    mesh: Mesh
    console: RunningConsole
    ports: dict[str, int]


def ensure_chromium() -> None:
    """Installs Debian's chromium when it is missing (the tests run as root on Debian)."""
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.fail("chromium is missing and apt-get is not available to install it")
    install = ["apt-get", "install", "-y", "chromium"]
    if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=600)
        subprocess.run(install, check=True, capture_output=True, timeout=900)


def addresses(ports: dict[str, int]) -> dict[str, str]:
    return {f"{name}_address": f"127.0.0.1:{port}" for name, port in ports.items()}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    common = CommonSettings(data_dir=tmp_path / "data", log_json=True, log_level="WARNING")
    async with inprocess_mesh(common) as ports:
        connection = Connection.resolve(environ={}, profiles_file=tmp_path / "no-profiles.toml",
                                        **{name: f"127.0.0.1:{port}" for name, port in ports.items()})
        console = await start_console(common.model_copy(update=addresses(ports)), ConsoleSettings(port=0))
        try:
            async with Mesh(connection) as mesh:
                yield Stack(mesh, console, ports)
        finally:
            await console.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    ensure_chromium()
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            await context.close()


async def open_page(browser: BrowserContext, url: str) -> Page:
    page = browser.pages[0] if browser.pages else await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(url)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def register(mesh: Mesh, name: str, code: str) -> dict[str, Any]:
    return dict((await mesh.registry.register_agent(name, code))["agent"])


async def test_execution_appears_and_its_nodes_turn_green_live(stack: Stack, browser: BrowserContext) -> None:
    echo = await register(stack.mesh, "wf_echo", AGENTS["wf_echo"])
    sleep = await register(stack.mesh, "wf_sleep", AGENTS["wf_sleep"])
    flaky = await register(stack.mesh, "wf_flaky", AGENTS["wf_flaky"])
    workflow = await stack.mesh.workflows.create_workflow({"name": "console-live", "nodes": [
        {"id": "flaky", "agent_id": flaky["agent_id"], "depends_on": ["first"],
         "inputs": {"attempt": {"$ref": "context.attempt"}, "fail_times": 1},
         "retry_policy": {"max_retries": 2, "initial_backoff": 0.05, "backoff_multiplier": 1, "max_backoff": 0.1}},
        {"id": "first", "agent_id": echo["agent_id"], "inputs": {"value": {"$ref": "inputs.text"}}},
        # Long enough to be seen running: the executions list is re-read every 2 s, so the row can take that
        # long to appear (longer on a loaded machine) before the test opens the execution.
        {"id": "nap", "agent_id": sleep["agent_id"], "inputs": {"seconds": 5, "value": 1}, "depends_on": ["first"]},
        {"id": "left", "agent_id": echo["agent_id"], "inputs": {"value": "l"}, "depends_on": ["nap"]},
        {"id": "right", "agent_id": echo["agent_id"], "inputs": {"value": "r"}, "depends_on": ["nap"]},
    ]})
    page = await open_page(browser, stack.console.url + "#/executions")
    await page.wait_for_selector("text=No executions yet.")

    execution = await stack.mesh.workflows.start_execution(workflow["workflow_id"], {"text": HOSTILE})
    execution_id = execution["execution_id"]
    row = page.locator(f"tr[data-execution='{execution_id}']")
    await row.wait_for(timeout=10_000)  # the list picked it up without a reload
    await row.click()

    nap = page.locator("[data-node='nap']")
    await page.wait_for_selector("[data-node='nap'][data-state='STATE_RUNNING']", timeout=10_000)
    assert await page.locator("[data-node='first']").get_attribute("data-state") == "STATE_SUCCEEDED"
    assert await page.locator("[data-node='left']").get_attribute("data-state") in ("STATE_PENDING", "STATE_SCHEDULED")
    await screenshot(page, "execution-running")
    await page.wait_for_selector("[data-node='nap'][data-state='STATE_SUCCEEDED']", timeout=15_000)
    for node in ("left", "right", "flaky"):
        await page.wait_for_selector(f"[data-node='{node}'][data-state='STATE_SUCCEEDED']", timeout=10_000)
    await page.wait_for_selector("#execution-state .STATE_SUCCEEDED", timeout=10_000)
    assert "rgb(227, 246, 232)" == await nap.locator("rect").evaluate("r => getComputedStyle(r).fill")  # green

    assert "attempt 2" in (await page.locator("[data-node='flaky']").text_content() or "")  # retried once
    await page.locator("[data-node='first']").click()
    details = page.locator("#node-details")
    await details.locator("pre").first.wait_for()
    assert json.dumps(HOSTILE) in await details.inner_text()  # the output shows as text (JSON-quoted)...
    assert await page.evaluate("window.__pwned") is None  # ...and never as markup
    assert await page.locator("main img, main script").count() == 0
    events = await page.locator("#events div").all_inner_texts()
    assert any("node started · nap" in line for line in events) and any("execution succeeded" in e for e in events)
    assert any("node retrying · flaky · attempt" in line for line in events)
    await screenshot(page, "execution-succeeded")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_evolution_chart_candidate_tree_and_child_diffs_render(stack: Stack, browser: BrowserContext) -> None:
    scaler = await register(stack.mesh, "scaler", SCALER)
    suite = {"cases": [{"name": f"x{x}", "inputs": {"x": x}, "expected": {"y": 3 * x}} for x in range(1, 5)]}
    # Counts the chart's points each time the page redraws it, from the page's first script on.
    await browser.add_init_script("""
        window.__chartPoints = [];
        new MutationObserver(() => {
            const n = document.querySelectorAll('#fitness-chart circle.point-best').length;
            if (window.__chartPoints.at(-1) !== n) window.__chartPoints.push(n);
        }).observe(document, {childList: true, subtree: true});
    """)
    page = await open_page(browser, stack.console.url + "#/evolutions")
    await page.wait_for_selector("text=No evolution runs yet.")
    run = await stack.mesh.evolution.start_evolution(scaler["agent_id"], suite, config={
        "population_size": 6, "generations": 4, "seed": 7, "plateau_generations": 0, "promote": False})
    await page.goto(stack.console.url + f"#/evolutions/{run['run_id']}")
    await page.wait_for_selector("#run-state .STATE_SUCCEEDED, #run-state .STATE_FAILED", timeout=120_000)
    done = await stack.mesh.evolution.get_evolution(run["run_id"])
    assert done["state"] == "STATE_SUCCEEDED", done.get("error")
    generations = len(done["generations"])
    assert generations == 4
    await page.wait_for_function(f"document.querySelectorAll('#fitness-chart circle.point-best').length === "
                                 f"{generations}")
    seen = await page.evaluate("window.__chartPoints")
    assert seen[-1] == generations and any(0 < n < generations for n in seen), seen  # it grew while running
    assert await page.locator("#fitness-chart circle.point-mean").count() == generations
    assert await page.locator("#promotion").inner_text() != "not decided yet"
    assert "seed" in await page.locator("#seed-best-diff pre.diff").inner_text()

    # The tree is every candidate the service lists, joined parent -> child by the hashes each names.
    candidates = [c async for c in stack.mesh.evolution.iter_candidates(run["run_id"])]
    assert len(candidates) == 1 + sum(r["evaluations"] for r in done["generations"])
    await page.wait_for_function(f"document.querySelectorAll('#lineage g.lineage-node').length === {len(candidates)}")
    drawn = {await node.get_attribute("data-hash") for node in await page.locator("#lineage g.lineage-node").all()}
    assert drawn == {c["code_hash"] for c in candidates}
    edges = {(await e.get_attribute("data-from"), await e.get_attribute("data-to"))
             for e in await page.locator("#lineage path.edge").all()}
    assert edges == {(parent, c["code_hash"]) for c in candidates for parent in c["parent_hashes"]}
    assert await page.locator(f"#lineage g.lineage-node.seed[data-hash='{scaler['code_hash']}']").count() == 1
    best = done["best"]
    if best["code_hash"] != scaler["code_hash"]:
        assert await page.locator(f"#lineage g.lineage-node.best[data-hash='{best['code_hash']}']").count() == 1
    assert await page.locator("#lineage g.lineage-node.on-best-path").count() >= 2

    # Each child shows its diff against its first parent: pick a child whose code differs from that parent's.
    by_hash = {c["code_hash"]: c for c in candidates}
    child = next(c for c in candidates[::-1] if c["parent_hashes"]
                 and by_hash[c["parent_hashes"][0]]["code"] != c["code"])
    parent = by_hash[child["parent_hashes"][0]]
    await page.locator(f"#lineage g.lineage-node[data-hash='{child['code_hash']}']").click()
    await page.wait_for_selector(f"#lineage g.lineage-node.selected[data-hash='{child['code_hash']}']")
    facts = await page.locator("#candidate-facts").inner_text()
    assert child["code_hash"][:10] in facts and child["operator"] in facts
    shown = await page.locator("#candidate-diff pre.diff").inner_text()
    assert shown.splitlines()[:2] == [f"--- parent {parent['code_hash'][:12]} (generation {parent['generation']})",
                                      f"+++ child {child['code_hash'][:12]} (generation {child['generation']})"]
    removed = {line[1:] for line in shown.splitlines() if line.startswith("-") and not line.startswith("---")}
    added = {line[1:] for line in shown.splitlines() if line.startswith("+") and not line.startswith("+++")}
    assert removed <= set(parent["code"].splitlines()) and added <= set(child["code"].splitlines())
    assert removed | added
    await page.locator(f"#lineage g.lineage-node.seed[data-hash='{scaler['code_hash']}']").click()
    await page.wait_for_selector("text=The starting program: it has no parent.")
    await page.locator(f"#lineage g.lineage-node[data-hash='{child['code_hash']}']").click()
    await page.wait_for_selector(f"#lineage g.lineage-node.selected[data-hash='{child['code_hash']}']")
    await screenshot(page, "evolution")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_build_stage_timeline_renders(stack: Stack, browser: BrowserContext) -> None:
    build = await stack.mesh.builds.start_build("Sort the numbers in ascending order")
    page = await open_page(browser, stack.console.url + f"#/builds/{build['build_id']}")
    await page.wait_for_selector("#build-timeline .stage[data-stage='STAGE_ANALYSE']", timeout=60_000)
    await page.wait_for_selector("h2 .STATE_SUCCEEDED", timeout=120_000)
    done = await stack.mesh.builds.get_build(build["build_id"])
    stages = page.locator("#build-timeline .stage")
    assert await stages.count() == len(done["stages"]) >= 5
    assert {await stage.get_attribute("data-state") for stage in await stages.all()} == {"STATE_SUCCEEDED"}
    assert await page.locator("#events div").count() >= len(done["stages"])
    await screenshot(page, "build")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_agent_page_escapes_untrusted_code_and_descriptions(stack: Stack, browser: BrowserContext) -> None:
    agent = await register(stack.mesh, "hostile", HOSTILE_AGENT)
    page = await open_page(browser, stack.console.url + "#/agents")
    await page.locator(f"tr[data-agent='{agent['agent_id']}']").click()
    await page.wait_for_selector("#agent-code")
    assert HOSTILE in await page.locator("#agent-code").inner_text()
    await page.wait_for_timeout(300)  # an injected onerror would have fired by now
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("main img, main script").count() == 0
    assert await page.locator("#agent-lineage").count() == 1
    await screenshot(page, "agent")


async def test_console_needs_a_token_in_production_mode(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", mode="production", auth_tokens=TOKENS,
                            registry_address="127.0.0.1:1")
    console = await start_console(common, ConsoleSettings(port=0))
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: an IP host
            for path in ("/", "/api/agents", "/api/executions/x/events", "/static/app.js"):
                async with http.get(console.url.rstrip("/") + path) as answer:
                    assert answer.status == 401, path
            async with http.get(console.url, headers={"Authorization": "Bearer wrong-token-0123456789"}) as answer:
                assert answer.status == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(console.url, headers=bearer) as answer:
                assert answer.status == 200 and "Content-Security-Policy" in answer.headers
            async with http.get(console.url + "api/agents", headers=bearer) as answer:
                assert (answer.status, (await answer.json())["code"]) == (503, "UNAVAILABLE")  # no registry there
            async with http.post(console.url + "login", data={"token": "not-it-0123456789abcdef"},
                                 allow_redirects=False) as answer:
                assert answer.status == 401 and not answer.cookies
            async with http.post(console.url + "login", data={"token": TOKEN}, allow_redirects=False) as answer:
                assert answer.status == 303
                cookie = answer.cookies["tdev_console_session"]
                assert cookie["httponly"] and cookie["samesite"] == "Strict" and TOKEN not in cookie.value
            async with http.get(console.url) as answer:  # the session cookie now
                assert answer.status == 200
    finally:
        await console.close()


async def test_console_forwards_the_service_token_to_a_mesh_with_auth(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", log_level="WARNING", auth_tokens=TOKENS, service_token=TOKEN)
    async with inprocess_mesh(common) as ports:
        with_token = await start_console(common.model_copy(update=addresses(ports)), ConsoleSettings(port=0))
        without = await start_console(common.model_copy(update={**addresses(ports), "service_token": None}),
                                      ConsoleSettings(port=0))
        try:
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                async with http.get(with_token.url + "api/agents") as answer:
                    assert answer.status == 200 and (await answer.json())["results"] == []
                async with http.get(without.url + "api/agents") as answer:
                    assert (answer.status, (await answer.json())["code"]) == (502, "UNAUTHENTICATED")
        finally:
            await with_token.close()
            await without.close()


async def test_watch_resumes_after_the_stream_drops(tmp_path: Path) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", log_level="WARNING")
    async with inprocess_mesh(common) as ports, tcp_proxy(ports["workflow"]) as (proxy_port, cut):
        connection = Connection.resolve(environ={}, profiles_file=tmp_path / "no-profiles.toml",
                                        **{name: f"127.0.0.1:{port}" for name, port in ports.items()})
        backend = Backend(common.model_copy(update={**addresses(ports), "workflow_address": f"127.0.0.1:{proxy_port}"}),
                          (await _security(common)))
        try:
            async with Mesh(connection) as mesh:
                sleep = await register(mesh, "wf_sleep", AGENTS["wf_sleep"])
                nodes = [{"id": f"n{i}", "agent_id": sleep["agent_id"], "inputs": {"seconds": 0.3, "value": i},
                          **({"depends_on": [f"n{i - 1}"]} if i else {})} for i in range(5)]
                workflow = await mesh.workflows.create_workflow({"name": "console-resume", "nodes": nodes})
                execution = await mesh.workflows.start_execution(workflow["workflow_id"])
                seen: list[dict[str, Any]] = []
                cutter: asyncio.Task[None] | None = None

                async def cut_for_a_while() -> None:
                    cut.set()
                    await asyncio.sleep(0.5)
                    cut.clear()

                async for event in backend.watch_execution(execution["execution_id"]):
                    seen.append(event)
                    if event["type"] == "TYPE_NODE_SUCCEEDED" and cutter is None:
                        cutter = asyncio.create_task(cut_for_a_while())
                assert cutter is not None and cutter.done()
                assert [e["sequence"] for e in seen] == list(range(1, len(seen) + 1))
                assert seen[-1]["type"] == "TYPE_EXECUTION_SUCCEEDED"
        finally:
            await backend.close()


async def _security(common: CommonSettings) -> Any:
    from tdev_common.runtime import load_security

    return (await load_security(common)).client
