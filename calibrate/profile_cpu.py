"""Measure this machine for real and write the timings as a PyTorch-profiler Chrome trace.

Kernels, each over a shape grid, each repetition one `cpu_op` event with its "Input Dims":
- `aten::mm`: float32 GEMMs through numpy's BLAS;
- `aten::copy_`: memory streaming (array copies beyond the caches);
- `hermes::vector_search`: brute-force similarity search in numpy: a (queries x dim) by (index x dim)
  inner-product scan plus a top-k selection;
- `faiss::search_flat`, `faiss::search_ivf`, `faiss::search_hnsw`: faiss-cpu's IndexFlatIP, IndexIVFFlat and
  IndexHNSWFlat over index size, dimension, top-k, nprobe / efSearch, query batch and threads, the indexes RAG
  serving uses. Input Dims: [[queries, dim], [index vectors, dim], [top_k], [nprobe or efSearch, nlist or M],
  [threads]].
`hermes-sim ingest` reads the trace like any other; `hermes-sim calibrate --device local_cpu` fits it."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

TRACE_NAME = "hermes-sim profile cpu"
OPS = {
    "aten::mm": "gemm",
    "aten::copy_": "elementwise",
    "hermes::vector_search": "vector_search",
    "faiss::search_flat": "vector_search",
    "faiss::search_ivf": "vector_search",
    "faiss::search_hnsw": "vector_search",
}
GRIDS = {
    "small": {
        "gemm": [64, 128, 256, 512],
        "copy_mbytes": [4, 8, 16, 32, 48, 64],
        "search_index": [2000, 8000, 32000],
        "search_queries": [1, 8, 32],
        "faiss_index": [10000, 40000],
        "faiss_dim": [64, 256],
        "faiss_queries": [1, 4, 16, 64],
        "faiss_width": [8, 32],  # IVF nprobe (of nlist 256) and HNSW efSearch (M 16)
        "faiss_threads": [1, 2],
        "faiss_top_k": [10],
    },
    "full": {
        "gemm": [64, 128, 256, 384, 512, 768, 1024, 1536, 2048],
        "copy_mbytes": [4, 16, 32, 64, 128, 256],
        "search_index": [1000, 4000, 16000, 64000, 256000],
        "search_queries": [1, 4, 16, 64],
        "faiss_index": [20000, 80000, 320000],
        "faiss_dim": [128, 384, 768],
        "faiss_queries": [1, 4, 16, 64, 256],
        "faiss_width": [4, 16, 64],
        "faiss_threads": [1, 2, 4, 8],
        "faiss_top_k": [10, 50],
    },
}
EMBED_DIM = 384
TOP_K = 10


def _timed(fn, repeats: int) -> list[tuple[float, float]]:
    """(start_us, duration_us) of each repetition after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        t1 = time.perf_counter_ns()
        out.append((t0 / 1e3, (t1 - t0) / 1e3))
    return out


