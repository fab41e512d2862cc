"""Stage 5, validate: the composed workflow executed on every example and sample; failures blame an agent."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jsonschema

from builder_svc import blame, composition, specs
from builder_svc.domain import BuildError, PendingFix, Stage, ValidationCase
from builder_svc.stages.base import BuildFailed, StageBody, StageOutcome, run_all

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun

JSON = dict[str, Any]


def cases(plan: Mapping[str, Any], sample_inputs: tuple[JSON, ...]) -> list[tuple[JSON, JSON | None]]:
    """(inputs, expected outputs or None) of every validation case: the workflow examples, then the caller's
    samples; with neither, the examples of the agents reading only workflow inputs, mapped back to them."""
    found: list[tuple[JSON, JSON | None]] = [
        (dict(e["input"]), dict(e["expected_output"])) for e in plan.get("examples") or []]
    found += [(dict(sample), None) for sample in sample_inputs]
    if found:
        return found
    for agent in plan["agents"]:
        refs = {key: specs.parse_reference(ref) for key, ref in (agent.get("inputs") or {}).items()}
        if refs and all(r is not None and r.scope == "inputs" for r in refs.values()):
            for example in agent["examples"]:
                given = example.get("input") or {}
                found.append(({r.name: given.get(k) for k, r in refs.items() if r is not None}, None))
    return found


def schema_problem(outputs: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """Why outputs do not match the workflow output schema, or ""."""
    try:
        jsonschema.validate(dict(outputs), dict(schema))
    except jsonschema.ValidationError as error:
        return f"outputs do not match the output schema: {error.message}"
    except jsonschema.SchemaError:
        return ""
    return ""


class Validate(StageBody):
    """Every case through the workflow service; on failures, back to select or create while rounds remain."""

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        round_number = attempt
        saved = run.checkpoint
        plan = saved.plan or {}
        workflow = saved.workflow
        if workflow is None:  # compose of this round is recorded before validate starts
            raise RuntimeError("validate ran before compose recorded its workflow")
        build_id = run.build.build_id
        limit = asyncio.Semaphore(self._settings.validation_concurrency)
        output_schema = composition.output_schema(plan)

        async def one(index: int, inputs: JSON, expected: JSON | None) -> tuple[ValidationCase, blame.Blame | None]:
            async with limit:
                result = await self._tools.workflows.run(
                    workflow.workflow_id, inputs, f"{build_id}:validate:{round_number}:{index}",
                    self._settings.validation_deadline_seconds, run.executions.add)
            run.executions.discard(result.execution_id)
            message = ""
            if not result.succeeded:
                where = f" at node {result.error_node}" if result.error_node else ""
                message = f"execution {result.state.lower()}{where}: {result.error_type}: {result.error_message}"
            elif expected is not None:
                message = specs.output_mismatch(expected, result.outputs or {}) or ""
            else:
                message = schema_problem(result.outputs or {}, output_schema)
            case = ValidationCase(inputs, expected, result.outputs, not message, result.execution_id, message)
            return case, (None if case.passed else blame.responsible(plan, inputs, expected, result))

        checked = await run_all([one(i, inputs, expected) for i, (inputs, expected)
                                 in enumerate(cases(plan, run.build.constraints.sample_inputs))])
        report = [case for case, _ in checked]
        passed = sum(1 for case in report if case.passed)
        details = {"cases": [c.to_json() for c in report], "workflow_id": workflow.workflow_id,
                   "workflow_version": workflow.version}
        if passed == len(report):
            return StageOutcome(f"{passed}/{len(report)} cases passed on workflow {workflow.workflow_id}", details,
                                {"validation": details["cases"]})
        first_failed = next(index for index, case in enumerate(report) if not case.passed)
        failure_text = f"case {first_failed + 1}: {report[first_failed].message}"
        blamed: dict[str, PendingFix] = {}
        for _case, found in checked:
            if found is not None and found.spec_id not in blamed:
                blamed[found.spec_id] = PendingFix(found.failure, found.example)
        if not blamed or round_number >= 1 + self._settings.max_validation_rounds:
            raise BuildFailed(BuildError(
                "FAILED_PRECONDITION", f"validation failed ({len(report) - passed} of {len(report)} cases) after "
                f"{round_number - 1} fix round{'s' if round_number != 2 else ''}: {failure_text}", Stage.VALIDATE))
        summary = (f"{len(report) - passed}/{len(report)} cases failed ({failure_text}); "
                   f"going back to fix {', '.join(sorted(blamed))}")
        return StageOutcome(summary, {**details, "blamed": sorted(blamed)},
                            {"round": round_number + 1,
                             "pending_fixes": {spec_id: fix.to_json() for spec_id, fix in blamed.items()}},
                            succeeded=False)
