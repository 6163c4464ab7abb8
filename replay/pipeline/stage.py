"""The Stage interface. A stage type is a small class chosen by its `type` name in the scenario; it works on
one request at a time, talks to pools, links and tiers only through their interfaces (submit a sequence or a
job, send bytes), and reports back through the simulation: `sim.done(request, stage, now)` when the request's
work in this stage has ended, `sim.reject(request, stage, reason, now)` when it cannot be served. It records
when its service began (`begin`): time before that, since the stage became ready, is its queueing.

A new stage type: a subclass in its own module here, its spec in replay/scenario.py, and an entry in
pipeline/__init__.py's STAGES."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ..request import Request
    from ..simulation import Simulation


class Stage:
    type: ClassVar[str] = ""

    def __init__(self, spec, index: int, graph, sim: Simulation):
        self.spec, self.name, self.index, self.graph, self.sim = spec, spec.name, index, graph, sim

    def start(self, run: Request, now: float) -> None:
        raise NotImplementedError

    def begin(self, run: Request, now: float) -> None:
        if run.start[self.index] is None:
            run.start[self.index] = now

    def stat(self, run: Request, figure: str, value: float) -> None:
        run.stats[f"{self.name}_{figure}"] = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
