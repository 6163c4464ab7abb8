"""`vector_search`: one query on the service pool's index (faiss flat, IVF or HNSW), batched with others. When
no rerank follows, its top-k passages join the prompt (see rerank.py for how their tokens are counted)."""

from __future__ import annotations

from ..pools.service import Job
from .embed import ServiceStage
from .rerank import add_passages


class VectorSearchStage(ServiceStage):
    type = "vector_search"

    def job(self, run) -> Job:
        return Job(1, 1, None)

    def finished(self, run, now: float) -> None:
        if not any(s.type == "rerank" for s in self.graph.stages):
            add_passages(self, run, self.spec.top_k, None)
        self.sim.done(run, self, now)
