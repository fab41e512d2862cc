"""Registry use-cases on the in-memory repository: register, replay, versions, labels, reads, records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from registry_svc.domain import (
    ExecutionRecord,
    LabelUpdate,
    ListQuery,
    OrderBy,
    RegisterCommand,
    Selector,
    VersionRef,
)
from registry_svc.service import Limits, RegistryService
from tdev_common.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tests.unit.agents import tiny_agent
from tests.unit.fakes.registry import FakeInspector, FakeRepository, RecordingListener

START = datetime(2025, 1, 1, tzinfo=UTC)


class Clock:
    """Advances one second per reading: every write gets a distinct, ordered time."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def repository() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def inspector() -> FakeInspector:
    return FakeInspector()


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def service(repository: FakeRepository, inspector: FakeInspector, listener: RecordingListener) -> RegistryService:
    return RegistryService(repository, inspector, listener, clock=Clock())


def violations(error: DomainError) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in error.violations]


# ---- RegisterAgent ----------------------------------------------------------------------------------


async def test_register_new_agent_stores_version_1_0_0_and_tells_the_listener(
        service: RegistryService, listener: RecordingListener) -> None:
    registered = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), labels={"team": "x"}))
    agent = registered.agent
    assert (registered.created, agent.name, agent.version, agent.class_name) == (True, "tiny", "1.0.0", "Tiny")
    assert agent.agent_id.startswith("agent_") and len(agent.agent_id) == len("agent_") + 12
    assert agent.declared_capabilities == {"name": "a", "tags": ["tiny"]}
    assert dict(agent.labels) == {"team": "x"}
    assert listener.changes == [(agent.agent_id, ["1.0.0"])]


async def test_register_same_code_is_answered_without_loading_it_in_the_sandbox_again(
        service: RegistryService, inspector: FakeInspector, listener: RecordingListener) -> None:
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    again = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    assert (again.created, again.agent.ref) == (False, first.agent.ref)
    assert inspector.calls == 1
    assert listener.changes == [(first.agent.agent_id, ["1.0.0"])]


# The fingerprint is opaque to the use-case (the servicer computes it from the request message): any string
# stands for "this request", another string for a different one.


async def test_register_replayed_request_id_returns_the_first_version(
        service: RegistryService, repository: FakeRepository, inspector: FakeInspector) -> None:
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), request_id="req-1",
                                                   fingerprint="request-a"))
    replay = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), request_id="req-1",
                                                    fingerprint="request-a"))
    assert (first.created, replay.created, replay.agent.ref) == (True, False, first.agent.ref)
    assert (len(repository.rows), inspector.calls) == (1, 1)
    assert repository.requests == {"req-1": (first.agent.ref, "request-a")}


async def test_register_request_id_reused_for_other_code_is_request_id_reused_and_stores_nothing(
        service: RegistryService, repository: FakeRepository, listener: RecordingListener) -> None:
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), request_id="req-1",
                                                   fingerprint="request-a"))
    with pytest.raises(InvalidArgument) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("b"), request_id="req-1",
                                               fingerprint="request-b"))
    problem = (f"was used before for a different request (the one that made agent version {first.agent.ref}); "
               "send the same request to replay it, or a new request id for a new request")
    assert (caught.value.reason, violations(caught.value)) == ("REQUEST_ID_REUSED", [("request_id", problem)])
    assert caught.value.message == f"request_id 'req-1' {problem}"
    assert len(repository.rows) == 1
    assert listener.changes == [(first.agent.agent_id, ["1.0.0"])]


async def test_register_request_id_stored_without_a_fingerprint_replays_for_any_request(
        service: RegistryService, repository: FakeRepository) -> None:
    # A request id remembered before fingerprints existed has none: a replay of it keeps working.
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), request_id="req-1"))
    assert repository.requests == {"req-1": (first.agent.ref, None)}
    replay = await service.register(RegisterCommand(name="tiny", code=tiny_agent("b"), request_id="req-1",
                                                    fingerprint="request-b"))
    assert (replay.created, replay.agent.ref, replay.agent.code) == (False, first.agent.ref, tiny_agent("a"))
    assert len(repository.rows) == 1


async def test_register_same_code_under_a_new_request_id_remembers_that_request(
        service: RegistryService, repository: FakeRepository) -> None:
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), request_id="req-2",
                                           fingerprint="request-a"))
    assert repository.requests == {"req-2": (first.agent.ref, "request-a")}


