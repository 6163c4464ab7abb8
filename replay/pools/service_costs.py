"""Batch times of service pools, priced once on a grid by the device's cost models and interpolated:
- EncoderCost: an encoder (embedding, reranker, classifier) forward pass over a batch of sequences padded to
  the longest (as sentence-transformers / TEI pad), from calibrate.ops.layer_ops on the device;
- VectorSearchCost: a batch of queries on a faiss index (flat, IVF, HNSW), the `vector_search` op family.
Every price keeps its tier (measured-calibrated, transferred, roofline)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from ...calibrate.catalog import ModelConfig
from ...calibrate.model import CostModel
from ...calibrate.ops import Batch, Parallelism, layer_ops
from ..scenario import VectorIndex


def _grid(top: int, points: int = 16) -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, max(top, 2), points)).astype(int))


class _Interpolated:
    """log(time) on a (sequences x tokens) grid, bilinear in log-log space, clamped at the ends."""

    def __init__(self, seqs: np.ndarray, tokens: np.ndarray, log_us: np.ndarray, tiers: Counter, provenance=None):
        self.ls, self.lt, self.log_us, self.tiers = np.log(seqs), np.log(tokens), log_us, tiers
        self.provenance = dict(provenance or {})
        self._memo: dict[tuple[int, int], float] = {}

    def batch_us(self, seqs: int, tokens: int) -> float:
        key = (seqs, tokens)
        if key not in self._memo:
            self._memo[key] = float(np.exp(_bilinear(self.ls, self.lt, self.log_us, math.log(seqs), math.log(tokens))))
        return self._memo[key]


def _bilinear(gx, gy, z, x, y) -> float:
    i = int(np.clip(np.searchsorted(gx, x) - 1, 0, max(len(gx) - 2, 0)))
    j = int(np.clip(np.searchsorted(gy, y) - 1, 0, max(len(gy) - 2, 0)))
    if len(gx) == 1:
        wx, i1 = 0.0, i
    else:
        wx, i1 = float(np.clip((x - gx[i]) / (gx[i + 1] - gx[i]), 0, 1)), i + 1
    if len(gy) == 1:
        wy, j1 = 0.0, j
    else:
        wy, j1 = float(np.clip((y - gy[j]) / (gy[j + 1] - gy[j]), 0, 1)), j + 1
    top = z[i, j] * (1 - wy) + z[i, j1] * wy
    bot = z[i1, j] * (1 - wy) + z[i1, j1] * wy
    return top * (1 - wx) + bot * wx


def encoder_cost(model: ModelConfig, cost: CostModel, dtype: str, max_seqs: int, max_tokens: int) -> _Interpolated:
    """Forward time of B sequences of L tokens: token-linear ops over B x L tokens, attention per sequence."""
    seqs, tokens = _grid(max_seqs), _grid(max_tokens)
    par = Parallelism(tp=1, pp=1, dtype=dtype)
    frames = []
    for i, b in enumerate(seqs):
        for j, length in enumerate(tokens):
            dense = layer_ops(model, Batch(prefill=((int(b * length), 0),)), par)
            dense = dense[dense["name"] != "attention_prefill"]
            attn = layer_ops(model, Batch(prefill=((int(length), 0),)), par)
            attn = attn[attn["name"] == "attention_prefill"].assign(batch_size=int(b))
            frames.append(pd.concat([dense, attn], ignore_index=True).assign(point=i * len(tokens) + j))
    ops = pd.concat(frames, ignore_index=True)
    pred = cost.predict(ops)
    total = np.bincount(ops["point"], weights=pred["latency_us"] * ops["count"], minlength=len(seqs) * len(tokens))
    tiers = Counter({t: int(c) for t, c in pred["tier"].value_counts().items()})
    log_us = np.log(np.maximum(total, 1e-9)).reshape(len(seqs), len(tokens))
    return _Interpolated(seqs, tokens, log_us, tiers, cost.provenance)


def vector_search_cost(index: VectorIndex, cost: CostModel, max_queries: int, threads: int) -> _Interpolated:
    """Time of a batch of queries on the index (tokens do not matter: one grid column)."""
    queries = _grid(max_queries)
    width = {"flat": 1, "ivf": index.nprobe, "hnsw": index.ef_search}[index.type]
    lists = {"flat": 1, "ivf": index.nlist, "hnsw": index.m}[index.type]
    ops = pd.DataFrame(
        {
            "op_family": "vector_search",
            "kernel_source": f"faiss-{index.type}",
            "dtype": "float32",
            "m": queries.astype(float),
            "n": float(index.vectors),
            "k": float(index.dim),
            "top_k": 0.0,
            "search_width": float(width),
            "num_lists": float(lists),
            "threads": float(threads),
            "count": 1.0,
        }
    )
    pred = cost.predict(ops)
    tiers = Counter({t: int(c) for t, c in pred["tier"].value_counts().items()})
    log_us = np.log(np.maximum(pred["latency_us"].to_numpy(), 1e-9)).reshape(len(queries), 1)
    return _Interpolated(queries, np.array([1]), log_us, tiers, cost.provenance)
