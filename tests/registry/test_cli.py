"""``tdev agents`` against a real registry (SQLite): register --wait, list, show, search, versions, errors."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from tdev_cli.main import app
from tests.registry.conftest import EXAMPLES, Registry, Stack, start_registry

pytestmark = pytest.mark.mesh  # real servers or subprocesses


@pytest.fixture
async def sqlite_registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """A registry on SQLite with the real sandbox and offline LLM; its logs go to stderr, not the CLI's output."""
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.dev.ConsoleRenderer(colors=False)],
                        logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        cache_logger_on_first_use=False)
    started = await start_registry(Stack("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite'}", None), tmp_path)
    try:
        yield started
    finally:
        await started.close()
        structlog.configure(**saved)


async def _tdev(registry: Registry, *args: str) -> tuple[int, str]:
    """Runs the CLI in a thread (it runs its own event loop) while the server keeps serving on ours; the exit
    code and stdout, or for a failure what stderr says before the request id."""
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, app, ["agents", "--address", f"127.0.0.1:{registry.handle.port}", *args],
        env={"COLUMNS": "250"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 0:
        return result.exit_code, result.stdout
    assert result.stdout == "", result.stdout  # errors go to stderr only
    return result.exit_code, result.stderr.strip().split("\nrequest id ")[0]


async def test_cli_register_wait_then_list_show_search_versions(sqlite_registry: Registry, tmp_path: Path) -> None:
    code, out = await _tdev(sqlite_registry, "register", str(EXAMPLES / "word_count.py"), "--wait",
                            "--description", "Counts words")
    assert code == 0, out
    assert out.startswith("registered word_count 1.0.0 (agent_")
    assert "analysis: succeeded" in out and "models offline/static-analyzer (not a model)" in out
    code, out = await _tdev(sqlite_registry, "register", str(EXAMPLES / "word_count.py"))
    assert (code, out.split(" (")[0]) == (0, "already registered as word_count 1.0.0")
    changed = tmp_path / "word_count.py"
    changed.write_text((EXAMPLES / "word_count.py").read_text() + "\n# v2\n")
    code, out = await _tdev(sqlite_registry, "register", str(changed), "--label", "origin=cli")
    assert (code, out.split(" (")[0]) == (0, "registered word_count 1.1.0")
    code, out = await _tdev(sqlite_registry, "list")
    assert code == 0 and "word_count" in out and "1.1.0" in out
    code, out = await _tdev(sqlite_registry, "show", "word_count", "--version", "1.0.0")
    assert code == 0 and out.startswith("word_count 1.0.0  (agent_") and "class WordCount" in out
    code, out = await _tdev(sqlite_registry, "search", "count words in text")
    assert code == 0 and "matcher: token-overlap" in out and "name matches 'count'" in out
    code, out = await _tdev(sqlite_registry, "versions", "word_count")
    assert code == 0 and out.index("1.1.0") < out.index("1.0.0")


async def test_cli_reports_status_codes_and_exits_1(sqlite_registry: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("class A:\n    def execute(self, inputs)\n")
    code, out = await _tdev(sqlite_registry, "register", str(bad))
    assert (code, out.strip()) == (1, "error INVALID_ARGUMENT: code: line 2, column 30: syntax error: expected ':'")
    code, out = await _tdev(sqlite_registry, "show", "nobody")
    assert (code, out.strip()) == (1, "error NOT_FOUND: no agent with name nobody")


async def test_cli_label_sets_and_removes_labels_by_name_or_id(sqlite_registry: Registry) -> None:
    code, out = await _tdev(sqlite_registry, "register", str(EXAMPLES / "word_count.py"), "--label", "origin=cli",
                            "--label", "team=search")
    assert code == 0, out
    agent_id = out.split("(")[1].split(")")[0]
    code, out = await _tdev(sqlite_registry, "label", "word_count", "--version", "1.0.0", "--set", "stage=prod",
                            "--remove", "origin")
    assert (code, out.strip()) == (0, f"labels of word_count 1.0.0 ({agent_id}): stage=prod, team=search")
    code, out = await _tdev(sqlite_registry, "label", agent_id, "--version", "1.0.0", "--remove", "team")
    assert (code, out.strip()) == (0, f"labels of word_count 1.0.0 ({agent_id}): stage=prod")
    code, out = await _tdev(sqlite_registry, "label", "word_count", "--version", "1.0.0", "--set", "Bad=x")
    assert (code, out.strip()) == (
        1, 'error INVALID_ARGUMENT: set_labels[Bad]: keys are 1 to 63 characters of a-z, 0-9, "_", "." and "-"')
    code, out = await _tdev(sqlite_registry, "label", "word_count", "--set", "stage=prod")
    assert (code, out.strip()) == (2, "error --version is required and --set takes KEY=VALUE")


async def test_cli_register_names_agents_by_their_class_not_the_files_stem(sqlite_registry: Registry,
                                                                          tmp_path: Path) -> None:
    evolution = EXAMPLES.parent / "evolution"
    for example in ("dispatcher", "slugify", "shipping_cost"):
        code, out = await _tdev(sqlite_registry, "register", str(evolution / example / "agent.py"))
        assert (code, out.split(" (")[0]) == (0, f"registered {example} 1.0.0"), out
    computed = tmp_path / "agent.py"
    computed.write_text("class HTTPFetchAgent:\n    def get_capabilities(self):\n        return dict(name='x')\n\n"
                        "    def execute(self, inputs):\n        return {}\n")
    code, out = await _tdev(sqlite_registry, "register", str(computed))
    assert (code, out.split(" (")[0]) == (0, "registered http_fetch_agent 1.0.0"), out


async def test_cli_register_refuses_another_class_under_a_taken_name_unless_asked(sqlite_registry: Registry) -> None:
    evolution = EXAMPLES.parent / "evolution"
    dispatcher, slugify = evolution / "dispatcher" / "agent.py", evolution / "slugify" / "agent.py"
    code, out = await _tdev(sqlite_registry, "register", str(dispatcher))
    assert code == 0, out
    agent_id = out.split("(")[1].split(")")[0]
    code, out = await _tdev(sqlite_registry, "register", str(slugify), "--name", "dispatcher")
    assert (code, " ".join(out.split())) == (1, (
        f"error FAILED_PRECONDITION: {slugify} is not a version of agent dispatcher: dispatcher 1.0.0 is class "
        "Dispatcher, the file defines class Slugify. Register it under its own --name, or pass --new-version-of "
        "dispatcher to file it as the next version of dispatcher anyway."))
    code, out = await _tdev(sqlite_registry, "versions", "dispatcher")
    assert code == 0 and "1.1.0" not in out
    code, out = await _tdev(sqlite_registry, "register", str(slugify), "--new-version-of", agent_id)
    assert (code, out.strip()) == (0, f"registered dispatcher 1.1.0 ({agent_id})")
    code, out = await _tdev(sqlite_registry, "register", str(dispatcher), "--new-version-of", "nobody")
    assert (code, out.strip()) == (1, "error NOT_FOUND: no agent with name nobody")
    code, out = await _tdev(sqlite_registry, "register", str(dispatcher), "--name", "a", "--new-version-of", "b")
    assert (code, out.strip()) == (2, "error --name and --new-version-of exclude each other")
