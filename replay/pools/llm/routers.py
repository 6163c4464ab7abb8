"""Routers: which replica of an LLM pool a sequence goes to. Small classes behind one interface, chosen by name
(`router` of a pool, or of the scenario)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Replica, Req


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


class PrefixAware(Router):
    """Cache-aware routing with a load-balancing fallback, as SGLang's model gateway does it (its defaults:
    cache_threshold 0.3, balance_abs_threshold 64, balance_rel_threshold 1.5). When the pool is imbalanced (the
    busiest replica has more than 64 outstanding sequences beyond the idlest, and over 1.5x its load) the
    request goes to the least loaded replica; otherwise to the replica whose prefix cache holds the longest
    prefix of its block hashes, if that covers at least 30% of them; else to the least loaded. Without a prefix
    cache or hashes it is least-outstanding routing."""

    name = "prefix_aware"
    CACHE_THRESHOLD = 0.3
    BALANCE_ABS = 64
    BALANCE_REL = 1.5

    def route(self, req: Req, replicas: list[Replica]) -> int:
        loads = [rep.outstanding for rep in replicas]
        least = min(loads)
        idlest = loads.index(least)  # the first of the least loaded
        busiest = max(loads)
        if busiest - least > self.BALANCE_ABS and busiest > self.BALANCE_REL * least:
            return idlest
        if not req.hashes or replicas[0].prefix is None:
            return idlest
        hits = [rep.prefix.cached_prefix(req.hashes) for rep in replicas]
        most = max(hits)
        if most < self.CACHE_THRESHOLD * len(req.hashes):
            return idlest
        return min((loads[i], i) for i in range(len(replicas)) if hits[i] == most)[1]


ROUTERS = {cls.name: cls for cls in (RoundRobin, LeastOutstanding, SessionAffinity, PrefixAware)}
