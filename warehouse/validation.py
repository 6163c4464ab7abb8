"""Data checks: one great-expectations suite per table, run in an ephemeral context.

Rows that fail an expectation are split off to the quarantine with the expectation's reason; table-level
failures (a required column missing, a wrong type) are structural and fail the whole ingest."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa

from .batch import INT64_MAX, PROBLEM_COLUMN, ROW_COLUMN, IngestError, QuarantinedRow, SourceBatch

log = logging.getLogger(__name__)

MAX_TRACE_US = 1e12  # 11.6 days: no profiler event starts (relative to the trace's first) or lasts longer
# A backward jump in a log's arrival times is a clock reset (a new segment) when the rows after it continue
# from the new clock: this many of them (or all that are left), non-decreasing and still before the old clock.
RESET_LOOKAHEAD = 8


@dataclass(frozen=True)
class RowCheck:
    """A row-level expectation and the reason given to the rows that fail it."""

    kind: str  # not_null | between
    column: str
    reason: str
    min_value: float | None = None
    max_value: float | None = None
    strict_min: bool = False


@dataclass(frozen=True)
class ColumnCheck:
    """A table-level expectation: the column exists and, when `type_list` is given, has one of these dtypes.
    (great-expectations 1.x does not name pandas 3's `str` dtype, so string columns are checked for presence.)"""

    column: str
    type_list: tuple[str, ...] | None = None


# pandas turns an integer column with missing values into float64; the row checks then flag those rows.
# (great-expectations 1.x counts pd.NA as a wrong type, so the nullable Int64 dtype is no way out.)
_INT = ("int64", "float64")
_FLOAT = ("float64", "Float64")
_STR = None

SUITES: dict[str, tuple[tuple[ColumnCheck, ...], tuple[RowCheck, ...]]] = {
    "kernel_samples": (
        (
            ColumnCheck("device", _STR),
            ColumnCheck("op_family", _STR),
            ColumnCheck("latency_us", _FLOAT),
        ),
        (
            RowCheck("not_null", "device", "device is missing"),
            RowCheck("not_null", "op_family", "op_family is missing"),
            RowCheck("not_null", "latency_us", "latency_us is missing or NaN"),
            RowCheck("between", "latency_us", "latency_us must be > 0", min_value=0, strict_min=True),
            RowCheck("between", "latency_us", "latency_us is not finite", max_value=1e15),
            RowCheck("between", "m", "m must be >= 1", min_value=1),
            RowCheck("between", "n", "n must be >= 1", min_value=1),
            RowCheck("between", "k", "k must be >= 1", min_value=1),
            RowCheck("between", "batch_size", "batch_size must be >= 1", min_value=1),
            RowCheck("between", "seq_len", "seq_len must be >= 0", min_value=0),
            RowCheck("between", "kv_len", "kv_len must be >= 0", min_value=0),
            RowCheck("between", "num_heads", "num_heads must be >= 1", min_value=1),
            RowCheck("between", "message_bytes", "message_bytes must be >= 0", min_value=0),
            RowCheck("between", "num_gpus", "num_gpus must be >= 1", min_value=1),
        ),
    ),
    "trace_events": (
        (
            ColumnCheck("name", _STR),
            ColumnCheck("ts_us", _FLOAT),
            ColumnCheck("dur_us", _FLOAT),
        ),
        (
            RowCheck("not_null", "name", "event has no name"),
            RowCheck("not_null", "ts_us", "event has no timestamp"),
            RowCheck("between", "ts_us", "ts_us is more than 1e12 us after the trace start", 0, MAX_TRACE_US),
            RowCheck("between", "dur_us", "dur_us must be >= 0", min_value=0),
            RowCheck("between", "dur_us", "dur_us exceeds 1e12 us (11.6 days)", max_value=MAX_TRACE_US),
        ),
    ),
    "requests": (
        (
            ColumnCheck("arrival_s", _FLOAT),
            ColumnCheck("input_tokens", _INT),
            ColumnCheck("output_tokens", _INT),
        ),
        (
            RowCheck("not_null", "arrival_s", "arrival time is missing or unparseable"),
            RowCheck("not_null", "input_tokens", "input_tokens is missing or not an integer"),
            RowCheck("not_null", "output_tokens", "output_tokens is missing or not an integer"),
            RowCheck("between", "input_tokens", "input_tokens must be >= 0", min_value=0),
            RowCheck("between", "output_tokens", "output_tokens must be >= 0", min_value=0),
            RowCheck("between", "input_tokens", "input_tokens exceeds 2^63 - 1 (no real count)", max_value=INT64_MAX),
            RowCheck("between", "output_tokens", "output_tokens exceeds 2^63 - 1 (no real count)", max_value=INT64_MAX),
            RowCheck("between", "reasoning_share", "reasoning_share must be in [0, 1]", 0, 1),
        ),
    ),
}


@cache
def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # its context announces a temporary docs folder at INFO: not ours to say
    try:
        ctx = gx.get_context(mode="ephemeral")
    finally:
        logging.disable(previous)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return gx, gxe, ctx


def _expectation(gxe, check: RowCheck | ColumnCheck, index: int):
    meta = {"check": index}  # results do not come back in suite order: this maps them to their check
    if isinstance(check, ColumnCheck):
        if check.type_list is None:
            return gxe.ExpectColumnToExist(column=check.column, meta=meta)
        return gxe.ExpectColumnValuesToBeInTypeList(column=check.column, type_list=list(check.type_list), meta=meta)
    if check.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=check.column, meta=meta)
    return gxe.ExpectColumnValuesToBeBetween(
        column=check.column,
        min_value=check.min_value,
        max_value=check.max_value,
        strict_min=check.strict_min,
        meta=meta,
    )


