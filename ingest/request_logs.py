"""Production request logs: Azure LLM inference traces (2023 / 2024 layout), BurstGPT, Mooncake, RAGPulse.

Every parser produces `requests` rows with arrival_s relative to the log's first request. Values that do not
parse become nulls, which the data checks quarantine with the reason; a file whose shape is wrong (missing
columns, not the format at all) fails with an IngestError naming the file and position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ..warehouse.batch import (
    INT64_MAX,
    PROBLEM_COLUMN,
    ROW_COLUMN,
    IngestError,
    QuarantinedRow,
    SourceBatch,
    build_table,
    read_lines,
)
from .text import read_csv

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens")
# RAGPulse prompt parts, in prompt order: (key in hash_ids, length table, id field in it, column prefix)
RAGPULSE_PARTS = (
    ("sys_prompt", "1_sys_prompt.jsonl", "sys_prompt_id", "sys_prompt"),
    ("passages_ids", "2_passages.jsonl", "passage_id", "passage"),
    ("history", "3_history.jsonl", "history_id", "history"),
    ("web_search", "5_web_search.jsonl", "web_search_id", "web_search"),
    ("user_input", "4_user_input.jsonl", "user_input_id", "user_input"),
)


def _tokens(values: pd.Series) -> np.ndarray:
    """Token counts as floats with NaN where a value is missing, not a number, or not a whole number."""
    x = np.array(pd.to_numeric(values, errors="coerce"), dtype=float)
    x[np.isfinite(x) & (x != np.round(x))] = np.nan
    x[~np.isfinite(x)] = np.nan
    return x


def _relative(arrival: np.ndarray) -> np.ndarray:
    valid = np.flatnonzero(np.isfinite(arrival))
    return arrival - arrival[valid[0]] if len(valid) else arrival


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    df = read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise IngestError(path, "line 1", f"missing column(s) {missing}; header is {list(df.columns)}")
    return df


def parse_azure(path: Path, batch: SourceBatch) -> SourceBatch:
    df = _read_csv(path, AZURE_COLUMNS)
    # 2023: "2023-11-16 18:15:46.6805900"; 2024: "2024-05-10 00:00:00.009930+00:00". Naive times are UTC.
    stamps = pd.to_datetime(df["TIMESTAMP"], errors="coerce", format="ISO8601", utc=True)
    seconds = (stamps - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy(dtype=float)
    n = len(df)
    cols = {
        ROW_COLUMN: np.arange(2, n + 2),
        "log_name": [batch.params.get("log_name") or f"azure/{path.stem}"] * n,
        "request_id": np.arange(n),
        "arrival_s": _relative(seconds),
        "input_tokens": _tokens(df["ContextTokens"]),
        "output_tokens": _tokens(df["GeneratedTokens"]),
    }
    batch.note = {"first_arrival_utc": str(stamps.dropna().iloc[0]) if stamps.notna().any() else None}
    batch.tables["requests"] = build_table("requests", cols, n)
    batch.raw_text = lambda rows: read_lines(path, rows)
    return batch


def parse_burstgpt(path: Path, batch: SourceBatch) -> SourceBatch:
    """BurstGPT: Timestamp (s from the log start), Model, Request tokens, Response tokens, Total tokens, Log
    Type. A response of 0 tokens is a failed request in that log; it is kept (0 is a valid count)."""
    df = _read_csv(path, BURSTGPT_COLUMNS)
    n = len(df)
    cols = {
        ROW_COLUMN: np.arange(2, n + 2),
        "log_name": [batch.params.get("log_name") or f"burstgpt/{path.stem}"] * n,
        "request_id": np.arange(n),
        "arrival_s": _relative(pd.to_numeric(df["Timestamp"], errors="coerce").to_numpy(dtype=float)),
        "input_tokens": _tokens(df["Request tokens"]),
        "output_tokens": _tokens(df["Response tokens"]),
        "model": df["Model"].to_numpy(dtype=object),
        "session_id": df["Log Type"].to_numpy(dtype=object) if "Log Type" in df.columns else None,
    }
    batch.tables["requests"] = build_table("requests", {k: v for k, v in cols.items() if v is not None}, n)
    batch.raw_text = lambda rows: read_lines(path, rows)
    return batch


def _lines(path: Path):
    """(line number, raw bytes) of every non-blank line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                yield lineno, raw


def _jsonl(path: Path, batch: SourceBatch, required: tuple[str, ...]) -> tuple[list[dict], list[int]]:
    """Records and their line numbers. A line that is not a JSON object is quarantined, unless it is the first
    one, which shows the file is not this format at all."""
    records: list[dict] = []
    lines: list[int] = []
    for lineno, raw in _lines(path):
        try:
            rec = orjson.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (orjson.JSONDecodeError, ValueError) as e:
            if not records:
                raise IngestError(path, f"line {lineno}", f"malformed JSON line: {e}") from e
            batch.quarantine.append(
                QuarantinedRow("requests", lineno, f"malformed JSON line: {e}", raw.decode(errors="replace").rstrip())
            )
            continue
        if not records:
            missing = [k for k in required if k not in rec]
            if missing:
                raise IngestError(path, f"line {lineno}", f"missing field(s) {missing}")
        records.append(rec)
        lines.append(lineno)
    if not records:
        raise IngestError(path, "line 1", "empty file")
    batch.raw_text = lambda rows: read_lines(path, rows)
    return records, lines


