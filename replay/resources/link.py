"""A link: bandwidth shared by every transfer in flight on it (processor sharing).

A transfer first waits the link's latency (setup, propagation: not bandwidth), then joins the transfers in
flight; each of n in flight progresses at bandwidth / n. A start or finish changes every in-flight transfer's
finish time: the pending finish event is invalidated (its serial goes stale) and the next one computed, so a
change costs O(transfers in flight). Bytes are conserved and never move faster than the bandwidth (checked:
LinkBytesNotConserved)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import LinkBytesNotConserved
from ..loop import EventLoop

EPS_BYTES = 1e-3  # a transfer this close to done is done (float residue of the shared-rate updates)


@dataclass
class Transfer:
    nbytes: float
    callback: Callable
    arg: object
    queued: float  # when it was handed to the link
    remaining: float = 0.0
    started: float = 0.0  # when it began moving bytes (after the latency)
    ended: float = 0.0


@dataclass
class Link:
    name: str
    bandwidth: float  # bytes / s
    latency_s: float
    loop: EventLoop
    flying: list[Transfer] = field(default_factory=list)
    sent_bytes: float = 0.0  # handed to the link
    delivered_bytes: float = 0.0
    moved_bytes: float = 0.0  # progress integrated over time (equals delivered when idle)
    busy_s: float = 0.0
    flight_s: float = 0.0  # transfer-seconds in flight (sharing): flight_s / busy_s transfers at a time
    transfers: int = 0
    log: list[tuple] | None = None  # (start_s, end_s, bytes) of every transfer, when outputs want them
    _last: float = 0.0
    _serial: int = 0

    def send(self, nbytes: float, now: float, callback: Callable, arg=None) -> None:
        """Move nbytes; callback(arg, now) when the last byte arrives."""
        t = Transfer(float(nbytes), callback, arg, now, remaining=float(nbytes))
        self.sent_bytes += t.nbytes
        self.transfers += 1
        if self.latency_s:
            self.loop.call_at(now + self.latency_s, self._enter, t)
        else:
            self._enter(t, now)

    def _enter(self, t: Transfer, now: float) -> None:
        self._progress(now)
        t.started = now
        if t.remaining <= EPS_BYTES:
            self._deliver(t, now)
        else:
            self.flying.append(t)
        self._reschedule(now)

    def _progress(self, now: float) -> None:
        dt = now - self._last
        if self.flying and dt > 0:
            share = dt * self.bandwidth / len(self.flying)
            for t in self.flying:
                t.remaining -= share
            self.moved_bytes += dt * self.bandwidth
            self.busy_s += dt
        self._last = now

    def _reschedule(self, now: float) -> None:
        self._serial += 1
        if self.flying:
            least = min(t.remaining for t in self.flying)
            at = now + max(least, 0.0) * len(self.flying) / self.bandwidth
            self.loop.call_at(at, self._finish, self._serial)

    def _finish(self, serial: int, now: float) -> None:
        if serial != self._serial:
            return
        self._progress(now)
        # what is left of the first to finish is float residue: below what the clock can resolve at `now`
        tol = max(EPS_BYTES, self.bandwidth * math.ulp(max(now, 1.0)) * 16)
        done = [t for t in self.flying if t.remaining <= tol]
        self.flying = [t for t in self.flying if t.remaining > tol]
        for t in done:
            self._deliver(t, now)
        self._reschedule(now)

    def _deliver(self, t: Transfer, now: float) -> None:
        t.ended = now
        self.delivered_bytes += t.nbytes
        self.flight_s += now - t.started
        if self.log is not None:
            self.log.append((t.started, now, t.nbytes))
        t.callback(t.arg, now)

    @property
    def utilization_bytes(self) -> float:
        return self.moved_bytes

    def check(self) -> None:
        """At the end of a run: every byte handed over was delivered, none faster than the bandwidth."""
        if self.flying or abs(self.delivered_bytes - self.sent_bytes) > EPS_BYTES * max(1, self.transfers):
            raise LinkBytesNotConserved(
                f"link {self.name}: {self.sent_bytes:.0f} bytes sent, {self.delivered_bytes:.0f} delivered"
            )
        if self.delivered_bytes > self.bandwidth * self.busy_s * (1 + 1e-9) + EPS_BYTES * max(1, self.transfers):
            raise LinkBytesNotConserved(
                f"link {self.name}: {self.delivered_bytes:.0f} bytes in {self.busy_s} s busy exceeds "
                f"{self.bandwidth:.3g} B/s"
            )
