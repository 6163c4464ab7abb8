"""Discrete-event serving simulation: requests flow through prefill and decode stages on replicas of a pool.

Invariants (each has a test in tests/test_replay.py):
1. every request is completed or rejected with a reason;
2. the clock never goes back (iterations on a replica are contiguous and ordered);
3. KV blocks are conserved: free + held by prefilling sequences + held by decoding sequences + held by the
   prefix cache = total on every replica, at every iteration boundary (checked in aggregate on every boundary,
   member by member when the simulation runs with audit=True);
4. TTFT >= queueing + the prefill iterations' time;
5. simulated throughput never exceeds the hardware roofline bound.

Each replica runs iterations back to back while it has work. An iteration's batch comes from the pool's batching
policy; its duration from the calibrated iteration cost, plus any KV swap traffic over the host link. Arrivals pass
the frontend (a fixed latency: HTTP, tokenization), are routed and join the replica's queue; they are considered at
the replica's next iteration boundary, and an idle replica wakes once every arrival of that instant is queued (so
simultaneous requests share the first batch). Decoding sequences live in a DecodeCohort (cohort.py), so a decode
iteration costs O(1) per replica rather than O(batch). A run of decode-only iterations whose batch cannot change (up
to the next completion, within the free KV) is one event, priced in one vectorized call; an arrival routed to that
replica that could join the batch cuts the run at the first iteration boundary at or after it, which is where a
step-by-step loop would have considered it. Likewise, under chunked prefill, a prompt's consecutive full-budget
chunks (with the same decodes) are one event: the budget goes to that partial prefill first, so no arrival can
change them."""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import deque

from .cohort import DecodeCohort
from .costs import IterationCost
from .kv import BlockManager, PrefixCache, SwapSpace
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
        "hit_tokens",
        "hits",
        "id",
        "join_generated",
        "join_own",
        "join_step",
        "output",
        "preemptions",
        "prefilled",
        "prompt",
        "reason",
        "replica",
        "serial",
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
        self.hit_tokens = 0  # prompt tokens served from the prefix cache, over all its prefills
        self.replica = -1
        self.prefilled = 0
        self.target = prompt  # tokens to prefill: the prompt, plus generated tokens after a recompute
        self.generated = 0  # materialized on leaving the decode cohort; implicit while decoding
        self.blocks = 0  # KV blocks held (on the device, or on the host while swapped out)
        self.serial = -1  # decode-cohort membership (see cohort.py)
        self.join_step = self.join_generated = self.join_own = 0
        self.admitted = self.first_token = self.completion = None
        self.preemptions = 0
        self.reason = None


class Replica:
    """One model instance: its queues, KV cache and decode cohort. `running` holds every admitted sequence in
    admission order (prefilling or decoding); the newest is the first preemption victim."""

    def __init__(
        self,
        index: int,
        cost: IterationCost,
        kv: BlockManager,
        policy: BatchingPolicy,
        max_model_len: int,
        prefix: PrefixCache | None = None,
        swap: SwapSpace | None = None,
    ):
        self.index, self.cost, self.kv, self.policy, self.max_model_len = index, cost, kv, policy, max_model_len
        self.prefix, self.swap = prefix, swap
        self.waiting: deque[Req] = deque()
        self.running: dict[Req, None] = {}
        self.prefilling: list[Req] = []
        self.swapped: deque[Req] = deque()
        self.cohort = DecodeCohort(kv.block_tokens)
        self.busy = False
        self.plan: BatchPlan | None = None  # the plan in flight, while busy
        self.event = 0  # the serial of its pending end event (a cut run's old event goes stale)
        self.busy_us = 0.0
        self.timeline: list[tuple] = []  # (start_s, end_s, iterations, batch_size, tokens, kv_used_blocks)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.swapped)

    def held_blocks(self) -> int:
        held = self.cohort.blocks + (self.prefix.held if self.prefix is not None else 0)
        for r in self.prefilling:
            held += r.blocks
        return held

    # ---- preemption ----------------------------------------------------------------------------------
    def preempt_newest(self, plan: BatchPlan) -> None:
        """Free the newest sequence's KV: swap a decoding one to host memory when the pool swaps and host space
        allows (its copy time is charged to this iteration), else drop it to be recomputed later."""
        victim = next(reversed(self.running))
        del self.running[victim]
        victim.preemptions += 1
        plan.preempted = True
        decoding = victim.serial >= 0
        if decoding:
            self.cohort.leave(victim)
            plan.decodes = len(self.cohort) if plan.decodes else 0
        else:
            self.prefilling.remove(victim)
            plan.prefills = [(r, q) for r, q in plan.prefills if r is not victim]
            plan.prefill_tokens = sum(q for _, q in plan.prefills)
            if victim in plan.admitted:
                plan.admitted.remove(victim)
        self.kv.release(victim.blocks)
        if self.prefix is not None:
            self.prefix.unpin(victim.hashes[: victim.hits])
        context = victim.prompt + victim.generated
        if decoding and self.swap is not None:
            blocks = self.kv.blocks_for(context - 1)  # the whole KV, shared prefix included, becomes private
            if self.swap.reserve(blocks):
                victim.blocks, victim.hits, victim.cached = blocks, 0, 0
                plan.transfer_us += self.swap.transfer_us(blocks)
                self.swapped.append(victim)
                return
        victim.blocks = victim.hits = victim.cached = victim.prefilled = 0
        victim.target = context
        self.waiting.appendleft(victim)

    def swap_in(self, plan: BatchPlan, max_seqs: int) -> None:
        """Bring swapped sequences back (oldest first) while their blocks fit; they decode from the next
        iteration."""
        while self.swapped and len(self.running) < max_seqs and self.kv.ensure(self.swapped[0].blocks):
            req = self.swapped.popleft()
            self.kv.take(req.blocks)
            self.swap.release(req.blocks)
            plan.transfer_us += self.swap.transfer_us(req.blocks)
            self.running[req] = None
            self.cohort.join(req)


