"""Iteration cost of a batch on one replica, from the calibrated cost models, fast enough for an event loop.

A batch's forward pass decomposes (calibrate.ops.layer_ops) into parts that depend on few numbers:
- token-linear ops (QKV / O / MLP GEMMs, norms, activation, TP all-reduces): the batch's token count T;
- the LM head: the number of sequences S;
- decode attention: the decode count B and their mean KV length L;
- prefill attention: each chunk's new tokens q and cached tokens p; an iteration's chunks run as one kernel and
  share its last wave (_one_kernel).
Each part is priced once on a log-spaced grid with the device's CostModel (every op carrying its tier; batches
small enough to be CUDA-graph captured priced with graph-captured kernels where those were measured) and
interpolated in log-log space afterwards (1-D parts tabulated per integer; decode attention linearly along the
KV length, see fixed_us), so one iteration costs a few list lookups and one or two interpolations instead of a
model call.

Under pipeline parallelism an iteration passes through every stage in turn: the per-stage parts (layers / pp,
with the stage-to-stage send) count pp times, the LM head once."""

from __future__ import annotations

import copy
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ....calibrate.catalog import ModelConfig
from ....calibrate.fit import attention_blocks
from ....calibrate.model import CostModel
from ....calibrate.ops import Batch, Parallelism, layer_ops, layer_rows

# decode runs up to this many iterations are priced in plain Python: about 0.7 us a step there, against about 7 us
# a run vectorized inside one KV-grid cell and 11 us across cells (numpy's call overhead)
SHORT_RUN = 12


def _grid(top: int, points: int = 40) -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, max(top, 2), points)).astype(int))


