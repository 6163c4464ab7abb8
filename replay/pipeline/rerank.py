"""`rerank`: a cross-encoder scores (query, passage) pairs on a service pool; the kept passages join the
prompt. Logs with per-part lengths (RAGPulse) already count the retrieved passages in the prompt: their
tokens are recorded, not added; otherwise keep x passage_tokens are added."""

from __future__ import annotations

from ..pools.service import Job
from ..scenario import rerank_pairs
from .embed import ServiceStage, query_tokens

DEFAULT_PASSAGE_TOKENS = 256


def passage_length(run, configured: int | None) -> int:
    tokens, count = run.fields.get("passage_tokens"), run.fields.get("passages")
    if tokens and count:
        return max(int(tokens) // int(count), 1)
    return configured or DEFAULT_PASSAGE_TOKENS


def add_passages(stage, run, keep: int, configured: int | None) -> None:
    if "passage_tokens" in run.fields:
        run.retrieved_tokens = int(run.fields["passage_tokens"])  # in the logged prompt already (maybe 0)
    else:
        length = configured or getattr(stage.spec, "passage_tokens", None) or DEFAULT_PASSAGE_TOKENS
        run.retrieved_tokens = keep * length
        run.context += run.retrieved_tokens
    stage.stat(run, "retrieved_tokens", run.retrieved_tokens)


class RerankStage(ServiceStage):
    type = "rerank"

    def job(self, run) -> Job:
        pool = self.sim.pools[self.spec.pool]
        pair = query_tokens(self, run, self.spec.query_tokens) + passage_length(run, self.spec.passage_tokens)
        return Job(rerank_pairs(self.graph.spec, self.spec), min(pair, pool.max_tokens), None)

    def finished(self, run, now: float) -> None:
        add_passages(self, run, self.spec.keep, self.spec.passage_tokens)
        self.sim.done(run, self, now)