@cache
def _validation(table_name: str):
    gx, gxe, ctx = _gx()
    column_checks, row_checks = SUITES[table_name]
    suite = gx.ExpectationSuite(name=f"{table_name}_suite")
    for index, check in enumerate((*column_checks, *row_checks)):
        suite.add_expectation(_expectation(gxe, check, index))
    suite = ctx.suites.add(suite)
    asset = ctx.data_sources.add_pandas(f"{table_name}_source").add_dataframe_asset(table_name)
    batch_def = asset.add_batch_definition_whole_dataframe(f"{table_name}_batch")
    return ctx.validation_definitions.add(
        gx.ValidationDefinition(data=batch_def, suite=suite, name=f"{table_name}_validation")
    )


def _checked_frame(table_name: str, tables: list[pa.Table]) -> pd.DataFrame:
    """The columns the suite looks at, from every batch's table, with a RangeIndex over all rows."""
    column_checks, row_checks = SUITES[table_name]
    columns = sorted({c.column for c in (*column_checks, *row_checks)})
    frames = []
    for t in tables:
        present = [c for c in columns if c in t.column_names]
        frames.append(t.select(present).to_pandas())
    return pd.concat(frames, ignore_index=True)


def validate(table_name: str, batches: list[SourceBatch]) -> None:
    """Quarantine the rows a parser flagged, run the table's suite over every batch's rows and move failing
    rows to each batch's quarantine; then (request logs) check the arrival order."""
    owners = [b for b in batches if table_name in b.tables and b.tables[table_name].num_rows > 0]
    for batch in owners:
        table = batch.tables[table_name]
        if PROBLEM_COLUMN in table.column_names:
            problems = table[PROBLEM_COLUMN].to_numpy(zero_copy_only=False)
            flagged = {i: str(p) for i, p in enumerate(problems) if p is not None}
            _quarantine(batch, table_name, flagged)
            batch.tables[table_name] = batch.tables[table_name].drop_columns([PROBLEM_COLUMN])
    owners = [b for b in owners if b.tables[table_name].num_rows > 0]
    if not owners:
        return
    _run_suite(table_name, owners)
    if table_name == "requests":
        for batch in owners:
            _order_arrivals(batch)


def _run_suite(table_name: str, owners: list[SourceBatch]) -> None:
    frame = _checked_frame(table_name, [b.tables[table_name] for b in owners])
    result = _validation(table_name).run(
        batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"}
    )
    column_checks, row_checks = SUITES[table_name]
    checks = [*column_checks, *row_checks]
    bad_reason: dict[int, str] = {}
    for res in sorted(result.results, key=lambda r: r.expectation_config.meta["check"]):
        if res.success:
            continue
        check = checks[res.expectation_config.meta["check"]]
        if isinstance(check, ColumnCheck):
            observed = res.result.get("observed_value", "no such column")
            raise IngestError(
                owners[0].path if len(owners) == 1 else f"{len(owners)} files",
                None,
                f"{table_name}.{check.column}: {observed}, expected {check.type_list or 'the column'}",
            )
        for idx in res.result.get("unexpected_index_list") or []:
            bad_reason.setdefault(int(idx), check.reason)
    if not bad_reason:
        return
    offsets = np.cumsum([0] + [b.tables[table_name].num_rows for b in owners])
    for i, batch in enumerate(owners):
        mine = {j - int(offsets[i]): r for j, r in bad_reason.items() if offsets[i] <= j < offsets[i + 1]}
        _quarantine(batch, table_name, mine)


