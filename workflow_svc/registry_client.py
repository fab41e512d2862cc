"""The registry port over gRPC: GetAgent (by id or name) and batched RecordExecutions."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import structlog

from tdev_common.errors import from_rpc_error
from workflow_svc import convert
from workflow_svc.domain import AgentInfo, AgentRef, AliasTarget, OutcomeRecord
from workflow_svc.ports import AgentNotFound

log = structlog.get_logger(__name__)
_REJECTED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


class GrpcRegistry:
    """Calls tdev.registry.v1.RegistryService on an open channel."""

    def __init__(self, channel: grpc.aio.Channel, deadline_seconds: float) -> None:
        self._stub = convert.registry_stub(channel)
        self._deadline = deadline_seconds

    async def get_agent(self, ref: AgentRef, *, with_code: bool) -> AgentInfo:
        """One agent version by id or name.

        Raises:
            AgentNotFound: neither an id nor a name matches (or the version does not exist).
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        for request in convert.get_agent_requests(ref, with_code=with_code):
            try:
                response = await self._stub.GetAgent(request, timeout=self._deadline)
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    continue
                raise from_rpc_error(error, context="registry GetAgent") from error
            return convert.agent_info(response.agent)
        what = f'agent "{ref.agent}" has no version "{ref.version}"' if ref.version else f'unknown agent "{ref.agent}"'
        raise AgentNotFound(what)

    async def aliases(self, agent_id: str) -> dict[str, AliasTarget]:
        """The agent's aliases by name.

        Raises:
            AgentNotFound: no such agent.
            tdev_common.errors.Unavailable: the registry cannot be reached.
        """
        try:
            response = await self._stub.ListAgentAliases(convert.aliases_request(agent_id), timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise AgentNotFound(f'unknown agent "{agent_id}"') from error
            raise from_rpc_error(error, context="registry ListAgentAliases") from error
        return convert.alias_targets(response)

    async def record(self, records: Sequence[OutcomeRecord]) -> None:
        """Reports outcomes; records the registry rejects for good are logged and dropped.

        Raises:
            tdev_common.errors.DomainError: the registry is unavailable (the caller keeps the records).
        """
        try:
            await self._stub.RecordExecutions(convert.record_request(records), timeout=self._deadline)
            return
        except grpc.aio.AioRpcError as error:
            if error.code() not in _REJECTED:
                raise from_rpc_error(error, context="registry RecordExecutions") from error
        # One bad record (an agent version deleted since) must not hold back the rest.
        for record in records:
            try:
                await self._stub.RecordExecutions(convert.record_request([record]), timeout=self._deadline)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _REJECTED:
                    raise from_rpc_error(error, context="registry RecordExecutions") from error
                log.warning("outcome_rejected", record_id=record.record_id, reason=error.details())
