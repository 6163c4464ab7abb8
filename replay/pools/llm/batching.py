"""Batching policies: small classes behind one interface, chosen by name in the scenario (`batching.policy`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...scenario import Batching

if TYPE_CHECKING:
    from .engine import Replica, Req


@dataclass(slots=True)
class BatchPlan:
    prefills: list = field(default_factory=list)  # (request, new tokens this iteration)
    prefill_tokens: int = 0
    decodes: int = 0  # decoding sequences in the iteration: the replica's whole decode cohort, or none
    decode_kv_sum: float = 0.0  # their total context at the first iteration
    admitted: list = field(default_factory=list)
    transfer_us: float = 0.0  # KV swap traffic over the host link, charged to this iteration
    preempted: bool = False  # blocks were freed while planning: a waiting request may fit at the next boundary
    steps: int = 1  # iterations this plan runs (more than one for a skipped-ahead decode run)
    start: float = 0.0  # seconds
    end: float = 0.0
    duration: float = 0.0
    ends: Sequence[float] | None = None  # end time (s) of each iteration of a decode run (a list or an array)
    chunk_s: list[float] | None = None  # duration (s) of each iteration of a prefill run
    last_start: float = 0.0  # when a prefill run's last iteration began (s)

    @property
    def empty(self) -> bool:
        return not self.prefills and not self.decodes and not self.transfer_us

    @property
    def skippable(self) -> bool:
        return not self.prefills and bool(self.decodes) and not self.transfer_us and not self.preempted

    def tokens(self) -> int:
        return self.prefill_tokens + self.decodes * self.steps

    def prefill_shape(self) -> list[tuple[int, int]]:
        return [(q, r.prefilled) for r, q in self.prefills]


class BatchingPolicy:
    """Forms the next iteration's batch of a replica, reserving its KV blocks (preempting the newest sequences
    when decodes cannot grow)."""

    name = ""

    def __init__(self, cfg: Batching):
        self.cfg = cfg

    def plan(self, rep: Replica) -> BatchPlan:
        raise NotImplementedError

    def chunk_budget(self, plan: BatchPlan) -> int:
        """Tokens each following iteration would give the plan's one prefill chunk if nothing but its prompt
        changed: the plan then extends into a run of full-budget chunks (arrivals cannot change it: the budget
        goes to this partial prefill first). 0 when the plan cannot be extended."""
        return 0

    # ---- shared steps --------------------------------------------------------------------------------
    @staticmethod
    def _decodes(rep: Replica, plan: BatchPlan) -> None:
        """Every decoding sequence gets one token; the blocks that takes are reserved now."""
        cohort = rep.cohort
        while cohort:
            need = cohort.blocks_needed(1)
            if rep.kv.ensure(need):
                plan.decodes, plan.decode_kv_sum = len(cohort), float(cohort.context_sum)
                rep.kv.take(cohort.advance(1, need))
                return
            rep.preempt_newest(plan)

    def _resume_or_prefill(self, rep: Replica, plan: BatchPlan, budget: int, chunked: bool) -> int:
        """Swapped-out sequences come back first; new prefills are admitted only once none is left."""
        if rep.swapped:
            rep.swap_in(plan, self.cfg.max_num_seqs)
            if rep.swapped:
                return budget
        return self._prefill(rep, plan, budget, chunked)

    def _prefill(self, rep: Replica, plan: BatchPlan, budget: int, chunked: bool) -> int:
        """Add prefill work within the token budget: running partial prefills first, then the queue (FIFO)."""
        for req in rep.prefilling:
            budget = self._add_chunk(rep, plan, req, budget, chunked)
        while rep.waiting and budget > 0 and len(rep.running) < self.cfg.max_num_seqs:
            req = rep.waiting[0]
            if req.queued > rep.visible:  # queued after this batch was formed (overlap scheduler)
                break
            need = req.target - req.prefilled if not chunked else min(budget, req.target - req.prefilled)
            alone = not plan.prefills and not plan.decodes  # a prompt over the budget runs on its own
            if (need > budget and not alone) or not rep.kv.can_grow(req.blocks, req.prefilled + need - req.cached):
                break
            rep.waiting.popleft()
            rep.running[req] = None
            rep.prefilling.append(req)
            if rep.prefix is not None and req.hashes and req.prefilled == 0:
                req.hits = rep.prefix.match(req.hashes, req.target)
                req.cached = req.prefilled = min(req.hits * rep.prefix.hash_tokens, req.target - 1)
                req.hit_tokens += req.cached
            if req.fetch_to and req.prefilled >= req.fetch_from:  # KV fetched from a tier continues the prefix
                req.prefilled = max(req.prefilled, min(req.fetch_to, req.target - 1))
            if req.admitted is None:
                plan.admitted.append(req)
            budget = self._add_chunk(rep, plan, req, budget, chunked)
        return budget

    @staticmethod
    def _add_chunk(rep: Replica, plan: BatchPlan, req: Req, budget: int, chunked: bool) -> int:
        left = req.target - req.prefilled
        q = min(left, budget) if chunked else left
        alone = not plan.prefills and not plan.decodes
        if q <= 0 or (q > budget and not alone):
            return budget
        blocks = rep.kv.try_grow(req.blocks, req.prefilled + q - req.cached)
        if blocks < 0:
            return budget
        req.blocks = blocks
        plan.prefills.append((req, q))
        plan.prefill_tokens += q
        return max(budget - q, 0)


class ChunkedPrefill(BatchingPolicy):
    """Sarathi-style: a token budget per iteration shared by decodes (one token each) and prefill chunks."""

    name = "chunked_prefill"

    def plan(self, rep: Replica) -> BatchPlan:
        plan = BatchPlan()
        rep.admit_incoming(plan, self.cfg.max_num_seqs)
        budget = self.cfg.max_batched_tokens
        if self.cfg.order == "decode_first":
            self._decodes(rep, plan)
            self._resume_or_prefill(rep, plan, budget - plan.decodes, chunked=True)
        else:
            budget = self._resume_or_prefill(rep, plan, budget, chunked=True)
            self._decodes(rep, plan)
        return plan

    def chunk_budget(self, plan: BatchPlan) -> int:
        if len(plan.prefills) != 1 or plan.transfer_us or plan.preempted:
            return 0
        budget = self.cfg.max_batched_tokens - (plan.decodes if self.cfg.order == "decode_first" else 0)
        return budget if plan.prefills[0][1] == budget else 0


class Continuous(BatchingPolicy):
    """vLLM / Orca iteration-level batching without chunking: whole prompts are prefilled in one pass.
    prefill_first runs a prefill-only iteration whenever queued prompts fit; decode_first mixes whole
    prefills into decode iterations within the token budget."""

    name = "continuous"

    def plan(self, rep: Replica) -> BatchPlan:
        plan = BatchPlan()
        rep.admit_incoming(plan, self.cfg.max_num_seqs)
        if self.cfg.order == "prefill_first":
            self._resume_or_prefill(rep, plan, self.cfg.max_batched_tokens, chunked=False)
            if not plan.prefills:
                self._decodes(rep, plan)
            return plan
        self._decodes(rep, plan)
        self._resume_or_prefill(rep, plan, self.cfg.max_batched_tokens - plan.decodes, chunked=False)
        return plan


class Static(BatchingPolicy):
    """Static batching: a batch is formed when the replica is empty and runs until every member finishes."""

    name = "static"

    def plan(self, rep: Replica) -> BatchPlan:
        plan = BatchPlan()
        if not rep.running:
            rep.admit_incoming(plan, self.cfg.max_num_seqs)
        if not rep.running:
            self._resume_or_prefill(rep, plan, self.cfg.max_batched_tokens, chunked=False)
            return plan
        self._decodes(rep, plan)
        return plan


BATCHING = {cls.name: cls for cls in (ChunkedPrefill, Continuous, Static)}
