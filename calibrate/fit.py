"""Calibrated cost models: statsmodels OLS on log latency over roofline terms and shape, one per
(device, op family, dtype, framework).

The regression is log(latency_us / roofline_us) = b . x: the log inefficiency over the speed of light, with
x = [1, compute share of the roofline and its square, launch floors log1p(tau / roofline_us), wave quantization (GEMM),
the query-tile schedule (prefill attention: attention_schedule), kernel indicators, and a polynomial in the
standardized log shape dims, clipped to the range seen in fitting].
Floors vanish and the clipped polynomial stops moving beyond the fitted shapes, so far outside the data a
prediction becomes the roofline times the last efficiency seen: it extrapolates like physics, not like a
polynomial. Decode attention, which streams the KV cache, and GEMMs instead add the extra work beyond the
measured shapes at a sustained efficiency to the prediction at their edge (Fitted._stream_beyond, _gemm_beyond):
the fixed costs the edge's efficiency carries do not grow with the work; a prefill attention batch past the fitted
work is no less efficient than the largest batch fitted at its lengths (Fitted._batch_bound). The degree (the form)
is chosen by grouped cross-validation on the training rows, holding out whole shapes, never by in-sample fit.
Coefficients keep their 95% confidence intervals. What the form still misses at the measured shapes is kept per
kernel cell and interpolated between them (surface.py)."""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .catalog import Device
from .roofline import COLLECTIVES, DECODE, ELEMENTWISE, GEMM, MOE_COMM, PREFILL, VECTOR_SEARCH, roofline, skipped_window
from .surface import ResidualSurface
from .surface import log_dim as _log_dim

log = logging.getLogger(__name__)

MIN_SAMPLES = 30
MIN_FAR_ROWS = 8  # rows far past the smaller half that extrapolation_growth needs (a collective table has ~60 rows)
DEGREES = (0, 1, 2, 3, 4, 5)  # 0 = roofline terms only
MAX_FEATURES = 160
FLOOR_US = (2.0, 8.0, 32.0, 128.0)  # launch / latency floors: log1p(roofline / tau) bends the curve there
CATEGORICAL = ("kernel_source", "kv_cache_dtype")
# per family, further columns naming which kernel a row measured: Vidur's elementwise table holds a residual add,
# RoPE and the gated activation, streaming at about 0.65, 0.46 and 0.38 of HBM bandwidth at its largest sizes;
# pooled, the form priced an add and an activation of one shape alike (H100 shape-block held out: 3.6% / 27.4%
# pooled, 1.0% / 10.9% by kind). A replay's op names its kind (calibrate.ops: the activation is mlp_act); one that
# names none is priced as the first (add).
FAMILY_CATEGORICAL: dict[str, tuple[str, ...]] = {"elementwise": ("op_name",)}
# Beyond the largest fitted shape, launch and latency costs fade and kernels run at a sustained efficiency; the
# bound on the inefficiency decays towards this prior (AIConfigurator's empirical bandwidth factor of 0.8) with an
# e-folding of 4x in roofline time. It only ever lowers the bound, never raises it. Decode attention's work beyond
# the measured batch and KV length, and a GEMM's beyond the largest measured m n k, are priced at this efficiency
# too (Fitted._stream_beyond, Fitted._gemm_beyond).
SUSTAINED_EFFICIENCY = 0.8
# how an op past the measured shapes is priced, as a replay's summary says it (priced_by), naming the constant a
# rule stands on
_SUSTAINED = f"{SUSTAINED_EFFICIENCY} (calibrate.fit.SUSTAINED_EFFICIENCY: AIConfigurator's empirical factor)"
PAST_MEASURED_RULE = {
    GEMM: f"the edge of the measured shapes plus the extra work at the sustained efficiency {_SUSTAINED}",
    DECODE: f"the edge of the measured shapes plus the extra KV streamed at the sustained efficiency {_SUSTAINED}",
    PREFILL: "the efficiency at the edge of the measured shapes, no less efficient than the largest batch measured "
    f"at its lengths, its bound decaying with an e-fold every 4x of roofline time towards {_SUSTAINED}",
    **{f: "the efficiency of the largest measured kernels (a streaming kernel's rate)" for f in ELEMENTWISE},
}
PAST_MEASURED_DEFAULT = (
    f"the efficiency at the edge of the measured shapes, its bound decaying with an e-fold every 4x of roofline time "
    f"towards {_SUSTAINED}"
)
PRIOR_SCALE = float(np.log(4.0))  # offsets and slopes per kernel when a table mixes them
CV_FOLDS = 4
CV_MAX_ROWS = 10000
TILE = 128  # GEMM output tile edge for wave quantization
ATTENTION_TILE = 128  # query rows (and KV rows) per thread block of FlashAttention-2/3's forward kernels

