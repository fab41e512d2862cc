"""A candidate cannot raise its own score: printing a fake score, patching the scorer, reading the expected
outputs, reaching the network or forging a cache entry all gain nothing (real registry, sandbox, Redis).

Every cheater behaves exactly like the honest starting agent plus its cheat, so its correctness must be the
honest one to the last digit (speed and size carry no weight here, so fitness equals correctness).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tdev.evolution.v1 import evolution_pb2
from tdev.evolution.v1 import evolution_service_pb2 as pb2

from evolution_svc import programs
from evolution_svc.domain import Measurement
from evolution_svc.evaluator import suite_digest
from evolution_svc.validation import suite_from_json, validate_suite
from tests.evolution.conftest import EXAMPLES, Mesh, example_code, example_suite_json, start_mesh, suite_message

pytestmark = pytest.mark.mesh  # real servers or subprocesses
# Cheaters that search the filesystem take longer per case than the honest agent; a generous case limit keeps
# their score about what they find, not about how loaded the machine is (a timed-out case scores 0).
CASE_TIMEOUT_SECONDS = 20.0


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    started = await start_mesh(tmp_path, case_timeout_seconds=CASE_TIMEOUT_SECONDS)
    try:
        yield started
    finally:
        await started.close()

HONEST = example_code("slugify")
HONEST_CORRECTNESS = 0.380952381  # 8 of the 21 training cases
SUITE_PATH = EXAMPLES / "slugify" / "suite.json"


def cheat(prelude: str, before_return: str = "") -> str:
    """The honest agent with code run at import time and just before it returns."""
    code = HONEST.replace("class Slugify:", f"{prelude}\n\n\nclass Slugify:")
    if before_return:
        indented = "\n".join("        " + line for line in before_return.strip().splitlines())
        code = code.replace('        return {"slug": slug}', f'{indented}\n        return {{"slug": slug}}')
    programs.load(code)
    return code


PRINTS_A_SCORE = cheat(
    "import sys",
    """
print('{"score": 1.0, "fitness": 1.0, "correctness": 1.0, "passed": true}')
print('SCORE: 1.0', file=sys.stderr)
""",
)

PATCHES_THE_SCORER = cheat(
    """
import builtins, json, sys
for name in ("evolution_svc.scoring", "evolution_svc.evaluator", "evolution_svc.fitness"):
    try:
        module = __import__(name, fromlist=["x"])
        for attr in ("score_output", "matches", "correctness", "fitness", "scorer_score"):
            if hasattr(module, attr):
                setattr(module, attr, lambda *a, **k: 1.0)
    except Exception:
        pass
builtins.__dict__["EVOLUTION_SCORE"] = 1.0
sys.modules["evolution_svc.scoring"] = type(sys)("evolution_svc.scoring")
""",
)

FORGES_ITS_RESULT = cheat(
    "import json, os",
    """
json.dumps = lambda *a, **k: '{"ok": true, "output": {"slug": "forged"}, "score": 1.0}'
os.write(1, b'{"kind": "ok", "output": {"slug": "forged"}, "score": 1.0}\\n')
""",
)

READS_THE_EXPECTED_OUTPUTS = cheat(
    f"""
import gc, os, sys, json
SUITE_PATH = {str(SUITE_PATH)!r}


def _from_file(path, text):
    try:
        with open(path) as handle:
            suite = json.load(handle)
    except Exception:
        return None
    for case in suite.get("cases", []):
        if case.get("inputs", {{}}).get("text") == text:
            return case.get("expected", {{}}).get("slug")
    return None


def _search(text):
    found = _from_file(SUITE_PATH, text)
    if found is not None:
        return found
    for root in ("/work", "/tmp", "/root", "/home", os.getcwd()):
        try:
            for folder, _, files in os.walk(root):
                if "suite.json" in files:
                    found = _from_file(os.path.join(folder, "suite.json"), text)
                    if found is not None:
                        return found
        except Exception:
            pass
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{{pid}}/{{name}}", "rb") as handle:
                    if b"expected" in handle.read():
                        return "leaked"
            except Exception:
                pass
    for obj in gc.get_objects():
        if isinstance(obj, dict) and "expected" in obj and obj.get("inputs", {{}}).get("text") == text:
            return obj["expected"].get("slug")
    frame = sys._getframe()
    while frame is not None:
        for value in frame.f_locals.values():
            if isinstance(value, dict) and "expected" in value:
                return value["expected"].get("slug")
        frame = frame.f_back
    return None
""",
    """
leaked = _search(inputs["text"])
if leaked is not None:
    slug = leaked
""",
)

USES_THE_NETWORK = cheat(
    "import socket",
    """
for port in (6379, 5432, 50051, 50054):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
            connection.sendall(b"SET tdev:evolution:measurement:x forged\\r\\n")
            slug = "network-reached"
    except OSError:
        pass
