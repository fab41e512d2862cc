"""Agent code compiled once by the service and unmarshalled by execution processes (docs/sandbox.md,
"Agent bytecode"): the same code object the process would have compiled, or nothing when that would differ."""

from __future__ import annotations

import base64
import builtins
import json
import marshal
from typing import Any

import pytest

from tdev_common.sandbox import agent_bytecode, wire
from tdev_common.sandbox.backend import Job, JobMode
from tdev_common.sandbox.limits import Limits
from tdev_common.sandbox.runtime import framing, runner

pytestmark = pytest.mark.unit

AGENT = """
def helper(x):
    assert x >= 0, "negative"
    return x * 2

class Doubler:
    def execute(self, inputs):
        return {"y": helper(inputs["x"])}
"""


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    agent_bytecode._compiled.cache_clear()


def _count_compiles(monkeypatch: pytest.MonkeyPatch, *, allow: bool) -> list[str]:
    calls: list[str] = []
    real_compile = builtins.compile

    def counting(source: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(source)[:40])
        if not allow:
            raise AssertionError("compiled in the execution process")
        return real_compile(source, *args, **kwargs)

    monkeypatch.setattr(builtins, "compile", counting)
    return calls


def test_an_agent_loads_from_its_bytecode_without_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    bytecode = agent_bytecode.compiled(AGENT)
    assert bytecode is not None
    _count_compiles(monkeypatch, allow=False)
    cls = runner.load_agent(AGENT, bytecode)
    assert cls().execute({"x": 21}) == {"y": 42}
    with pytest.raises(AssertionError, match="negative"):  # compiled with asserts, whatever -O says
        cls().execute({"x": -1})


@pytest.mark.parametrize(
    "unusable",
    [None, "", "not base64 at all!", base64.b64encode(b"hello").decode(),
     base64.b64encode(marshal.dumps("a string, not code")).decode()],
)
def test_without_usable_bytecode_the_process_compiles_the_source(
    unusable: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_compiles(monkeypatch, allow=True)
    cls = runner.load_agent(AGENT, unusable)
    assert cls().execute({"x": 1}) == {"y": 2}
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("label", "code"),
    [
        ("a syntax error", "class A:\n    def execute(self, inputs)\n        return {}\n"),
        ("a SyntaxWarning", "class A:\n    def execute(self, inputs):\n        return {'x': 1 is 1}\n"),
        ("a DeprecationWarning", "X = '\\d'\nclass A:\n    def execute(self, inputs):\n        return {}\n"),
        ("a NUL byte", "X = 1\x00\n"),
        ("more than the size cap", "X = 1\n" + "#" * agent_bytecode.MAX_SOURCE_CHARS),
    ],
)
def test_code_the_process_must_compile_itself_gets_no_bytecode(label: str, code: str) -> None:
    assert agent_bytecode.compiled(code) is None, label


def test_a_warning_while_compiling_here_leaves_no_trace_in_the_service(recwarn: pytest.WarningsRecorder) -> None:
    assert agent_bytecode.compiled("X = 1 is 1\n") is None
    assert not recwarn.list


def test_job_frames_carry_the_bytecode_and_the_interpreter_it_is_for() -> None:
    job = Job(JobMode.RUN, AGENT, [{"x": 1}], Limits())
    bytecode = agent_bytecode.compiled(AGENT)
    for frame in (wire.job_frame(job, bytecode=bytecode), wire.preload_frame(job, bytecode)):
        ((_, payload),) = framing.FrameBuffer(len(frame)).feed(frame)
        body = json.loads(payload)
        assert body["code"] == AGENT
        assert body["bytecode"] == bytecode and body["magic"] == runner.MAGIC
        assert runner.job_bytecode(body) == bytecode
    ((_, payload),) = framing.FrameBuffer(1 << 20).feed(wire.job_frame(job))
    assert "bytecode" not in json.loads(payload)


def test_bytecode_for_another_interpreter_version_is_ignored() -> None:
    body = {"code": AGENT, "bytecode": agent_bytecode.compiled(AGENT), "magic": "0d0d0a0a"}
    assert runner.job_bytecode(body) is None
    assert runner.job_bytecode({"code": AGENT, "bytecode": 7, "magic": runner.MAGIC}) is None
    assert runner.job_bytecode({"code": AGENT}) is None


@pytest.mark.parametrize(
    "code",
    ["x = " + "-" * 30000 + "1\n", "x = " + "1+" * 15000 + "1\n", "x = a" + ".b" * 15000 + "\n",
     "x = " + "lambda:" * 4000 + "1\n", "x = (" + "1," * 15000 + ")\n"],
    ids=["unary", "sum", "attributes", "lambdas", "tuple"],
)
def test_pathological_programs_compile_or_are_left_to_their_process(code: str) -> None:
    result = agent_bytecode.compiled(code)  # never raises: a refusal here only means the process compiles
    assert result is None or runner._unmarshal(result) is not None
