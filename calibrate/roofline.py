"""Roofline terms of operators: FLOPs, bytes moved, and the speed-of-light times they imply on a device.

Everything is vectorized over a DataFrame whose columns follow `kernel_samples` (m, n, k, batch_size,
seq_len, kv_len, num_heads, num_kv_heads, head_dim, window_size, message_bytes, num_gpus, devices_per_node,
hidden_size, top_k, dtype), so measured samples and a model's decomposed ops go through the same code.

Times are microseconds: compute_us = flops / peak, memory_us = bytes / bandwidth (for collectives: the
algorithm's bus bytes over the link plus one link latency, and for an eager custom all-reduce the copy of its input
into the registered buffer first: a lower bound, as a roofline must be; real rings pay more per step, which the
calibrated models learn), roofline_us = max of the two."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .catalog import DTYPE_BYTES, GEMM_OPERANDS, Device

GEMM = "gemm"
VECTOR_SEARCH = "vector_search"  # brute-force similarity scan: a (queries x dim) by (dim x index) GEMM
PREFILL = "attention_prefill"
DECODE = "attention_decode"
COLLECTIVES = {"all_reduce", "all_gather", "reduce_scatter", "alltoall", "send_recv"}
MOE_COMM = {"moe_dispatch", "moe_combine"}
ELEMENTWISE = {"elementwise", "norm", "embedding"}
FAMILIES = (GEMM, VECTOR_SEARCH, PREFILL, DECODE, *sorted(COLLECTIVES), *sorted(MOE_COMM), *sorted(ELEMENTWISE))


def _col(df: pd.DataFrame, name: str, default: float = np.nan) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), default, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)


def _kernel_sources(df: pd.DataFrame) -> np.ndarray:
    """Each row's kernel_source ('' where the table names none): a vector search's layout."""
    if "kernel_source" not in df.columns:
        return np.full(len(df), "")
    return df["kernel_source"].astype(str).to_numpy()


def _per_dtype(dtypes, value) -> np.ndarray:
    """value(dtype name) per row, computed once per distinct dtype (a column holds a handful)."""
    codes, names = pd.factorize(pd.Series(dtypes), sort=False, use_na_sentinel=False)
    return np.array([value(str(n)) for n in names], dtype=float)[codes]


def dtype_bytes(dtypes: pd.Series | np.ndarray) -> np.ndarray:
    return _per_dtype(dtypes, lambda d: DTYPE_BYTES.get(d, 2.0))


def _peak(device: Device, dtypes) -> np.ndarray:
    return _per_dtype(dtypes, device.flops)


def gemm_terms(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """An (m x k) activation times a (k x n) weight; a quantization mode's operands as GEMM_OPERANDS says."""
    m, n, k = _col(df, "m"), _col(df, "n"), _col(df, "k")

    def operand(i: int) -> np.ndarray:  # bytes of the activation (0) or weight (1) elements
        return _per_dtype(df["dtype"], lambda d: GEMM_OPERANDS[d][i] if d in GEMM_OPERANDS else DTYPE_BYTES.get(d, 2.0))

    out_b = np.maximum(dtype_bytes(df["dtype"]), 2.0)  # fp8 / int8 GEMMs write 16-bit results
    return 2 * m * n * k, m * k * operand(0) + k * n * operand(1) + m * n * out_b


# Prefill kernels that mask a sliding window without skipping the KV tiles outside it: their time grows with the
# whole causal triangle, not with the window's band. AIConfigurator's H100 SGLang 0.5.14 table, Triton kernel,
# head_dim 256, window 1024 (batch 4, 8 heads): 2.56, 7.79 and 25.8 ms at 4k, 8k and 16k tokens, x3.0 and x3.3
# per doubling, where the band's work doubles and the triangle's quadruples.
WINDOW_MASKED_ONLY = ("triton",)


def skipped_window(df: pd.DataFrame) -> np.ndarray:
    """The sliding window (tokens) outside which a prefill row's kernel skips the KV tiles: the row's window_size,
    0 where it has none or its kernel only masks it (WINDOW_MASKED_ONLY)."""
    w = np.nan_to_num(_col(df, "window_size", 0))
    return np.where(np.isin(_kernel_sources(df), WINDOW_MASKED_ONLY), 0.0, w)


