"""Service pools: replicas of a non-LLM stage (an encoder model or a vector index) on GPUs, ASICs or CPUs, with
dynamic batching as serving frontends do it (Triton's max queue delay, TEI's batching): one queue per pool; an
idle replica starts a batch when `max_batch` jobs wait or the oldest has waited `max_wait_us`. A batch's time is
priced by the pool's cost (service_costs.py) as the device it runs on, with the tier of every price."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from ..loop import EventLoop


class Job:
    """One stage's work on a service pool: `seqs` sequences (or queries) of up to `tokens` tokens."""

    __slots__ = ("arg", "done", "ended", "enqueued", "replica", "seqs", "started", "tokens")

    def __init__(self, seqs: int, tokens: int, done: Callable, arg=None):
        self.seqs, self.tokens, self.done, self.arg = seqs, tokens, done, arg
        self.enqueued = self.started = self.ended = 0.0
        self.replica = -1


class ServicePool:
    kind = "service"

    def __init__(self, name: str, replicas: int, max_batch: int, max_wait_s: float, cost, loop: EventLoop):
        self.name, self.cost, self.loop = name, cost, loop
        self.replicas, self.max_batch, self.max_wait_s = replicas, max_batch, max_wait_s
        self.queue: deque[Job] = deque()
        self.idle = list(range(replicas))  # a heap: the lowest-numbered idle replica takes the next batch
        self.busy_s = [0.0] * replicas
        self.timeline: list[tuple] = []  # (replica, start_s, end_s, jobs, sequences)
        self._timer_at = None  # when the armed max-wait timer fires
        self.jobs = 0

    def submit(self, job: Job, now: float) -> None:
        job.enqueued = now
        self.jobs += 1
        self.queue.append(job)
        self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        while self.idle and self.queue:
            deadline = self.queue[0].enqueued + self.max_wait_s
            if self._waiting_seqs() < self.max_batch and now < deadline - 1e-12:
                if self._timer_at is None or deadline < self._timer_at:
                    self._timer_at = deadline
                    self.loop.call_at(deadline, self._on_timer, deadline)
                return
            self._start_batch(now)

    def _waiting_seqs(self) -> int:
        n = 0
        for job in self.queue:
            n += job.seqs
            if n >= self.max_batch:
                break
        return n

    def _on_timer(self, at: float, now: float) -> None:
        if self._timer_at == at:
            self._timer_at = None
            self._dispatch(now)

    def _start_batch(self, now: float) -> None:
        """The oldest jobs, up to max_batch sequences (a job larger than a batch runs alone)."""
        replica = heapq.heappop(self.idle)
        batch, seqs = [], 0
        while self.queue and (not batch or seqs + self.queue[0].seqs <= self.max_batch):
            job = self.queue.popleft()
            batch.append(job)
            seqs += job.seqs
        us = self.cost.batch_us(seqs, max(j.tokens for j in batch))
        end = now + us / 1e6
        for job in batch:
            job.started, job.replica = now, replica
        self.loop.call_at(end, self._finish, (replica, batch, now, seqs))

    def _finish(self, arg: tuple, now: float) -> None:
        replica, batch, start, seqs = arg
        self.busy_s[replica] += now - start
        self.timeline.append((replica, start, now, len(batch), seqs))
        heapq.heappush(self.idle, replica)
        for job in batch:
            job.ended = now
            job.done(job, now)
        self._dispatch(now)