def profile(grid: str = "small", repeats: int = 5, seed: int = 0) -> dict:
    """Run the measurements; return the Chrome-trace document."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}")
    g = GRIDS[grid]
    rng = np.random.default_rng(seed)
    pid, tid = os.getpid(), 1
    events: list[dict] = []

    def record(name: str, dims: list[list[int]], timings: list[tuple[float, float]], **extra) -> None:
        for start, dur in timings:
            events.append(
                {
                    "ph": "X",
                    "cat": "cpu_op",
                    "name": name,
                    "pid": pid,
                    "tid": tid,
                    "ts": start,
                    "dur": dur,
                    "args": {
                        "External id": len(events) + 1,
                        "Input Dims": dims,
                        "Input type": ["float"] * len(dims),
                        **extra,
                    },
                }
            )

    for m in g["gemm"]:
        for n in g["gemm"]:
            for k in g["gemm"]:
                a = rng.standard_normal((m, k), dtype=np.float32)
                b = rng.standard_normal((k, n), dtype=np.float32)
                record("aten::mm", [[m, k], [k, n]], _timed(lambda a=a, b=b: a @ b, repeats))
    for mbytes in g["copy_mbytes"]:
        elems = mbytes * 2**20 // 4
        src = rng.standard_normal(elems, dtype=np.float32)
        dst = np.empty_like(src)
        record("aten::copy_", [[elems], [elems]], _timed(lambda s=src, d=dst: np.copyto(d, s), repeats))
    for size in g["search_index"]:
        index = rng.standard_normal((size, EMBED_DIM), dtype=np.float32)
        for q in g["search_queries"]:
            queries = rng.standard_normal((q, EMBED_DIM), dtype=np.float32)

            def search(queries=queries, index=index):
                scores = queries @ index.T
                return np.argpartition(-scores, TOP_K - 1, axis=1)[:, :TOP_K]

            record("hermes::vector_search", [[q, EMBED_DIM], [size, EMBED_DIM]], _timed(search, repeats), top_k=TOP_K)
    _profile_faiss(g, rng, repeats, record)
    base = min(e["ts"] for e in events)
    for e in events:
        e["ts"] = round(e["ts"] - base, 3)
        e["dur"] = round(e["dur"], 3)
    return {
        "schemaVersion": 1,
        "traceName": TRACE_NAME,
        "deviceProperties": [],
        "hermes_profile": {
            "device": "local_cpu",
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "faiss": _faiss_version(),
            "grid": grid,
            "repeats": repeats,
        },
        "traceEvents": events,
    }


IVF_NLIST = 256
HNSW_M = 16


def _profile_faiss(g: dict, rng: np.random.Generator, repeats: int, record) -> None:
    """faiss-cpu's flat, IVF and HNSW searches over the grid (skipped, with a warning, without faiss-cpu)."""
    try:
        import faiss
    except ImportError:
        import logging

        logging.getLogger(__name__).warning("faiss-cpu is not installed: faiss vector-search kernels not profiled")
        return
    threads_before = faiss.omp_get_max_threads()
    try:
        for n in g["faiss_index"]:
            for d in g["faiss_dim"]:
                data = rng.standard_normal((n, d), dtype=np.float32)
                faiss.normalize_L2(data)
                flat = faiss.IndexFlatIP(d)
                flat.add(data)
                ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, IVF_NLIST, faiss.METRIC_INNER_PRODUCT)
                ivf.train(data[: max(IVF_NLIST * 40, 1)])
                ivf.add(data)
                hnsw = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
                hnsw.add(data)
                for q in g["faiss_queries"]:
                    queries = rng.standard_normal((q, d), dtype=np.float32)
                    faiss.normalize_L2(queries)
                    for threads in g["faiss_threads"]:
                        faiss.omp_set_num_threads(threads)
                        for k in g["faiss_top_k"]:
                            dims = [[q, d], [n, d], [k], [1, 1], [threads]]
                            record(
                                "faiss::search_flat",
                                dims,
                                _timed(lambda i=flat, x=queries, k=k: i.search(x, k), repeats),
                            )
                            for width in g["faiss_width"]:
                                ivf.nprobe = width
                                record(
                                    "faiss::search_ivf",
                                    [[q, d], [n, d], [k], [width, IVF_NLIST], [threads]],
                                    _timed(lambda i=ivf, x=queries, k=k: i.search(x, k), repeats),
                                )
                                hnsw.hnsw.efSearch = max(width, k)
                                record(
                                    "faiss::search_hnsw",
                                    [[q, d], [n, d], [k], [max(width, k), HNSW_M], [threads]],
                                    _timed(lambda i=hnsw, x=queries, k=k: i.search(x, k), repeats),
                                )
    finally:
        faiss.omp_set_num_threads(threads_before)


def write(doc: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one event per line, like the profiler's own output, so the fast ingest path applies
    lines = ",\n  ".join(json.dumps(e) for e in doc["traceEvents"])
    head = {k: v for k, v in doc.items() if k != "traceEvents"}
    path.write_text(json.dumps(head)[:-1] + ',\n "traceEvents": [\n  ' + lines + "\n ]\n}\n")
    return path


def _faiss_version() -> str | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss.__version__
