"""Stage 2, identify agents: the agent plan from the LLM, offered reusable registry agents, checked by the builder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jsonschema

from builder_svc import specs
from builder_svc.domain import BuildError, Stage
from builder_svc.stages.base import BuildFailed, StageBody, StageOutcome
from builder_svc.stages.reuse import reusable
from tdev_common.llm import Purpose, prompts, schemas

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun


class IdentifyAgents(StageBody):
    """Agents with purpose, schemas and examples, their data flow and the workflow's examples."""

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        catalogue: list[Any] = []
        if not run.build.constraints.disable_reuse:
            hits = await self._tools.registry.search(run.build.requirements[:2000], self._settings.search_top_k)
            usable = await reusable(run.build.build_id, hits, self._tools.build_states)
            catalogue = [specs.catalogue_entry(agent) for agent in usable]
        completion = await self._complete(
            run, prompts.agent_plan_messages(run.build.requirements, analysis=run.checkpoint.analysis,
                                             catalogue=catalogue,
                                             acceptance_cases=[
                                                 c.to_json() for c in run.build.constraints.acceptance_cases]),
            schemas.AGENT_PLAN_SCHEMA, Purpose.REQUIREMENTS, self._settings.plan_max_tokens)
        plan = dict(completion.data)
        jsonschema.validate(plan, schemas.AGENT_PLAN_SCHEMA)
        problems = specs.check_plan(plan)
        if problems:
            raise BuildFailed(BuildError("FAILED_PRECONDITION", "the agent plan cannot become a workflow: "
                                         + "; ".join(problems[:10]), Stage.IDENTIFY_AGENTS))
        ordered = specs.topological(plan["agents"])
        flow = " -> ".join(str(a["id"]) for a in ordered)
        reuse = [a["id"] for a in plan["agents"] if a.get("reuse")]
        summary = (f"{len(ordered)} agent{'s' if len(ordered) != 1 else ''}: {flow}; "
                   f"{len(plan.get('examples') or [])} workflow examples; {len(catalogue)} registry agents offered"
                   + (f", reuse suggested for {', '.join(reuse)}" if reuse else ""))
        details = {"plan": plan, "catalogue": [{"agent_id": c["agent_id"], "version": c["version"],
                                                "name": c["name"]} for c in catalogue], "model": completion.label}
        return StageOutcome(summary, details, {"plan": plan})
