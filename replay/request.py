"""A request: one client's unit of work flowing through its pipeline's stage graph, with the time it became
ready for, began and ended each stage, the pool and replica that served it, and the tokens it carries."""

from __future__ import annotations


class Request:
    __slots__ = (
        "arrival",
        "client",
        "completion",
        "context",
        "end",
        "fetch",
        "fields",
        "first_token",
        "generated",
        "graph",
        "handoff",
        "hashes",
        "hit_tokens",
        "hooks",
        "id",
        "left",
        "output",
        "pools",
        "preemptions",
        "prefill_s",
        "prompt",
        "ready",
        "reason",
        "reasoning_tokens",
        "replicas",
        "reserved",
        "retrieved_tokens",
        "route",
        "routed",
        "seat",
        "session",
        "start",
        "stats",
        "waiting",
    )

    def __init__(
        self,
        rid: int,
        client: int,
        graph,
        arrival: float,
        prompt: int,
        output: int,
        session=None,
        hashes: tuple = (),
        fields: dict | None = None,
        seat: int = -1,
    ):
        n = len(graph.stages)
        self.id, self.client, self.graph, self.arrival = rid, client, graph, arrival
        self.prompt, self.output, self.session, self.hashes = prompt, output, session, hashes
        self.fields = fields or {}  # log columns stages read (user_input_tokens, passage_tokens, reasoning_share)
        self.seat = seat  # closed loop: which of the client's concurrent users sent it
        self.context = prompt  # the prompt the next LLM stage sees (retrieval and reasoning add to it)
        self.retrieved_tokens = self.reasoning_tokens = self.generated = 0
        self.preemptions = self.hit_tokens = 0
        self.prefill_s = 0.0  # time of the LLM iterations that prefilled its sequences
        self.waiting = list(graph.indegree)  # unfinished dependencies per stage
        self.left = n  # stages not yet ended
        self.ready: list[float | None] = [None] * n
        self.start: list[float | None] = [None] * n
        self.end: list[float | None] = [None] * n
        self.pools: list[str | None] = [None] * n
        self.replicas: list[int] = [-1] * n
        self.routed: dict[str, int] = {}  # pool -> replica chosen ahead (KV fetched there, rounds kept there)
        self.route: dict[str, str] = {}  # route stage -> the LLM pool it chose
        self.fetch: dict[str, tuple[int, int]] = {}  # pool -> prompt tokens [from, to) fetched into its HBM
        self.stats: dict[str, float] = {}  # per-stage figures for the output (`<stage>_<figure>`)
        self.hooks: list = []  # callables(request, now) run when it completes (KV write-back)
        self.handoff = None  # (pool, sequence) of a disaggregated prefill holding its KV for the transfer
        self.reserved = ()  # pools whose replica counts this request ahead of its submission
        self.first_token = self.completion = self.reason = None

    @property
    def done(self) -> bool:
        return self.completion is not None