# Size dims enter as a full polynomial of the form's degree; config dims (head layout, window, GPU count)
# enter linearly and through their products with the size polynomial up to degree 2.
SIZE_DIMS: dict[str, tuple[str, ...]] = {
    GEMM: ("m", "n", "k"),
    VECTOR_SEARCH: ("m", "n", "k"),
    PREFILL: ("batch_size", "seq_len", "kv_len"),
    DECODE: ("batch_size", "kv_len"),
    **{f: ("message_bytes",) for f in COLLECTIVES},
    **{f: ("m", "hidden_size") for f in MOE_COMM},
    **{f: ("m", "n") for f in ELEMENTWISE},
}
CONFIG_DIMS: dict[str, tuple[str, ...]] = {
    VECTOR_SEARCH: ("search_width", "num_lists", "threads", "top_k"),
    PREFILL: ("num_heads", "num_kv_heads", "head_dim", "window_size"),
    DECODE: ("num_heads", "num_kv_heads", "head_dim", "window_size"),
    **{f: ("num_gpus", "devices_per_node") for f in COLLECTIVES},
    **{f: ("top_k", "num_experts") for f in MOE_COMM},
}
CONFIG_INTERACTION_DEGREE = 2
# The dims whose distinct values define a "shape block" for grouped splits.
BLOCK_DIMS: dict[str, tuple[str, ...]] = {
    GEMM: ("n", "k"),
    VECTOR_SEARCH: ("m",),  # query batch sizes: the grid's interior batches are held out
    PREFILL: ("seq_len",),
    DECODE: ("kv_len",),
    **{f: ("message_bytes",) for f in COLLECTIVES},
    **{f: ("m",) for f in MOE_COMM},
    **{f: ("m",) for f in ELEMENTWISE},
}


# Kernel variants serving frameworks run by default where a table measured several (H100: FlashAttention 3).
SERVING_KERNELS = ("fa3",)


def serving_kernel(values: list[str], graph: bool) -> str:
    """The measured kernel variant a serving step uses: the CUDA-graph variant of a kernel measured both ways
    when the step is captured in a graph (decode batches), else the framework's default, else the baseline."""
    for key in (("graph",) if graph else ()) + SERVING_KERNELS:
        hits = [v for v in values if key in v]
        if hits:
            return hits[0]
    return values[0]


# Tables measured inside a CUDA graph whose kernel names do not say so: AIConfigurator's TRT-LLM all-reduce collector
# replays the op in a graph ("TRTLLM allreduce (CUDA Graph based)", collector/collect_comm.sh).
GRAPH_MEASURED = ("trtllm",)


def graph_launched(kernel: str) -> bool:
    """Whether a measured kernel ran inside a CUDA graph (no host launch path in its time)."""
    name = kernel.lower()
    return "graph" in name or (name.split(":")[0] in GRAPH_MEASURED)


class TooFewSamples(ValueError):
    pass


