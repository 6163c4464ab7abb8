"""`route`: dynamic model routing. The request goes to one of several LLM pools, by a rule on its input length,
by a seeded probability, or by a classifier model run as a costed job on a service pool (its decision then
follows the rules, or the weights as the classifier's decision mix); a later stage whose `pool` names this
route runs on the chosen pool, where that pool's own router picks the replica."""

from __future__ import annotations

from ..draws import pick
from ..pools.service import Job
from .stage import Stage


class RouteStage(Stage):
    type = "route"

    def start(self, run, now: float) -> None:
        spec = self.spec
        if spec.method == "classifier":
            pool = self.sim.pools[spec.classifier_pool]
            run.pools[self.index] = pool.name
            pool.submit(Job(1, min(run.context, pool.max_tokens), self._classified, run), now)
            return
        self.begin(run, now)
        self._decide(run, now)

    def _classified(self, job: Job, now: float) -> None:
        self.begin(job.arg, job.started)
        self._decide(job.arg, now)

    def _decide(self, run, now: float) -> None:
        spec = self.spec  # check_pipeline: a rule route has rules, a probability route weights, a classifier either
        if spec.rules:
            target = next((r.pool for r in spec.rules if run.context <= r.max_input_tokens), spec.default)
        else:
            target = pick(spec.weights, self.sim.uniform(run, self.index))
        run.route[self.name] = target
        self.stat(run, "pool", run.route[self.name])
        self.sim.done(run, self, now)
