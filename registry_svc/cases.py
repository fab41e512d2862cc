"""Production cases: what agents received and answered in production, captured with execution records, and
the expected outputs callers label them with (evolution suites are built from these)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog

from registry_svc.domain import AgentCase, CaseFilter, ExecutionRecord
from registry_svc.ports import Repository
from tdev_common import paging
from tdev_common.errors import NotFound, invalid_field, require
from tdev_common.paging import Page

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CaseLimits:
    """Size caps and retention of captured cases."""

    max_case_bytes: int = 64 * 1024
    max_cases_per_version: int = 1000


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def fit_case(record: ExecutionRecord, limits: CaseLimits) -> ExecutionRecord:
    """The record with its case kept only if the case is within the size cap: an oversized case is dropped
    (and logged) rather than failing the batch of records it came with."""
    case = record.case
    if case is None:
        return record
    size = _size(case.inputs) + _size(case.output) + len(case.error_message.encode())
    if size <= limits.max_case_bytes:
        return record
    log.info("case_not_kept_too_large", execution_id=record.execution_id, agent_id=record.agent_id,
             size_bytes=size, limit_bytes=limits.max_case_bytes)
    return replace(record, case=None)


class CaseService:
    """List, label and delete the production cases of agents."""

    def __init__(self, repository: Repository, limits: CaseLimits, clock: Callable[[], datetime]) -> None:
        self._repository = repository
        self._limits = limits
        self._clock = clock

    async def list_cases(self, agent_id: str, version: str, which: CaseFilter, size: int,
                         after: list[Any] | None) -> Page[AgentCase]:
        """One page of an agent's cases, newest first.

        Raises:
            InvalidArgument: no agent_id or a bad page size.
            NotFound: no such agent.
        """
        require("agent_id", agent_id)
        page_size = paging.page_size(size)
        if await self._repository.identity(agent_id=agent_id, name="") is None:
            raise NotFound(f'unknown agent "{agent_id}"', reason="AGENT_NOT_FOUND")
        return await self._repository.list_cases(agent_id, version, which, page_size, after)

    async def label(self, case_id: str, expected: dict[str, Any] | None) -> AgentCase:
        """Records the output a case should have had (again: replaces it).

        Raises:
            InvalidArgument: no case_id, no expected output or one over the size cap.
            NotFound: no such case.
        """
        require("case_id", case_id)
        if expected is None:
            raise invalid_field("expected", "is required: the output the agent should have returned",
                                reason="FIELD_REQUIRED")
        if _size(expected) > self._limits.max_case_bytes:
            raise invalid_field("expected", f"{_size(expected)} bytes; the limit is {self._limits.max_case_bytes}",
                                reason="CASE_TOO_LARGE")
        labelled = await self._repository.label_case(case_id, expected, self._clock())
        if labelled is None:
            raise NotFound(f'unknown case "{case_id}"', reason="CASE_NOT_FOUND")
        return labelled

    async def delete(self, case_id: str) -> None:
        """Deletes a case for good.

        Raises:
            InvalidArgument: no case_id.
            NotFound: no such case.
        """
        require("case_id", case_id)
        if not await self._repository.delete_case(case_id):
            raise NotFound(f'unknown case "{case_id}"', reason="CASE_NOT_FOUND")
