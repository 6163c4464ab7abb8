"""Each named invariant of the engine (replay/errors.py) raised when its bug is injected: a check that would
not catch the bug it guards is no check."""

from __future__ import annotations

import copy
import gc
import random
from pathlib import Path

import pytest
from conftest import SAMPLES
from hermes_sim.replay import errors
from hermes_sim.replay.loop import EventLoop, gc_paused
from hermes_sim.replay.resources.link import Link
from hermes_sim.replay.resources.tier import Tier
from hermes_sim.replay.run import simulate
from hermes_sim.replay.scenario import parse

AZURE = str(SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
MOONCAKE = str(SAMPLES / "requests/mooncake/conversation_trace.jsonl")
POOL = {
    "device": "h100_sxm",
    "model": "llama-3.1-8b",
    "framework": "vllm",
    "step_overhead_us": 200.0,
    "max_model_len": 131072,
}
DOC = {
    "clients": [{"name": "c", "source": {"kind": "log", "log": MOONCAKE, "limit": 60}, "pipeline": "p"}],
    "pools": [{**POOL, "name": "prefill"}, {**POOL, "name": "decode"}],
    "links": [{"name": "net", "bandwidth": 5e9, "latency_s": 1e-5}],
    "tiers": [{"name": "dram", "like": "host_dram", "capacity_bytes": 2e9}],
    "pipelines": {
        "p": {
            "stages": [
                {"name": "fetch", "type": "kv_retrieval", "tiers": ["dram"], "pool": "prefill"},
                {"name": "tool", "type": "tool", "duration_ms": 1.0},
                {"name": "prefill", "type": "prefill", "pool": "prefill"},
                {"name": "transfer", "type": "kv_transfer", "link": "net"},
                {"name": "decode", "type": "decode", "pool": "decode"},
            ]
        }
    },
}


@pytest.fixture(scope="module")
def wh(calibrated_warehouse: Path) -> Path:
    return calibrated_warehouse


def run(wh: Path):
    return simulate(parse(copy.deepcopy(DOC)), wh)


def test_the_unbroken_engine_keeps_every_invariant(wh: Path):
    out = run(wh)
    assert (out["requests"].status == "completed").all()
    assert out["summary"]["tiers"]["dram"]["peak_bytes"] <= 2e9


def test_clock_going_back_is_caught(wh: Path, monkeypatch):
    from hermes_sim.replay.pipeline.tool import ToolStage

    def back_in_time(self, run_, now):
        self.sim.loop.call_at(now - 1.0, self._back, run_)

    monkeypatch.setattr(ToolStage, "start", back_in_time)
    with pytest.raises(errors.ClockWentBack):
        run(wh)


def test_leaked_kv_blocks_are_caught(wh: Path, monkeypatch):
    from hermes_sim.replay.pools.llm.kv import BlockManager

    monkeypatch.setattr(BlockManager, "release", lambda self, held: None)  # a completed sequence keeps its blocks
    with pytest.raises(errors.KVBlocksNotConserved):
        run(wh)


def test_a_stage_started_before_its_dependency_ended_is_caught(wh: Path, monkeypatch):
    from hermes_sim.replay.simulation import Simulation

    def eager(self, run_, now):  # every stage at arrival, dependencies or not
        for i in range(len(run_.graph.stages)):
            self._start(run_, i, now)

    monkeypatch.setattr(Simulation, "_arrive", eager)
    with pytest.raises(errors.StageOrderViolated):
        run(wh)


def test_a_link_faster_than_its_bandwidth_is_caught(wh: Path, monkeypatch):
    real = Link._progress

    def double(self, now):  # bytes move twice as fast as the bandwidth allows
        dt = now - self._last
        if self.flying and dt > 0:
            for t in self.flying:
                t.remaining -= dt * self.bandwidth / len(self.flying)
        real(self, now)

    monkeypatch.setattr(Link, "_progress", double)
    with pytest.raises(errors.LinkBytesNotConserved):
        run(wh)


def test_a_lost_transfer_is_caught():
    loop = EventLoop()
    link = Link("l", 1e9, 0.0, loop)
    link.send(1e6, 0.0, lambda arg, now: None)
    link.flying.clear()  # dropped in flight
    loop.run()
    with pytest.raises(errors.LinkBytesNotConserved):
        link.check()


def _stores_without_evicting(self: Tier, keys: list, nbytes: float) -> list:
    """A writer with the bug: it fills the tier past its capacity and never evicts."""
    for k in keys:
        if k not in self.blocks:
            self.blocks[k] = nbytes
            self.used += nbytes
    self.peak = max(self.peak, self.used)
    return []


def test_a_tier_over_its_capacity_is_caught(wh: Path, monkeypatch):
    monkeypatch.setattr(Tier, "put_many", _stores_without_evicting)
    with pytest.raises(errors.TierOverCapacity):
        run(wh)


def test_a_full_tier_evicts_as_it_writes_and_counts_its_bytes():
    tier = Tier("t", 3.0)
    assert tier.put_many([1, 2, 3], 1.0) == []
    assert tier.put_many([2, 4, 5], 1.0) == [(1, 1.0), (3, 1.0)]  # LRU: the hit on 2 refreshed it
    assert list(tier.blocks) == [2, 4, 5] and tier.used == 3.0 and tier.evictions == 2 and tier.writes == 5
    tier.check()
    tier.used += 1.0  # bytes counted that no block holds
    with pytest.raises(errors.TierOverCapacity):
        tier.check()


@pytest.mark.parametrize("policy", ["lru", "fifo"])
def test_a_tier_writing_in_bulk_ends_as_writing_block_by_block_would(policy: str):
    """put_many evicts by count when every held block has the written size (whole bytes): the same victims in the
    same order, the same blocks kept in the same order and the same counters as one block at a time, through
    refreshing hits, repeated keys, a second block size, fractional sizes and the tier emptying."""
    rng = random.Random(7)
    bulk, each = Tier("t", 40.0 * 4096, policy), Tier("t", 40.0 * 4096, policy)
    for step in range(3000):
        size = 4096.0 if step < 1500 else rng.choice([4096.0] * 8 + [8192.0, 4096.5])  # one size, then three
        keys = [rng.randrange(800) for _ in range(rng.randrange(1, 12))]  # mostly new, now and then repeated
        if step % 5 == 0:
            probe = [rng.randrange(200) for _ in range(4)]
            assert bulk.prefix(probe) == each.prefix(probe)
        if step == 1600:  # a size larger than the tier: nothing stored, nothing evicted
            size = 41.0 * 4096
        assert bulk.put_many(keys, size) == ([] if size > each.capacity else each._put_each(keys, size))
        assert list(bulk.blocks.items()) == list(each.blocks.items())
        counters = [(t.used, t.peak, t.writes, t.evictions) for t in (bulk, each)]
        assert counters[0] == counters[1]
    bulk.check()


def test_a_replay_leaves_the_garbage_collector_as_it_found_it_even_when_it_fails(wh: Path, monkeypatch):
    monkeypatch.setattr(Tier, "put_many", _stores_without_evicting)
    assert gc.isenabled()
    with pytest.raises(errors.TierOverCapacity):
        run(wh)  # simulate pauses the collector for the build, the loop and the tables
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a pause inside a caller's own pause does not switch it back on
    finally:
        gc.enable()


def test_a_pause_hands_what_it_allocated_to_the_oldest_generation_and_its_cycles_are_still_collected():
    """Re-enabled, the collector would scan everything the pause allocated at its first young collection; moved to
    the oldest generation unscanned, it is left to the full collections, which still free its cycles. Objects
    another caller froze stay frozen."""
    import weakref

    class Node:
        pass

    gc.collect()
    with gc_paused():
        keep = [[i] for i in range(50_000)]
        cycle = Node()
        cycle.me = cycle
        dead = weakref.ref(cycle)
        del cycle
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert gc.get_count()[0] < 1000  # not the 50,000 lists: they left the young generation unscanned
    assert dead() is not None  # no collection ran at the end of the pause
    gc.collect()
    assert dead() is None and len(keep) == 50_000
    frozen = [object() for _ in range(3)]
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        with gc_paused():
            pass
        # still frozen (an unfreeze would leave 0) and nothing newly frozen; a frozen object that dies in the
        # meantime (another thread's garbage) leaves the count, so it may only fall, and by a few
        assert before - 100 < gc.get_freeze_count() <= before
    finally:
        gc.unfreeze()
        del frozen


def test_a_pause_after_others_collects_their_dead_cycles_once_they_outnumber_the_live_heap(monkeypatch):
    """What the pauses move to the oldest generation counts towards no full collection of CPython's: a process
    running simulation after simulation (validate, a sweep, a Dask worker) kept every dead cycle (3 million objects
    and 1 GB per worker after 120 silicon rows). A pause starting after earlier ones moved more objects than the
    last full collection left alive collects them first; below that, it leaves them to CPython."""
    import weakref

    from hermes_sim.replay import loop

    class Node:
        pass

    monkeypatch.setattr(loop, "_moved_unscanned", 0)
    monkeypatch.setattr(loop, "_live_after_full", 10**9)  # a live heap far larger than what a pause moves
    with gc_paused():
        cycle = Node()
        cycle.me = cycle
        dead = weakref.ref(cycle)
        del cycle
    assert loop._moved_unscanned > 0
    with gc_paused():
        assert dead() is not None  # below the rule: no collection on the way in
    monkeypatch.setattr(loop, "_live_after_full", 0)  # fewer alive after the last full collection than moved since
    with gc_paused():
        assert dead() is None  # collected on the way in, before this pause allocates
    assert 0 < loop._live_after_full < 10**9


def test_a_request_that_never_ends_is_caught(wh: Path, monkeypatch):
    from hermes_sim.replay.pools.llm.engine import LLMPool

    real = LLMPool._complete

    def forget(self, rep, req, now):  # the pool finishes a sequence and never reports it
        if req.id % 7 == 0:
            req.on_done = lambda seq, t: None
        real(self, rep, req, now)

    monkeypatch.setattr(LLMPool, "_complete", forget)
    with pytest.raises(errors.RequestLost):
        run(wh)


def test_processor_sharing_splits_the_bandwidth_between_concurrent_transfers():
    loop = EventLoop()
    link = Link("l", 1e9, 0.0, loop)
    ends = {}
    link.send(1e9, 0.0, lambda arg, now: ends.setdefault("a", now))
    loop.call_at(0.5, lambda arg, now: link.send(0.25e9, now, lambda a, t: ends.setdefault("b", t)))
    loop.run()
    # a alone for 0.5 s (0.5 GB), then both at 0.5 GB/s: b's 0.25 GB takes 0.5 s; a's last 0.25 GB then alone
    assert ends["b"] == pytest.approx(1.0) and ends["a"] == pytest.approx(1.25)
    link.check()


def test_lru_tier_evicts_the_least_recently_used_block():
    t = Tier("t", 3.0, "lru")
    for k in "abc":
        t.put(k, 1.0)
    assert t.prefix(["a"]) == 1  # a is now the most recent
    assert t.put("d", 1.0) == [("b", 1.0)]
    fifo = Tier("f", 3.0, "fifo")
    for k in "abc":
        fifo.put(k, 1.0)
    fifo.prefix(["a"])
    assert fifo.put("d", 1.0) == [("a", 1.0)]