@dataclass
class IterationCost:
    model: ModelConfig
    par: Parallelism
    cost: CostModel
    max_tokens: int
    max_seqs: int
    max_len: int
    step_overhead_us: float  # serving-loop CPU time per iteration ...
    sequence_overhead_us: float = 0.0  # ... and per sequence in it (build.StepOverhead)
    eager_floor_us: float = 0.0  # the least time of an iteration with prompt tokens: layers x eager_layer_us
    cuda_graph_max_tokens: int = 0
    tiers: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.t_grid = _grid(self.max_tokens)
        self.s_grid = _grid(self.max_seqs)
        self.l_grid = _grid(self.max_len)
        stages = np.log(self.par.pp)  # the grids hold log times: x pp is + log(pp)
        self.dense_us = stages + self._price_1d(
            self.t_grid,
            lambda t: Batch(prefill=((int(t), 0),)),
            exclude={"attention_prefill", "attention_decode", "lm_head"},
        )
        self.head_us = self._price_1d(self.s_grid, lambda s: Batch(decode=(1,) * int(s)), only={"lm_head"})
        self.decode_us = stages + self._price_2d("attention_decode", self.s_grid, self.l_grid)
        self.prefill_us = stages + self._price_2d("attention_prefill", self.t_grid, self.l_grid)
        # the scalar path's views: the KV-length grid and its cells' widths (the linear interpolation along it),
        # as arrays and lists; the log grids as lists; the 1-D parts at every integer of their range (an index
        # instead of a search)
        grid = self.l_grid.astype(np.float64)
        self._l_arrays = grid, np.diff(grid)
        self._l_lin = tuple(a.tolist() for a in self._l_arrays)
        self._lt, self._ls, self._ll = (np.log(g).tolist() for g in (self.t_grid, self.s_grid, self.l_grid))
        self._dense_table = _table(self.t_grid, self.dense_us)
        self._head_table = _table(self.s_grid, self.head_us)
        # interpolated rows and chunk prices, memoized as they are first needed; copies share them (with_overhead)
        self._rows: dict[tuple[str, int], tuple[np.ndarray, list[float]]] = {}
        self._decode_rows: dict[int, tuple] = {}
        self._decode_strides: dict[int, np.ndarray] = {}
        self._chunks: dict[tuple[int, int], float] = {}
        self._wave = self._last_wave()
        self._kernel_shares: dict[tuple[int, int], tuple[float, float, float, int]] = {}

    def _last_wave(self) -> tuple[float, float, int] | None:
        """(the fit's last-wave weight, query heads per GPU, the device's multiprocessors) when prefill attention is
        priced by a fit of its kernel's tile schedule (calibrate.fit.attention_schedule), else None."""
        ops = layer_ops(self.model, Batch(prefill=((1, 0),)), self.par)
        row = ops[ops["name"] == "attention_prefill"].iloc[0]
        weight = self.cost.last_wave_weight(row["op_family"], row["dtype"])
        if not weight:
            return None
        return weight, float(row["num_heads"]), self.cost.device.compute_units

    def with_overhead(self, step_us: float, sequence_us: float, eager_layer_us: float = 0.0) -> IterationCost:
        """The same priced grids with another serving-loop overhead: a shallow copy sharing the grids and their
        memoized rows, which hold kernel time only."""
        cost = copy.copy(self)
        cost.step_overhead_us, cost.sequence_overhead_us = step_us, sequence_us
        cost.eager_floor_us = self.model.layers * eager_layer_us
        return cost

    # ---- pricing on the grids ----------------------------------------------------------------------
    def _predict(self, ops: pd.DataFrame) -> pd.DataFrame:
        pred = self.cost.predict(ops)
        for tier, c in pred["tier"].value_counts().items():
            self.tiers[tier] += int(c)
        return pred

    def _price_1d(self, grid, batch_of, exclude=frozenset(), only=None) -> np.ndarray:
        rows, point = [], []
        for i, x in enumerate(grid):
            batch_rows = layer_rows(self.model, batch_of(x), self.par)
            rows += batch_rows
            point += [i] * len(batch_rows)
        ops = pd.DataFrame(rows).assign(point=point)
        ops = ops[ops["name"].isin(only)] if only else ops[~ops["name"].isin(exclude)]
        ops = ops.assign(cuda_graph=grid[ops["point"]] <= self.cuda_graph_max_tokens).reset_index(drop=True)
        pred = self._predict(ops)
        return np.log(np.bincount(ops["point"], weights=pred["latency_us"] * ops["count"], minlength=len(grid)))

    def _price_2d(self, name: str, g1: np.ndarray, g2: np.ndarray) -> np.ndarray:
        """Attention over a grid: decode (batch size x mean KV length) or prefill (chunk tokens x cached)."""
        template = layer_ops(self.model, Batch(prefill=((1, 0),), decode=(1,)), self.par)
        a, b = (x.ravel() for x in np.meshgrid(g1, g2, indexing="ij"))
        ops = template[template["name"] == name].iloc[[0] * len(a)].reset_index(drop=True)  # its row, repeated
        if name == "attention_decode":
            ops["batch_size"], ops["kv_len"] = a, b.astype(float)
            ops["cuda_graph"] = a <= self.cuda_graph_max_tokens
        else:  # chunk of a new tokens after b - 1 cached ones (prefill runs eagerly)
            ops["batch_size"], ops["seq_len"], ops["kv_len"] = 1, a, a + b - 1
        pred = self._predict(ops)
        total = (pred["latency_us"] * ops["count"]).to_numpy()
        return np.log(np.maximum(total, 1e-9)).reshape(len(g1), len(g2))

    # ---- evaluation ------------------------------------------------------------------------------
    # A decode iteration's time is fixed_us(B, B) + the decode attention at the batch's mean KV length, summed in
    # that order, and a run's end times are its start plus each iteration in turn. The scalar and the vectorized
    # paths use only IEEE-exact arithmetic in the same order (no log or exp per step: along the KV length the
    # attention row is interpolated linearly, which is also what a bandwidth-bound kernel's time does), so a
    # run priced in one call and the same iterations stepped one by one give bit-identical times.
    def fixed_us(self, tokens: int, sequences: int) -> float:
        """The parts that depend on the batch's token and sequence counts only, serving-loop overhead included."""
        return (
            _lookup(self._dense_table, tokens)
            + _lookup(self._head_table, sequences)
            + self.step_overhead_us
            + self.sequence_overhead_us * sequences
        )

    def decode_run_ends(self, batch_size: int, kv_sum_start: float, steps: int, start_s: float) -> Sequence[float]:
        """End times (s) of `steps` decode-only iterations of a fixed batch from start_s, its total KV growing by
        batch_size a step: the token-linear and LM-head parts are constant; only attention follows the KV
        length. Short runs (most) in plain Python as a list, long ones vectorized as an array; both give the same
        bits."""
        fixed = self.fixed_us(batch_size, batch_size)
        base, slope, base_array, slope_array = self._decode_row(batch_size)
        if steps <= SHORT_RUN:
            (grid, width), ends, t = self._l_lin, [], start_s
            for k in range(steps):
                t += (fixed + _linear(grid, width, base, slope, (kv_sum_start + k * batch_size) / batch_size)) / 1e6
                ends.append(t)
            return ends
        kv_mean = self._strides(batch_size, steps)[:steps] + kv_sum_start
        kv_mean /= batch_size
        grid, width = self._l_lin
        first = min(max(bisect_left(grid, kv_mean[0]) - 1, 0), len(grid) - 2)
        if grid[first] <= kv_mean[0] and kv_mean[-1] <= grid[first + 1]:
            # the whole run in one cell of the KV grid (the common case): no per-step cell, and no clamping (a
            # value inside the cell gives a weight inside [0, 1], rounding being monotonic)
            w = kv_mean - grid[first]
            w /= width[first]
            w *= slope[first]
            w += base[first]
        else:
            grid_array, width_array = self._l_arrays
            i = grid_array.searchsorted(kv_mean)
            i -= 1
            np.maximum(i, 0, out=i)
            np.minimum(i, len(grid) - 2, out=i)
            w = kv_mean - grid_array[i]
            w /= width_array[i]
            np.maximum(w, 0.0, out=w)
            np.minimum(w, 1.0, out=w)
            w *= slope_array[i]
            w += base_array[i]  # the attention time
        w += fixed
        w /= 1e6  # each iteration's time (s)
        w[0] += start_s  # so that the running sum gives each end, added in the scalar path's order
        return w.cumsum()

    def _strides(self, batch_size: int, steps: int) -> np.ndarray:
        """0, batch_size, 2 x batch_size, ... (a run's KV growth), at least `steps` long; kept per batch size."""
        strides = self._decode_strides.get(batch_size)
        if strides is None or len(strides) < steps:
            n = 1 << (steps - 1).bit_length()
            strides = self._decode_strides[batch_size] = np.arange(n, dtype=np.float64) * batch_size
        return strides

    def _row(self, part: str, n: int) -> tuple[np.ndarray, list[float]]:
        """Log attention time over the KV-length grid at n decode sequences (part "decode") or a chunk of n
        new tokens ("prefill"): interpolated along the first axis once per n and kept, as array and list."""
        row = self._rows.get((part, n))
        if row is None:
            grid, table = (self._ls, self.decode_us) if part == "decode" else (self._lt, self.prefill_us)
            i, u = _locate(grid, math.log(max(n, 1)))
            values = table[i] * (1 - u) + table[i + 1] * u
            row = self._rows[part, n] = (values, values.tolist())
        return row

    def _decode_row(self, batch_size: int) -> tuple[list[float], list[float], np.ndarray, np.ndarray]:
        """Decode attention time (us) over the KV-length grid at `batch_size` sequences, as each cell's start value
        and its rise across the cell (lists for the scalar path, arrays for the vectorized); kept per batch
        size."""
        row = self._decode_rows.get(batch_size)
        if row is None:
            values = np.exp(self._row("decode", batch_size)[0])
            base, slope = values[:-1], np.diff(values)
            row = self._decode_rows[batch_size] = (base.tolist(), slope.tolist(), base, slope)
        return row

    def iteration_us(self, prefill: list[tuple[int, int]], decode_count: int, decode_kv_sum: float) -> float:
        """One iteration, in plain Python (on scalars several times faster than numpy; this runs once per
        simulated iteration). A decode-only batch is priced exactly as decode_run_ends prices each step."""
        if len(prefill) > 1 and self._wave is not None:
            attention, tokens = self._one_kernel(prefill, decode_count)
        else:
            attention, tokens, chunks = 0.0, decode_count, self._chunks
            for q, p in prefill:
                tokens += q
                c = chunks.get((q, p))
                if c is None:
                    c = self._chunk(q, p)
                attention += c
        if tokens == 0:
            return 0.0
        if decode_count:
            base, slope, _, _ = self._decode_rows.get(decode_count) or self._decode_row(decode_count)
            grid, width = self._l_lin
            attention += _linear(grid, width, base, slope, decode_kv_sum / decode_count)
        if prefill and self.eager_floor_us:
            return self._eager_iteration_us(tokens, len(prefill) + decode_count, attention)
        return self.fixed_us(tokens, len(prefill) + decode_count) + attention

    def _eager_iteration_us(self, tokens: int, sequences: int, attention: float) -> float:
        """An iteration with prompt tokens runs outside a CUDA graph (frameworks capture decode batches only): the
        host launches each layer's kernels as it goes, and they cannot end before it has, so its kernels take at
        least eager_floor_us. A decode-only iteration (graph-captured) never comes here: its price stays the
        one decode_run_ends gives."""
        kernels = _lookup(self._dense_table, tokens) + _lookup(self._head_table, sequences) + attention
        return max(kernels, self.eager_floor_us) + self.step_overhead_us + self.sequence_overhead_us * sequences

    def _chunk(self, q: int, p: int) -> float:
        """Prefill attention of q new tokens after p cached ones, alone; chunk shapes repeat (budget-sized
        chunks, first chunks): each is interpolated once."""
        c = self._chunks[q, p] = _along(self._ll, self._row("prefill", q)[1], p + 1)
        return c

    def _one_kernel(self, prefill: list[tuple[int, int]], tokens: int) -> tuple[float, int]:
        """(prefill attention, tokens + the chunks' tokens): an iteration's prefill chunks run as one attention
        kernel (FlashAttention's variable-length batch; vLLM, SGLang and TRT-LLM each launch one per layer), not
        one per chunk: each chunk's time without its own last wave, times the last wave of all their thread blocks
        together (as the fit weighs it; at one chunk this is the chunk's own time)."""
        weight, heads, units = self._wave
        shares, alone, blocks, longest = self._kernel_shares, 0.0, 0.0, 0.0
        for chunk in prefill:
            share = shares.get(chunk)
            if share is None:
                q, p = chunk
                c = self._chunks.get(chunk) or self._chunk(q, p)
                tiles, mean, top = attention_blocks(q, q + p)
                n = heads * (tiles * mean)
                share = shares[chunk] = (c / (1.0 + top * units / n) ** weight, n, top, q)
            alone += share[0]
            blocks += share[1]
            if share[2] > longest:
                longest = share[2]
            tokens += share[3]
        return alone * (1.0 + longest * units / blocks) ** weight, tokens