class Simulation:
    def __init__(
        self,
        replicas: list[Replica],
        router: Router,
        closed_loop=None,
        skip_ahead: bool = True,
        audit: bool = False,
        frontend_s: float = 0.0,
    ):
        self.replicas = replicas
        self.skip_ahead = skip_ahead
        self.audit = audit  # recheck the cohort and KV member by member at every boundary (tests)
        self.router = router
        self.closed_loop = closed_loop  # callable(completed Req, now) -> next Req or None
        self.frontend_s = frontend_s  # from a request's arrival to its routing (HTTP, tokenization)
        self.done: list[Req] = []
        self.rejected: list[Req] = []
        self.clock = 0.0

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self, requests: list[Req], on_progress=None) -> None:
        """Serve `requests` to the end; on_progress(requests finished) is called now and then."""
        arrivals = [(r.arrival + self.frontend_s, r.id, r) for r in requests]
        heapq.heapify(arrivals)
        ends: list = []  # (time, replica index, event serial, plan or None for a wake-up)
        replicas, route = self.replicas, self.router.route
        events = 0
        while arrivals or ends:
            events += 1
            if on_progress is not None and events % 8192 == 0:
                on_progress(len(self.done) + len(self.rejected))
            if arrivals and (not ends or arrivals[0][0] <= ends[0][0]):
                now, _, req = heapq.heappop(arrivals)
                self._advance(now)
                rep = replicas[route(req, replicas)]
                if self._admissible(req, rep):
                    req.replica = rep.index
                    could_join = not rep.waiting and not rep.swapped  # else it queues behind a blocked head
                    rep.waiting.append(req)
                    if not rep.busy:  # wake it after every arrival of this instant has been queued
                        rep.busy = True
                        self._schedule(rep, now, None, ends)
                    elif could_join and rep.plan is not None and rep.plan.ends is not None:
                        self._cut(rep, now, ends)  # a decode run (a prefill run's budget is spoken for)
            else:
                now, idx, event, plan = heapq.heappop(ends)
                rep = replicas[idx]
                if event != rep.event:
                    continue
                self._advance(now)
                while True:  # iterate this replica locally while its next boundary comes before any other event
                    if plan is not None:
                        self._finish(rep, plan, now, arrivals)
                    plan = self._start(rep, now)
                    if plan is None:
                        break
                    if (arrivals and arrivals[0][0] <= plan.end) or (ends and ends[0][0] <= plan.end):
                        self._schedule(rep, plan.end, plan, ends)
                        break
                    now = plan.end
                    self._advance(now)
        if on_progress is not None:
            on_progress(len(self.done) + len(self.rejected))

    @staticmethod
    def _schedule(rep: Replica, at: float, plan: BatchPlan | None, ends: list) -> None:
        rep.event += 1
        rep.plan = plan
        heapq.heappush(ends, (at, rep.index, rep.event, plan))

    def _cut(self, rep: Replica, now: float, ends: list) -> None:
        """End the replica's decode run at the first iteration boundary at or after `now`."""
        plan = rep.plan
        keep = bisect_left(plan.ends, now) + 1
        if keep >= plan.steps:
            return
        rep.kv.release(rep.cohort.retreat(plan.steps - keep))
        plan.steps, plan.ends, plan.end = keep, plan.ends[:keep], plan.ends[keep - 1]
        plan.duration = plan.end - plan.start
        self._schedule(rep, plan.end, plan, ends)

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
    def _start(self, rep: Replica, now: float) -> BatchPlan | None:
        """Plan the replica's next iteration (or decode run) from `now`; None when it has nothing to do."""
        plan = rep.policy.plan(rep)
        if plan.empty:
            rep.busy = False
            rep.plan = None
            return None
        for req in plan.admitted:
            req.admitted = now
        rep.busy = True
        plan.start = now
        if plan.skippable and self.skip_ahead:
            plan.ends = self._decode_run(rep, plan, now)
            plan.steps, end = len(plan.ends), plan.ends[-1]
        elif self.skip_ahead and (chunk := rep.policy.chunk_budget(plan)):
            end = self._prefill_run(rep, plan, chunk, now)
        else:
            us = rep.cost.iteration_us(plan.prefill_shape(), plan.decodes, plan.decode_kv_sum) + plan.transfer_us
            end = now + us / 1e6
        plan.end, plan.duration = end, end - now
        rep.plan = plan
        return plan

    @staticmethod
    def _decode_run(rep: Replica, plan: BatchPlan, now: float) -> list[float]:
        """End times of the decode iterations before anything but an arrival could change the batch: the
        next completion, or the free KV blocks running out. The plan reserved the first iteration; this reserves
        the rest."""
        cohort = rep.cohort
        extra = cohort.steps_to_finish()
        if extra:
            need = cohort.blocks_needed(extra)
            if need > rep.kv.free:  # stop before the step that would evict prefix-cache entries (or preempt):
                extra = cohort.steps_within(rep.kv.free, extra)  # it does so at its own boundary, as stepping
                need = cohort.blocks_needed(extra)  # would, and a cut run then never has evicted ahead
            rep.kv.take(cohort.advance(extra, need))
        return rep.cost.decode_run_ends(plan.decodes, plan.decode_kv_sum, 1 + extra, now)

    @staticmethod
    def _prefill_run(rep: Replica, plan: BatchPlan, chunk: int, now: float) -> float:
        """Extend a plan whose one prefill chunk took the whole budget by the following full-budget chunks of
        the same prompt (the last may complete it), with the same decodes, until a member would finish or the
        free KV runs out; price each iteration and reserve its blocks. Returns the run's end time."""
        req, first = plan.prefills[0]
        cohort, kv = rep.cohort, rep.kv
        limit = cohort.steps_to_finish() if plan.decodes else req.target
        chunks, left = [first], req.target - req.prefilled - first
        while left >= chunk and len(chunks) <= limit:
            chunks.append(chunk)
            left -= chunk
        while True:  # stop before a step that would need more than the free blocks
            extra = len(chunks) - 1
            need_cohort = cohort.blocks_needed(extra) if plan.decodes else 0
            need_req = kv.blocks_for(req.prefilled + sum(chunks) - req.cached) - req.blocks
            if need_cohort + need_req <= kv.free or not extra:
                break
            chunks.pop()
        if extra:
            kv.take(cohort.advance(extra, need_cohort) if plan.decodes else 0)
            kv.take(need_req)
            req.blocks += need_req
        t, done, kv_sum = now, req.prefilled, plan.decode_kv_sum
        for q in chunks:
            t += rep.cost.iteration_us([(q, done)], plan.decodes, kv_sum) / 1e6
            done += q
            kv_sum += plan.decodes
        plan.prefills, plan.prefill_tokens, plan.steps = [(req, sum(chunks))], sum(chunks), len(chunks)
        return t

    def _finish(self, rep: Replica, plan: BatchPlan, now: float, arrivals: list) -> None:
        rep.busy_us += plan.duration * 1e6
        for req in rep.cohort.finished():
            self._complete(rep, req, now, arrivals)
        for req, q in plan.prefills:
            req.prefilled += q
            if req.prefilled >= req.target:  # the last chunk's pass emits the first (or next) token
                req.generated += 1
                if req.first_token is None:
                    req.first_token = now
                rep.prefilling.remove(req)
                if req.generated >= req.output:
                    self._complete(rep, req, now, arrivals)
                else:
                    rep.cohort.join(req)
        batch = len(plan.prefills) + plan.decodes
        rep.timeline.append((now - plan.duration, now, plan.steps, batch, plan.tokens(), rep.kv.total - rep.kv.free))
        assert rep.held_blocks() + rep.kv.free == rep.kv.total, "KV blocks not conserved"
        if self.audit:
            rep.cohort.audit()
            assert set(rep.running) == set(rep.prefilling) | set(rep.cohort.members)

    def _complete(self, rep: Replica, req: Req, now: float, arrivals: list) -> None:
        req.completion = now
        del rep.running[req]
        rep.kv.release(req.blocks)
        req.blocks = 0
        if rep.prefix is not None:
            rep.prefix.unpin(req.hashes[: req.hits])
            rep.prefix.insert(req.hashes[: req.prompt // rep.prefix.hash_tokens])
        self.done.append(req)
        if self.closed_loop is not None:
            nxt = self.closed_loop(req, now)
            if nxt is not None:
                heapq.heappush(arrivals, (nxt.arrival + self.frontend_s, nxt.id, nxt))
