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
    """To the replica whose prefix cache holds the longest prefix of the request's block hashes; ties (and
    requests without hashes, or pools without prefix caching) go to the least outstanding work."""

    name = "prefix_aware"

    def route(self, req: Req, replicas: list[Replica]) -> int:
        def score(i: int) -> tuple[int, int, int]:
            rep = replicas[i]
            hit = rep.prefix.cached_prefix(req.hashes) if rep.prefix is not None and req.hashes else 0
            return (-hit, rep.outstanding, i)

        return min(range(len(replicas)), key=score)


ROUTERS = {cls.name: cls for cls in (RoundRobin, LeastOutstanding, SessionAffinity, PrefixAware)}
