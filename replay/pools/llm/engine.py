"""An LLM serving pool: replicas of one model that batch prefill and decode iterations (the fast engine).

Each replica runs iterations back to back while it has work. An iteration's batch comes from the pool's batching
policy; its duration from the calibrated iteration cost, plus any KV swap traffic over the host link. Sequences
are submitted by pipeline stages (a request's generation, or its prefill or decode half when disaggregated),
routed to a replica and queued; they are considered at the replica's next iteration boundary, and an idle
replica wakes once every submission of that instant is queued (so simultaneous requests share the first batch).

Decoding sequences live in a DecodeCohort (cohort.py), so a decode iteration costs O(1) per replica rather than
O(batch). A run of decode-only iterations whose batch cannot change (up to the next completion, within the free
KV) is one event, priced in one vectorized call; a submission to that replica that could join the batch cuts
the run at the first iteration boundary at or after it, which is where a step-by-step loop would have
considered it. Likewise, under chunked prefill, a prompt's consecutive full-budget chunks (with the same
decodes) are one event: the budget goes to that partial prefill first, so no arrival can change them. A replica
keeps iterating locally while its next boundary comes before every other event in the loop.

Overlap scheduler (`batching.overlap`: TensorRT-LLM's and SGLang's default, vLLM's async scheduling): the CPU
forms iteration n+1 while iteration n runs, so the plan at a boundary sees only what was queued before the
iteration that just ended began; a request queued during iteration n joins n+2 at the earliest (a replica waking
idle plans at once). A decode run is then cut at the second boundary after a submission, and stops after one
iteration while a queued request is still hidden, so skip-ahead stays bit-identical to stepping.

Pipeline parallelism: a replica of PP degree p runs p virtual engines (vLLM's), each with its own batch and 1/p
of the KV; an iteration passes through the p stages in turn (p x a stage's time plus the stage-to-stage sends),
so per-token latency never falls with PP while p batches are in flight.

KV hand-off (disaggregated prefill): a sequence submitted with hold_kv keeps its blocks after its last prefill
token until the pipeline releases it (its KV transfer has ended); a sequence submitted with kv_ready arrives
with its prompt's KV (transferred) and joins the decode batch as soon as its blocks fit.

Completions and rejections are reported through each sequence's `on_done(seq, now)`; the pipeline never
re-enters the pool from inside that call (it defers its next steps to a timer)."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque

from ...errors import KVBlocksNotConserved
from ...loop import EventLoop
from .batching import BatchingPolicy, BatchPlan
from .cohort import DecodeCohort
from .costs import IterationCost
from .kv import BlockManager, PrefixCache, SwapSpace
from .routers import Router


class Req:
    """One sequence on an LLM pool."""

    __slots__ = (
        "admitted",
        "arrival",
        "blocks",
        "cache_output",
        "cached",
        "client",
        "completion",
        "fetch_from",
        "fetch_to",
        "first_token",
        "generated",
        "hashes",
        "hit_tokens",
        "hits",
        "hold_kv",
        "id",
        "join_generated",
        "join_own",
        "join_step",
        "kv_ready",
        "on_done",
        "output",
        "owner",
        "preemptions",
        "prefill_s",
        "prefilled",
        "prompt",
        "queued",
        "reason",
        "replica",
        "serial",
        "session",
        "target",
    )

    def __init__(
        self,
        rid: int,
        arrival: float,
        prompt: int,
        output: int,
        session=None,
        client: int = -1,
        hashes: tuple = (),
        on_done=None,
    ):
        self.id, self.arrival, self.prompt, self.output = rid, arrival, prompt, max(output, 1)
        self.queued = arrival  # when it joined its replica's queue (an overlap scheduler plans without the newest)
        self.session, self.client, self.hashes, self.on_done = session, client, hashes, on_done
        self.owner = None  # the pipeline's (stage, request) this sequence serves
        self.cached = 0  # leading prompt tokens whose KV is shared from the prefix cache (not held privately)
        self.hits = 0  # prefix-cache hash blocks pinned by this request
        self.hit_tokens = 0  # prompt tokens served from the prefix cache, over all its prefills
        self.fetch_from = self.fetch_to = 0  # prompt tokens [from, to) whose KV a tier fetch put in HBM
        self.replica = -1
        self.prefilled = 0
        self.target = prompt  # tokens to prefill: the prompt, plus generated tokens after a recompute
        self.generated = 0  # materialized on leaving the decode cohort; implicit while decoding
        self.blocks = 0  # KV blocks held (on the device, or on the host while swapped out)
        self.serial = -1  # decode-cohort membership (see cohort.py)
        self.join_step = self.join_generated = self.join_own = 0
        self.admitted = self.first_token = self.completion = None
        self.preemptions = 0
        self.prefill_s = 0.0  # time of the iterations that prefilled it up to its first token (TTFT >= queue + it)
        self.reason = None
        self.hold_kv = False  # prefill of a disaggregated pair: keep the KV until released
        self.kv_ready = False  # decode of a disaggregated pair: arrives with the prompt's KV
        self.cache_output = False  # keep generated tokens' full blocks in the prefix cache (multi-round context)


class Replica:
    """One model instance (or one virtual engine of a PP replica): its queues, KV cache and decode cohort.
    `running` holds every admitted sequence in admission order (prefilling or decoding); the newest is the first
    preemption victim."""

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
        self.pool = None  # the LLMPool it belongs to
        self.on_end = None  # its pool's end-of-iteration handler
        self.gid = index  # its key in the event loop
        self.waiting: deque[Req] = deque()
        self.incoming: deque[Req] = deque()  # arrived with their KV: join the decode batch when blocks fit
        self.running: dict[Req, None] = {}
        self.prefilling: list[Req] = []
        self.swapped: deque[Req] = deque()
        self.handoff: dict[Req, None] = {}  # prefilled, KV held until the pipeline releases it
        self.reserved = 0  # requests routed here ahead of their submission (fetching their KV): load to come
        self.cohort = DecodeCohort(kv.block_tokens)
        self.busy = False
        self.plan: BatchPlan | None = None  # the plan in flight, while busy
        # requests queued after this instant are not seen by the next plan: with an overlap scheduler just before
        # the start of the iteration that just ended (the next one was formed then), else the boundary itself
        self.visible = 0.0
        self.overlap = policy.cfg.overlap
        self.event = 0  # the serial of its pending end event (a cut run's old event goes stale)
        self.busy_us = 0.0
        self.timeline: list[tuple] = []  # (start_s, end_s, iterations, batch_size, tokens, kv_used_blocks)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.swapped) + len(self.incoming) + self.reserved

    def held_blocks(self) -> int:
        held = self.cohort.blocks + (self.prefix.held if self.prefix is not None else 0)
        for r in self.prefilling:
            held += r.blocks
        for r in self.handoff:
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
        victim.fetch_from = victim.fetch_to = 0  # fetched KV is gone with the rest
        victim.kv_ready = False
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

    def admit_incoming(self, plan: BatchPlan, max_seqs: int) -> None:
        """Sequences whose prompt KV arrived (disaggregated decode) join the cohort, oldest first, while their
        blocks fit; they decode in this very iteration."""
        while self.incoming and len(self.running) < max_seqs:
            req = self.incoming[0]
            need = self.kv.blocks_for(req.prompt + req.generated - 1)
            if not self.kv.ensure(need):
                return
            self.incoming.popleft()
            self.kv.take(need)
            req.blocks = need
            self.running[req] = None
            plan.admitted.append(req)
            self.cohort.join(req)


class LLMPool:
    kind = "llm"
    kv_key_base = 0  # its model's offset in tier keys (Simulation sets it per model)

    def __init__(self, name: str, replicas: list[Replica], router: Router, loop: EventLoop, skip_ahead: bool = True):
        self.name, self.replicas, self.router, self.loop = name, replicas, router, loop
        self.skip_ahead = skip_ahead
        self.audit = False  # recheck the cohort and KV member by member at every boundary (tests)
        self._arrivals, self._events = loop.arrivals, loop.events  # peeked at every local iteration
        for rep in replicas:
            rep.pool = self
            rep.on_end = self.on_end
            rep.gid = len(loop.replicas)
            loop.replicas.append(rep)

    # ---- submissions ---------------------------------------------------------------------------------
    def route(self, req: Req) -> int:
        return self.router.route(req, self.replicas)

    def kv_block_bytes_at(self, tokens: int) -> float:
        """KV bytes of `tokens` tokens over the whole replica (what a tier transfer moves)."""
        return tokens * self.kv_bytes_per_token

    @property
    def devices(self) -> int:
        """Devices the pool occupies (engines of a PP replica share its devices)."""
        return self.spec.replicas * self.spec.tp * self.spec.pp

    def reserve(self, req: Req) -> int:
        """Route a sequence ahead of its submission (its KV is fetched there first): the replica counts it as
        outstanding from now, so routing meanwhile sees the load to come. Returns the replica."""
        index = self.route(req)
        self.replicas[index].reserved += 1
        return index

    def submit(self, req: Req, now: float, replica: int | None = None, reserved: bool = False) -> None:
        """Queue a sequence on a replica (the router's choice unless given); rejected ones are reported at once."""
        rep = self.replicas[self.route(req) if replica is None else replica]
        if reserved:
            rep.reserved -= 1
        if not self._admissible(req, rep, now):
            return
        req.replica = rep.index
        if req.kv_ready:
            rep.incoming.append(req)
            could_join = True
        else:
            could_join = not rep.waiting and not rep.swapped  # else it queues behind a blocked head
            req.queued = now
            rep.waiting.append(req)
        if not rep.busy:  # wake it after every arrival of this instant has been queued
            rep.busy = True
            self._schedule(rep, now, None)
        elif could_join and rep.plan is not None and rep.plan.ends is not None:
            self._cut(rep, now)  # a decode run (a prefill run's budget is spoken for)

    def release(self, req: Req, now: float) -> None:
        """Free the KV a hand-off sequence kept (its transfer has ended); wake its replica if idle."""
        rep = self.replicas[req.replica]
        del rep.handoff[req]
        rep.kv.release(req.blocks)
        req.blocks = 0
        if not rep.busy and (rep.waiting or rep.incoming or rep.swapped):
            rep.busy = True
            self._schedule(rep, now, None)

    def _admissible(self, req: Req, rep: Replica, now: float) -> bool:
        if req.prompt + req.output > rep.max_model_len:
            req.reason = f"prompt + output ({req.prompt + req.output}) exceeds max_model_len {rep.max_model_len}"
        elif rep.kv.blocks_for(req.prompt + req.output) > rep.kv.total:
            req.reason = f"needs more KV blocks than a replica has ({rep.kv.total})"
        else:
            return True
        req.completion = now
        req.on_done(req, now)
        return False

    # ---- events ----------------------------------------------------------------------------------------
    def on_end(self, rep: Replica, plan: BatchPlan | None, now: float) -> None:
        """An iteration (run) ended, or an idle replica woke: finish it, then iterate locally while the next
        boundary comes before every other event."""
        loop = self.loop
        arrivals, events = self._arrivals, self._events
        while True:
            if plan is not None:
                self._finish(rep, plan, now)
            rep.visible = self._overlap_cutoff(plan, now) if rep.overlap else now
            plan = self._start(rep, now)
            if plan is None:
                return
            end = plan.end
            if (arrivals and arrivals[0][0] <= end) or (events and events[0][0] <= end):
                self._schedule(rep, end, plan)
                return
            now = end
            loop.advance(now)

    def _schedule(self, rep: Replica, at: float, plan: BatchPlan | None) -> None:
        rep.event += 1
        rep.plan = plan
        self.loop.end_at(at, rep.gid, rep.event, plan)

    @staticmethod
    def _overlap_cutoff(plan: BatchPlan | None, now: float) -> float:
        """What an overlap scheduler's next batch sees: the queue as it was when the iteration that just ended
        began, strictly before that instant (the batch is formed right after the previous iteration's tokens are
        emitted, so a request sent in reply to them misses it); everything up to `now` for a replica waking
        idle (with nothing in flight it forms its next batch at once)."""
        if plan is None:
            return now
        if plan.ends is not None:  # a decode run
            start = plan.ends[-2] if len(plan.ends) > 1 else plan.start
        else:
            start = plan.last_start if plan.chunk_s else plan.start
        return math.nextafter(start, -math.inf)

    def _cut(self, rep: Replica, now: float) -> None:
        """End the replica's decode run where a sequence submitted at `now` is first planned: the first
        iteration boundary at or after it (with an overlap scheduler, the second boundary after it: the next
        batch was formed when the current iteration began)."""
        plan = rep.plan
        keep = bisect_right(plan.ends, now) + 2 if rep.overlap else bisect_left(plan.ends, now) + 1
        if keep >= plan.steps:
            return
        rep.kv.release(rep.cohort.retreat(plan.steps - keep))
        plan.steps, plan.ends, plan.end = keep, plan.ends[:keep], float(plan.ends[keep - 1])
        plan.duration = plan.end - plan.start
        self._schedule(rep, plan.end, plan)

    # ---- iterations ---------------------------------------------------------------------------------
    def _start(self, rep: Replica, now: float) -> BatchPlan | None:
        """Plan the replica's next iteration (or decode run) from `now`; None when it has nothing to do."""
        plan = rep.policy.plan(rep)
        if plan.empty and rep.waiting and rep.visible < now:  # an overlap scheduler with nothing in flight
            rep.visible = now
            plan = rep.policy.plan(rep)
        if plan.empty:
            rep.busy = False
            rep.plan = None
            return None
        for req in plan.admitted:
            req.admitted = now
        rep.busy = True
        plan.start = now
        if plan.skippable and self.skip_ahead and not (rep.waiting and rep.waiting[-1].queued > rep.visible):
            plan.ends = self._decode_run(rep, plan, now)
            plan.steps, end = len(plan.ends), float(plan.ends[-1])
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
        t, done, kv_sum, plan.chunk_s = now, req.prefilled, plan.decode_kv_sum, []
        for q in chunks:  # as many iterations stepped one by one would sum (bit for bit)
            end = t + rep.cost.iteration_us([(q, done)], plan.decodes, kv_sum) / 1e6
            plan.chunk_s.append(end - t)
            plan.last_start, t, done, kv_sum = t, end, done + q, kv_sum + plan.decodes
        plan.prefills, plan.prefill_tokens, plan.steps = [(req, sum(chunks))], sum(chunks), len(chunks)
        return t

    def _finish(self, rep: Replica, plan: BatchPlan, now: float) -> None:
        rep.busy_us += plan.duration * 1e6
        for req in rep.cohort.finished():
            self._complete(rep, req, now)
        for req, q in plan.prefills:
            req.prefilled += q
            if req.first_token is None:  # the iterations before its first token (not a recompute's later ones)
                for duration in plan.chunk_s or (plan.duration,):
                    req.prefill_s += duration
            if req.prefilled >= req.target:  # the last chunk's pass emits the first (or next) token
                req.generated += 1
                if req.first_token is None:
                    req.first_token = now
                rep.prefilling.remove(req)
                if req.generated >= req.output:
                    self._complete(rep, req, now)
                else:
                    rep.cohort.join(req)
        batch = len(plan.prefills) + plan.decodes
        rep.timeline.append((now - plan.duration, now, plan.steps, batch, plan.tokens(), rep.kv.total - rep.kv.free))
        if rep.held_blocks() + rep.kv.free != rep.kv.total:
            raise KVBlocksNotConserved(
                f"pool {self.name} replica {rep.index}: {rep.held_blocks()} held + {rep.kv.free} free != "
                f"{rep.kv.total} at {now} s"
            )
        if self.audit:
            rep.cohort.audit()
            if set(rep.running) != set(rep.prefilling) | set(rep.cohort.members):
                raise KVBlocksNotConserved(f"pool {self.name} replica {rep.index}: running set drifted")

    def _complete(self, rep: Replica, req: Req, now: float) -> None:
        req.completion = now
        del rep.running[req]
        if req.hold_kv:
            rep.handoff[req] = None
        else:
            rep.kv.release(req.blocks)
            req.blocks = 0
        if rep.prefix is not None:
            rep.prefix.unpin(req.hashes[: req.hits])
            kept = req.prompt + req.generated if req.cache_output else req.prompt
            rep.prefix.insert(req.hashes[: kept // rep.prefix.hash_tokens])
        req.on_done(req, now)
