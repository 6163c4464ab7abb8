"""Stages on LLM pools: `llm` (prefill and decode colocated), and the disaggregated pair `prefill` (first
token; the KV is held until the kv_transfer that follows ends) and `decode` (the rest, on a pool that received
the KV). Each submits one sequence to its pool (after the pool's frontend latency) and ends when the pool
reports it done."""

from __future__ import annotations

from ..pools.llm.engine import Req
from .stage import Stage


class LLMStage(Stage):
    type = "llm"

    def __init__(self, spec, index: int, graph, sim):
        super().__init__(spec, index, graph, sim)
        # the pool, when it is not a route's choice (then it is looked up per request)
        self.pool = sim.pools.get(spec.pool) if spec.pool in sim.pools else None

    def output_tokens(self, run) -> int:
        return max(run.output - run.reasoning_tokens, 1)

    def sequence(self, run, now: float) -> Req:
        seq = Req(
            self.sim.next_seq_id(),
            now,
            run.context,
            self.output_tokens(run),
            run.session,
            run.client,
            run.hashes,
            on_done=self._done,
        )
        return seq

    def start(self, run, now: float) -> None:
        pool = self.pool or self.sim.llm_pool_for(run, self.spec.pool)
        seq = self.sequence(run, now)
        seq.owner = run
        fetched = run.fetch.get(pool.name)
        if fetched:
            seq.fetch_from, seq.fetch_to = fetched
        run.pools[self.index] = pool.name
        if pool.frontend_s:
            self.sim.loop.call_at(now + pool.frontend_s, self._submit, (pool, seq))
        else:
            self._submit((pool, seq), now)

    def _submit(self, arg, now: float) -> None:
        pool, seq = arg
        run = seq.owner
        reserved = bool(run.reserved) and pool.name in run.reserved
        if reserved:
            run.reserved = tuple(p for p in run.reserved if p != pool.name)
        pool.submit(seq, now, run.routed.get(pool.name), reserved)

    def _done(self, seq: Req, now: float) -> None:
        run = seq.owner
        if seq.reason is not None:
            self.sim.reject(run, self, seq.reason, now)
            return
        i = self.index
        if run.start[i] is None:
            run.start[i] = seq.admitted
        if run.first_token is None and seq.first_token is not None:
            run.first_token = seq.first_token
        run.generated += seq.output - (1 if seq.kv_ready else 0)
        run.preemptions += seq.preemptions
        run.prefill_s += seq.prefill_s
        run.hit_tokens += seq.hit_tokens
        run.replicas[i] = seq.replica
        if i == self.graph.answer and run.reasoning_tokens and seq.first_token is not None:
            run.stats["answer_ttft_ms"] = (seq.first_token - run.arrival) * 1e3  # the first token after reasoning
        self.finished(run, seq, now)

    def finished(self, run, seq: Req, now: float) -> None:
        self.sim.done(run, self, now)


class PrefillStage(LLMStage):
    type = "prefill"

    def output_tokens(self, run) -> int:
        return 1

    def sequence(self, run, now: float) -> Req:
        seq = super().sequence(run, now)
        seq.hold_kv = True
        return seq

    def finished(self, run, seq: Req, now: float) -> None:
        run.handoff = (self.sim.pools[run.pools[self.index]], seq)  # the kv_transfer moves it, then releases
        self.sim.done(run, self, now)


class DecodeStage(LLMStage):
    type = "decode"

    def start(self, run, now: float) -> None:
        if self.output_tokens(run) <= 1:  # the prefill's first token was the whole answer
            self.begin(run, now)
            self.sim.done(run, self, now)
            return
        super().start(run, now)

    def sequence(self, run, now: float) -> Req:
        seq = super().sequence(run, now)
        seq.generated = 1  # the prefill pool emitted the first token
        seq.prefilled = seq.target = seq.prompt
        seq.kv_ready = True
        return seq