def _locate(grid: list[float], x: float) -> tuple[int, float]:
    """Cell index and weight of log-value x on a log grid, clamped at the ends (as np.interp does)."""
    i = min(max(bisect_left(grid, x) - 1, 0), len(grid) - 2)
    w = (x - grid[i]) / (grid[i + 1] - grid[i])
    return i, min(max(w, 0.0), 1.0)


def _table(grid: np.ndarray, logv: np.ndarray) -> list[float]:
    x = np.log(np.maximum(np.arange(grid[-1] + 1), 1))
    return np.exp(np.interp(x, np.log(grid), logv)).tolist()


def _lookup(table: list[float], n: int) -> float:
    """A 1-D part at integer n; past the grid's end the value holds, as np.interp clamps."""
    return table[n] if n < len(table) else table[-1]


def _linear(grid: list[float], width: list[float], base: list[float], slope: list[float], x: float) -> float:
    """A row at x, linear between grid points and clamped at the ends. Its vectorized twin in decode_run_ends
    keeps this exact order of operations (bit-identical results)."""
    i = min(max(bisect_left(grid, x) - 1, 0), len(grid) - 2)
    return base[i] + slope[i] * min(max((x - grid[i]) / width[i], 0.0), 1.0)


def _along(grid: list[float], logv: list[float], x: float) -> float:
    """A row of a 2-D part at x (log-log interpolation, clamped at the ends; _locate inlined: hot path)."""
    lx = math.log(x) if x > 1 else 0.0
    i = min(max(bisect_left(grid, lx) - 1, 0), len(grid) - 2)
    w = min(max((lx - grid[i]) / (grid[i + 1] - grid[i]), 0.0), 1.0)
    return math.exp(logv[i] * (1 - w) + logv[i + 1] * w)