@dataclass
class Form:
    """The feature recipe of a fitted model: which log dims, their standardization, the polynomial degree."""

    family: str
    degree: int
    dims: list[str]  # size dims, then config dims
    center: list[float]
    scale: list[float]
    n_size: int = 0  # how many of `dims` are size dims
    lo: list[float] = field(default_factory=list)  # standardized range seen in fitting, per dim
    hi: list[float] = field(default_factory=list)
    compute_units: int = 0
    categories: dict[str, list[str]] = field(default_factory=dict)
    col_lo: list[float] = field(default_factory=list)  # each design column's range in fitting
    col_hi: list[float] = field(default_factory=list)
    y_lo: float = -np.inf  # the lowest log inefficiency seen in fitting
    envelope_log_roof: list[float] = field(default_factory=list)  # upper envelope of the log inefficiency:
    envelope_y: list[float] = field(default_factory=list)  # the most seen at this roofline size or larger
    log_roof_max: float = np.inf
    work_max: float = np.inf  # the largest fitted Form.work (inf in older artifacts: no interval widening)
    # per size dim, the highest power it may take: distinct values seen - 1 (two sizes identify a slope, not a
    # curve; a square of a dim with two values is collinear with the intercept and would swing in between)
    max_power: list[int] = field(default_factory=list)
    # decode attention: the measured batch sizes, ascending, and the longest KV length measured at that batch
    # size or a larger one (the edge of the measured shapes in both dims at once; empty in older artifacts)
    kv_hull: list[list[float]] = field(default_factory=list)
    # the fastest latency measured in fitting: no op is priced below it (a smaller kernel still pays its launch
    # and one wave; the fitted inefficiency, held at the smallest shapes, would shrink it with its roofline: a
    # MoE's 4 x 8 route sort at 0.06 us, under H100's fastest measured elementwise kernel of 1 us); 0 in older
    # artifacts
    latency_min_us: float = 0.0
    # a streaming family's (elementwise, norm) narrowest and widest measured n (Fitted._at_measured_width); empty
    # for other families and in older artifacts
    width_range: list[float] = field(default_factory=list)
    # prefill attention on a GPU: the kernel's schedule of query tiles (attention_schedule) enters the design
    # (False in older artifacts, whose coefficients were fitted without it)
    tile_schedule: bool = False

    def monomials(self) -> list[tuple[int, ...]]:
        """The size-polynomial terms, as tuples of size-dim indices, lowest degree first."""
        caps = self.max_power or [self.degree] * self.n_size
        return [
            combo
            for deg in range(1, self.degree + 1)
            for combo in itertools.combinations_with_replacement(range(self.n_size), deg)
            if all(combo.count(i) <= caps[i] for i in set(combo))
        ]

    def size_coords(self, df: pd.DataFrame) -> np.ndarray:
        """The rows' size dims in log units (rows x size dims)."""
        return np.column_stack([_log_dim(df, d) for d in self.dims[: self.n_size]] or [np.zeros(len(df))])

    def work(self, df: pd.DataFrame) -> np.ndarray:
        """The rows' size as the sum of their log size dims (the log of m n k for a GEMM, of batch x KV length for
        decode attention, of the bytes for a collective): the order the extrapolation split holds out by."""
        return self.size_coords(df).sum(axis=1)

    def beyond(self, df: pd.DataFrame) -> np.ndarray:
        """Each row's size past the largest fitted one, in e-folds (0 at or below it): ln 4 for a GEMM of four
        times the largest fitted m n k. Size dims each inside the fitted range can still combine into a corner
        never measured jointly, so the distance is taken along the size, not per dim."""
        return np.maximum(self.work(df) - self.work_max, 0.0)

    def bounded(self, X: np.ndarray) -> np.ndarray:
        """Columns clipped to their fitted range: unseen corners of the shape space cannot blow up."""
        return np.clip(X, self.col_lo, self.col_hi) if self.col_lo else X

    def learn_ranges(self, X: np.ndarray, y: np.ndarray, log_roof: np.ndarray) -> None:
        self.col_lo, self.col_hi = X.min(axis=0).tolist(), X.max(axis=0).tolist()
        self.y_lo = float(y.min())
        edges = np.unique(np.quantile(log_roof, np.linspace(0, 0.95, 20)))
        self.envelope_log_roof = edges.tolist()
        self.envelope_y = [float(y[log_roof >= e].max()) for e in edges]
        self.log_roof_max = float(log_roof.max())

    def clip_inefficiency(self, pred: np.ndarray, log_roof: np.ndarray) -> np.ndarray:
        """Larger work is never predicted less efficient than the fitted shapes of its size or larger were.

        Collectives are bounded only beyond their largest measured message. The envelope pools every GPU count,
        while a collective's inefficiency against its roofline depends on the ring length and the NCCL protocol,
        not on its size alone (an 8-GPU all-reduce of 8 MiB is less efficient than a 2-GPU one of 16 MiB):
        inside the measured range the pooled bound cut measured shapes (A100, 8 MiB on 4 and 8 GPUs: -13% and
        -15%). A bound per cell (GPU count) does not help: within one GPU count the inefficiency falls steeply
        across the protocol switch, so the larger messages above a held-out size still cap it (tried: A100
        NCCL fp16 back at 8.6% median). Other families keep the bound everywhere: without it inside the range,
        GEMM extrapolation breaks (H100 bf16 p90 31% -> 129%).

        Past the largest fitted roofline the bound decays towards the sustained efficiency, except for streaming
        kernels (elementwise, norm): a larger one moves its bytes at the rate the largest measured ones did (Vidur's
        PyTorch norms and activations reach 0.3-0.4 of HBM bandwidth at 4096-32768 tokens, not 0.8). Extrapolation
        split, norm median / p90: H100 45.7% / 48.4% -> 29.7% / 32.7%, A100 48.6% / 53.3% -> 5.5% / 10.3%."""
        if not self.envelope_y:
            return pred
        i = np.clip(np.searchsorted(self.envelope_log_roof, log_roof, side="right") - 1, 0, len(self.envelope_y) - 1)
        upper = np.asarray(self.envelope_y)[i]
        beyond = np.maximum(log_roof - self.log_roof_max, 0.0)
        if self.family not in ELEMENTWISE:  # a streaming kernel keeps the rate its largest measured ones reached
            prior = -np.log(SUSTAINED_EFFICIENCY)
            upper = np.where(upper > prior, prior + (upper - prior) * np.exp(-beyond / PRIOR_SCALE), upper)
        if self.family in COLLECTIVES:
            upper = np.where(beyond > 0, upper, np.inf)
        return np.clip(pred, np.minimum(self.y_lo, upper), upper)

    def design(self, df: pd.DataFrame, terms: pd.DataFrame) -> np.ndarray:
        cols = [np.ones(len(df))]
        roof = np.maximum(terms["roofline_us"].to_numpy(), 1e-6)
        compute, memory = terms["compute_us"].to_numpy(), terms["memory_us"].to_numpy()
        share = compute / np.maximum(compute + memory, 1e-12)  # bounded: 0 memory-bound .. 1 compute-bound
        cols.extend((share, share**2))
        cols.extend(np.log1p(tau / roof) for tau in FLOOR_US)
        if self.family == GEMM and self.compute_units > 1:
            cols.append(np.log(_wave_efficiency(df, self.compute_units)))
        if self.tile_schedule:  # at last_wave_column
            cols.extend(attention_schedule(df, self.compute_units))
        for column, values in self.categories.items():
            got = self.category(df, column)
            for value in values[1:]:  # the first value is the baseline
                hit = (got == value).astype(float)
                cols.extend((hit, hit * np.log1p(FLOOR_US[1] / roof)))
        if self.degree:
            z = [
                np.clip((_log_dim(df, d) - c) / s, lo, hi)
                for d, c, s, lo, hi in zip(self.dims, self.center, self.scale, self.lo, self.hi, strict=True)
            ]
            size, config = z[: self.n_size], z[self.n_size :]
            monomials = self.monomials()
            poly = [np.prod([size[i] for i in combo], axis=0) for combo in monomials]
            cols.extend(poly)
            low = [p for p, combo in zip(poly, monomials, strict=True) if len(combo) <= CONFIG_INTERACTION_DEGREE]
            for c in config:
                cols.append(c)
                cols.extend(c * p for p in low)
        return np.column_stack(cols)

    def category(self, df: pd.DataFrame, column: str) -> np.ndarray:
        """The rows' values of a categorical column; without it, the kernel a serving framework would run. A kernel
        the fit never saw (another framework's) is priced as the one a serving step launched the same way would run
        (graph_launched, serving_kernel), not as the baseline: trained on vLLM's all-reduces, SGLang's and
        TRT-LLM's graph-captured ones were priced as vLLM's eager one, 20 us of host launch path on a 2.5 us kernel
        (H100 cross-framework all-reduce p90 612%), and SGLang's FA3 attention as vLLM's FA2."""
        values = self.categories[column]
        if column in df.columns:
            got = df[column].astype(str).to_numpy()
            unseen = ~np.isin(got, values)
            if column == "kernel_source" and unseen.any():
                graph = np.array([graph_launched(v) for v in got[unseen]])
                got = got.copy()
                got[unseen] = np.where(graph, serving_kernel(values, graph=True), serving_kernel(values, graph=False))
            return got
        graph = df["cuda_graph"].to_numpy(dtype=bool) if "cuda_graph" in df.columns else np.zeros(len(df), bool)
        return np.where(graph, serving_kernel(values, graph=True), serving_kernel(values, graph=False))

    def cells(self, df: pd.DataFrame) -> pd.DataFrame:
        """What names each row's cell of the residual surface: its categorical and config values. A config value
        not given counts as 0, as in the form (`_log_dim`): an op priced in a replay names no window, and a
        window of 0 is no window."""
        cols = {c: self.category(df, c) for c in self.categories}
        for d in self.dims[self.n_size :]:
            cols[d] = np.expm1(_log_dim(df, d))
        return pd.DataFrame(cols, index=df.index)

    def surface(self, df: pd.DataFrame, resid: np.ndarray) -> ResidualSurface:
        return ResidualSurface.build(self.dims[: self.n_size], self.cells(df), df, resid)

    def last_wave_column(self) -> int:
        """Where design() puts prefill attention's last-wave column (after the intercept, the compute share and its
        square, the floors and GEMM's wave column)."""
        return 3 + len(FLOOR_US) + (self.family == GEMM and self.compute_units > 1)

    def n_features(self) -> int:
        base = 3 + len(FLOOR_US) + (self.family == GEMM and self.compute_units > 1) + 2 * self.tile_schedule
        base += sum(2 * (len(v) - 1) for v in self.categories.values())
        if not self.degree:
            return base
        monomials = self.monomials()
        low = sum(len(combo) <= CONFIG_INTERACTION_DEGREE for combo in monomials)
        return base + len(monomials) + (len(self.dims) - self.n_size) * (1 + low)