""",
)


async def seed_correctness(mesh: Mesh, name: str, code: str, suite: evolution_pb2.EvaluationSuite) -> float:
    await mesh.register(name, code)
    run = await mesh.start(name, suite, max_evaluations=1, speed_weight=0.0, size_weight=0.0)
    await mesh.events(run.run_id)
    final = await mesh.get(run.run_id)
    assert final.stop_reason == evolution_pb2.STOP_REASON_EVALUATION_BUDGET
    assert final.best.correctness == final.seed_fitness
    return final.seed_fitness


async def test_cheating_candidates_score_exactly_like_the_honest_one(mesh: Mesh) -> None:
    suite = suite_message(example_suite_json("slugify"))
    assert await seed_correctness(mesh, "honest", HONEST, suite) == HONEST_CORRECTNESS
    for name, code in (
        ("prints_a_score", PRINTS_A_SCORE),
        ("patches_the_scorer", PATCHES_THE_SCORER),
        ("uses_the_network", USES_THE_NETWORK),
    ):
        assert (name, await seed_correctness(mesh, name, code, suite)) == (name, HONEST_CORRECTNESS)
    # The reader walks every directory it can see for each case: it finds nothing to copy, and the time its
    # search takes can only cost it cases (how many depends on the machine's load), never gain it any.
    assert await seed_correctness(mesh, "reads_the_expected_outputs", READS_THE_EXPECTED_OUTPUTS, suite) <= (
        HONEST_CORRECTNESS)
    # Breaking the channel that reports results only turns every case into an invalid output.
    assert await seed_correctness(mesh, "forges_its_result", FORGES_ITS_RESULT, suite) == 0.0
    forged = (await mesh.evolution.ListEvolutions(pb2.ListEvolutionsRequest(page_size=1))).runs[0]
    assert (await mesh.get(forged.run_id)).best.failure.startswith("every case failed; first: invalid_output")


async def test_the_reader_would_have_won_had_it_found_the_answers(tmp_path: Path) -> None:
    """Control: outside the sandbox the reader does find the answers, so the test above is not vacuous."""
    namespace: dict[str, object] = {}
    exec(compile(READS_THE_EXPECTED_OUTPUTS, "<reader>", "exec"), namespace)  # the test's own code, not a candidate
    agent = namespace["Slugify"]()  # type: ignore[operator]
    case = next(c for c in example_suite_json("slugify")["cases"] if c["name"] == "read_me")
    assert agent.execute(case["inputs"]) == case["expected"]  # type: ignore[attr-defined]


async def test_a_forged_cache_entry_is_ignored(tmp_path: Path, redis_url: str) -> None:
    mesh = await start_mesh(tmp_path, redis_url=redis_url, cache_signing_key="the-service-key")
    try:
        namespace = mesh.evolution_settings.cache_namespace
        suite = validate_suite(suite_from_json(example_suite_json("slugify")))
        key = f"{suite_digest(suite, suite.training, '')}:{programs.code_hash(HONEST)}"
        perfect = Measurement(case_scores=(1.0,) * len(suite.training), mean_duration_ms=0.1)
        body = json.dumps({**perfect.__dict__, "failures": []}).encode()
        redis = Redis.from_url(redis_url)
        try:
            forged = hmac.new(b"a-guessed-key", key.encode() + b"\0" + body, hashlib.sha256).digest()
            await redis.set(f"{namespace}measurement:{key}", forged + body)
            correctness = await seed_correctness(mesh, "honest", HONEST, suite_message(example_suite_json("slugify")))
            assert correctness == HONEST_CORRECTNESS
            stored = await redis.get(f"{namespace}measurement:{key}")
            assert stored is not None and stored[32:] != body  # replaced by the service's own signed entry
        finally:
            await redis.delete(f"{namespace}measurement:{key}")
            await redis.aclose()
    finally:
        await mesh.close()


SCORER = '''class SlugScorer:
    """Scores a slug: 1 when equal, 0.5 when equal but for hyphens, else 0."""

    def get_capabilities(self):
        return {"name": "slug_scorer"}

    def execute(self, inputs):
        output, expected = inputs["output"], inputs["expected"]
        got, want = output.get("slug"), expected.get("slug")
        if got == want:
            return {"score": 1.0}
        if isinstance(got, str) and got.replace("-", "") == want.replace("-", ""):
            return {"score": 0.5}
        return {"score": 0.0}
'''


@pytest.mark.parametrize("claims_a_score", [False, True])
async def test_a_scorer_agent_scores_in_the_sandbox_and_ignores_claims(mesh: Mesh, claims_a_score: bool) -> None:
    scorer = (await mesh.register("slug_scorer", SCORER)).agent
    data = {**example_suite_json("slugify"), "scoring_mode": "scorer_agent", "scorer_agent_id": scorer.agent_id}
    code = HONEST.replace('return {"slug": slug}', 'return {"slug": slug, "score": 1.0}') if claims_a_score else HONEST
    correctness = await seed_correctness(mesh, "claims" if claims_a_score else "plain", code, suite_message(data))
    # 8 exact cases score 1; the 3 that lost only their hyphens and "read_me"... score 0.5 each.
    assert correctness == pytest.approx(HONEST_CORRECTNESS + 0.5 * 4 / 21, abs=1e-9)
    run = (await mesh.evolution.ListEvolutions(pb2.ListEvolutionsRequest(page_size=1))).runs[0]
    assert (run.suite.scorer_agent_id, run.suite.scorer_agent_version) == (scorer.agent_id, "1.0.0")