def attention_terms(df: pd.DataFrame, prefill: bool) -> tuple[np.ndarray, np.ndarray]:
    """Causal attention over `kv_len` keys; a prefill chunk of `seq_len` queries follows kv_len - seq_len
    cached tokens. A sliding window (`window_size` > 0) caps the keys each query sees, where the kernel skips
    what lies outside it (skipped_window)."""
    b = _col(df, "batch_size", 1)
    h, hk, d = _col(df, "num_heads"), _col(df, "num_kv_heads"), _col(df, "head_dim")
    L = _col(df, "kv_len")
    q = _col(df, "seq_len", 1) if prefill else np.ones(len(df))
    w = skipped_window(df) if prefill else np.nan_to_num(_col(df, "window_size", 0))
    prior = np.maximum(L - q, 0)
    keys_per_query = prior + (q + 1) / 2 if prefill else L
    keys_per_query = np.where(w > 0, np.minimum(keys_per_query, w), keys_per_query)
    keys_read = np.where(w > 0, np.minimum(L, w + q), L)
    a_b = dtype_bytes(df["dtype"])
    kv_b = dtype_bytes(df["kv_cache_dtype"]) if "kv_cache_dtype" in df.columns else a_b
    kv_b = np.where(np.isnan(kv_b), a_b, kv_b)
    flops = 4 * b * h * d * q * keys_per_query
    bytes_ = 2 * b * q * h * d * a_b + 2 * b * keys_read * hk * d * kv_b
    return flops, bytes_


FAISS_BLAS_THRESHOLD = 20  # faiss's distance_compute_blas_threshold default