def attention_schedule(df: pd.DataFrame, units: int) -> tuple[np.ndarray, np.ndarray]:
    """What a FlashAttention-style prefill kernel's schedule costs beyond its FLOPs, as two design columns.

    The kernel runs one thread block per (sequence, query head, tile of ATTENTION_TILE query rows); a causal block
    reads the KV blocks up to its last query row (its prefix's and its own chunk's), capped by a sliding window.
    - the last wave: log(1 + longest block's KV blocks x units / all blocks' KV blocks). With many blocks per
      multiprocessor the total work sets the time; with few, the longest block does (the time is at least
      max(total / units, longest)). A large batch drives it to 0, which is how the fit extrapolates in batch;
    - the per-block fixed work (loading its query tile, the softmax's last rescale, writing its output) against
      its KV loop: 1 / the mean KV blocks a block reads."""

    def col(name: str, default: float) -> np.ndarray:
        if name not in df.columns:
            return np.full(len(df), default)
        return np.nan_to_num(pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float), nan=default)

    seq = np.maximum(col("seq_len", 1.0), 1.0)
    tiles, mean, longest = attention_blocks(seq, np.maximum(col("kv_len", 1.0), seq))
    window = skipped_window(df)
    cap = np.where(window > 0, np.ceil(np.maximum(window, 1.0) / ATTENTION_TILE) + 1, np.inf)
    blocks = tiles * np.minimum(mean, cap)
    total = np.maximum(col("batch_size", 1.0) * col("num_heads", 1.0) * blocks, 1.0)
    return np.log1p(np.minimum(longest, cap) * units / total), tiles / np.maximum(blocks, tiles)