async def test_register_same_code_under_a_reused_request_id_is_request_id_reused(
        service: RegistryService, repository: FakeRepository) -> None:
    # req-1 made tiny@1.0.0; the same code sent again as another request under req-1 is refused, even
    # though the code exists already.
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), request_id="req-1",
                                                   fingerprint="request-a"))
    with pytest.raises(InvalidArgument) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), labels={"x": "1"},
                                               request_id="req-1", fingerprint="request-a-labelled"))
    assert (caught.value.reason, caught.value.violations[0].field) == ("REQUEST_ID_REUSED", "request_id")
    assert repository.requests == {"req-1": (first.agent.ref, "request-a")}


async def test_register_changed_code_makes_the_next_minor_version_with_the_same_agent_id(
        service: RegistryService) -> None:
    first = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    second = await service.register(RegisterCommand(name="tiny", code=tiny_agent("b")))
    assert (second.created, second.agent.agent_id, second.agent.version) == (True, first.agent.agent_id, "1.1.0")
    latest = await service.get_agent(Selector(name="tiny"))
    assert latest.version == "1.1.0"


async def test_register_explicit_higher_version_is_kept(service: RegistryService) -> None:
    await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    second = await service.register(RegisterCommand(name="tiny", code=tiny_agent("b"), version="3.0.0"))
    assert second.agent.version == "3.0.0"


async def test_register_existing_version_with_other_code_is_already_exists(service: RegistryService) -> None:
    await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    with pytest.raises(AlreadyExists) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("b"), version="1.0.0"))
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.ALREADY_EXISTS, "VERSION_EXISTS")
    assert caught.value.metadata == {"name": "tiny", "version": "1.0.0"}
    assert caught.value.message == ("tiny 1.0.0 exists with different code; "
                                    "leave version empty for the next minor version")


async def test_register_lower_version_is_invalid_with_a_version_violation(service: RegistryService) -> None:
    await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), version="2.0.0"))
    with pytest.raises(InvalidArgument) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("b"), version="1.5.0"))
    assert caught.value.reason == "INVALID_FIELD"
    assert violations(caught.value) == [
        ("version", "1.5.0 is not higher than the latest version 2.0.0 of tiny")]


@pytest.mark.parametrize(("command", "reason", "field", "problem"), [
    (RegisterCommand(name="bad name!", code=tiny_agent("a")), "INVALID_FIELD", "name",
     '"bad name!" must be 1 to 100 letters, digits, "_", "-" or "."'),
    (RegisterCommand(name="tiny", code=tiny_agent("a"), version="1.x"), "INVALID_FIELD", "version",
     '"1.x" is not a semantic version like 1.2.0'),
    (RegisterCommand(name="tiny", code=""), "INVALID_CODE", "code", "source is empty"),
    (RegisterCommand(name="tiny", code="def f(:\n"), "INVALID_CODE", "code",
     "line 1, column 7: syntax error: invalid syntax"),
    (RegisterCommand(name="tiny", code=tiny_agent("a"), parents=(VersionRef("agent_x", ""),)), "INVALID_FIELD",
     "parents[0]", "agent_id and version are both required"),
])
async def test_register_bad_request_is_invalid_argument_naming_the_field(
        service: RegistryService, repository: FakeRepository, command: RegisterCommand, reason: str, field: str,
        problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.register(command)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert violations(caught.value) == [(field, problem)]
    assert caught.value.message == f"{field}: {problem}"
    assert repository.rows == {}


async def test_register_code_over_the_size_limit_is_invalid(repository: FakeRepository) -> None:
    service = RegistryService(repository, FakeInspector(), RecordingListener(), limits=Limits(max_code_bytes=100))
    code = tiny_agent("a")
    with pytest.raises(InvalidArgument) as caught:
        await service.register(RegisterCommand(name="tiny", code=code))
    assert (caught.value.reason, violations(caught.value)) == (
        "INVALID_CODE", [("code", f"source is {len(code)} bytes; the limit is 100 bytes")])


async def test_register_unknown_parent_is_invalid_and_loads_nothing(
        service: RegistryService, inspector: FakeInspector) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"),
                                               parents=(VersionRef("agent_000000000000", "1.0.0"),)))
    assert (caught.value.reason, violations(caught.value)) == (
        "INVALID_FIELD", [("parents[0]", "unknown agent version agent_000000000000@1.0.0")])
    assert inspector.calls == 0


async def test_register_sandbox_failure_is_invalid_argument_and_stores_nothing(
        service: RegistryService, repository: FakeRepository) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("a") + "# crash-in-sandbox\n"))
    assert caught.value.message == "code: loading Tiny in the sandbox failed: RuntimeError: boom"
    assert caught.value.reason == "INVALID_CODE"
    assert caught.value.violations == (
        FieldViolation("code", "loading Tiny in the sandbox failed: RuntimeError: boom"),)
    assert await repository.count_agents() == 0


