"""Stage 5, validate: the composed workflow executed on every example and sample; failures blame an agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema

from builder_svc import blame, composition, specs
from builder_svc.domain import AcceptanceCase, BuildError, CaseOrigin, PendingFix, Stage, ValidationCase
from builder_svc.stages.base import BuildFailed, StageBody, StageOutcome, run_all
from tdev_common.errors import InvalidArgument
from tdev_common.llm import acceptance

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun

JSON = dict[str, Any]


@dataclass(frozen=True)
class Check:
    """One validation case to run: its inputs, what to expect and how to compare."""

    inputs: JSON
    expected: JSON | None
    origin: str
    comparison: str = "exact"
    tolerance: float = 0.0
    name: str = ""
    label: str = ""


def cases(plan: Mapping[str, Any], sample_inputs: tuple[JSON, ...],
          acceptance_cases: tuple[AcceptanceCase, ...] = ()) -> list[Check]:
    """Every validation case: the caller's acceptance cases, the workflow examples, then the caller's samples;
    with none of these, the examples of the agents reading only workflow inputs, mapped back to them."""
    found = [Check(dict(c.inputs), dict(c.expected), CaseOrigin.ACCEPTANCE, c.comparison, c.tolerance, c.name,
                   c.label(i)) for i, c in enumerate(acceptance_cases)]
    found += [Check(dict(e["input"]), dict(e["expected_output"]), CaseOrigin.DERIVED, label=f"derived example {i + 1}")
              for i, e in enumerate(plan.get("examples") or [])]
    found += [Check(dict(sample), None, CaseOrigin.SAMPLE, label=f"sample {i + 1}")
              for i, sample in enumerate(sample_inputs)]
    if found:
        return found
    for agent in plan["agents"]:
        refs = {key: specs.parse_reference(ref) for key, ref in (agent.get("inputs") or {}).items()}
        if refs and all(r is not None and r.scope == "inputs" for r in refs.values()):
            for example in agent["examples"]:
                given = example.get("input") or {}
                found.append(Check({r.name: given.get(k) for k, r in refs.items() if r is not None}, None,
                                   CaseOrigin.DERIVED, label=f"derived example {len(found) + 1}"))
    return found


def aligned(expected: Mapping[str, Any], actual: Mapping[str, Any] | None, comparison: str) -> JSON:
    """Expected outputs under the workflow's own key names (for blaming an agent): with
    ``key_names_equivalent`` an expected ``totalAmount`` is the workflow's ``total_amount``."""
    if comparison != "key_names_equivalent" or not actual:
        return dict(expected)
    names = {acceptance.key_name(str(k)): k for k in actual}
    return {names.get(acceptance.key_name(str(k)), k): v for k, v in expected.items()}


