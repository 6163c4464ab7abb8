"""`tool`: an external call of fixed duration whose result adds tokens to the prompt."""

from __future__ import annotations

from .stage import Stage


class ToolStage(Stage):
    type = "tool"

    def start(self, run, now: float) -> None:
        self.begin(run, now)
        self.sim.loop.call_at(now + self.spec.duration_ms / 1e3, self._back, run)

    def _back(self, run, now: float) -> None:
        run.context += self.spec.tokens
        self.sim.done(run, self, now)
