"""Seeded draws that depend only on (seed, request, salt), never on the order events happen in: the same
request draws the same value serially, on any Dask worker, and whatever else the scenario changes."""

from __future__ import annotations

import hashlib


def uniform(seed: int, key: int, salt: int) -> float:
    """A uniform in [0, 1)."""
    digest = hashlib.blake2b(f"{seed}:{key}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick(weights: dict[str, float], u: float) -> str:
    """The key whose share of the weights' cumulative distribution holds u."""
    total, acc, name = sum(weights.values()), 0.0, ""
    for name, w in weights.items():
        acc += w / total
        if u < acc:
            return name
    return name