async def test_register_new_agent_beyond_max_agents_is_resource_exhausted(repository: FakeRepository) -> None:
    service = RegistryService(repository, FakeInspector(), RecordingListener(), limits=Limits(max_agents=1))
    await service.register(RegisterCommand(name="one", code=tiny_agent("a")))
    await service.register(RegisterCommand(name="one", code=tiny_agent("b")))  # a new version is not a new agent
    with pytest.raises(ResourceExhausted) as caught:
        await service.register(RegisterCommand(name="two", code=tiny_agent("c")))
    assert (caught.value.reason, caught.value.message) == (
        "AGENT_LIMIT_REACHED", "the registry holds its limit of 1 agents")


async def test_register_with_parents_records_lineage(service: RegistryService) -> None:
    parent = (await service.register(RegisterCommand(name="base", code=tiny_agent("a")))).agent
    child = (await service.register(RegisterCommand(name="child", code=tiny_agent("b"), parents=(parent.ref,)))).agent
    lineage = await service.lineage(child.agent_id, child.version, 0)
    assert lineage.root == child.ref
    assert [(e.child, e.parent) for e in lineage.edges] == [(child.ref, parent.ref)]
    assert sorted(a.ref for a in lineage.agents) == sorted([child.ref, parent.ref])


async def test_register_retries_when_a_racing_writer_wins(
        service: RegistryService, repository: FakeRepository) -> None:
    repository.conflicts = 2
    registered = await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    assert (registered.created, registered.agent.version, repository.conflicts) == (True, "1.0.0", 0)


async def test_register_gives_up_with_aborted_when_races_never_end(repository: FakeRepository) -> None:
    repository.conflicts = 100
    service = RegistryService(repository, FakeInspector(), RecordingListener(), limits=Limits(register_attempts=3))
    with pytest.raises(Aborted) as caught:
        await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    assert (caught.value.reason, caught.value.message) == (
        "CONCURRENT_UPDATE", "registrations of tiny kept racing; retry the request")
    assert repository.conflicts == 97


# ---- UpdateAgentLabels ------------------------------------------------------------------------------


async def test_update_labels_sets_and_removes_and_moves_update_time(
        service: RegistryService, listener: RecordingListener) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), labels={"a": "1"}))).agent
    listener.changes.clear()
    updated = await service.update_labels(LabelUpdate(agent.ref, set_labels={"b": "2"}, remove_labels=("a",)))
    assert dict(updated.labels) == {"b": "2"}
    assert updated.update_time > agent.update_time
    assert listener.changes == [(agent.agent_id, ["1.0.0"])]


async def test_update_labels_without_a_change_keeps_update_time_and_tells_nobody(
        service: RegistryService, listener: RecordingListener) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"), labels={"a": "1"}))).agent
    listener.changes.clear()
    same = await service.update_labels(LabelUpdate(agent.ref, set_labels={"a": "1"}))
    assert same.update_time == agent.update_time
    assert listener.changes == []


async def test_update_labels_replayed_request_id_changes_nothing(service: RegistryService) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))).agent
    await service.update_labels(LabelUpdate(agent.ref, set_labels={"a": "1"}, request_id="r"))
    await service.update_labels(LabelUpdate(agent.ref, set_labels={"a": "2"}, request_id="other"))
    replay = await service.update_labels(LabelUpdate(agent.ref, set_labels={"a": "1"}, request_id="r"))
    assert dict(replay.labels) == {"a": "2"}


async def test_update_labels_request_id_reused_for_another_change_is_invalid(service: RegistryService) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))).agent
    await service.update_labels(LabelUpdate(agent.ref, set_labels={"a": "1"}, request_id="r"))
    with pytest.raises(InvalidArgument) as caught:
        await service.update_labels(LabelUpdate(agent.ref, set_labels={"a": "9"}, request_id="r"))
    problem = (f"was used before for a different request (the one that made a label change of {agent.ref}); "
               "send the same request to replay it, or a new request id for a new request")
    assert (caught.value.reason, violations(caught.value)) == ("REQUEST_ID_REUSED", [("request_id", problem)])
    assert caught.value.message == f"request_id 'r' {problem}"
    assert dict((await service.get_agent(Selector(agent_id=agent.agent_id))).labels) == {"a": "1"}


