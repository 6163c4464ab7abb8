"""Request logs from the warehouse: a file (ingested first when it is not yet) or a log name."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ...calibrate.artifacts import file_stamp
from ...warehouse.store import Warehouse
from ..errors import ScenarioError
from ..scenario import Source

COLUMNS = (
    "arrival_s, input_tokens, output_tokens, session_id, prefix_block_hashes, segment, user_input_tokens, "
    "passage_tokens, len(passage_hashes) AS passages, reasoning_share"
)
_FRAMES: dict[tuple, pd.DataFrame] = {}


def _cache_key(warehouse_root: Path, sql: str, params: tuple) -> tuple:
    """A query's key while the warehouse catalog is unchanged (sweep points in one process share the rows): its
    file's and its write-ahead log's stamps (a commit may sit in the log until a checkpoint)."""
    catalog = warehouse_root / "catalog.duckdb"
    stamps = (file_stamp(catalog), file_stamp(catalog.with_name(catalog.name + ".wal")))
    return (str(warehouse_root.resolve()), stamps, sql, params)


class _Reader:
    """Queries of one log on one read-only warehouse session, opened only when a result is not cached (each
    open costs about 0.1 s: a replay's fixed cost)."""

    def __init__(self, root: Path):
        self.root, self.wh = root, None

    def frame(self, sql: str, params: tuple) -> pd.DataFrame:
        key = _cache_key(self.root, sql, params)
        if key not in _FRAMES:
            _FRAMES[key] = self.open().arrow(sql, list(params)).to_pandas()
        return _FRAMES[key]

    def open(self) -> Warehouse:
        if self.wh is None:
            self.wh = Warehouse(self.root, read_only=True)
        return self.wh

    def close(self) -> None:
        if self.wh is not None:
            self.wh.close()
            self.wh = None


def _looks_like_a_path(name: str) -> bool:
    return "/" in name or "\\" in name or Path(name).suffix.lower() in (".csv", ".jsonl", ".json", ".gz")


def log_frame(src: Source, warehouse_root: Path, field: str = "source.log") -> pd.DataFrame:
    """The rows of a source's log in arrival order, arrivals scaled and relative to the first request."""
    if not src.log:
        raise ScenarioError(field, "a log source needs `log`: a request-log file or a log name (or pass --log)")
    warehouse_root = Path(warehouse_root)
    path = Path(src.log)
    where, params = "log_name = ?", [src.log]
    reader = _Reader(warehouse_root)
    try:
        if path.exists():
            from ...ingest.runner import ingest, source_ids

            params = source_ids([path])
            where = f"source_id IN ({', '.join('?' * len(params))})"
            has_catalog = (warehouse_root / "catalog.duckdb").exists()
            if not has_catalog or not all(reader.open().has_source(sid) for sid in params):
                reader.close()  # the ingest takes the write lock
                with Warehouse(warehouse_root) as wh:
                    ingest(wh, [path], progress=False)
        elif _looks_like_a_path(src.log):
            raise ScenarioError(field, f"no such file: {src.log}")
        df = _rows(src, field, reader, where, tuple(params))
        ids = (
            ", ".join("?" * len(params)) if path.exists() else "SELECT DISTINCT source_id FROM requests WHERE " + where
        )
        blocks = _hash_block_tokens(reader, ids, tuple(params))
    finally:
        reader.close()
    scale = src.time_scale / src.rate_scale
    df = df.copy()
    df["arrival_s"] = (df["arrival_s"] - df["arrival_s"].iloc[0]) * scale
    df.attrs["hash_block_tokens"] = blocks
    return df


def _hash_block_tokens(reader: _Reader, ids: str, params: tuple) -> int | None:
    """Tokens per prefix-hash block, where the log's ingest recorded one (Mooncake: 512); None where it did not
    (RAGPulse's hashes name whole prompt parts). ids: the log's source ids, as SQL."""
    notes = reader.frame(f"SELECT DISTINCT note FROM sources WHERE source_id IN ({ids})", params)
    sizes = {n.get("block_tokens") for n in (json.loads(t) for t in notes["note"] if t) if isinstance(n, dict)}
    sizes.discard(None)
    return int(sizes.pop()) if len(sizes) == 1 else None


def _rows(src: Source, field: str, reader: _Reader, where: str, params: tuple) -> pd.DataFrame:
    segments = reader.frame(f"SELECT DISTINCT segment FROM requests WHERE {where} ORDER BY 1", params)
    if segments.empty:
        known = reader.frame("SELECT DISTINCT log_name FROM requests ORDER BY 1", ())
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
    return reader.frame(sql, (*params, segment))
