"""Vidur profiling CSVs (times in milliseconds, as `time_stats.<op>.{min,max,mean,median,std}`).

- compute/<device>/<org>/<model>/mlp.csv: one layer's non-attention ops; each op column becomes a row.
- compute/<device>/<org>/<model>/attention*.csv: attention prefill / decode times.
- network/<device>_dgx/{all_reduce,send_recv}.csv: collective times by message `size` in bytes.
Vidur profiles in fp16.

The part: Vidur's network folders name it (`a100_dgx` is a DGX A100, so SXM); its compute folders name only the
family (`a100`, `h100`: 80 GB, SXM or PCIe not said). Such a source is recorded as the family's SXM part unless
ingest is told the part (`hermes-sim ingest PATH --device a100_pcie`), and its source note says which: the part
a measurement came from is never silently guessed (`hermes-sim warehouse sql` over `sources.note` shows it)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..warehouse.batch import PROBLEM_COLUMN, ROW_COLUMN, IngestError, SourceBatch, build_table, whole_counts
from .devices import canonical_device
from .text import read_csv

log = logging.getLogger(__name__)

MS_TO_US = 1000.0
VIDUR_DTYPE = "float16"

MLP_OPS = (
    "emb",
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
_MLP_FAMILY = {
    "emb": "embedding",
    "input_layernorm": "norm",
    "post_attention_layernorm": "norm",
    "attn_rope": "elementwise",
    "mlp_act": "elementwise",
    "add": "elementwise",
    "attn_pre_proj": "gemm",
    "attn_post_proj": "gemm",
    "mlp_up_proj": "gemm",
    "mlp_down_proj": "gemm",
}


class _Rows:
    """A Vidur CSV's values, each column read once. A value that is not what its column holds (a time that is
    not a number, a count that is missing or not a whole number within int64, a flag that is not true or
    false) flags its row with the column and the value, and the row is quarantined with that reason; read
    leniently, a count of 2048.5 was stored as 2048, a flag of `maybe` as false, and a time of `fast` failed
    the whole file without naming it."""

    def __init__(self, df: pd.DataFrame):
        self.df, self.problems = df, [None] * len(df)

    def _flag(self, mask: np.ndarray, column: str, what: str) -> None:
        for i in np.flatnonzero(mask):
            value = self.df[column].iloc[i]
            shown = repr(value) if isinstance(value, str) else f"{value:g}"
            self.problems[i] = self.problems[i] or f"{column} {shown} is not {what}"

    def number(self, column: str) -> np.ndarray:
        raw = self.df[column]
        x = np.array(pd.to_numeric(raw, errors="coerce"), dtype=float)  # a copy: pandas hands out read-only views
        self._flag(raw.notna().to_numpy() & np.isnan(x), column, "a number")
        return x

    def count(self, column: str) -> np.ndarray:
        return whole_counts(self.number(column), column, self.problems)

    def flag(self, column: str) -> np.ndarray:
        text = self.df[column].astype(str).str.strip().str.lower()
        self._flag(~text.isin(("true", "false")).to_numpy(), column, "true or false")
        return text.eq("true").to_numpy()

    def stats_us(self, op: str) -> dict[str, np.ndarray]:
        """latency_us (the median) and the repetition stats of one op, converted from ms."""
        p = f"time_stats.{op}."
        return {
            f"latency{suffix}_us": self.number(p + stat) * MS_TO_US
            for suffix, stat in (("", "median"), ("_min", "min"), ("_max", "max"), ("_mean", "mean"), ("_std", "std"))
        }


def _require(path: Path, df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise IngestError(path, "header", f"missing column(s) {missing}")


def _model_and_device(path: Path) -> tuple[str | None, str]:
    """compute/<device>/<org>/<model>/file.csv -> ("org/model", device)."""
    parts = path.parts
    if "compute" in parts:
        i = len(parts) - 1 - parts[::-1].index("compute")
        rest = parts[i + 1 : -1]
        if len(rest) == 3:
            return f"{rest[1]}/{rest[2]}", rest[0]
    raise IngestError(path, None, "cannot tell the device and model: expected compute/<device>/<org>/<model>/")


_FAMILY_ONLY = {"a100", "h100", "a40", "l40s", "h200"}  # folder names that name a GPU family, not a part


def _part(path: Path, folder: str, batch: SourceBatch) -> str:
    """The canonical device the source was measured on: the one ingest was told, else the folder's; the
    source note records which, and whether the folder named only the GPU family."""
    told = batch.params.get("device")
    named = folder.lower() not in _FAMILY_ONLY
    if told and named and canonical_device(told) != canonical_device(folder):
        part = canonical_device(folder)
        raise IngestError(path, None, f"the folder {folder!r} names the part {part}; --device {told} contradicts it")
    device = canonical_device(told or folder)
    batch.note |= {"device": device, "device_from": "--device" if told else f"folder {folder!r}"}
    if not told and not named:
        batch.note["device_assumed"] = f"{folder!r} names the GPU family, not the part; pass --device to say it"
        log.info("%s: the folder %r names no part; recorded as %s (ingest --device says it)", path, folder, device)
    return device


def _read(path: Path) -> pd.DataFrame:
    return read_csv(path)


def parse_mlp(path: Path, batch: SourceBatch) -> SourceBatch:
    df = _read(path)
    shape_cols = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp"]
    _require(path, df, [*shape_cols, "num_tokens", "num_tensor_parallel_workers"])
    ops = [op for op in MLP_OPS if f"time_stats.{op}.median" in df.columns]
    if not ops:
        raise IngestError(path, "header", "no time_stats.<op>.median columns")
    model, device = _model_and_device(path)
    n, rows = len(df), _Rows(df)
    tp = rows.count("num_tensor_parallel_workers")
    tokens = rows.count("num_tokens")
    embd = rows.count("n_embd")
    heads = rows.count("n_head")
    head_dim = embd // heads
    ffn = rows.count("n_expanded_embd")
    gated = rows.flag("use_gated_mlp")
    kv_heads = rows.count("n_kv_head")
    # elementwise ops: (k: none, n: the row width each TP rank touches per token); RoPE rotates this rank's query
    # and key heads (read as the full hidden, its roofline was up to 2.5x slower than measured at TP8)
    widths = {"attn_rope": (heads + kv_heads) * head_dim // tp, "mlp_act": ffn // tp, "add": embd}
    shapes = {
        "attn_pre_proj": (embd, (heads + 2 * kv_heads) * head_dim // tp),
        "attn_post_proj": (heads * head_dim // tp, embd),
        "mlp_up_proj": (embd, ffn * np.where(gated, 2, 1) // tp),
        "mlp_down_proj": (ffn // tp, embd),
    }
    pieces = []
    for op in ops:
        k, width = shapes.get(op, (np.full(n, np.nan), widths.get(op, embd)))
        pieces.append(
            {
                ROW_COLUMN: np.arange(2, n + 2),  # CSV line numbers (line 1 is the header)
                "op_family": np.full(n, _MLP_FAMILY[op], dtype=object),
                "op_name": np.full(n, op, dtype=object),
                "m": tokens,
                "n": width,
                "k": k,
                "tp_size": tp,
                **rows.stats_us(op),
                PROBLEM_COLUMN: rows.problems,
            }
        )
    merged = {key: np.concatenate([p[key] for p in pieces]) for key in pieces[0]}
    total = n * len(ops)
    merged.update(
        device=[_part(path, device, batch)] * total,
        device_name=[device] * total,
        framework=["vidur"] * total,
        kernel_source=["pytorch"] * total,
        dtype=[VIDUR_DTYPE] * total,
        model=[model] * total,
    )
    batch.note |= {"model": model, "ops": ops}
    batch.tables["kernel_samples"] = build_table("kernel_samples", merged, total)
    return batch


def parse_attention(path: Path, batch: SourceBatch) -> SourceBatch:
    df = _read(path)
    need = [
        "n_embd",
        "n_q_head",
        "n_kv_head",
        "num_tensor_parallel_workers",
        "batch_size",
        "prefill_chunk_size",
        "kv_cache_size",
        "is_prefill",
    ]
    _require(path, df, need)
    model, device = _model_and_device(path)
    n, rows = len(df), _Rows(df)
    prefill = rows.flag("is_prefill")
    tp = rows.count("num_tensor_parallel_workers")
    heads = rows.count("n_q_head")
    stats = {}
    for phase, mask in (("prefill", prefill), ("decode", ~prefill)):
        _require(path, df, [f"time_stats.attn_{phase}.median"])
        phase_rows = _Rows(df[mask])  # the other phase's time columns are empty on these rows
        for key, values in phase_rows.stats_us(f"attn_{phase}").items():
            stats.setdefault(key, np.full(n, np.nan))[mask] = values
        for i, problem in zip(np.flatnonzero(mask), phase_rows.problems, strict=True):
            rows.problems[i] = rows.problems[i] or problem
    backend = (
        df["attention_backend"].astype(str).str.split(".").str[-1].str.lower()
        if ("attention_backend" in df.columns)
        else None
    )
    cols = {
        ROW_COLUMN: np.arange(2, n + 2),
        "device": [_part(path, device, batch)] * n,
        "device_name": [device] * n,
        "framework": ["vidur"] * n,
        "kernel_source": backend.to_numpy(dtype=object) if backend is not None else None,
        "dtype": [VIDUR_DTYPE] * n,
        "model": [model] * n,
        "op_family": np.where(prefill, "attention_prefill", "attention_decode").astype(object),
        "op_name": np.where(prefill, "attn_prefill", "attn_decode").astype(object),
        "tp_size": tp,
        "batch_size": rows.count("batch_size"),
        "seq_len": np.where(prefill, rows.count("prefill_chunk_size"), 1),
        "kv_len": rows.count("kv_cache_size"),
        "num_heads": heads // tp,
        "num_kv_heads": rows.count("n_kv_head") // tp,
        "head_dim": rows.count("n_embd") // heads,
        **stats,
        PROBLEM_COLUMN: rows.problems,
    }
    batch.note |= {"model": model}
    batch.tables["kernel_samples"] = build_table("kernel_samples", {k: v for k, v in cols.items() if v is not None}, n)
    return batch


def parse_network(path: Path, batch: SourceBatch) -> SourceBatch:
    df = _read(path)
    _require(path, df, ["collective", "num_workers", "size", "devices_per_node"])
    names = df["collective"].astype(str)
    op = names.iloc[0] if len(names) else ""
    if f"time_stats.{op}.median" not in df.columns:
        raise IngestError(path, "line 2", f"collective {op!r} has no time_stats.{op}.* columns")
    if (other := np.flatnonzero(names.to_numpy() != op)).size:
        i = int(other[0])
        raise IngestError(
            path, f"line {i + 2}", f"collective {names.iloc[i]!r}: one file holds one collective ({op!r})"
        )
    device = path.parent.name
    n, rows = len(df), _Rows(df)
    cols = {
        ROW_COLUMN: np.arange(2, n + 2),
        "device": [_part(path, device, batch)] * n,
        "device_name": [device] * n,
        "framework": ["vidur"] * n,
        "kernel_source": ["nccl"] * n,
        "dtype": [VIDUR_DTYPE] * n,
        "op_family": [op] * n,
        "op_name": [op] * n,
        "message_bytes": rows.count("size"),
        "num_gpus": rows.count("num_workers"),
        "devices_per_node": rows.count("devices_per_node"),
        **rows.stats_us(op),
        PROBLEM_COLUMN: rows.problems,
    }
    batch.tables["kernel_samples"] = build_table("kernel_samples", cols, n)
    return batch