async def test_update_labels_beyond_the_limit_is_invalid_and_writes_nothing(service: RegistryService) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a"),
                                                    labels={f"k{i}": "v" for i in range(30)}))).agent
    with pytest.raises(InvalidArgument) as caught:
        await service.update_labels(LabelUpdate(agent.ref, set_labels={f"n{i}": "v" for i in range(40)}))
    assert (caught.value.reason, violations(caught.value)) == (
        "INVALID_FIELD", [("set_labels", "the version would carry 70 labels; the limit is 64")])
    assert len((await service.get_agent(Selector(agent_id=agent.agent_id))).labels) == 30


async def test_update_labels_of_unknown_agent_or_version_is_not_found(service: RegistryService) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))).agent
    with pytest.raises(NotFound) as unknown_agent:
        await service.update_labels(LabelUpdate(VersionRef("agent_000000000000", "1.0.0"), set_labels={"a": "1"}))
    assert (unknown_agent.value.reason, unknown_agent.value.message) == (
        "AGENT_NOT_FOUND", "no agent with agent_id agent_000000000000")
    with pytest.raises(NotFound) as unknown_version:
        await service.update_labels(LabelUpdate(VersionRef(agent.agent_id, "9.0.0"), set_labels={"a": "1"}))
    assert (unknown_version.value.reason, unknown_version.value.message) == (
        "AGENT_VERSION_NOT_FOUND", f"agent with agent_id {agent.agent_id} has no version 9.0.0")


async def test_update_labels_with_nothing_to_change_is_invalid(service: RegistryService) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.update_labels(LabelUpdate(VersionRef("agent_x", "1.0.0")))
    assert (caught.value.reason, violations(caught.value)) == (
        "INVALID_FIELD", [("set_labels", "nothing to change: give set_labels or remove_labels")])


# ---- reads and lists --------------------------------------------------------------------------------


async def test_get_agent_without_id_or_name_is_invalid_and_unknown_is_not_found(service: RegistryService) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.get_agent(Selector())
    assert (caught.value.reason, violations(caught.value)) == (
        "FIELD_REQUIRED", [("agent_id", "is required (or give name instead)")])
    assert caught.value.message == "agent_id: is required (or give name instead)"
    with pytest.raises(NotFound) as missing:
        await service.get_agent(Selector(name="nobody"))
    assert (missing.value.reason, missing.value.message) == ("AGENT_NOT_FOUND", "no agent with name nobody")


async def test_get_agent_without_code_leaves_code_out(service: RegistryService) -> None:
    await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))
    assert (await service.get_agent(Selector(name="tiny"), include_code=False)).code is None
    assert (await service.get_agent(Selector(name="tiny", version="1.0.0"))).code == tiny_agent("a")


async def test_list_versions_pages_newest_first(service: RegistryService) -> None:
    for tag in "abcde":
        await service.register(RegisterCommand(name="tiny", code=tiny_agent(tag)))
    first = await service.list_versions(Selector(name="tiny"), 2, None)
    second = await service.list_versions(Selector(name="tiny"), 2, first.after)
    last = await service.list_versions(Selector(name="tiny"), 2, second.after)
    assert [[v.version for v in page.items] for page in (first, second, last)] == [
        ["1.4.0", "1.3.0"], ["1.2.0", "1.1.0"], ["1.0.0"]]
    assert last.after is None
    assert all(v.code is None for v in first.items)


async def test_list_versions_of_unknown_agent_is_not_found(service: RegistryService) -> None:
    with pytest.raises(NotFound) as caught:
        await service.list_versions(Selector(name="nobody"), 10, None)
    assert (caught.value.reason, caught.value.message) == ("AGENT_NOT_FOUND", "no agent with name nobody")


async def test_list_agents_pages_latest_versions_by_update_time_without_overlap(service: RegistryService) -> None:
    for name in ("a1", "a2", "a3"):
        await service.register(RegisterCommand(name=name, code=tiny_agent(name)))
    await service.register(RegisterCommand(name="a1", code=tiny_agent("a1-new")))
    first = await service.list_agents(ListQuery(page_size=2, order=OrderBy.UPDATED))
    second = await service.list_agents(ListQuery(page_size=2, order=OrderBy.UPDATED, after=first.after))
    assert [(a.name, a.version) for a in [*first.items, *second.items]] == [
        ("a1", "1.1.0"), ("a3", "1.0.0"), ("a2", "1.0.0")]
    assert second.after is None


