"""`embed`: the query embedded by an embedding model on a service pool (one sequence per request)."""

from __future__ import annotations

from ..pools.service import Job
from .stage import Stage

DEFAULT_QUERY_TOKENS = 64  # a stand-in when neither the stage nor the log gives the query length


def query_tokens(stage: Stage, run, configured: int | None) -> int:
    """The stage's query length, else the log's user-input tokens, else the named default (in assumptions)."""
    if configured:
        return configured
    logged = run.fields.get("user_input_tokens")
    if logged:
        return int(logged)
    stage.sim.assume(
        f"{stage.graph.name}.{stage.name}.query_tokens",
        DEFAULT_QUERY_TOKENS,
        "no query_tokens set and the log has no user-input lengths: a typical short query",
    )
    return DEFAULT_QUERY_TOKENS


class ServiceStage(Stage):
    """A stage that is one job on a service pool."""

    def job(self, run) -> Job:
        raise NotImplementedError

    def start(self, run, now: float) -> None:
        pool = self.sim.pools[self.spec.pool]
        run.pools[self.index] = pool.name
        job = self.job(run)
        job.arg = run
        job.done = self._done
        pool.submit(job, now)

    def _done(self, job: Job, now: float) -> None:
        run = job.arg
        self.begin(run, job.started)
        run.replicas[self.index] = job.replica
        self.finished(run, now)

    def finished(self, run, now: float) -> None:
        self.sim.done(run, self, now)


class EmbedStage(ServiceStage):
    type = "embed"

    def job(self, run) -> Job:
        pool = self.sim.pools[self.spec.pool]
        return Job(1, min(query_tokens(self, run, self.spec.query_tokens), pool.max_tokens), None)