def _quarantine(batch: SourceBatch, table_name: str, reasons: dict[int, str]) -> None:
    """Move rows (by index in the batch's table) to its quarantine with their reasons and whole records."""
    if not reasons:
        return
    table = batch.tables[table_name]
    idx = np.array(sorted(reasons), dtype=np.int64)
    rows = table.take(pa.array(idx)).to_pylist()
    numbers = [int(r[ROW_COLUMN]) for r in rows]
    raw = batch.raw_text(numbers) if batch.raw_text is not None else {}
    for local, record, number in zip(idx, rows, numbers, strict=True):
        text = raw.get(number) or _record_text(record)
        batch.quarantine.append(QuarantinedRow(table_name, number, reasons[int(local)], text))
    keep = np.ones(table.num_rows, dtype=bool)
    keep[idx] = False
    batch.tables[table_name] = table.filter(pa.array(keep))
    log.warning("%s: %d %s rows quarantined", batch.path, len(idx), table_name)


def _record_text(record: dict) -> str:
    """A parsed row as JSON, whole (formats whose original text is not line-oriented)."""
    import json

    clean = {k: v for k, v in record.items() if v is not None and k != ROW_COLUMN}
    return json.dumps(clean, default=str)


def arrival_order(arrival: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """Clock segments and out-of-order rows of a log's arrivals, in file order. Every row is compared with the
    last accepted one, not the previous raw row:
    - a row ahead of the rows around it (the next row continues from the last accepted one) is quarantined;
    - a row earlier than the last accepted one starts a new segment when the rows after it continue from the
      new clock (RESET_LOOKAHEAD of them, non-decreasing, all before the old clock): the log's clock reset;
    - any other row earlier than the last accepted one is quarantined.
    Returns the segment of every row (0, then 1 after the first reset, ...) and {row index: reason}."""
    n = len(arrival)
    segment = np.zeros(n, dtype=np.int64)
    if n < 2 or bool(np.all(np.diff(arrival) >= 0)):
        return segment, {}
    bad: dict[int, str] = {}
    seg, last, last_i = 0, arrival[0], 0
    for i in range(1, n):
        a = arrival[i]
        if a >= last:
            if i + 1 < n and last <= arrival[i + 1] < a:
                bad[i] = (
                    f"arrival {a:.6g} s jumps ahead of the rows around it (line {rows[last_i]}: {last:.6g} s, "
                    f"line {rows[i + 1]}: {arrival[i + 1]:.6g} s)"
                )
                continue
        else:
            ahead = arrival[i + 1 : i + 1 + RESET_LOOKAHEAD]
            run = np.concatenate(([a], ahead))
            if len(ahead) and bool(np.all(ahead < last)) and bool(np.all(np.diff(run) >= 0)):
                seg += 1
            else:
                bad[i] = (
                    f"arrival {a:.6g} s goes back: earlier than the last accepted row (line {rows[last_i]}: "
                    f"{last:.6g} s)"
                )
                continue
        segment[i], last, last_i = seg, a, i
    return segment, bad


def _order_arrivals(batch: SourceBatch) -> None:
    """Quarantine a log's out-of-order rows, number its clock segments and make each segment's arrivals
    relative to its own first request: no committed log goes backwards."""
    table = batch.tables["requests"]
    arrival = table["arrival_s"].to_numpy(zero_copy_only=False).astype(float)
    segment, bad = arrival_order(arrival, table[ROW_COLUMN].to_numpy(zero_copy_only=False))
    keep = np.ones(len(arrival), dtype=bool)
    keep[list(bad)] = False
    _quarantine(batch, "requests", bad)
    segment, arrival = segment[keep], arrival[keep]
    if len(arrival):
        starts = {s: arrival[np.argmax(segment == s)] for s in np.unique(segment)}
        arrival = arrival - np.array([starts[s] for s in segment])
    table = batch.tables["requests"]
    table = table.set_column(table.schema.get_field_index("arrival_s"), "arrival_s", pa.array(arrival))
    table = table.set_column(table.schema.get_field_index("segment"), "segment", pa.array(segment))
    batch.tables["requests"] = table
    if segment.max(initial=0) > 0:
        rows = batch.tables["requests"][ROW_COLUMN].to_numpy()
        starts = [int(rows[i]) for i in np.flatnonzero(np.diff(segment)) + 1]
        log.warning(
            "%s: the log's clock resets at line(s) %s: %d segments, each with arrivals from its own start "
            "(replay one with source.segment)",
            batch.path,
            ", ".join(map(str, starts)),
            len(starts) + 1,
        )
        batch.note = {**batch.note, "segments": len(starts) + 1, "segment_start_lines": starts}
