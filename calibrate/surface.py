"""The measured residual surface: what a fitted form still gets wrong at the measured shapes, interpolated.

A cost model's form (fit.py) captures the physics shared across a table: launch floors, the compute / memory
balance, wave quantization, a smooth trend in the shape. What it cannot capture is each kernel configuration's
own fine structure: attention kernels switch tile sizes and split-KV factors with the KV length, per head
layout and kernel; GEMM libraries switch tile configs with the shape. Those effects are measured, on a grid.

So each table row's residual log(measured / form) is kept, per *cell* (one kernel variant and head layout /
GPU count: the form's categorical and config values) on the grid of its size dims, and a prediction adds the
residual interpolated multilinearly in log size between the measured grid points around it (the way
AIConfigurator interpolates its perf database). Corners that were not measured drop out of the weights. Outside
a cell's grid, the residual of the nearest edge fades with distance (e-folding 4x in each log dim), so far from
anything measured the prediction is the form alone. A cell never measured gets no correction."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

FADE_LOG = float(np.log(4.0))  # e-folding of an edge residual beyond the measured grid, in log size
DIGITS = 4  # residuals are stored to 1e-4 in log: 0.01% of latency


def log_dim(df: pd.DataFrame, dim: str) -> np.ndarray:
    """log1p of a shape dim, 0 where the row does not give it: the coordinate of forms and surfaces alike."""
    x = pd.to_numeric(df[dim], errors="coerce").to_numpy(dtype=float) if dim in df.columns else np.zeros(len(df))
    return np.log1p(np.nan_to_num(np.maximum(x, 0.0)))


@dataclass
class ResidualSurface:
    dims: list[str]  # the grid's size dims
    keys: list[str]  # the columns whose values name a cell
    axes: list[list[float]]  # per dim, the measured log1p values (union over cells)
    cells: list[list[str]]  # per cell, its key values
    points: np.ndarray = field(default_factory=lambda: np.empty((0, 2), dtype=np.int64))  # [cell, flat index]
    values: np.ndarray = field(default_factory=lambda: np.empty(0))  # the residual at each point

    @classmethod
    def build(cls, dims: list[str], key_frame: pd.DataFrame, sizes: pd.DataFrame, resid: np.ndarray):
        """From rows: their key values (one column per key), size dims and residuals; duplicates averaged."""
        logs = [log_dim(sizes, d) for d in dims]
        axes = [np.unique(x) for x in logs]
        if len(key_frame.columns):
            codes, uniques = pd.MultiIndex.from_frame(key_frame.astype(str)).factorize()
            cells = [[str(v) for v in u] for u in uniques]
        else:  # one cell: the form has no categorical or config values
            codes, cells = np.zeros(len(resid), dtype=np.int64), [[]]
        flat = np.zeros(len(resid), dtype=np.int64)
        for x, axis in zip(logs, axes, strict=True):
            flat = flat * len(axis) + np.searchsorted(axis, x)
        agg = pd.Series(resid).groupby([codes, flat]).mean()
        return cls(
            dims=list(dims),
            keys=list(key_frame.columns),
            axes=[a.round(9).tolist() for a in axes],
            cells=cells,
            points=np.column_stack([agg.index.get_level_values(0), agg.index.get_level_values(1)]).astype(np.int64),
            values=agg.round(DIGITS).to_numpy(),
        )

    @cached_property
    def _dense(self) -> np.ndarray:
        shape = [len(a) for a in self.axes]
        grid = np.full((len(self.cells), int(np.prod(shape))), np.nan)
        p = np.asarray(self.points, dtype=np.int64).reshape(-1, 2)
        grid[p[:, 0], p[:, 1]] = self.values
        return grid

    @cached_property
    def _cell_index(self) -> pd.MultiIndex:
        return pd.MultiIndex.from_tuples([tuple(c) for c in self.cells])

    def correction(self, key_frame: pd.DataFrame, sizes: pd.DataFrame) -> np.ndarray:
        """The interpolated log residual for each row (0 where its cell was never measured)."""
        n = len(sizes)
        if not self.keys:
            cell = np.zeros(n, dtype=np.int64)
        else:
            cell = self._cell_index.get_indexer(pd.MultiIndex.from_frame(key_frame[self.keys].astype(str)))
        known = cell >= 0
        out = np.zeros(n)
        if not known.any() or not len(self.values):
            return out
        rows = np.flatnonzero(known)
        lo_idx, hi_idx, w_hi, beyond = [], [], [], np.zeros(len(rows))
        for dim, axis in zip(self.dims, self.axes, strict=True):
            a = np.asarray(axis)
            x = log_dim(sizes.iloc[rows], dim)
            xc = np.clip(x, a[0], a[-1])
            beyond += np.abs(x - xc)
            hi = np.clip(np.searchsorted(a, xc, side="left"), 0, len(a) - 1)
            lo = np.maximum(hi - 1, 0)
            span = a[hi] - a[lo]
            t = np.where(span > 0, (xc - a[lo]) / np.where(span > 0, span, 1.0), 1.0)
            lo_idx.append(lo)
            hi_idx.append(hi)
            w_hi.append(t)
        grid = self._dense
        num, den = np.zeros(len(rows)), np.zeros(len(rows))
        for corner in range(1 << len(self.dims)):
            flat = np.zeros(len(rows), dtype=np.int64)
            w = np.ones(len(rows))
            for d, axis in enumerate(self.axes):
                up = (corner >> d) & 1
                flat = flat * len(axis) + (hi_idx[d] if up else lo_idx[d])
                w = w * (w_hi[d] if up else 1.0 - w_hi[d])
            v = grid[cell[rows], flat]
            ok = np.isfinite(v) & (w > 0)
            num += np.where(ok, w * np.nan_to_num(v), 0.0)
            den += np.where(ok, w, 0.0)
        got = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        out[rows] = got * np.exp(-beyond / FADE_LOG)
        return out
