"""Which registry agents a build may offer to the planner or test as candidates (docs/builder.md, "Reuse")."""

from __future__ import annotations

from collections.abc import Sequence

from builder_svc import marking
from builder_svc.domain import AgentSummary
from builder_svc.stages.base import BuildStates


async def reusable(build_id: str, hits: Sequence[AgentSummary], build_states: BuildStates) -> list[AgentSummary]:
    """Registry agents a build may reuse: not made by this build, not labelled failed, cancelled or superseded,
    and not from a build that has ended without labelling them validated (yet): a build still running may
    offer its versions (they are tested on the spec's examples like any candidate)."""
    unsure = {hit.labels.get("build_id", "") for hit in hits
              if hit.labels.get("origin") == "builder" and hit.labels.get(marking.STATE_LABEL) != marking.VALIDATED}
    unsure.discard("")
    states = await build_states(sorted(unsure)) if unsure else {}
    usable = []
    for hit in hits:
        origin = hit.labels.get("build_id", "")
        if origin == build_id or not marking.reusable_label(hit.labels):
            continue
        label = hit.labels.get(marking.STATE_LABEL)
        state = states.get(origin) if origin in unsure and label != marking.VALIDATED else None
        if state is not None and state.is_terminal:
            continue
        usable.append(hit)
    return usable
