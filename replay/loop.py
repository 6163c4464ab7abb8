"""The event queue and the clock. The loop knows events, not stages or pools.

Two heaps of (time, kind, key, serial, payload) tuples, ordered on the first four fields (payloads are never
compared: (kind, key, serial) is unique):
- `arrivals`: requests entering the system (kind ARRIVAL, key: the request's global id);
- `events`: timers (kind TIMER, key: a running counter, payload: (callback, argument)) and LLM replica
  iteration ends (kind END, key: the replica's global index, serial: the replica's event serial, payload: its
  plan; an end whose serial is no longer the replica's is stale and skipped).
At equal times arrivals go first, then timers, then iteration ends: work that becomes ready at a boundary is
queued before the boundary is processed, so it is considered there, as a step-by-step engine would."""

from __future__ import annotations

import gc
import heapq
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import ClockWentBack

# Objects the pauses below moved to the oldest generation unscanned since the last full collection one of them ran,
# and the objects that survived that collection (module state: a process's heap is one)
_moved_unscanned = 0
_live_after_full = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a simulation is built, run and tabulated: what it allocates
    lives until the end and makes few cycles, so collections meanwhile free little and keep rescanning every
    live object (on Mooncake's 12k-request KV-tier replay about 5% of the event loop, and 0.2 s of building,
    reading the log and tabulating). Nested pauses restore what they found.

    At the end, what the pause allocated moves to the oldest generation unscanned (a freeze and an unfreeze, when
    nothing else is frozen), as surviving a collection would have moved it: switched back on, the collector would
    otherwise scan all of it at its first young collection (0.1 s after the Mooncake replay). CPython does not
    count objects moved that way towards its next full collection, so a process that runs simulation after
    simulation (validate, a sweep, a Dask worker) kept every one's dead cycles: 3 million objects and 1 GB per
    worker after 120 silicon rows. So a pause that starts after earlier ones moved more objects than the last full
    collection left alive runs a full collection first (CPython's rule for its oldest generation, which it applies
    at a quarter): the cost stays in proportion to what the simulations allocated, and a single replay never pays
    it."""
    global _moved_unscanned, _live_after_full
    enabled = gc.isenabled()
    if enabled and _moved_unscanned > _live_after_full:
        gc.collect()
        _moved_unscanned, _live_after_full = 0, len(gc.get_objects())
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():  # another's frozen objects (shared pages after a fork) stay frozen
                # the young generation's count: the objects allocated (net) since its last collection, the pause's
                # (a freeze's count would be the whole heap)
                _moved_unscanned += gc.get_count()[0]
                gc.freeze()
                gc.unfreeze()
            gc.enable()


ARRIVAL, TIMER, END = 0, 1, 2
INF = float("inf")


class EventLoop:
    def __init__(self):
        self.arrivals: list[tuple] = []
        self.events: list[tuple] = []
        self.clock = 0.0
        self.replicas: list = []  # every LLM replica of every pool, by global index (END keys)
        self._timer_keys = itertools.count()
        self.on_arrival: Callable | None = None  # (request, now)
        self.processed = 0

    # ---- scheduling ------------------------------------------------------------------------------
    def arrive(self, at: float, key: int, request) -> None:
        heapq.heappush(self.arrivals, (at, ARRIVAL, key, 0, request))

    def call_at(self, at: float, callback: Callable, arg=None) -> None:
        """Run callback(arg, now) at `at`, after arrivals and before iteration ends of that instant."""
        heapq.heappush(self.events, (at, TIMER, next(self._timer_keys), 0, (callback, arg)))

    def end_at(self, at: float, replica_key: int, serial: int, plan) -> None:
        heapq.heappush(self.events, (at, END, replica_key, serial, plan))

    def next_time(self) -> float:
        a = self.arrivals[0][0] if self.arrivals else INF
        e = self.events[0][0] if self.events else INF
        return a if a < e else e

    def advance(self, now: float) -> None:
        if now < self.clock - 1e-9:
            raise ClockWentBack(f"clock went back from {self.clock} s to {now} s")
        self.clock = now

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, on_progress: Callable[[], None] | None = None) -> None:
        """Process every event in time order (with the cyclic garbage collector paused: gc_paused)."""
        with gc_paused():
            self._run(on_progress)

    def _run(self, on_progress: Callable[[], None] | None) -> None:
        arrivals, events, replicas = self.arrivals, self.events, self.replicas
        heapq.heapify(arrivals)
        pop = heapq.heappop
        while arrivals or events:
            self.processed += 1
            if on_progress is not None and self.processed % 8192 == 0:
                on_progress()
            if arrivals and (not events or arrivals[0][0] <= events[0][0]):
                now, _, _, _, request = pop(arrivals)
                self.advance(now)
                self.on_arrival(request, now)
                continue
            now, kind, key, serial, payload = pop(events)
            if kind == END:
                rep = replicas[key]
                if serial != rep.event:
                    continue
                self.advance(now)
                rep.on_end(rep, payload, now)
            else:
                self.advance(now)
                payload[0](payload[1], now)
        if on_progress is not None:
            on_progress()
