"""NVIDIA AIConfigurator perf database: systems/data/<gpu>/<family>/<framework>/<version>/<table>_perf.parquet.

Latencies there are milliseconds (the DeepEP tables: microseconds, as their column names say); the comm tables'
`message_size` counts elements of their dtype, not bytes (AIConfigurator's collectors log nccl-tests' byte size
divided by the dtype's width, and build custom all-reduce tensors of that many elements), so it becomes
`message_bytes` = elements x bytes per element. A version folder
holding only `reuse.yaml` borrows another version's table: it is recorded as a source with no rows, so the
borrowed measurements are never counted twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from ..warehouse.batch import PROBLEM_COLUMN, ROW_COLUMN, IngestError, SourceBatch, build_table, whole_counts
from .devices import canonical_device

MS_TO_US = 1000.0
_DTYPE_ALIASES = {"half": "float16", "float": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Bytes per element of the collectives' dtypes: the comm tables' `message_size` counts elements (the collectors
# log nccl-tests' byte size divided by the dtype's bytes, and size custom all-reduce tensors in elements)
ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "int8": 1, "uint8": 1, "fp8": 1}


def tree_position(path: Path) -> dict[str, str] | None:
    """device/family/framework/version from a path inside systems/data/, or None if it is not in one."""
    parts = path.parts
    if "data" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("data")
    rest = parts[i + 1 :]
    if len(rest) != 5:
        return None
    return {"device": rest[0], "family": rest[1], "framework": rest[2], "version": rest[3]}


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise IngestError(path, where, f"invalid YAML: {e}") from e


def parse_reuse(path: Path, batch: SourceBatch) -> SourceBatch:
    doc = _read_yaml(path)
    entries = doc.get("reuse")
    if not isinstance(entries, list) or not entries:
        raise IngestError(path, None, "reuse.yaml has no `reuse:` list")
    batch.note = {"position": tree_position(path), "borrows": entries}
    return batch


def _dtype(values: pa.ChunkedArray) -> pa.Array:
    """Lower-cased dtype names with the usual aliases folded (half -> float16)."""
    enc = values.combine_chunks().dictionary_encode()
    names = [_DTYPE_ALIASES.get(str(v).lower(), str(v).lower()) for v in enc.dictionary.to_pylist()]
    return pa.array(names, pa.string()).take(enc.indices)


def _message_bytes(path: Path, elements: pa.ChunkedArray, dtype: pa.Array, dtype_col: str) -> pa.Array:
    """A comm table's message sizes in bytes: its `message_size` (elements) times its dtype's bytes."""
    unknown = sorted(set(dtype.to_pylist()) - set(ELEMENT_BYTES))
    if unknown:
        raise IngestError(
            path, f"column {dtype_col}", f"unknown collective dtype(s) {unknown}; known: {sorted(ELEMENT_BYTES)}"
        )
    width = pa.array([ELEMENT_BYTES[d] for d in dtype.to_pylist()], pa.int64())
    return pc.multiply(elements.cast(pa.int64(), safe=False), width)  # a row whose size is not whole is flagged


def _require(path: Path, table: pa.Table, columns: list[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise IngestError(path, None, f"missing column(s) {missing}; found {table.column_names}")


def _ms_to_us(path: Path, table: pa.Table, column: str = "latency") -> pa.Array:
    return pc.multiply(_numeric(path, table, column).cast(pa.float64()), MS_TO_US)


def _numeric(path: Path, t: pa.Table, column: str) -> pa.ChunkedArray:
    """A column that must hold numbers; one that holds text fails the file, naming it and the column."""
    if not (pa.types.is_integer(t[column].type) or pa.types.is_floating(t[column].type)):
        raise IngestError(path, None, f"column {column!r} holds {t[column].type}, not numbers")
    return t[column]


def _counts(path: Path, t: pa.Table, columns: list[str], problems: list) -> dict[str, np.ndarray]:
    """Shape columns as floats, NaN where a row is flagged (batch.whole_counts): read as written, a null m was
    kept as a GEMM without a shape and a 7.5 failed the ingest without naming it."""
    return {c: whole_counts(_numeric(path, t, c).to_numpy(zero_copy_only=False), c, problems) for c in columns}


def _first(table: pa.Table, column: str) -> str | None:
    return str(table[column][0]) if column in table.column_names and table.num_rows else None


def parse_perf_table(path: Path, batch: SourceBatch) -> SourceBatch:
    try:
        t = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        raise IngestError(path, None, f"not a readable Parquet file: {e}") from e
    pos = tree_position(path) or {}
    table = path.name.removesuffix(".parquet")
    meta_file = path.parent / "collection_meta.yaml"
    batch.note = {"table": table, "position": pos or None}
    if meta_file.exists():
        batch.note["collection_meta"] = _read_yaml(meta_file)

    n = t.num_rows
    problems: list[str | None] = [None] * n
    raw_device = _first(t, "device") or pos.get("device")
    common = {
        ROW_COLUMN: np.arange(1, n + 1),
        "device": canonical_device(pos.get("device") or raw_device),
        "device_name": raw_device,
        "framework": pos.get("framework") or _first(t, "framework"),
        "framework_version": pos.get("version") or _first(t, "version"),
        "op_name": t["op_name"] if "op_name" in t.column_names else None,
        "kernel_source": t["kernel_source"] if "kernel_source" in t.column_names else None,
    }

    if table == "gemm_perf":
        _require(path, t, ["m", "n", "k", "gemm_dtype", "latency"])
        cols = {
            "op_family": "gemm",
            "dtype": _dtype(t["gemm_dtype"]),
            **_counts(path, t, ["m", "n", "k"], problems),
            "latency_us": _ms_to_us(path, t),
        }
    elif table in ("context_attention_perf", "generation_attention_perf"):
        need = ["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "step", "latency"]
        _require(path, t, [*need, "attn_dtype"])
        prefill = table.startswith("context")
        shape = _counts(
            path, t, ["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "step"], problems
        )
        cols = {
            "op_family": "attention_prefill" if prefill else "attention_decode",
            "dtype": _dtype(t["attn_dtype"]),
            "kv_cache_dtype": _dtype(t["kv_cache_dtype"]) if "kv_cache_dtype" in t.column_names else None,
            "batch_size": shape["batch_size"],
            "seq_len": shape["isl"],
            "num_heads": shape["num_heads"],
            "num_kv_heads": shape["num_key_value_heads"],
            "head_dim": shape["head_dim"],
            # for decode, `step` is the KV length; prefill attends over its own isl tokens
            "kv_len": shape["isl"] if prefill else shape["step"],
            "window_size": t["window_size"] if "window_size" in t.column_names else None,
            "latency_us": _ms_to_us(path, t),
        }
    elif table in ("nccl_perf", "custom_allreduce_perf"):
        dtype_col = "nccl_dtype" if table == "nccl_perf" else "allreduce_dtype"
        _require(path, t, ["op_name", "num_gpus", "message_size", "latency", dtype_col])
        kernel = t["kernel_source"].cast(pa.string())
        for extra in ("backend", "implementation"):
            if extra in t.column_names:
                kernel = pc.binary_join_element_wise(kernel, t[extra].cast(pa.string()), ":")
        dtype = _dtype(t[dtype_col])
        _counts(path, t, ["num_gpus", "message_size"], problems)
        cols = {
            "op_family": t["op_name"],
            "kernel_source": kernel,
            "dtype": dtype,
            "num_gpus": t["num_gpus"],
            "message_bytes": _message_bytes(path, t["message_size"], dtype, dtype_col),
            "latency_us": _ms_to_us(path, t),
        }
        if table == "nccl_perf" and "framework" not in pos:
            common["framework"] = "nccl"
    elif table in ("wideep_deepep_ll_perf", "wideep_deepep_normal_perf"):
        return _parse_deepep(path, t, table, common, batch)
    else:
        raise IngestError(path, None, f"unknown AIConfigurator table {table!r}")
    batch.tables["kernel_samples"] = build_table("kernel_samples", {**common, **cols, PROBLEM_COLUMN: problems}, n)
    return batch


def _parse_deepep(path: Path, t: pa.Table, table: str, common: dict, batch: SourceBatch) -> SourceBatch:
    """DeepEP MoE dispatch/combine: one input row gives a moe_dispatch and a moe_combine sample (in us)."""
    _require(path, t, ["hidden_size", "num_token", "num_topk", "num_experts"])
    df = t.to_pandas()
    if table.endswith("ll_perf"):
        _require(path, t, ["dispatch_avg_t_us", "combine_avg_t_us"])
        dispatch = df["dispatch_avg_t_us"].to_numpy(dtype=float)
        combine = df["combine_avg_t_us"].to_numpy(dtype=float)
    else:
        _require(path, t, ["dispatch_transmit_us", "dispatch_notify_us", "combine_transmit_us", "combine_notify_us"])
        dispatch = (df["dispatch_transmit_us"] + df["dispatch_notify_us"]).to_numpy(dtype=float)
        combine = (df["combine_transmit_us"] + df["combine_notify_us"]).to_numpy(dtype=float)
    n = len(df)
    twice = {
        k: pa.concat_arrays([v.combine_chunks()] * 2) if isinstance(v, pa.ChunkedArray) else v
        for k, v in common.items()
    }
    twice[ROW_COLUMN] = np.concatenate([common[ROW_COLUMN]] * 2)
    twice.update(
        op_family=np.array(["moe_dispatch"] * n + ["moe_combine"] * n, dtype=object),
        m=np.tile(df["num_token"].to_numpy(), 2),
        hidden_size=np.tile(df["hidden_size"].to_numpy(), 2),
        top_k=np.tile(df["num_topk"].to_numpy(), 2),
        num_experts=np.tile(df["num_experts"].to_numpy(), 2),
        latency_us=np.concatenate([dispatch, combine]),
    )
    batch.tables["kernel_samples"] = build_table("kernel_samples", twice, 2 * n)
    return batch
