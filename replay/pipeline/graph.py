"""A pipeline's stage graph, instantiated once per scenario and shared by its requests: stage objects, their
dependencies (each stage's `after`, default the previous stage) and successors, and the stage that generates
the answer. Scenario loading has already refused unknown names and cycles."""

from __future__ import annotations

from ..scenario import Pipeline, deps_of


class PipelineGraph:
    def __init__(self, name: str, spec: Pipeline, sim):
        from . import STAGES

        self.name, self.spec = name, spec
        index = {s.name: i for i, s in enumerate(spec.stages)}
        self.deps = [[index[d] for d in deps_of(spec, i)] for i in range(len(spec.stages))]
        self.succ: list[list[int]] = [[] for _ in spec.stages]
        for i, ds in enumerate(self.deps):
            for d in ds:
                self.succ[d].append(i)
        self.indegree = [len(ds) for ds in self.deps]
        self.roots = [i for i, ds in enumerate(self.deps) if not ds]
        self.stages = [STAGES[s.type](s, i, self, sim) for i, s in enumerate(spec.stages)]
        self.by_name = {s.name: s for s in self.stages}
        self.answer = next(i for i, s in enumerate(spec.stages) if s.type in ("llm", "decode"))
        # a reasoning stage that takes each request's share from its log (Simulation.prepare checks the log has it)
        self.logged_share = next((s.name for s in spec.stages if s.type == "reasoning" and s.share == "log"), None)

    def critical_path(self, run) -> str:
        """The chain of stages that set the request's end: from the last-ending stage back through the
        dependency that ended last."""
        ends = run.end
        if not any(e is not None for e in ends):
            return ""
        i = max((j for j, e in enumerate(ends) if e is not None), key=lambda j: (ends[j], j))
        path = [i]
        while self.deps[i]:
            done = [d for d in self.deps[i] if ends[d] is not None]
            if not done:
                break
            i = max(done, key=lambda d: (ends[d], d))
            path.append(i)
        return ">".join(self.stages[j].name for j in reversed(path))