def _values(records: list[dict], key: str, problems: list) -> list:
    """A JSON field of every record; a boolean is not a number (pandas would read `true` as 1 token), so it
    flags its row."""
    out = [r.get(key) for r in records]
    for i, v in enumerate(out):
        if isinstance(v, bool):
            problems[i] = problems[i] or f"{key}: {str(v).lower()} is not a number"
            out[i] = None
    return out


def _num(records: list[dict], key: str, problems: list) -> np.ndarray:
    return _tokens(pd.Series(_values(records, key, problems), dtype=object))


def _id_list(value) -> list[int] | None:
    """Block or prompt-part ids as written: None when absent, else a list of 64-bit integers. Anything else is
    a ValueError saying what is wrong: read leniently, a float id would be truncated (1.5 -> 1) and a string or
    an id past int64 lost, and the row kept without its prefix."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"expected a list of integer ids, got {type(value).__name__} {str(value)[:40]!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"id {str(v)[:40]!r} is not an integer")
        if not -INT64_MAX - 1 <= v <= INT64_MAX:
            raise ValueError(f"id {v} does not fit in a signed 64-bit integer")
    return value


def _ids(values: list, field: str, problems: list) -> list[list[int] | None]:
    """_id_list of each value; a value that is not one flags its row (quarantined with the reason)."""
    out: list[list[int] | None] = []
    for i, value in enumerate(values):
        try:
            out.append(_id_list(value))
        except ValueError as e:
            problems[i] = problems[i] or f"{field}: {e}"
            out.append(None)
    return out


def parse_mooncake(path: Path, batch: SourceBatch) -> SourceBatch:
    """Mooncake: timestamp (ms from the start), input_length, output_length, hash_ids (512-token blocks)."""
    records, lines = _jsonl(path, batch, ("timestamp", "input_length", "output_length"))
    n = len(records)
    problems: list[str | None] = [None] * n
    ts_ms = pd.to_numeric(pd.Series(_values(records, "timestamp", problems), dtype=object), errors="coerce")
    cols = {
        ROW_COLUMN: lines,
        "log_name": [batch.params.get("log_name") or f"mooncake/{path.stem}"] * n,
        "request_id": np.arange(n),
        "arrival_s": _relative(ts_ms.to_numpy(dtype=float) / 1000.0),
        "input_tokens": _num(records, "input_length", problems),
        "output_tokens": _num(records, "output_length", problems),
        "prefix_block_hashes": _ids([r.get("hash_ids") for r in records], "hash_ids", problems),
        PROBLEM_COLUMN: problems,
    }
    batch.note = {"block_tokens": 512}
    batch.tables["requests"] = build_table("requests", cols, n)
    return batch


def _length_table(path: Path, id_field: str) -> dict[int, int]:
    lengths: dict[int, int] = {}
    for lineno, raw in _lines(path):
        try:
            rec = orjson.loads(raw)
            lengths[int(rec[id_field])] = int(rec["token_length"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise IngestError(path, f"line {lineno}", f"expected {{{id_field!r}, 'token_length'}}: {e}") from e
    return lengths


def parse_ragpulse(path: Path, batch: SourceBatch) -> SourceBatch:
    """RAGPulse trace plus the per-part length tables beside it (1_sys_prompt.jsonl ... 5_web_search.jsonl)."""
    records, lines = _jsonl(path, batch, ("timestamp", "input_length", "output_length", "hash_ids"))
    n = len(records)
    problems: list[str | None] = [None] * n
    ts = pd.to_numeric(pd.Series(_values(records, "timestamp", problems), dtype=object), errors="coerce")
    cols: dict = {
        ROW_COLUMN: lines,
        "log_name": [batch.params.get("log_name") or f"ragpulse/{path.stem}"] * n,
        "request_id": np.arange(n),
        "arrival_s": _relative(ts.to_numpy(dtype=float)),
        "input_tokens": _num(records, "input_length", problems),
        "output_tokens": _num(records, "output_length", problems),
        "session_id": [str(r["session_id"]) if r.get("session_id") is not None else None for r in records],
        PROBLEM_COLUMN: problems,
    }
    parts = []
    for i, r in enumerate(records):  # the prompt's parts, each a list of ids
        hashes = r.get("hash_ids")
        if hashes is not None and not isinstance(hashes, dict):
            problems[i] = problems[i] or f"hash_ids: expected an object of prompt parts, got {type(hashes).__name__}"
        parts.append(hashes if isinstance(hashes, dict) else {})
    tables_found = []
    prefix: list[list[int]] = [[] for _ in range(n)]
    for key, table_file, id_field, column in RAGPULSE_PARTS:
        ids = _ids([p.get(key) for p in parts], f"hash_ids.{key}", problems)
        cols[f"{column}_hashes"] = ids
        for acc, part in zip(prefix, ids, strict=True):
            acc.extend(part or [])
        table_path = path.parent / table_file
        if table_path.exists():
            tables_found.append(table_file)
            lengths = _length_table(table_path, id_field)
            cols[f"{column}_tokens"] = [
                sum(lengths[i] for i in part) if part is not None and all(i in lengths for i in part) else None
                for part in ids
            ]
    cols["prefix_block_hashes"] = prefix
    batch.note = {"length_tables": tables_found, "prefix_order": [p[0] for p in RAGPULSE_PARTS]}
    batch.tables["requests"] = build_table("requests", cols, n)
    return batch
