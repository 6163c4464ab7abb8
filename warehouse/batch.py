"""What an ingest hands to the warehouse: one parsed source file, not yet validated or committed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .schema import DATA_TABLES

ROW_COLUMN = "_row"  # 1-based row (line, event) number in the source file; dropped before writing
# Optional: a parser's reason to quarantine the row (a value present but unparseable); dropped before writing
PROBLEM_COLUMN = "_problem"
HIDDEN_COLUMNS = (ROW_COLUMN, PROBLEM_COLUMN)
INT64_MAX = 2**63 - 1


def whole_counts(values, column: str, problems: list) -> np.ndarray:
    """Counts read as floats (NaN: missing), with NaN wherever one is unusable: a row whose value is missing,
    not a whole number, or beyond int64 is flagged in `problems` (its first problem kept), and validation
    quarantines it with that reason. Read leniently, 7.5 would be stored as 7 and 1e30 fail the cast to int64."""
    x = np.array(values, dtype=float)
    whole = np.isfinite(x) & (x == np.round(x))
    big = whole & (np.abs(x) > INT64_MAX)
    for i in np.flatnonzero(~whole | big):
        if np.isnan(x[i]):
            why = "is missing"
        else:
            why = f"{x[i]:g} exceeds 2^63 - 1" if big[i] else f"{x[i]:g} is not a whole number"
        problems[i] = problems[i] or f"{column} {why}"
    x[~whole | big] = np.nan
    return x


class IngestError(Exception):
    """A source that cannot be ingested at all. Names the file, the position and what is wrong."""

    def __init__(self, path: str | Path, position: str | None, message: str):
        self.path = str(path)
        self.position = position
        self.message = message
        where = f"{self.path}: {position}" if position else self.path
        super().__init__(f"{where}: {message}")


@dataclass
class QuarantinedRow:
    table_name: str
    row_number: int
    reason: str
    record: str | None = None


@dataclass
class SourceBatch:
    """One source file parsed into warehouse tables (each with a `_row` column)."""

    path: str
    sha256: str
    format: str
    size_bytes: int
    params: dict = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    quarantine: list[QuarantinedRow] = field(default_factory=list)
    note: dict = field(default_factory=dict)
    # The source's own text of rows by row number (line-oriented formats), so a quarantined row keeps its whole
    # original record; None: the record is rebuilt from the parsed row
    raw_text: Callable[[list[int]], dict[int, str]] | None = None

    @property
    def source_id(self) -> str:
        """Stable id: the content hash, plus the format and parameters that shaped the rows."""
        key = f"{self.sha256}|{self.format}|{json.dumps(self.params, sort_keys=True)}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def rows_accepted(self) -> int:
        return sum(t.num_rows for t in self.tables.values())


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def build_table(table_name: str, columns: dict, num_rows: int) -> pa.Table:
    """An Arrow table with the table's full schema. A column may be an array (numpy, Arrow, list), a scalar
    repeated on every row, or absent / None (all null). `_row` must be given; `_problem` may be.

    An integer column given as floats with a value beyond int64 stays float64 here, so the data checks see (and
    quarantine) the value as written; the commit casts the accepted rows to the schema."""
    schema = DATA_TABLES[table_name]
    unknown = set(columns) - set(schema.names) - set(HIDDEN_COLUMNS)
    if unknown:
        raise ValueError(f"{table_name}: unknown columns {sorted(unknown)}")
    fields = [*schema, pa.field(ROW_COLUMN, pa.int64())]
    if columns.get(PROBLEM_COLUMN) is not None:
        fields.append(pa.field(PROBLEM_COLUMN, pa.string()))
    arrays = [_column(columns.get(f.name), f.type, num_rows) for f in fields]
    return pa.Table.from_arrays(arrays, names=[f.name for f in fields])


def _column(values, type_: pa.DataType, num_rows: int) -> pa.Array:
    if values is None:
        return pa.nulls(num_rows, type=type_)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(type_)
    if isinstance(values, str | int | float | np.generic):
        return pa.array([values], type=type_).take(pa.array(np.zeros(num_rows, dtype=np.int64)))
    if pa.types.is_integer(type_) and isinstance(values, np.ndarray) and values.dtype.kind == "f":
        missing = ~np.isfinite(values)  # NaN marks a missing value in float-typed counts
        if (np.abs(values[~missing]) > INT64_MAX).any():
            return pa.array(values, type=pa.float64(), from_pandas=True)
        return pa.array(np.where(missing, 0, values).astype(np.int64), type=type_, mask=missing)
    return pa.array(values, type=type_, from_pandas=True)


def utf8_error(path: Path, chunk_bytes: int = 1 << 20) -> tuple[int, int, str] | None:
    """(byte offset, line, reason) of a text file's first invalid UTF-8 byte, or None if it decodes."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                with open(path, "rb") as g:
                    lines = g.read(at).count(b"\n") + 1
                return at, lines, e.reason
            if not chunk:
                return None
            offset += len(chunk)


def read_lines(path: Path, numbers: list[int]) -> dict[int, str]:
    """The text of the given 1-based lines of a text file (for quarantined rows' original records)."""
    wanted, out = set(numbers), {}
    if not wanted:
        return out
    last = max(wanted)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno in wanted:
                out[lineno] = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
            if lineno >= last:
                break
    return out