async def test_list_agents_negative_page_size_and_bad_quality_are_invalid(service: RegistryService) -> None:
    with pytest.raises(InvalidArgument) as size:
        await service.list_agents(ListQuery(page_size=-1))
    assert (size.value.reason, violations(size.value)) == (
        "INVALID_PAGE_SIZE", [("page_size", "must not be negative (got -1)")])
    with pytest.raises(InvalidArgument) as quality:
        await service.list_agents(ListQuery(min_quality=1.5))
    assert (quality.value.reason, violations(quality.value)) == (
        "INVALID_FIELD", [("min_quality_score", "must be in [0, 1] (got 1.5)")])


async def test_search_ranks_by_text_overlap_and_rejects_an_empty_query(service: RegistryService) -> None:
    await service.register(RegisterCommand(name="word-counter", code=tiny_agent("w"), description="counts words"))
    await service.register(RegisterCommand(name="summer", code=tiny_agent("s"), description="adds numbers"))
    hits = await service.search("count words", 5, 0.0)
    assert [(h.agent.name, h.matcher) for h in hits] == [("word-counter", "token-overlap")]
    with pytest.raises(InvalidArgument) as caught:
        await service.search("   ", 5, 0.0)
    assert (caught.value.reason, violations(caught.value)) == ("INVALID_FIELD", [("query", "must not be empty")])


# ---- RecordExecutions -------------------------------------------------------------------------------


async def test_record_executions_aggregates_and_ignores_repeated_ids(
        service: RegistryService, listener: RecordingListener) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))).agent
    await service.register(RegisterCommand(name="tiny", code=tiny_agent("b")))
    listener.changes.clear()
    result = await service.record_executions([
        ExecutionRecord("e1", agent.agent_id, "1.0.0", True, 10.0, tokens=5, cost_usd=0.25),
        ExecutionRecord("e2", agent.agent_id, "1.1.0", False, 20.0),
        ExecutionRecord("e1", agent.agent_id, "1.0.0", True, 10.0),
        ExecutionRecord("e3", agent.agent_id, "1.0.0", False, 30.0, tokens=1, cost_usd=0.5),
    ])
    assert (result.accepted, result.duplicates) == (3, 1)
    assert listener.changes == [(agent.agent_id, ["1.0.0", "1.1.0"])]
    again = await service.record_executions([ExecutionRecord("e3", agent.agent_id, "1.0.0", False, 30.0)])
    assert (again.accepted, again.duplicates) == (0, 1)
    metrics = (await service.get_agent(Selector(agent_id=agent.agent_id, version="1.0.0"))).metrics
    assert (metrics.execution_count, metrics.success_count, metrics.failure_count) == (2, 1, 1)
    assert (metrics.average_duration_ms, metrics.p95_duration_ms) == (20.0, 30.0)
    assert (metrics.total_tokens, metrics.total_cost_usd) == (6, 0.75)


async def test_record_executions_for_unknown_version_is_not_found_and_writes_nothing(
        service: RegistryService, repository: FakeRepository) -> None:
    agent = (await service.register(RegisterCommand(name="tiny", code=tiny_agent("a")))).agent
    with pytest.raises(NotFound) as caught:
        await service.record_executions([ExecutionRecord("e1", agent.agent_id, "1.0.0", True, 1.0),
                                         ExecutionRecord("e2", agent.agent_id, "2.0.0", True, 1.0)])
    assert (caught.value.reason, caught.value.message) == (
        "AGENT_VERSION_NOT_FOUND", f"unknown agent versions: records[1]: {agent.agent_id}@2.0.0")
    assert repository.executions == {}


@pytest.mark.parametrize(("record", "reason", "field", "problem"), [
    (ExecutionRecord("", "agent_x", "1.0.0", True, 1.0), "FIELD_REQUIRED", "records[0].execution_id",
     "1 to 128 characters required"),
    (ExecutionRecord("e", "", "1.0.0", True, 1.0), "FIELD_REQUIRED", "records[0].agent_id", "is required"),
    (ExecutionRecord("e" * 129, "agent_x", "1.0.0", True, 1.0), "INVALID_FIELD", "records[0].execution_id",
     "1 to 128 characters required"),
    (ExecutionRecord("e", "agent_x", "1.0.0", True, float("nan")), "INVALID_FIELD", "records[0].duration_ms",
     "must be a finite number >= 0 (got nan)"),
    (ExecutionRecord("e", "agent_x", "1.0.0", True, 1.0, tokens=-1), "INVALID_FIELD", "records[0].tokens",
     "must not be negative (got -1)"),
])
async def test_record_executions_malformed_record_is_invalid_naming_it(
        service: RegistryService, record: ExecutionRecord, reason: str, field: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service.record_executions([record])
    assert (caught.value.reason, violations(caught.value)) == (reason, [(field, problem)])
