"""Arrow schemas of the warehouse tables. Units are in the column names; one convention throughout:
times in microseconds (`_us`) for kernels and traces, seconds (`_s`) for request arrivals, sizes in `bytes`,
token counts in `tokens`."""

from __future__ import annotations

import pyarrow as pa

# Big tables: stored as Parquet under tables/<name>/source=<id>/device=<dev>/, queried through DuckDB views.
KERNEL_SAMPLES = pa.schema(
    [
        ("source_id", pa.string()),
        ("device", pa.string()),  # canonical id, e.g. h100_sxm
        ("device_name", pa.string()),  # as the source wrote it
        ("framework", pa.string()),
        ("framework_version", pa.string()),
        ("op_family", pa.string()),  # gemm, attention_prefill, attention_decode, all_reduce, ...
        ("op_name", pa.string()),
        ("kernel_source", pa.string()),
        ("dtype", pa.string()),
        ("kv_cache_dtype", pa.string()),
        ("model", pa.string()),
        ("tp_size", pa.int64()),
        ("m", pa.int64()),
        ("n", pa.int64()),
        ("k", pa.int64()),
        ("batch_size", pa.int64()),
        ("seq_len", pa.int64()),  # prefill tokens per sequence
        ("num_heads", pa.int64()),
        ("num_kv_heads", pa.int64()),
        ("head_dim", pa.int64()),
        ("kv_len", pa.int64()),  # KV-cache length seen by a decode step
        ("window_size", pa.int64()),
        ("message_bytes", pa.int64()),
        ("num_gpus", pa.int64()),
        ("devices_per_node", pa.int64()),
        ("hidden_size", pa.int64()),
        ("num_experts", pa.int64()),
        ("top_k", pa.int64()),
        ("latency_us", pa.float64()),
        ("latency_min_us", pa.float64()),
        ("latency_max_us", pa.float64()),
        ("latency_mean_us", pa.float64()),
        ("latency_std_us", pa.float64()),
    ]
)

TRACE_EVENTS = pa.schema(
    [
        ("source_id", pa.string()),
        ("device", pa.string()),  # canonical GPU id for device events, "host" for CPU-side events
        ("device_index", pa.int64()),
        ("kind", pa.string()),  # kernel, cpu_op, runtime, memcpy, memset, annotation, gpu_annotation
        ("name", pa.string()),
        ("op_family", pa.string()),  # kernels and copies: gemm, attention, elementwise, collective, memcpy, other
        ("pid", pa.int64()),
        ("tid", pa.int64()),
        ("stream", pa.int64()),
        ("ts_us", pa.float64()),  # relative to the trace's first event
        ("dur_us", pa.float64()),
        ("correlation", pa.int64()),
        ("external_id", pa.int64()),
        ("cpu_op", pa.string()),  # the CPU op that launched this kernel (via External id)
        ("input_dims", pa.list_(pa.list_(pa.int64()))),  # the launching op's "Input Dims", when recorded
        ("input_types", pa.list_(pa.string())),
        ("grid", pa.list_(pa.int64())),
        ("block", pa.list_(pa.int64())),
        ("bytes", pa.int64()),
    ]
)

REQUESTS = pa.schema(
    [
        ("source_id", pa.string()),
        ("log_name", pa.string()),
        ("request_id", pa.int64()),
        ("arrival_s", pa.float64()),  # relative to the first request of its segment
        ("segment", pa.int64()),  # clock segment: 0, then 1, 2, ... after each reset of the log's clock
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("session_id", pa.string()),
        ("model", pa.string()),
        ("prefix_block_hashes", pa.list_(pa.int64())),  # equal ids = shareable KV blocks
        ("sys_prompt_hashes", pa.list_(pa.int64())),
        ("passage_hashes", pa.list_(pa.int64())),
        ("history_hashes", pa.list_(pa.int64())),
        ("web_search_hashes", pa.list_(pa.int64())),
        ("user_input_hashes", pa.list_(pa.int64())),
        ("sys_prompt_tokens", pa.int64()),
        ("passage_tokens", pa.int64()),
        ("history_tokens", pa.int64()),
        ("web_search_tokens", pa.int64()),
        ("user_input_tokens", pa.int64()),
        ("reasoning_share", pa.float64()),  # share of output tokens that are reasoning
    ]
)

DATA_TABLES: dict[str, pa.Schema] = {
    "kernel_samples": KERNEL_SAMPLES,
    "trace_events": TRACE_EVENTS,
    "requests": REQUESTS,
}

# Small catalog tables live inside the DuckDB file itself.
CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS sources (
    source_id VARCHAR PRIMARY KEY,
    path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    params VARCHAR NOT NULL,
    rows_accepted BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    note VARCHAR,
    ingested_at TIMESTAMP NOT NULL,
    tool_version VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    source_id VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    record VARCHAR
);
CREATE TABLE IF NOT EXISTS parts (
    table_name VARCHAR NOT NULL,
    source_id VARCHAR NOT NULL,
    device VARCHAR,
    relpath VARCHAR NOT NULL,
    rows BIGINT NOT NULL
);
"""