def attention_blocks(seq, kv):
    """(query tiles, mean KV blocks a tile reads, the longest tile's) of one sequence and head: a chunk of `seq`
    new tokens (>= 1) whose causal attention spans `kv` >= seq tokens (its cached prefix and itself). Plain
    arithmetic: arrays or numbers (a replay's chunks, one at a time)."""
    tiles = -(-seq // ATTENTION_TILE)
    return tiles, (kv - seq) // ATTENTION_TILE + (tiles + 1) / 2, -(-kv // ATTENTION_TILE)


def _wave_efficiency(df: pd.DataFrame, units: int) -> np.ndarray:
    """Useful share of the last wave: tiles / (waves * units) with 128x128 output tiles."""
    m = pd.to_numeric(df["m"], errors="coerce").to_numpy(dtype=float)
    n = pd.to_numeric(df["n"], errors="coerce").to_numpy(dtype=float)
    tiles = np.ceil(np.maximum(m, 1) / TILE) * np.ceil(np.maximum(n, 1) / TILE)
    waves = np.ceil(tiles / units)
    return np.clip(tiles / (waves * units), 1e-3, 1.0)


def make_form(family: str, df: pd.DataFrame, degree: int, device: Device) -> Form:
    def varying(names: tuple[str, ...]) -> list[str]:
        return [d for d in names if d in df.columns and df[d].nunique(dropna=True) > 1]

    size, config = varying(SIZE_DIMS.get(family, ())), varying(CONFIG_DIMS.get(family, ()))
    dims = size + config
    logs = [_log_dim(df, d) for d in dims]
    center = [float(np.mean(x)) for x in logs]
    scale = [float(np.std(x)) or 1.0 for x in logs]
    z = [(x - c) / s for x, c, s in zip(logs, center, scale, strict=True)]
    categories = {
        c: sorted(df[c].dropna().astype(str).unique())
        for c in (*CATEGORICAL, *FAMILY_CATEGORICAL.get(family, ()))
        if c in df.columns and df[c].nunique(dropna=True) > 1
    }
    return Form(
        family=family,
        degree=degree,
        dims=dims,
        center=center,
        scale=scale,
        n_size=len(size),
        lo=[float(v.min()) for v in z],
        hi=[float(v.max()) for v in z],
        compute_units=device.compute_units if device.kind == "gpu" else 0,
        categories=categories,
        max_power=[int(df[d].nunique(dropna=True)) - 1 for d in size],
        tile_schedule=family == PREFILL and device.kind == "gpu" and device.compute_units > 1,
    )


@dataclass
class Fitted:
    form: Form
    coef: np.ndarray
    conf_int: np.ndarray
    r2: float
    n: int
    cv: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)  # the measurements it was fitted on (device, framework, sources)
    # the 90% prediction interval as log(measured / predicted) at its 5th and 95th percentiles, from the chosen
    # form's grouped-CV residuals (shape blocks it was not fitted on); None for artifacts older than it
    log_interval_90: tuple[float, float] | None = None
    surface: ResidualSurface | None = None  # the form's measured residuals, interpolated (surface.py)
    # how much wider (log units, each side) the 90% interval grows per e-fold of shape beyond the fitted ones
    # (Form.beyond): measured at fit time by predicting the larger half of the training shapes from the smaller
    # half (extrapolation_growth); None for artifacts older than it, or too few shapes to say (no widening)
    log_interval_growth: float | None = None

    @property
    def last_wave_weight(self) -> float | None:
        """The fitted weight of prefill attention's last-wave column (attention_schedule), None without one."""
        return float(self.coef[self.form.last_wave_column()]) if self.form.tile_schedule else None

    def interval_factors(self, df: pd.DataFrame | None = None) -> tuple[np.ndarray | float, np.ndarray | float]:
        """(lower, upper) multipliers of a prediction bounding its 90% interval; (1, 1) when it has none. Given
        the ops, the interval widens with each op's distance beyond the fitted shapes (the same inside them)."""
        if self.log_interval_90 is None:
            return 1.0, 1.0
        lo, hi = self.log_interval_90
        if df is None or not self.log_interval_growth:
            return float(np.exp(lo)), float(np.exp(hi))
        widen = self.log_interval_growth * self.form.beyond(df)
        return np.exp(lo - widen), np.exp(hi + widen)

    def predict(self, df: pd.DataFrame, device: Device, terms: pd.DataFrame | None = None) -> np.ndarray:
        return self.priced(df, device, terms)[0]

    def priced(
        self, df: pd.DataFrame, device: Device, terms: pd.DataFrame | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The predictions, and which ops lie past the measured shapes, where a rule prices them
        (PAST_MEASURED_RULE), not the data: the edge is found once for both."""
        terms = roofline(df, device) if terms is None else terms
        if self.form.family in ELEMENTWISE:
            df = self._at_measured_width(df)
        out = np.maximum(self._predict_form(df, terms), self.form.latency_min_us)
        roof = terms["roofline_us"].to_numpy()
        if self.form.family == DECODE:
            past, clipped = self._decode_edge(df)
            return self._stream_beyond(df, device, roof, out, past, clipped), past
        over = self.form.beyond(df)
        if self.form.family == GEMM:
            out = self._gemm_beyond(df, device, roof, out, over)
        if self.form.tile_schedule:
            out = self._batch_bound(df, device, roof, out, over)
        return out, over > 0

    def _at_measured_width(self, df: pd.DataFrame) -> pd.DataFrame:
        """A streaming kernel (elementwise, norm) of a width n never measured, priced as the same elements at the
        nearest measured width: its time follows the bytes it moves (its roofline is the same). Fitted on m and n,
        a width outside the measured ones met size and roofline columns in combinations never seen (Vidur's H100
        norms: n of 4096 and 8192 only): an RMSNorm of 2048 x 128 priced 255 us, of 4 x 3072 three times 4 x
        4096's."""
        if not self.form.width_range or "n" not in df.columns:
            return df
        n = pd.to_numeric(df["n"], errors="coerce").to_numpy(dtype=float)
        width = np.clip(n, *self.form.width_range)
        if np.array_equal(width, n, equal_nan=True):
            return df
        m = pd.to_numeric(df["m"], errors="coerce").to_numpy(dtype=float)
        return df.assign(m=m * n / width, n=width)

    def _batch_bound(
        self, df: pd.DataFrame, device: Device, roof: np.ndarray, out: np.ndarray, over: np.ndarray
    ) -> np.ndarray:
        """A prefill attention batch past the fitted work is never priced less efficient than the largest batch
        fitted at its lengths: more sequences add thread blocks (waves), not work per block. Without the bound the
        clipped polynomial carried a small batch's efficiency into large ones: on H100 TRT-LLM bf16's extrapolation
        split, 32-128 sequences of 1-2k tokens came out 2.5-3.5x too slow (p90 62.7% -> 50.8% with it)."""
        far = np.flatnonzero(over > 0)
        if not len(far) or "batch_size" not in self.form.dims[: self.form.n_size]:
            return out
        edge = df.iloc[far].copy()
        batch = pd.to_numeric(edge["batch_size"], errors="coerce").to_numpy(dtype=float)
        fitted_batch = np.maximum(
            np.floor(np.expm1(self.form.work_max - (self.form.work(edge) - _log_dim(edge, "batch_size")))), 1.0
        )
        smaller = fitted_batch < batch
        if not smaller.any():
            return out
        far, edge = far[smaller], edge[smaller].assign(batch_size=fitted_batch[smaller])
        edge_terms = roofline(edge, device)
        efficiency = edge_terms["roofline_us"].to_numpy() / self._predict_form(edge, edge_terms)
        out = out.copy()
        out[far] = np.minimum(out[far], roof[far] / efficiency)
        return out

    def _gemm_beyond(
        self, df: pd.DataFrame, device: Device, roof: np.ndarray, out: np.ndarray, over: np.ndarray
    ) -> np.ndarray:
        """A GEMM larger than any fitted (by m n k: Form.beyond) costs the prediction at the edge of the fitted
        shapes, the same GEMM shrunk evenly in its size dims to the largest fitted work, plus its extra roofline
        time at the sustained efficiency: the launch, prologue and last-wave costs that the edge's efficiency
        still carries do not grow with the work. Holding the edge's efficiency over the whole roofline instead
        kept those costs in proportion, so large GEMMs came out too slow (H100 bf16 at 4-10000x the largest
        fitted work: efficiency 0.73-0.88 measured against about 0.6 predicted). Extrapolation split, median / p90:
        H100 bf16 vLLM 15.2% / 30.3% -> 6.1% / 15.0%, TRT-LLM 8.1% / 21.6% -> 4.5% / 14.0%, A100 bf16 SGLang
        20.4% / 41.2% -> 5.9% / 22.1%. FP8 reaches less of its peak (about 0.6 at the largest measured shapes):
        fp8 vLLM 35.6% / 54.1% -> 34.6% / 52.2%, TRT-LLM 15.9% / 56.8% -> 22.8% / 47.1%."""
        n = self.form.n_size
        far = over > 0  # e-folds past the largest fitted work (Form.beyond)
        if not n or not far.any():
            return out
        edge = df[far].copy()
        shrink = np.exp(-over[far] / n)
        for d in self.form.dims[:n]:
            edge[d] = np.maximum(pd.to_numeric(edge[d], errors="coerce").to_numpy(dtype=float) * shrink, 1.0)
        edge_terms = roofline(edge, device)
        extra = np.maximum(roof[far] - edge_terms["roofline_us"].to_numpy(), 0.0)
        out = out.copy()
        out[far] = self._predict_form(edge, edge_terms) + extra / SUSTAINED_EFFICIENCY
        return out

    def _predict_form(self, df: pd.DataFrame, terms: pd.DataFrame) -> np.ndarray:
        roof = terms["roofline_us"].to_numpy()
        raw = self.form.bounded(self.form.design(df, terms)) @ self.coef
        log_ineff = self.form.clip_inefficiency(raw, np.log(np.maximum(roof, 1e-6)))
        if self.surface is not None:
            log_ineff = log_ineff + self.surface.correction(self.form.cells(df), df)
        return roof * np.exp(log_ineff)

    def _stream_beyond(
        self,
        df: pd.DataFrame,
        device: Device,
        roof: np.ndarray,
        out: np.ndarray,
        beyond: np.ndarray,
        clipped: dict[str, np.ndarray],
    ) -> np.ndarray:
        """Decode attention streams the KV cache. Past the measured shapes (a batch larger than any measured, or a
        KV length longer than any measured at that batch size or a larger one), a step costs the prediction at
        the edge of the measured shapes plus the extra roofline time at the sustained streaming efficiency, not
        the edge's efficiency times the whole roofline: at the edge that efficiency still holds the fixed
        per-launch and per-head-group costs, which do not grow with the KV. Extrapolation split, median / p90
        (roofline p90 81-98%): A100 TRT-LLM 63.4% / 818% -> 24.2% / 88.2%, vLLM 37.6% / 144% -> 13.0% / 39.3%,
        SGLang 28.1% / 146% -> 24.7% / 49.4%; H100 TRT-LLM 62.4% / 270% -> 15.5% / 47.3%, vLLM 18.7% / 67.5% ->
        9.7% / 28.6%, SGLang 16.5% / 38.0% -> 10.4% / 29.0%. Prefill attention (compute-bound, quadratic) and
        collectives (protocol switches) keep the edge efficiency: the same rule made them worse."""
        if not beyond.any():  # beyond, clipped: the measured edge (_decode_edge)
            return out
        edge = df[beyond].assign(**{d: v[beyond] for d, v in clipped.items()})
        edge_terms = roofline(edge, device)
        extra = np.maximum(roof[beyond] - edge_terms["roofline_us"].to_numpy(), 0.0)
        out = out.copy()
        out[beyond] = self._predict_form(edge, edge_terms) + extra / SUSTAINED_EFFICIENCY
        return out

    def _decode_edge(self, df: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Which decode-attention rows lie past the measured shapes, and each size dim clipped to that edge."""
        n = self.form.n_size
        clipped: dict[str, np.ndarray] = {}  # each size dim's values, clipped to the measured edge
        beyond = np.zeros(len(df), dtype=bool)
        form = self.form
        for d, c, s, hi in zip(form.dims[:n], form.center[:n], form.scale[:n], form.hi[:n], strict=True):
            if d in df.columns:
                top = float(np.round(np.expm1(c + s * hi)))  # the largest measured value of the dim
                values = pd.to_numeric(df[d], errors="coerce").to_numpy(dtype=float)
                beyond |= values > top
                clipped[d] = np.minimum(values, top)
        if self.form.kv_hull and {"batch_size", "kv_len"} <= set(df.columns):
            # past the longest KV measured at this batch size or a larger one: a large batch measured only with
            # short KV has its edge there, not at the longest KV of any batch
            batches, tops = (np.asarray(v) for v in self.form.kv_hull)
            batch = pd.to_numeric(df["batch_size"], errors="coerce").to_numpy(dtype=float)
            top = tops[np.minimum(np.searchsorted(batches, batch), len(batches) - 1)]
            kv = pd.to_numeric(df["kv_len"], errors="coerce").to_numpy(dtype=float)
            beyond |= kv > top
            clipped["kv_len"] = np.minimum(kv, top)
        return beyond, clipped


def _kv_hull(df: pd.DataFrame) -> list[list[float]]:
    """Per measured batch size (ascending), the longest KV length measured at it or at a larger batch."""
    if not {"batch_size", "kv_len"} <= set(df.columns):
        return []
    longest = df.groupby("batch_size")["kv_len"].max().sort_index()
    tops = longest[::-1].cummax()[::-1]
    return [longest.index.astype(float).tolist(), tops.astype(float).tolist()]


def _ols(X: np.ndarray, y: np.ndarray):
    import statsmodels.api as sm  # here, not at module level: prediction (every replay) needs no statsmodels

    with warnings.catch_warnings():  # collinear polynomial terms are expected; pinv handles them
        warnings.simplefilter("ignore")
        return sm.OLS(y, X).fit()


def shape_groups(df: pd.DataFrame, family: str) -> np.ndarray:
    """A group id per row: rows sharing the block dims' values are one shape block."""
    dims = [d for d in BLOCK_DIMS.get(family, ()) if d in df.columns]
    if not dims:
        return np.arange(len(df))
    return pd.util.hash_pandas_object(df[dims].astype(float), index=False).to_numpy()


def ape(pred: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(pred - measured) / measured


def _cv_ape(
    df: pd.DataFrame, terms: pd.DataFrame, y: np.ndarray, form: Form, seed: int, surface: bool = False
) -> tuple[float, np.ndarray]:
    """Mean absolute percentage error over folds that hold out whole shape blocks, and the held-out residuals
    log(measured / predicted); with `surface`, each fold's prediction includes its training rows' residual
    surface, as the final model's does."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(df))
    if len(idx) > CV_MAX_ROWS:
        idx = np.sort(rng.choice(idx, CV_MAX_ROWS, replace=False))
    groups = shape_groups(df.iloc[idx], form.family)
    uniq = np.unique(groups)
    if len(uniq) < CV_FOLDS:
        groups, uniq = idx, idx
    folds = (rng.permutation(len(uniq)) % CV_FOLDS)[np.searchsorted(uniq, groups)]  # uniq is sorted
    sub = df.iloc[idx]
    X = form.design(sub, terms.iloc[idx])
    log_roof = np.log(np.maximum(terms["roofline_us"].to_numpy()[idx], 1e-6))
    errs = []
    for f in range(CV_FOLDS):
        train, test = folds != f, folds == f
        if train.sum() <= X.shape[1] or not test.any():
            continue
        beta = np.linalg.lstsq(X[train], y[idx][train], rcond=None)[0]
        form.learn_ranges(X[train], y[idx][train], log_roof[train])
        pred = form.clip_inefficiency(form.bounded(X[test]) @ beta, log_roof[test])
        if surface:
            fitted = form.clip_inefficiency(form.bounded(X[train]) @ beta, log_roof[train])
            grid = form.surface(sub[train], y[idx][train] - fitted)
            pred = pred + grid.correction(form.cells(sub[test]), sub[test])
        errs.append(y[idx][test] - pred)  # log(measured / predicted)
    if not errs:
        return float("inf"), np.array([])
    resid = np.concatenate(errs)
    return float(np.mean(np.abs(np.expm1(-resid)))), resid  # |pred - measured| / measured


def fit_group(df: pd.DataFrame, family: str, device: Device, seed: int = 0) -> Fitted:
    """Fit one (device, family, dtype, framework) group; the form is chosen by grouped CV."""
    df = df[np.isfinite(df["latency_us"]) & (df["latency_us"] > 0)]
    if len(df) < MIN_SAMPLES:
        raise TooFewSamples(f"{family} on {device.id}: {len(df)} samples < {MIN_SAMPLES}")
    terms = roofline(df, device)
    if not np.isfinite(terms["roofline_us"]).all() or (terms["roofline_us"] <= 0).any():
        raise TooFewSamples(f"{family} on {device.id}: shapes missing for the roofline")
    y = np.log(df["latency_us"].to_numpy() / terms["roofline_us"].to_numpy())
    scores: dict[int, float] = {}
    for degree in DEGREES:
        form = make_form(family, df, degree, device)
        if degree and not form.n_size:
            continue
        if form.n_features() > MAX_FEATURES or len(df) < max(MIN_SAMPLES, 3 * form.n_features()):
            continue
        scores[degree], _ = _cv_ape(df, terms, y, form, seed)
    if not scores:
        raise TooFewSamples(f"{family} on {device.id}: {len(df)} samples fit no form")
    best = min(scores, key=lambda d: (scores[d], d))
    form = make_form(family, df, best, device)
    if family == DECODE:
        form.kv_hull = _kv_hull(df)
    # the form is chosen without the surface (it only corrects what the form leaves); the interval is taken
    # from held-out residuals with it, as predictions are made
    _, resid = _cv_ape(df, terms, y, form, seed, surface=True)
    X = form.design(df, terms)
    log_roof = np.log(np.maximum(terms["roofline_us"].to_numpy(), 1e-6))
    interval = _interval(resid)
    growth = extrapolation_growth(df, form, X, y, terms, interval, device)
    form.work_max = float(form.work(df).max()) if form.n_size else np.inf
    form.latency_min_us = float(df["latency_us"].min())
    if family in ELEMENTWISE and "n" in df.columns and df["n"].notna().any():
        form.width_range = [float(df["n"].min()), float(df["n"].max())]
    form.learn_ranges(X, y, log_roof)
    res = _ols(X, y)
    fitted_y = form.clip_inefficiency(form.bounded(X) @ np.asarray(res.params), log_roof)
    return Fitted(
        form=form,
        coef=np.asarray(res.params),
        conf_int=np.asarray(res.conf_int(0.05)),
        r2=float(res.rsquared),
        n=len(df),
        cv={f"degree_{d}": round(s, 5) for d, s in scores.items()},
        log_interval_90=interval,
        surface=form.surface(df, y - fitted_y),
        log_interval_growth=growth,
    )


def extrapolation_growth(
    df: pd.DataFrame,
    form: Form,
    X: np.ndarray,
    y: np.ndarray,
    terms: pd.DataFrame,
    interval: tuple | None,
    device: Device,
) -> float | None:
    """Log units the 90% interval must widen per e-fold of size past the fitted shapes (Form.beyond) to hold 90%
    of predictions made that far out: the form is fitted on the smaller half of the rows (by Form.work, as the
    extrapolation split orders them) and predicts the larger half as a prediction is made (a GEMM past the half's
    largest: its edge plus the extra work, Fitted._gemm_beyond); each larger row's miss beyond the in-range
    interval over its distance past the smaller half's largest, and the 90th percentile of those, over the rows
    at least one e-fold past it (nearer, a small miss over a small distance says nothing about the growth).
    None when the rows do not span enough to say."""
    if interval is None or not form.n_size:
        return None
    work = form.work(df)
    small = work <= np.median(work)
    distance = work - work[small].max()
    far = ~small & (distance >= 1.0)
    if small.sum() <= max(X.shape[1], MIN_SAMPLES) or far.sum() < MIN_FAR_ROWS:
        return None
    beta = np.linalg.lstsq(X[small], y[small], rcond=None)[0]
    half = replace(form)  # its ranges learnt on the smaller half; learn_ranges rebinds, so the form is untouched
    log_roof = np.log(np.maximum(terms["roofline_us"].to_numpy(), 1e-6))
    half.learn_ranges(X[small], y[small], log_roof[small])
    half.work_max = float(work[small].max())
    fitted = half.clip_inefficiency(half.bounded(X[far]) @ beta, log_roof[far])
    if form.family == GEMM:  # past the half's largest GEMM, as Fitted.predict prices it
        pred = Fitted(form=half, coef=beta, conf_int=np.empty((0, 2)), r2=0.0, n=int(small.sum()))
        roof = np.exp(log_roof[far])
        fitted = np.log(pred._gemm_beyond(df[far], device, roof, roof * np.exp(fitted), half.beyond(df[far])) / roof)
    resid = y[far] - fitted
    miss = np.maximum(resid - interval[1], interval[0] - resid)  # beyond the in-range interval, either side
    return float(np.quantile(np.maximum(miss, 0.0) / distance[far], 0.9))


def _interval(resid: np.ndarray) -> tuple[float, float] | None:
    """The 5th and 95th percentiles of held-out log residuals (None from too few to say)."""
    if len(resid) < MIN_SAMPLES:
        return None
    lo, hi = np.quantile(resid, [0.05, 0.95])
    return float(min(lo, 0.0)), float(max(hi, 0.0))  # the interval holds the prediction itself
