"""Stage 1, analyse: the requirements as structured, schema-checked JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jsonschema

from builder_svc.stages.base import StageBody, StageOutcome
from tdev_common.llm import Purpose, prompts, schemas

if TYPE_CHECKING:
    from builder_svc.pipeline import BuildRun


class Analyse(StageBody):
    """Functional and non-functional requirements, constraints, integration points and assumptions."""

    async def __call__(self, run: BuildRun, attempt: int) -> StageOutcome:
        completion = await self._complete(run, prompts.requirements_analysis_messages(run.build.requirements),
                                          schemas.REQUIREMENTS_ANALYSIS_SCHEMA, Purpose.REQUIREMENTS,
                                          self._settings.analysis_max_tokens)
        analysis = dict(completion.data)
        jsonschema.validate(analysis, schemas.REQUIREMENTS_ANALYSIS_SCHEMA)
        counts = {key: len(analysis.get(key) or []) for key in (
            "functional_requirements", "non_functional_requirements", "constraints", "integration_points",
            "assumptions")}
        summary = (f"{counts['functional_requirements']} functional and {counts['non_functional_requirements']} "
                   f"non-functional requirements, {counts['constraints']} constraints, "
                   f"{counts['integration_points']} integration points, {counts['assumptions']} assumptions "
                   f"({completion.label})")
        return StageOutcome(summary, {"analysis": analysis, "model": completion.label}, {"analysis": analysis})
