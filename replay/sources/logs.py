"""Request logs from the warehouse: a file (ingested first when it is not yet) or a log name."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...warehouse.store import Warehouse
from ..errors import ScenarioError
from ..scenario import Source

COLUMNS = (
    "arrival_s, input_tokens, output_tokens, session_id, prefix_block_hashes, segment, user_input_tokens, "
    "passage_tokens, len(passage_hashes) AS passages, reasoning_share"
)
_FRAMES: dict[tuple, pd.DataFrame] = {}


def _frame(warehouse_root: Path, sql: str, params: tuple) -> pd.DataFrame:
    """A log's rows, read once per process while the warehouse catalog is unchanged (sweep points share it)."""
    catalog = warehouse_root / "catalog.duckdb"
    key = (str(warehouse_root.resolve()), catalog.stat().st_mtime_ns if catalog.exists() else 0, sql, params)
    if key not in _FRAMES:
        with Warehouse(warehouse_root, read_only=True) as wh:
            _FRAMES[key] = wh.arrow(sql, list(params)).to_pandas()
    return _FRAMES[key]


def _looks_like_a_path(name: str) -> bool:
    return "/" in name or "\\" in name or Path(name).suffix.lower() in (".csv", ".jsonl", ".json", ".gz")


def log_frame(src: Source, warehouse_root: Path, field: str = "source.log") -> pd.DataFrame:
    """The rows of a source's log in arrival order, arrivals scaled and relative to the first request."""
    if not src.log:
        raise ScenarioError(field, "a log source needs `log`: a request-log file or a log name (or pass --log)")
    warehouse_root = Path(warehouse_root)
    path = Path(src.log)
    where, params = "log_name = ?", [src.log]
    if path.exists():
        from ...ingest.runner import ingest, source_ids

        params = source_ids([path])
        where = f"source_id IN ({', '.join('?' * len(params))})"
        catalog = warehouse_root / "catalog.duckdb"
        with Warehouse(warehouse_root, read_only=catalog.exists()) as wh:
            missing = not all(wh.has_source(sid) for sid in params)
        if missing:
            with Warehouse(warehouse_root) as wh:
                ingest(wh, [path], progress=False)
    elif _looks_like_a_path(src.log):
        raise ScenarioError(field, f"no such file: {src.log}")
    segments = _frame(warehouse_root, f"SELECT DISTINCT segment FROM requests WHERE {where} ORDER BY 1", tuple(params))
    if segments.empty:
        known = _frame(warehouse_root, "SELECT DISTINCT log_name FROM requests ORDER BY 1", ())
        names = ", ".join(known["log_name"].astype(str)) or "(none: ingest a log first)"
        raise ScenarioError(field, f"no requests for log {src.log!r}; known logs: {names}")
    found = [int(s) for s in segments["segment"].fillna(0)]
    if src.segment is None and len(found) > 1:
        raise ScenarioError(
            field,
            f"{src.log} holds {len(found)} clock segments ({found}): its clock resets; pick one with "
            "source.segment (replaying them together would overlap their times)",
        )
    segment = src.segment if src.segment is not None else found[0]
    if segment not in found:
        raise ScenarioError("source.segment", f"{src.log} has segments {found}, not {segment}")
    sql = (
        f"SELECT {COLUMNS} FROM requests WHERE {where} AND coalesce(segment, 0) = ? "
        "ORDER BY arrival_s, source_id, request_id"
    )
    if src.limit:
        sql += f" LIMIT {int(src.limit)}"
    df = _frame(warehouse_root, sql, (*params, segment))
    scale = src.time_scale / src.rate_scale
    df = df.copy()
    df["arrival_s"] = (df["arrival_s"] - df["arrival_s"].iloc[0]) * scale
    return df
