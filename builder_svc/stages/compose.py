"""Stage 4, compose: the workflow definition of the plan's data flow, created in the workflow service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from builder_svc import composition
from builder_svc.domain import BuildError, Stage, WorkflowRef
from builder_svc.stages.base import BuildFailed, StageBody, StageOutcome, service_id_of
from tdev_common.errors import InvalidArgument

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun


class Compose(StageBody):
    """One node per agent pinned to its version; version ``1.<round - 1>.0``; idempotent per build and round."""

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        round_number = attempt
        saved = run.checkpoint
        build_id = run.build.build_id
        definition = composition.compose(
            build_id, service_id_of(build_id), composition.workflow_version(round_number), run.build.requirements,
            saved.plan or {}, {spec_id: chosen.to_json() for spec_id, chosen in saved.agents.items()},
            self._settings.node_timeout_seconds)
        try:
            stored = await self._tools.workflows.create(definition, f"{build_id}:compose:{round_number}")
        except InvalidArgument as invalid:
            raise BuildFailed(BuildError("FAILED_PRECONDITION", "the workflow service rejected the composed "
                                         f"workflow: {invalid.message}", Stage.COMPOSE)) from None
        summary = (f"workflow {stored.workflow_id} version {stored.version}: {len(definition.nodes)} nodes, "
                   f"outputs {', '.join(definition.outputs)}")
        workflow = WorkflowRef(stored.workflow_id, stored.version).to_json()
        return StageOutcome(summary, {**workflow, "definition": definition.to_json()}, {"workflow": workflow})
