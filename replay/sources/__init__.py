"""Request sources: what a client sends, and when. Each kind is a small class chosen by `source.kind`:
- log: a request log's arrivals and lengths (with its prefix hashes, sessions and per-part lengths);
- synthetic: a seeded Poisson or Gamma process with fixed, lognormal or log-drawn lengths;
- closed_loop: `concurrency` users, each sending its next request when its last one completes.
A source yields request specs (arrival, prompt, output, session, hashes, fields); the simulation turns them
into requests of the client's pipelines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..scenario import Source
from .logs import log_frame


@dataclass(slots=True)
class Spec:
    arrival: float
    prompt: int
    output: int
    session: object = None
    hashes: tuple = ()
    fields: dict = field(default_factory=dict)
    seat: int = -1
    key: int = -1  # its request id when it is set (a partitioned replay keeps the whole log's ids)


_FIELDS = ("user_input_tokens", "passage_tokens", "passages", "reasoning_share")


def _log_specs(src: Source, warehouse_root: Path, field: str = "source") -> tuple[list[Spec], int | None]:
    """The log's requests as specs, and the tokens each of its prefix hashes stands for (None: not recorded)."""
    df = log_frame(src, warehouse_root, f"{field}.log")
    # Python values, not numpy scalars: block hashes key every prefix cache and tier lookup of the replay
    extra = {f: df[f].tolist() for f in _FIELDS if df[f].notna().any()}
    sessions = [None if s is None or s != s else s for s in df["session_id"].tolist()]
    hashes = [tuple(h.tolist()) if h is not None and len(h) else () for h in df["prefix_block_hashes"]]
    arrivals, prompts, outputs = (df[c].tolist() for c in ("arrival_s", "input_tokens", "output_tokens"))
    out = []
    for i in range(len(df)):
        fields = {f: v[i] for f, v in extra.items() if v[i] is not None and v[i] == v[i]} if extra else {}
        out.append(Spec(float(arrivals[i]), int(prompts[i]), int(outputs[i]), sessions[i], hashes[i], fields))
    return out, df.attrs.get("hash_block_tokens")


class LogSource:
    kind = "log"
    field = "source"  # where its spec sits in the scenario, for errors (the simulation names the client)

    def __init__(self, src: Source, warehouse_root: Path, seed: int):
        self.src, self.root = src, warehouse_root
        self.hash_block_tokens: int | None = None  # tokens per prefix hash, where the log says (initial() reads it)

    def initial(self) -> list[Spec]:
        specs, self.hash_block_tokens = _log_specs(self.src, self.root, self.field)
        return specs

    def follow_up(self, done_seat: int, now: float) -> Spec | None:
        return None


class SyntheticSource(LogSource):
    kind = "synthetic"

    def __init__(self, src: Source, warehouse_root: Path, seed: int):
        super().__init__(src, warehouse_root, seed)
        self.seed = seed

    def initial(self) -> list[Spec]:
        src = self.src
        rng = np.random.default_rng(self.seed)
        mean = 1.0 / (src.rate_per_s * src.rate_scale)
        if src.arrival == "gamma":
            shape = 1.0 / src.cv**2
            gaps = rng.gamma(shape, mean / shape, src.requests)
        else:
            gaps = rng.exponential(mean, src.requests)
        t = np.cumsum(gaps) - gaps[0]
        n = src.requests
        if src.lengths == "lognormal":
            sigma = np.sqrt(np.log1p(src.length_cv**2))
            prompt = rng.lognormal(np.log(src.input_tokens) - sigma**2 / 2, sigma, n)
            output = rng.lognormal(np.log(src.output_tokens) - sigma**2 / 2, sigma, n)
        elif src.lengths == "log":
            logged, _ = _log_specs(src.model_copy(update={"kind": "log", "limit": None}), self.root, self.field)
            pick = rng.integers(0, len(logged), n)
            prompt = np.array([logged[i].prompt for i in pick])
            output = np.array([logged[i].output for i in pick])
        else:
            prompt, output = np.full(n, src.input_tokens), np.full(n, src.output_tokens)
        prompt, output = np.maximum(np.round(prompt), 1).astype(int), np.maximum(np.round(output), 1).astype(int)
        return [Spec(float(a), int(p), int(o)) for a, p, o in zip(t, prompt, output, strict=True)]


class ClosedLoopSource(LogSource):
    kind = "closed_loop"

    def __init__(self, src: Source, warehouse_root: Path, seed: int):
        super().__init__(src, warehouse_root, seed)
        self.sent = src.concurrency
        rng = np.random.default_rng(seed)  # the k-th request sent gets the k-th draw
        n = src.requests
        self.prompt = _normal_lengths(rng, src.input_tokens, src.input_tokens_stddev, n)
        self.output = _normal_lengths(rng, src.output_tokens, src.output_tokens_stddev, n)

    def initial(self) -> list[Spec]:
        gap = self.src.ramp_up_s / self.src.concurrency
        return [Spec(i * gap, self.prompt[i], self.output[i], seat=i) for i in range(self.src.concurrency)]

    def follow_up(self, done_seat: int, now: float) -> Spec | None:
        if self.sent >= self.src.requests:
            return None
        k, self.sent = self.sent, self.sent + 1
        return Spec(now, self.prompt[k], self.output[k], seat=done_seat)


def _normal_lengths(rng: np.random.Generator, mean: int, stddev: float, n: int) -> list[int]:
    if not stddev:
        return [mean] * n
    return np.maximum(np.round(rng.normal(mean, stddev, n)), 1).astype(int).tolist()


SOURCES = {cls.kind: cls for cls in (LogSource, SyntheticSource, ClosedLoopSource)}


def total_requests(src: Source, initial: int) -> int:
    return src.requests if src.kind == "closed_loop" else initial
