"""`reasoning`: reasoning tokens generated as decode on an LLM pool before the answer, in one or several rounds;
after each round but the last a tool (or retrieval) call of `tool_ms` adds `tool_tokens` to the context and the
client waits `think_ms`. The reasoning share comes from the log (ServeGen's reason_ratio) or the config. Every
round of a request runs on one replica, so with prefix caching the next round's prefill reuses the context's KV
(its blocks, generated tokens included, are kept in the replica's prefix cache)."""

from __future__ import annotations

from ..pools.llm.engine import Req
from .stage import Stage


class ReasoningStage(Stage):
    type = "reasoning"

    def share(self, run) -> float:
        if self.spec.share != "log":
            return float(self.spec.share)
        return float(run.fields["reasoning_share"])  # Simulation.prepare refused requests whose log lacks it

    def start(self, run, now: float) -> None:
        total = round(run.output * self.share(run))
        run.reasoning_tokens = min(total, max(run.output - 1, 0))  # at least one answer token is left
        self.stat(run, "reasoning_tokens", run.reasoning_tokens)
        rounds = min(self.spec.rounds, run.reasoning_tokens) or 1
        per = [run.reasoning_tokens // rounds + (1 if r < run.reasoning_tokens % rounds else 0) for r in range(rounds)]
        if run.reasoning_tokens == 0:
            self.begin(run, now)
            self.sim.done(run, self, now)
            return
        self._round(run, per, 0, now)

    def _round(self, run, per: list[int], r: int, now: float) -> None:
        pool = self.sim.llm_pool_for(run, self.spec.pool)
        run.pools[self.index] = pool.name
        hashes = self.sim.context_hashes(run, pool)
        seq = Req(self.sim.next_seq_id(), now, run.context, per[r], run.session, run.client, hashes, self._done)
        seq.cache_output = True
        seq.owner = (run, per, r)
        if run.routed.get(pool.name) is None:
            run.routed[pool.name] = pool.route(seq)
        pool.submit(seq, now, run.routed[pool.name])

    def _done(self, seq: Req, now: float) -> None:
        run, per, r = seq.owner
        if seq.reason is not None:
            self.sim.reject(run, self, seq.reason, now)
            return
        self.begin(run, seq.admitted)
        if run.first_token is None:
            run.first_token = seq.first_token
        run.generated += seq.output
        run.preemptions += seq.preemptions
        run.prefill_s += seq.prefill_s
        run.hit_tokens += seq.hit_tokens
        run.replicas[self.index] = seq.replica
        run.context += seq.output
        if r + 1 == len(per):
            self.sim.done(run, self, now)
            return
        run.context += self.spec.tool_tokens
        gap = (self.spec.tool_ms + self.spec.think_ms) / 1e3
        self.sim.loop.call_at(now + gap, lambda arg, t: self._round(run, per, r + 1, t))
