"""Batching policies and routers: small classes behind one interface each, chosen by name in the scenario."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import Batching

if TYPE_CHECKING:
    from .engine import Replica, Req


@dataclass
class BatchPlan:
    prefills: list = field(default_factory=list)  # (request, new tokens this iteration)
    decodes: list = field(default_factory=list)
    admitted: list = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.prefills and not self.decodes

    @property
    def skippable(self) -> bool:
        return not self.prefills and bool(self.decodes)

    def tokens(self) -> int:
        return sum(q for _, q in self.prefills) + len(self.decodes)

    def prefill_shape(self) -> list[tuple[int, int]]:
        return [(q, r.prefilled) for r, q in self.prefills]

    def decode_kv_sum(self) -> float:
        return float(sum(r.context for r in self.decodes))


class BatchingPolicy:
    """Forms the next iteration's batch of a replica, reserving KV blocks (preempting by recompute if short)."""

    name = ""

    def __init__(self, cfg: Batching):
        self.cfg = cfg

    def plan(self, rep: Replica, now: float) -> BatchPlan:
        raise NotImplementedError

    # ---- shared steps --------------------------------------------------------------------------------
    def _decodes(self, rep: Replica, plan: BatchPlan) -> None:
        """Every decoding sequence gets one token, if its KV can grow; else the newest sequences are preempted."""
        block_tokens = rep.kv.block_tokens
        for req in [r for r in rep.running if r.prefilled >= r.target]:
            own = req.context + 1 - req.cached  # tokens whose KV the sequence holds itself
            if own <= req.blocks * block_tokens:  # room in its last block: nothing to reserve
                plan.decodes.append(req)
                continue
            while req in rep.running and not rep.kv.can_grow(req.blocks, own):
                self._preempt(rep, rep.running[-1], plan)
            if req in rep.running:
                req.blocks = rep.kv.grow(req.blocks, own)
                plan.decodes.append(req)

    @staticmethod
    def _preempt(rep: Replica, victim: Req, plan: BatchPlan) -> None:
        """Recompute preemption: drop the victim's KV; it re-prefills prompt and generated tokens later."""
        rep.running.remove(victim)
        rep.kv.release(victim.blocks)
        victim.blocks = 0
        if rep.prefix is not None:
            rep.prefix.unpin(victim.hashes[: victim.hits])
        victim.hits = victim.cached = 0
        victim.prefilled = 0
        victim.target = victim.context
        victim.preemptions += 1
        rep.waiting.appendleft(victim)
        if victim in plan.decodes:
            plan.decodes.remove(victim)

    def _prefill(self, rep: Replica, plan: BatchPlan, budget: int, chunked: bool) -> int:
        """Add prefill work within the token budget: running partial prefills first, then the queue (FIFO)."""
        partial = [r for r in rep.running if r.prefilled < r.target and r not in plan.decodes]
        for req in partial:
            budget = self._add_chunk(rep, plan, req, budget, chunked)
        while rep.waiting and budget > 0 and len(rep.running) < self.cfg.max_num_seqs:
            req = rep.waiting[0]
            need = req.target - req.prefilled if not chunked else min(budget, req.target - req.prefilled)
            alone = not plan.prefills and not plan.decodes  # a prompt over the budget runs on its own
            if (need > budget and not alone) or not rep.kv.can_grow(req.blocks, req.prefilled + need - req.cached):
                break
            rep.waiting.popleft()
            rep.running.append(req)
            if rep.prefix is not None and req.hashes and req.prefilled == 0:
                req.hits = rep.prefix.match(req.hashes, req.target)
                req.cached = req.prefilled = min(req.hits * rep.prefix.hash_tokens, req.target - 1)
            if req.admitted is None:
                plan.admitted.append(req)
            budget = self._add_chunk(rep, plan, req, budget, chunked)
        return budget

    @staticmethod
    def _add_chunk(rep: Replica, plan: BatchPlan, req: Req, budget: int, chunked: bool) -> int:
        left = req.target - req.prefilled
        q = min(left, budget) if chunked else left
        alone = not plan.prefills and not plan.decodes
        own = req.prefilled + q - req.cached
        if q <= 0 or (q > budget and not alone) or not rep.kv.can_grow(req.blocks, own):
            return budget
        req.blocks = rep.kv.grow(req.blocks, own)
        plan.prefills.append((req, q))
        return max(budget - q, 0)


class ChunkedPrefill(BatchingPolicy):
    """Sarathi-style: a token budget per iteration shared by decodes (one token each) and prefill chunks."""

    name = "chunked_prefill"

    def plan(self, rep: Replica, now: float) -> BatchPlan:
        plan = BatchPlan()
        budget = self.cfg.max_batched_tokens
        if self.cfg.order == "decode_first":
            self._decodes(rep, plan)
            self._prefill(rep, plan, budget - len(plan.decodes), chunked=True)
        else:
            budget = self._prefill(rep, plan, budget, chunked=True)
            self._decodes(rep, plan)
        return plan


class Continuous(BatchingPolicy):
    """vLLM / Orca iteration-level batching without chunking: whole prompts are prefilled in one pass.
    prefill_first runs a prefill-only iteration whenever queued prompts fit; decode_first mixes whole
    prefills into decode iterations within the token budget."""

    name = "continuous"

    def plan(self, rep: Replica, now: float) -> BatchPlan:
        plan = BatchPlan()
        if self.cfg.order == "prefill_first":
            self._prefill(rep, plan, self.cfg.max_batched_tokens, chunked=False)
            if not plan.prefills:
                self._decodes(rep, plan)
            return plan
        self._decodes(rep, plan)
        self._prefill(rep, plan, self.cfg.max_batched_tokens - len(plan.decodes), chunked=False)
        return plan


class Static(BatchingPolicy):
    """Static batching: a batch is formed when the replica is empty and runs until every member finishes."""

    name = "static"

    def plan(self, rep: Replica, now: float) -> BatchPlan:
        plan = BatchPlan()
        if not rep.running:
            self._prefill(rep, plan, self.cfg.max_batched_tokens, chunked=False)
            return plan
        self._decodes(rep, plan)
        return plan


BATCHING = {cls.name: cls for cls in (ChunkedPrefill, Continuous, Static)}


class Router:
    name = ""

    def route(self, req: Req, replicas: list[Replica]) -> int:
        raise NotImplementedError


class RoundRobin(Router):
    name = "round_robin"

    def __init__(self):
        self.next = 0

    def route(self, req: Req, replicas: list[Replica]) -> int:
        i = self.next % len(replicas)
        self.next += 1
        return i


class LeastOutstanding(Router):
    name = "least_outstanding"

    def route(self, req: Req, replicas: list[Replica]) -> int:
        return min(range(len(replicas)), key=lambda i: (replicas[i].outstanding, i))


class SessionAffinity(Router):
    """Requests of one session go to one replica (its KV prefix stays warm there); others round-robin."""

    name = "session_affinity"

    def __init__(self):
        self.fallback = RoundRobin()
        self.home: dict = {}

    def route(self, req: Req, replicas: list[Replica]) -> int:
        if req.session is None:
            return self.fallback.route(req, replicas)
        if req.session not in self.home:
            self.home[req.session] = self.fallback.route(req, replicas)
        return self.home[req.session]


ROUTERS = {cls.name: cls for cls in (RoundRobin, LeastOutstanding, SessionAffinity)}
