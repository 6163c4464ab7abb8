"""Discrete-event serving simulation: requests flow through prefill and decode stages on replicas of a pool.

Invariants (each has a test in tests/test_replay.py):
1. every request is completed or rejected with a reason;
2. the clock never goes back (iterations on a replica are contiguous and ordered);
3. KV blocks are conserved: free + held by sequences + held by the prefix cache = total on every replica, at
   every iteration boundary;
4. TTFT >= queueing + the prefill iterations' time;
5. simulated throughput never exceeds the hardware roofline bound.

Each replica runs iterations back to back while it has work. An iteration's batch comes from the pool's
batching policy; its duration from the calibrated iteration cost. Arrivals are routed on arrival and join the
replica's queue; they are considered at the replica's next iteration boundary, and an idle replica wakes once
every arrival of that instant is queued (so simultaneous requests share the first batch). Runs of decode-only iterations
whose batch cannot change (no queue, no completion, enough KV, before the next arrival) are skipped ahead in one
vectorized step."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .costs import IterationCost
from .kv import BlockManager, PrefixCache
from .policies import BatchingPolicy, BatchPlan, Router


class Req:
    __slots__ = (
        "admitted",
        "arrival",
        "blocks",
        "cached",
        "client",
        "completion",
        "first_token",
        "generated",
        "hashes",
        "hits",
        "id",
        "output",
        "preemptions",
        "prefilled",
        "prompt",
        "reason",
        "replica",
        "session",
        "target",
    )

    def __init__(
        self, rid: int, arrival: float, prompt: int, output: int, session=None, client: int = -1, hashes: tuple = ()
    ):
        self.id, self.arrival, self.prompt, self.output = rid, arrival, prompt, max(output, 1)
        self.session, self.client, self.hashes = session, client, hashes
        self.cached = 0  # leading prompt tokens whose KV is shared from the prefix cache (not held privately)
        self.hits = 0  # prefix-cache hash blocks pinned by this request
        self.replica = -1
        self.prefilled = 0
        self.target = prompt  # tokens to prefill: the prompt, plus generated tokens after a recompute
        self.generated = 0
        self.blocks = 0
        self.admitted = self.first_token = self.completion = None
        self.preemptions = 0
        self.reason = None

    @property
    def context(self) -> int:
        return self.prompt + self.generated


@dataclass
class Replica:
    index: int
    cost: IterationCost
    kv: BlockManager
    policy: BatchingPolicy
    max_model_len: int
    prefix: PrefixCache | None = None
    waiting: deque = field(default_factory=deque)
    running: list = field(default_factory=list)
    busy: bool = False
    busy_us: float = 0.0
    timeline: list = field(default_factory=list)  # (start_s, end_s, batch_size, tokens, kv_used_blocks)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)


class Simulation:
    def __init__(self, replicas: list[Replica], router: Router, closed_loop=None, skip_ahead: bool = True):
        self.replicas = replicas
        self.skip_ahead = skip_ahead
        self.router = router
        self.closed_loop = closed_loop  # callable(completed Req, now) -> next Req or None
        self.done: list[Req] = []
        self.rejected: list[Req] = []
        self.clock = 0.0

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self, requests: list[Req]) -> None:
        arrivals = [(r.arrival, r.id, r) for r in requests]
        heapq.heapify(arrivals)
        ends: list = []  # (time, replica index, plan or None for a wake-up, step durations)
        while arrivals or ends:
            if arrivals and (not ends or arrivals[0][0] <= ends[0][0]):
                now, _, req = heapq.heappop(arrivals)
                self._advance(now)
                rep = self.replicas[self.router.route(req, self.replicas)]
                if self._admissible(req, rep):
                    req.replica = rep.index
                    rep.waiting.append(req)
                    if not rep.busy:  # wake it after every arrival of this instant has been queued
                        rep.busy = True
                        heapq.heappush(ends, (now, rep.index, None, None))
            else:
                now, idx, plan, step_times = heapq.heappop(ends)
                self._advance(now)
                rep = self.replicas[idx]
                if plan is not None:
                    self._finish(rep, plan, now, step_times, arrivals)
                self._start(rep, now, ends, arrivals)

    def _advance(self, now: float) -> None:
        assert now >= self.clock - 1e-9, f"clock went back from {self.clock} to {now}"
        self.clock = now

    def _admissible(self, req: Req, rep: Replica) -> bool:
        if req.prompt + req.output > rep.max_model_len:
            req.reason = f"prompt + output ({req.prompt + req.output}) exceeds max_model_len {rep.max_model_len}"
        elif rep.kv.blocks_for(req.prompt + req.output) > rep.kv.total:
            req.reason = f"needs more KV blocks than a replica has ({rep.kv.total})"
        else:
            return True
        req.completion = self.clock
        self.rejected.append(req)
        return False

    # ---- iterations ---------------------------------------------------------------------------------
    def _start(self, rep: Replica, now: float, ends: list, arrivals: list) -> None:
        plan = rep.policy.plan(rep, now)
        if plan.empty:
            rep.busy = False
            return
        for req in plan.admitted:
            req.admitted = now
        rep.busy = True
        if plan.skippable and self.skip_ahead:
            times = self._skippable_steps(rep, plan, now, arrivals)
            if len(times) > 1:
                heapq.heappush(ends, (now + float(times.sum()), rep.index, plan, times))
                return
        duration = rep.cost.iteration_us(plan.prefill_shape(), len(plan.decodes), plan.decode_kv_sum()) / 1e6
        heapq.heappush(ends, (now + duration, rep.index, plan, np.array([duration])))

    def _skippable_steps(self, rep: Replica, plan: BatchPlan, now: float, arrivals: list) -> np.ndarray:
        """Durations (s) of the decode steps before anything could change the batch: a completion, a KV block
        shortfall or the next arrival (which the step-by-step loop would consider at the following boundary)."""
        steps = min(r.output - r.generated for r in plan.decodes)

        def blocks_needed(k: int) -> int:  # new blocks if every sequence grows k tokens
            return sum(rep.kv.blocks_for(r.context + k - r.cached) - r.blocks for r in plan.decodes)

        if blocks_needed(steps) > rep.kv.free:  # largest k that fits, by bisection (need grows with k)
            lo, hi = 0, steps
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if blocks_needed(mid) <= rep.kv.free else (lo, mid - 1)
            steps = lo
        if steps <= 1:
            return np.empty(0)
        times = rep.cost.decode_steps_us(len(plan.decodes), plan.decode_kv_sum(), steps) / 1e6
        if arrivals:
            ends = now + np.cumsum(times)
            times = times[: max(1, int(np.searchsorted(ends, arrivals[0][0], side="left")) + 1)]
        return times

    def _finish(self, rep: Replica, plan: BatchPlan, now: float, step_times: np.ndarray, arrivals: list) -> None:
        start = now - float(step_times.sum())
        rep.busy_us += float(step_times.sum()) * 1e6
        t = start
        for i, dt in enumerate(step_times):
            t += dt
            tokens = plan.tokens() if i == 0 else len(plan.decodes)
            rep.timeline.append((t - dt, t, len(plan.decodes) + len(plan.prefills), tokens, rep.kv.total - rep.kv.free))
            for req, q in plan.prefills if i == 0 else ():
                req.prefilled += q
                if req.prefilled >= req.target:  # the last chunk's pass emits the first (or next) token;
                    req.generated += 1  # its KV is written by the next decode step, which reserves for it
                    if req.first_token is None:
                        req.first_token = t
            block_tokens = rep.kv.block_tokens
            for req in plan.decodes:
                if req.context + 1 - req.cached > req.blocks * block_tokens:  # crosses into a new block
                    req.blocks = rep.kv.grow(req.blocks, req.context + 1 - req.cached)
                req.generated += 1
                if req.generated >= req.output and req.completion is None:
                    req.completion = t
        for req in [r for r in rep.running if r.generated >= r.output]:
            req.completion = req.completion or now
            rep.running.remove(req)
            rep.kv.release(req.blocks)
            req.blocks = 0
            if rep.prefix is not None:
                rep.prefix.unpin(req.hashes[: req.hits])
                rep.prefix.insert(req.hashes[: req.prompt // rep.prefix.hash_tokens])
            self.done.append(req)
            if self.closed_loop is not None:
                nxt = self.closed_loop(req, req.completion)
                if nxt is not None:
                    heapq.heappush(arrivals, (nxt.arrival, nxt.id, nxt))
        held = sum(r.blocks for r in rep.running) + (rep.prefix.held if rep.prefix is not None else 0)
        assert held + rep.kv.free == rep.kv.total, "KV blocks not conserved"
