"""Held-out splits of measured samples, named as in the CLI and the report JSON.

- random: 80/20 of rows.
- shape_block: whole interior values of the family's block dim held out (GEMM: n and k values; attention:
  sequence / KV lengths; collectives: message sizes), so no test shape was seen in training.
- extrapolation: fit on small shapes, test on shapes at least 4x larger (by work: FLOPs, tokens or bytes).
- cross_framework and cross_source take two groups of samples and live in evaluate.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .fit import BLOCK_DIMS
from .roofline import COLLECTIVES, DECODE, GEMM, PREFILL, VECTOR_SEARCH

SPLITS = ("random", "shape_block", "extrapolation", "cross_framework", "cross_source")
HOLDOUT_SHARE = 0.2
EXTRAPOLATION_FACTOR = 4.0


def work_size(df: pd.DataFrame, family: str) -> np.ndarray:
    def col(c: str) -> np.ndarray:
        return pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) if c in df else np.ones(len(df))

    if family in (GEMM, VECTOR_SEARCH):
        return col("m") * col("n") * col("k")
    if family == PREFILL:
        return col("batch_size") * col("seq_len") * col("kv_len")
    if family == DECODE:
        return col("batch_size") * col("kv_len")
    if family in COLLECTIVES:
        return col("message_bytes")
    return col("m") * np.nan_to_num(col("n"), nan=1.0)


def split_masks(df: pd.DataFrame, family: str, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) boolean masks over df's rows."""
    rng = np.random.default_rng(seed)
    n = len(df)
    if split == "random":
        test = rng.random(n) < HOLDOUT_SHARE
        return ~test, test
    if split == "shape_block":
        test = np.zeros(n, dtype=bool)
        blocked = np.zeros(n, dtype=bool)
        for dim in BLOCK_DIMS.get(family, ()):
            if dim not in df.columns:
                continue
            values = np.sort(df[dim].dropna().unique())
            interior = values[1:-1]  # the ends are the extrapolation split's job
            if len(interior) == 0:
                continue
            k = max(1, round(len(interior) * HOLDOUT_SHARE / len(BLOCK_DIMS[family])))
            held = rng.choice(interior, size=min(k, len(interior)), replace=False)
            hit = df[dim].isin(held).to_numpy()
            test |= hit
            blocked |= hit
        return ~blocked, test
    if split == "extrapolation":
        size = work_size(df, family)
        finite = np.isfinite(size)
        if not finite.any():
            return np.zeros(n, bool), np.zeros(n, bool)
        cut = np.quantile(size[finite], 0.5)
        train = finite & (size <= cut)
        test = finite & (size >= EXTRAPOLATION_FACTOR * size[train].max()) if train.any() else np.zeros(n, bool)
        return train, test
    raise ValueError(f"split {split!r} is not a row split; known splits: {', '.join(SPLITS)}")
