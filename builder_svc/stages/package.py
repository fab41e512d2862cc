"""Stage 6, package: the service package (workflow, agent versions, schemas, README, report, usage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from builder_svc import composition, packaging, specs
from builder_svc.domain import AgentSpec, CaseOrigin, ServicePackage
from builder_svc.stages.base import StageBody, StageOutcome, service_id_of
from builder_svc.stages.validate import basis

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun


class Package(StageBody):
    """What a caller needs to use the built service, from what the earlier stages recorded."""

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        saved = run.checkpoint
        plan = saved.plan or {}
        workflow = saved.workflow
        if workflow is None:  # compose is recorded before package starts
            raise RuntimeError("package ran before compose recorded its workflow")
        build_id = run.build.build_id
        service_id = service_id_of(build_id)
        chosen = saved.agents
        agents = tuple(chosen[AgentSpec.from_json(spec).id].packaged() for spec in specs.topological(plan["agents"]))
        report = saved.validation or ()
        input_schema = dict(plan.get("workflow_input_schema") or {})
        output_schema = dict(composition.output_schema(plan))
        usage = run.meter.total
        seconds = round(run.elapsed(), 3)
        derived_only = not any(case.origin == CaseOrigin.ACCEPTANCE for case in report)
        validation_basis = basis(list(report))
        text = packaging.readme(
            service_id=service_id, build_id=build_id, workflow_id=workflow.workflow_id,
            workflow_version=workflow.version, requirements=run.build.requirements,
            analysis=saved.analysis or {}, agents=agents,
            agent_names={spec_id: c.name for spec_id, c in chosen.items()}, input_schema=input_schema,
            output_schema=output_schema, outputs=plan.get("outputs") or {}, report=report, usage=usage,
            build_seconds=seconds, workflow_address=self._settings.workflow_address,
            validation_basis=validation_basis)
        package = ServicePackage(service_id, workflow.workflow_id, workflow.version, agents, input_schema,
                                 output_schema, text, report, usage, seconds, derived_only, validation_basis)
        summary = (f"service {service_id}: workflow {workflow.workflow_id} {workflow.version}, {len(agents)} "
                   f"agents, {sum(1 for c in report if c.passed)}/{len(report)} validation cases passed, "
                   f"{usage.total_tokens} tokens, ${usage.cost_usd:.6f}, {seconds:.2f} s; {validation_basis}")
        return StageOutcome(summary, {"service_id": service_id, "workflow_id": workflow.workflow_id,
                                      "validation_basis": validation_basis, "derived_examples_only": derived_only,
                                      "workflow_version": workflow.version,
                                      "agents": [a.to_json() for a in agents]}, package=package)
