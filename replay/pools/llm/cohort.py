"""The decoding sequences of one replica, advanced together without per-sequence work.

Under iteration-level batching every decoding sequence gains one token per decode iteration, so its state is a
function of one replica-wide step counter: tokens generated = generated at join + (step - join step). The cohort
keeps the aggregates an iteration needs (member count, total context, KV blocks held, blocks the next k steps
will allocate, steps until the next member finishes) and touches a member only when it joins or leaves. A run
of k decode iterations then costs O(1) bookkeeping instead of O(members x k).

KV layout of a member: it holds blocks for its own KV tokens (context - 1 - cached: the newest token's KV is
written by the next step), so a step allocates a block for exactly the members whose own tokens fill their
last block; that happens every `block_tokens` steps, at a phase fixed when the member joins."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ...errors import KVBlocksNotConserved

if TYPE_CHECKING:
    from .engine import Req


class DecodeCohort:
    def __init__(self, block_tokens: int):
        self.block_tokens = block_tokens
        self.step = 0  # decode iterations this replica has run
        self.members: dict[Req, None] = {}  # insertion-ordered set
        self.context_offset = 0  # sum over members of (context at join - join step)
        self.crossings = [0] * block_tokens  # members allocating a block at steps = i (mod block_tokens)
        self.blocks = 0  # KV blocks held by members
        self._finishing: list = []  # heap of (finish step, join serial, request)
        self._serial = 0

    def __len__(self) -> int:
        return len(self.members)

    # ---- aggregates ----------------------------------------------------------------------------------
    @property
    def context_sum(self) -> int:
        """Total context (prompt + generated tokens) of the members: the decode attention's KV length sum."""
        return self.context_offset + len(self.members) * self.step

    def steps_to_finish(self) -> int:
        """Decode iterations until the first member has generated its whole output."""
        heap = self._finishing
        while heap and heap[0][2].serial != heap[0][1]:  # left the cohort since
            heapq.heappop(heap)
        return heap[0][0] - self.step

    def blocks_needed(self, steps: int) -> int:
        """KV blocks the next `steps` iterations allocate."""
        bt = self.block_tokens
        if steps == 1:
            return self.crossings[self.step % bt]
        cycles, rest = divmod(steps, bt)
        phase, crossings = self.step % bt, self.crossings
        end = phase + rest  # the window of `rest` phases from `phase`, wrapping around the block
        window = sum(crossings[phase:end]) if end <= bt else sum(crossings[phase:]) + sum(crossings[: end - bt])
        return cycles * len(self.members) + window

    def steps_within(self, free_blocks: int, limit: int) -> int:
        """The most iterations (up to `limit`) whose block allocations fit in `free_blocks`."""
        n, bt = len(self.members), self.block_tokens
        if not n or self.blocks_needed(limit) <= free_blocks:
            return limit
        cycles = free_blocks // n
        steps, left = cycles * bt, free_blocks - cycles * n
        phase = self.step % bt
        for j in range(bt):
            c = self.crossings[(phase + j) % bt]
            if c > left:
                break
            left -= c
            steps += 1
        return min(steps, limit)

    # ---- membership ----------------------------------------------------------------------------------
    def advance(self, steps: int, need: int | None = None) -> int:
        """Run `steps` decode iterations; returns the blocks they allocated (`need`, when the caller has
        computed blocks_needed(steps) already). The caller takes them from the free pool, having checked they
        fit."""
        if need is None:
            need = self.blocks_needed(steps)
        self.blocks += need
        self.step += steps
        return need

    def retreat(self, steps: int) -> int:
        """Undo the last `steps` iterations of a run cut short; returns the blocks they had allocated."""
        self.step -= steps
        need = self.blocks_needed(steps)
        self.blocks -= need
        return need

    def join(self, req: Req) -> None:
        """A sequence whose prefill is complete (its KV held in req.blocks) starts decoding."""
        own = req.prompt + req.generated - 1 - req.cached
        self._serial += 1
        req.serial, req.join_step, req.join_generated, req.join_own = self._serial, self.step, req.generated, own
        self.members[req] = None
        self.context_offset += req.prompt + req.generated - self.step
        self.crossings[(self.step - own) % self.block_tokens] += 1
        self.blocks += req.blocks
        heapq.heappush(self._finishing, (self.step + req.output - req.generated, req.serial, req))

    def leave(self, req: Req) -> None:
        """Materialize a member's generated tokens and blocks and take it out of the cohort."""
        ran = self.step - req.join_step
        req.generated = req.join_generated + ran
        req.blocks = -(-(req.join_own + ran) // self.block_tokens)
        del self.members[req]
        self.context_offset -= req.prompt + req.join_generated - req.join_step
        self.crossings[(req.join_step - req.join_own) % self.block_tokens] -= 1
        self.blocks -= req.blocks
        req.serial = -1

    def finished(self) -> list[Req]:
        """Members that have generated their whole output, taken out of the cohort (in join order)."""
        out = []
        heap = self._finishing
        while heap and heap[0][0] <= self.step:
            _, serial, req = heapq.heappop(heap)
            if req.serial == serial:
                self.leave(req)
                out.append(req)
        return out

    def audit(self) -> None:
        """Recompute the aggregates member by member (tests only: O(members))."""
        bt, ran = self.block_tokens, [self.step - r.join_step for r in self.members]
        blocks = sum(-(-(r.join_own + k) // bt) for r, k in zip(self.members, ran, strict=True))
        if blocks != self.blocks:
            raise KVBlocksNotConserved(f"cohort holds {self.blocks} blocks, its members {blocks}")
        context = sum(r.prompt + r.join_generated + k for r, k in zip(self.members, ran, strict=True))
        if context != self.context_sum:
            raise KVBlocksNotConserved("cohort context sum drifted")
