"""Job dispatcher: a deliberately weak starting scheduling heuristic for evolution (see ../README.md)."""


class Dispatcher:
    """Picks the machine for a job: the up machine that would finish it earliest, below its limit."""

    def get_capabilities(self):
        return {
            "name": "dispatcher",
            "description": "Chooses the machine that finishes a job earliest.",
            "inputs": {"job": "number (work units)", "machines": "list of {id, load, speed, up}", "limit": "number"},
            "outputs": {"machine": "string or null"},
        }

    def execute(self, inputs):
        job = inputs["job"]
        limit = inputs["limit"]
        chosen = None
        best = None
        for machine in inputs["machines"]:
            if not machine["up"]:
                continue
            if machine["load"] + job > limit:
                continue
            finish = (machine["load"] + job) * machine["speed"]
            if best is None or finish <= best:
                best = finish
                chosen = machine["id"]
        return {"machine": chosen}
