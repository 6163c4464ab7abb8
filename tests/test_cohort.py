"""The decode cohort's implicit per-sequence state against an explicit, member-by-member model."""

from __future__ import annotations

import random

import pytest
from hermes_sim.replay.pools.llm.cohort import DecodeCohort
from hermes_sim.replay.pools.llm.engine import Req


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.mark.parametrize("seed", range(5))
def test_cohort_matches_explicit_bookkeeping(seed: int):
    rng = random.Random(seed)
    bt = rng.choice([1, 3, 16])
    cohort = DecodeCohort(bt)
    own: dict[Req, int] = {}  # explicit model: KV tokens each member holds
    gen: dict[Req, int] = {}
    for step in range(400):
        op = rng.random()
        if op < 0.3 or not own:
            req = Req(step, 0.0, rng.randint(1, 300), rng.randint(2, 60))
            req.cached = rng.randint(0, req.prompt - 1) if rng.random() < 0.3 else 0
            req.generated = rng.randint(1, req.output - 1)
            own[req] = req.prompt + req.generated - 1 - req.cached
            gen[req] = req.generated
            req.blocks = ceil_div(own[req], bt)
            cohort.join(req)
        elif op < 0.4:
            req = rng.choice(list(own))
            cohort.leave(req)
            assert req.generated == gen[req] and req.blocks == ceil_div(own[req], bt)
            del own[req], gen[req]
        else:
            limit = cohort.steps_to_finish()
            assert limit == min(r.output - g for r, g in gen.items())
            for k in range(0, min(limit, 3 * bt) + 1):
                naive = sum(ceil_div(o + k, bt) - ceil_div(o, bt) for o in own.values())
                assert cohort.blocks_needed(k) == naive
            free = rng.randint(0, 2 * len(own) + 1)
            k = cohort.steps_within(free, limit)
            assert cohort.blocks_needed(k) <= free
            assert k == limit or cohort.blocks_needed(k + 1) > free
            if k:
                cohort.advance(k)
                for r in own:
                    own[r] += k
                    gen[r] += k
            for r in cohort.finished():
                assert gen.pop(r) == r.output == r.generated and r.blocks == ceil_div(own.pop(r), bt)
        assert cohort.blocks == sum(ceil_div(o, bt) for o in own.values())
        assert cohort.context_sum == sum(r.prompt + g for r, g in gen.items())
        cohort.audit()


def test_retreat_undoes_advance():
    cohort = DecodeCohort(4)
    for i, prompt in enumerate((5, 8, 13)):
        req = Req(i, 0.0, prompt, 100)
        req.generated, req.blocks = 1, ceil_div(prompt, 4)
        cohort.join(req)
    before = (cohort.step, cohort.blocks, cohort.context_sum)
    taken = cohort.advance(11)
    assert cohort.retreat(11) == taken
    assert (cohort.step, cohort.blocks, cohort.context_sum) == before