def vector_search_terms(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Search of m queries over an index of n vectors of dimension k (float32), by layout (`kernel_source`):
    - numpy (hermes profile's brute force): a (m x k) by (k x n) GEMM writing every score;
    - faiss-flat: below 20 queries (faiss's distance_compute_blas_threshold) each query scans the index in
      turn; from 20 a batch is one blocked GEMM that reads the index once, reduced to top-k heaps;
    - faiss-ivf: the m x nlist coarse quantizer, then nprobe of nlist lists (`search_width`, `num_lists`) per
      query; bytes count the distinct lists a batch touches at most once;
    - faiss-hnsw: about ef_search x M distance evaluations per query (`search_width` = ef, `num_lists` = M),
      each a random read of one vector: no reuse."""
    m, n, k = _col(df, "m"), _col(df, "n"), _col(df, "k")
    src = _kernel_sources(df)
    width, lists = _col(df, "search_width", 1), _col(df, "num_lists", 1)
    b = 4.0
    flops = 2 * m * n * k
    bytes_ = (m * k + k * n) * b + m * n * b
    flat = src == "faiss-flat"
    scans = np.where(m < FAISS_BLAS_THRESHOLD, m, 1)
    bytes_ = np.where(flat, (m * k + scans * k * n) * b, bytes_)
    ivf = src == "faiss-ivf"
    per_list = n / np.maximum(lists, 1)
    touched = np.minimum(lists, m * width)
    flops = np.where(ivf, 2 * m * lists * k + 2 * m * width * per_list * k, flops)
    bytes_ = np.where(ivf, (lists * k + touched * per_list * k + m * k) * b, bytes_)
    hnsw = src == "faiss-hnsw"
    visits = width * lists + np.log2(np.maximum(n, 2)) * lists
    flops = np.where(hnsw, 2 * m * visits * k, flops)
    bytes_ = np.where(hnsw, m * visits * k * b, bytes_)
    return flops, bytes_


PER_QUERY_SEARCHES = ("faiss-ivf", "faiss-hnsw")


def search_core_share(df: pd.DataFrame, cores: int) -> np.ndarray:
    """The share of the device's cores a vector search keeps busy. faiss threads its IVF and HNSW searches over
    the queries, each query on one thread ("querying a single vector is not multi-threaded": faiss wiki, Threads
    and asynchronous calls; `hermes-sim profile cpu` measures the same: one query takes as long on 2 threads as on
    1, 16 take about half as long), so m queries on t threads run on min(m, t) cores. Flat search (BLAS or a scan
    over the database) and the numpy brute force use every thread they are given; a row without a thread count
    uses every core. The flop rate is linear in busy cores. Memory time is not scaled: one core streams a large
    part of a socket's bandwidth, how large the catalog does not say, and a roofline must stay a lower bound."""
    threads = np.nan_to_num(_col(df, "threads"), nan=float(cores))
    src = _kernel_sources(df)
    active = np.where(np.isin(src, PER_QUERY_SEARCHES), np.minimum(_col(df, "m"), threads), threads)
    return np.clip(active, 1.0, cores) / cores


def collective_bus_bytes(family: np.ndarray, size: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Bytes each device sends over its link in the ring algorithm, for NCCL-tests' message sizes."""
    n = np.maximum(n, 1)
    frac = (n - 1) / n
    return np.select(
        [family == "all_reduce", family == "send_recv"],
        [2 * frac * size, size],
        frac * size,  # all_gather, reduce_scatter, alltoall
    )


def registered_buffer_copy(df: pd.DataFrame) -> np.ndarray:
    """Rows measuring an eager custom all-reduce (vLLM's and SGLang's one-shot / two-shot kernels outside a CUDA
    graph). Those kernels read their peers' inputs from buffers registered over CUDA IPC; a graph-captured call
    registers its input when the graph is captured, an eager call first copies its input into the pre-registered
    buffer (vLLM `CustomAllreduce.all_reduce(..., registered=False)`), S bytes read and S written in HBM before the
    exchange. Measured (AIConfigurator's vLLM and SGLang tables, eager minus graph at 8 GPUs, 64 MiB to 1 GiB):
    1.0-1.4x that copy's HBM time on H100 and on A100 (0.71 ms and 1.23 ms at 1 GiB, at 2, 4 and 8 GPUs alike)."""
    src = pd.Series(_kernel_sources(df)).str.lower()
    return (
        (df["op_family"].astype(str).to_numpy() == "all_reduce")
        & src.str.contains("custom").to_numpy()
        & src.str.contains("eager").to_numpy()
    )


def moe_remote_ranks(experts: np.ndarray, top_k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The other ranks a token's top_k experts live on, expected (experts spread evenly over n ranks, the top_k
    distinct and uniform): (n - 1) x (1 - C(E - E/n, k) / C(E, k)). Expert-parallel dispatch (DeepEP) sends a token
    once per destination rank, not once per expert: 4.6 ranks for top-8 of 256 experts on 8 GPUs, where one copy
    per expert is 7 (SGLang's H100 DeepEP rows ran up to 3.8x faster than that roofline). An unknown expert count
    falls back to one copy per expert, top_k x (n - 1) / n."""
    out = top_k * (n - 1) / np.maximum(n, 1)
    for e, k, g in {(e, k, g) for e, k, g in zip(experts, top_k, n, strict=True) if np.isfinite(e) and e >= g}:
        local = int(e) // int(g)
        chosen = 1.0 - math.comb(int(e) - local, int(k)) / math.comb(int(e), int(k))
        out[(experts == e) & (top_k == k) & (n == g)] = (g - 1) * chosen
    return out


def roofline(df: pd.DataFrame, device: Device) -> pd.DataFrame:
    """flops, bytes, compute_us, memory_us and roofline_us for every row (`op_family` says which formula)."""
    fam = df["op_family"].astype(str).to_numpy()
    flops = np.zeros(len(df))
    bytes_ = np.zeros(len(df))
    comm_us = np.zeros(len(df))

    is_gemm = fam == GEMM
    if is_gemm.any():
        flops[is_gemm], bytes_[is_gemm] = gemm_terms(df[is_gemm])
    search = fam == VECTOR_SEARCH
    if search.any():
        flops[search], bytes_[search] = vector_search_terms(df[search])
    for family, prefill in ((PREFILL, True), (DECODE, False)):
        mask = fam == family
        if mask.any():
            flops[mask], bytes_[mask] = attention_terms(df[mask], prefill)
    ew = np.isin(fam, list(ELEMENTWISE))
    if ew.any():
        sub = df[ew]
        elems = _col(sub, "m") * np.nan_to_num(_col(sub, "n", 1), nan=1.0)
        flops[ew] = elems
        bytes_[ew] = 2 * elems * dtype_bytes(sub["dtype"])
    coll = np.isin(fam, list(COLLECTIVES | MOE_COMM))
    if coll.any():
        sub = df[coll]
        size = _col(sub, "message_bytes")
        moe = np.isin(fam[coll], list(MOE_COMM))
        n = np.nan_to_num(_col(sub, "num_gpus", 8), nan=8.0)
        per_node = np.nan_to_num(_col(sub, "devices_per_node", 8), nan=8.0)
        bus = collective_bus_bytes(fam[coll], size, n)
        if moe.any():  # a token's hidden state (16-bit) goes once to each other rank holding one of its experts
            ranks = moe_remote_ranks(_col(sub, "num_experts")[moe], _col(sub, "top_k")[moe], n[moe])
            bus[moe] = _col(sub, "m")[moe] * _col(sub, "hidden_size")[moe] * 2.0 * ranks
        fast, slow = device.scale_up_link(), device.interconnects.get("network", device.scale_up_link())
        inter = n > per_node
        bw = np.where(inter, slow.bandwidth, fast.bandwidth)
        lat = np.where(inter, slow.latency_s, fast.latency_s)
        bytes_[coll] = bus
        copy_us = np.where(registered_buffer_copy(sub), 2.0 * size / device.memory_bandwidth * 1e6, 0.0)
        comm_us[coll] = (bus / bw + lat) * 1e6 + copy_us

    compute_us = flops / _peak(device, df["dtype"]) * 1e6
    memory_us = np.where(coll, comm_us, bytes_ / device.memory_bandwidth * 1e6)
    if search.any() and device.kind == "cpu":  # the cores a search keeps busy set its flop rate (faiss-gpu: every SM)
        compute_us[search] /= search_core_share(df[search], device.compute_units)
    return pd.DataFrame(
        {
            "flops": flops,
            "bytes": bytes_,
            "compute_us": compute_us,
            "memory_us": memory_us,
            "roofline_us": np.maximum(compute_us, memory_us),
        },
        index=df.index,
    )