def basis(report: list[ValidationCase]) -> str:
    """One line on what a passed validation rests on (Build.state_detail, ServicePackage.validation_basis)."""
    given = [c for c in report if c.origin == CaseOrigin.ACCEPTANCE]
    derived = [c for c in report if c.origin != CaseOrigin.ACCEPTANCE and c.expected is not None]
    samples = [c for c in report if c.origin == CaseOrigin.SAMPLE]
    derived_text = f"{sum(c.passed for c in derived)}/{len(derived)} derived examples passed"
    sample_text = f", {sum(c.passed for c in samples)}/{len(samples)} samples matched the output schema" \
        if samples else ""
    if not given:
        return f"validated on derived examples only (no acceptance cases given): {derived_text}{sample_text}"
    return (f"validated on {len(given)} acceptance case{'s' if len(given) != 1 else ''} (all passed); "
            f"reported separately: {derived_text}{sample_text}")


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

        async def one(index: int, check: Check) -> tuple[ValidationCase, blame.Blame | None]:
            try:
                async with limit:
                    result = await self._tools.workflows.run(
                        workflow.workflow_id, check.inputs, f"{build_id}:validate:{round_number}:{index}",
                        self._settings.validation_deadline_seconds, run.executions.add)
            except InvalidArgument as rejected:
                # The service does not take these inputs (a caller's case naming an input the plan does not
                # read, say): the case fails, it does not make the build an invalid request.
                message = f"the workflow rejected the inputs: {rejected.message}"
                return ValidationCase(check.inputs, check.expected, None, False, "", message, check.origin,
                                      check.name, check.comparison), None
            run.executions.discard(result.execution_id)
            message = ""
            if not result.succeeded:
                where = f" at node {result.error_node}" if result.error_node else ""
                message = f"execution {result.state.lower()}{where}: {result.error_type}: {result.error_message}"
            elif check.origin == CaseOrigin.ACCEPTANCE and check.expected is not None:
                message = acceptance.mismatch(check.expected, result.outputs or {}, check.comparison,
                                              check.tolerance) or ""
            elif check.expected is not None:
                message = specs.output_mismatch(check.expected, result.outputs or {}) or ""
            else:
                message = schema_problem(result.outputs or {}, output_schema)
            case = ValidationCase(check.inputs, check.expected, result.outputs, not message, result.execution_id,
                                  message, check.origin, check.name, check.comparison)
            if case.passed:
                return case, None
            expected = aligned(check.expected, result.outputs, check.comparison) if check.expected else None
            found = blame.responsible(plan, check.inputs, expected, result)
            if found is not None and check.origin == CaseOrigin.ACCEPTANCE:
                # The repair sees which caller case failed; a loose comparison's expected value is not an exact
                # example for the agent, so only exact-ish modes add one to its tests.
                failure = dict(found.failure)
                failure["message"] = f"{check.label}: {failure.get('message', '')}"
                keep = check.comparison in ("exact", "key_names_equivalent")
                found = blame.Blame(found.spec_id, failure, found.example if keep else None)  # type: ignore[arg-type]
            return case, found

        checks = cases(plan, run.build.constraints.sample_inputs, run.build.constraints.acceptance_cases)
        checked = await run_all([one(i, check) for i, check in enumerate(checks)])
        report = [case for case, _ in checked]
        details = {"cases": [c.to_json() for c in report], "workflow_id": workflow.workflow_id,
                   "workflow_version": workflow.version}
        given = [i for i, check in enumerate(checks) if check.origin == CaseOrigin.ACCEPTANCE]
        # With acceptance cases, they alone decide: derived examples are the builder's own reading of the
        # requirements and are reported, not required.
        deciding = given or list(range(len(checks)))
        failing = [i for i in deciding if not report[i].passed]
        if not failing:
            summary = (f"{len(deciding) - len(failing)}/{len(deciding)} "
                       f"{'acceptance cases' if given else 'cases'} passed on workflow {workflow.workflow_id}")
            if given:
                others = [c for i, c in enumerate(report) if i not in given]
                summary += f" (derived examples and samples: {sum(c.passed for c in others)}/{len(others)})"
            details["basis"] = basis(report)
            return StageOutcome(summary, details, {"validation": details["cases"]})
        if given:  # every failing caller case, with its inputs, so the error says what the service got wrong
            failure_text = "; ".join(
                f"{checks[i].label}: inputs {_short(checks[i].inputs)}: {report[i].message}" for i in failing[:5])
            failure_text += f"; and {len(failing) - 5} more" if len(failing) > 5 else ""
        else:
            failure_text = f"case {failing[0] + 1}: {report[failing[0]].message}"
        blamed: dict[str, PendingFix] = {}
        shown: dict[str, list[JSON]] = {}
        for index in failing:
            found = checked[index][1]
            if found is None:
                continue
            if checks[index].origin == CaseOrigin.ACCEPTANCE:
                shown.setdefault(found.spec_id, []).append({
                    "case": checks[index].label, "inputs": checks[index].inputs, "expected": checks[index].expected,
                    "actual": report[index].actual, "comparison": checks[index].comparison,
                    "problem": report[index].message})
            if found.spec_id not in blamed:
                blamed[found.spec_id] = PendingFix(found.failure, found.example)
        blamed = {spec_id: PendingFix(fix.failure, fix.example, tuple(shown.get(spec_id, ())))
                  for spec_id, fix in blamed.items()}
        what = "acceptance cases" if given else "cases"
        if not blamed or round_number >= 1 + self._settings.max_validation_rounds:
            count = f"{len(failing)} of {len(deciding)} acceptance cases not met" if given else \
                f"{len(failing)} of {len(deciding)} cases"
            raise BuildFailed(BuildError(
                "FAILED_PRECONDITION", f"validation failed ({count}) "
                f"after {round_number - 1} fix round{'s' if round_number != 2 else ''}: {failure_text}",
                Stage.VALIDATE))
        summary = (f"{len(failing)}/{len(deciding)} {what} failed ({failure_text}); "
                   f"going back to fix {', '.join(sorted(blamed))}")
        return StageOutcome(summary, {**details, "blamed": sorted(blamed)},
                            {"round": round_number + 1,
                             "pending_fixes": {spec_id: fix.to_json() for spec_id, fix in blamed.items()}},
                            succeeded=False)


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
