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

from .batch import ROW_COLUMN, IngestError, QuarantinedRow, SourceBatch

log = logging.getLogger(__name__)

ARRIVAL_STEP = "arrival_step_s"  # helper column: arrival minus the previous request's arrival, per source


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
            RowCheck("between", "dur_us", "dur_us must be >= 0", min_value=0),
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
            RowCheck(
                "between",
                ARRIVAL_STEP,
                "arrival time goes back (earlier than the previous request)",
                min_value=0,
            ),
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

    ctx = gx.get_context(mode="ephemeral")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
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
    columns = sorted({c.column for c in (*column_checks, *row_checks)} - {ARRIVAL_STEP})
    frames = []
    for t in tables:
        present = [c for c in columns if c in t.column_names]
        frame = t.select(present).to_pandas()
        if table_name == "requests" and "arrival_s" in frame:
            frame[ARRIVAL_STEP] = frame["arrival_s"].diff().fillna(0.0)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def validate(table_name: str, batches: list[SourceBatch]) -> None:
    """Run the table's suite over every batch's rows; move failing rows to each batch's quarantine."""
    owners = [b for b in batches if table_name in b.tables and b.tables[table_name].num_rows > 0]
    if not owners:
        return
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
    bad = np.array(sorted(bad_reason), dtype=np.int64)
    for i, batch in enumerate(owners):
        mine = bad[(bad >= offsets[i]) & (bad < offsets[i + 1])] - offsets[i]
        if len(mine) == 0:
            continue
        table = batch.tables[table_name]
        rows = table.take(pa.array(mine)).to_pylist()
        for local, record in zip(mine, rows, strict=True):
            batch.quarantine.append(
                QuarantinedRow(
                    table_name,
                    int(record[ROW_COLUMN]),
                    bad_reason[int(local) + int(offsets[i])],
                    _record_text(record),
                )
            )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[mine] = False
        batch.tables[table_name] = table.filter(pa.array(keep))
        log.warning("%s: %d %s rows quarantined", batch.path, len(mine), table_name)


def _record_text(record: dict) -> str:
    import json

    clean = {k: v for k, v in record.items() if v is not None and k != ROW_COLUMN}
    return json.dumps(clean, default=str)[:2000]
