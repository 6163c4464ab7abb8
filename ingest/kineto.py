"""PyTorch profiler / Kineto Chrome-trace JSON (plain or gzipped), streamed with bounded memory.

The top-level object is walked key by key over a sliding text buffer. `traceEvents` is read a buffer at a time:
runs of whole events in the profiler's layout go to Arrow's C++ JSON reader; anything else (other layouts, stray
field types, the event straddling the buffer's end) goes through the exact decoder, which also reports errors
with their offset. Memory holds the compact Arrow result plus one buffer, never the whole document.

Kernels are tied to the CPU op that launched them: kernel `correlation` -> the runtime call with the same
correlation -> the CPU op whose `External id` that call carries, or (older traces number them apart) the
innermost CPU op on the call's thread that encloses it in time."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ..warehouse.batch import PROBLEM_COLUMN, ROW_COLUMN, IngestError, SourceBatch
from ..warehouse.schema import TRACE_EVENTS
from .devices import canonical_device

CHUNK_CHARS = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()

KIND_BY_CAT = {
    "kernel": "kernel",
    "cpu_op": "cpu_op",
    "operator": "cpu_op",  # older profiler versions
    "cuda_runtime": "runtime",
    "cuda_driver": "runtime",
    "gpu_memcpy": "memcpy",
    "gpu_memset": "memset",
    "user_annotation": "annotation",
    "gpu_user_annotation": "gpu_annotation",
}
GPU_KINDS = {"kernel", "memcpy", "memset", "gpu_annotation"}

# Kernel name patterns -> op family; the first match wins (attention before GEMM: fmha kernels use cutlass).
_FAMILY_RULES = [
    ("collective", re.compile(r"nccl|rccl|all_?reduce|all_?gather|reduce_?scatter|alltoall|cross_device_reduce")),
    ("attention", re.compile(r"flash|fmha|attention|attn|sdpa|mha_|paged_attention")),
    (
        "gemm",
        re.compile(r"gemm|cutlass|cublas|xmma|wgmma|nvjet|cijk_|matmul|triton_(tem_)?.*mm|sm\d+_.*_tn|splitk"),
    ),
    (
        "elementwise",
        re.compile(
            r"elementwise|vectorized|unrolled|triton_(poi|red|per)|reduce_kernel|softmax|norm|"
            r"activation|act_and_mul|silu|gelu|relu|copy|fill|index|scatter|gather|cat_|rotary|rope|add|mul"
        ),
    ),
]


def classify_kernel(name: str) -> str:
    low = name.lower()
    for family, pattern in _FAMILY_RULES:
        if pattern.search(low):
            return family
    return "other"


class _TextStream:
    """A sliding window over a text file for incremental JSON decoding; offsets are in characters."""

    def __init__(self, path: Path, fh: io.TextIOBase):
        self.path = path
        self.fh = fh
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped from the front of buf
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        if self.pos > CHUNK_CHARS:
            self.base += self.pos
            self.buf = self.buf[self.pos :]
            self.pos = 0
        try:
            chunk = self.fh.read(CHUNK_CHARS)
        except EOFError as e:
            size = Path(self.path).stat().st_size
            raise IngestError(
                self.path,
                f"byte offset {size} of the compressed file (text decoded up to character {self.base + len(self.buf)})",
                "the gzip stream is truncated (the file is cut short)",
            ) from e
        except (OSError, UnicodeDecodeError) as e:  # corrupt gzip, bad bytes
            raise IngestError(self.path, f"offset {self.base + len(self.buf)}", f"unreadable data: {e}") from e
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def offset(self) -> str:
        return f"offset {self.base + self.pos}"

    def peek(self) -> str:
        """The next non-blank character, or '' at the end."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def expect(self, chars: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            found = repr(c) if c else "end of file"
            raise IngestError(self.path, self.offset(), f"expected one of {list(chars)}, found {found}")
        self.pos += 1
        return c

    def value(self):
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
                self.pos = end
                return obj
            except json.JSONDecodeError as e:
                if not self.eof and (e.pos >= len(self.buf) - 262144 or e.msg.startswith("Unterminated string")):
                    self._more()  # the value may run past the buffer: read on and try again
                    continue
                at_end = e.pos >= len(self.buf.rstrip()) - 1 or e.msg.startswith("Unterminated string")
                what = "truncated JSON" if self.eof and at_end else f"malformed JSON: {e.msg}"
                raise IngestError(self.path, f"offset {self.base + e.pos}", what) from None


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def _int_or_none(value) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value else None
    try:
        return int(str(value), 0)
    except ValueError:
        return None


def _float_or_none(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_SEP = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_EMPTY: dict = {}


# What is kept of an event. pyarrow converts the decoded dicts to this struct in C++, ignoring other keys.
_EVENT_TYPE = pa.struct(
    [
        ("cat", pa.string()),
        ("name", pa.string()),
        ("pid", pa.int64()),
        ("tid", pa.int64()),
        ("ts", pa.float64()),
        ("dur", pa.float64()),
        (PROBLEM_COLUMN, pa.string()),  # set by the slow path: a field present but not a number
        (
            "args",
            pa.struct(
                [
                    ("External id", pa.int64()),
                    ("correlation", pa.int64()),
                    ("stream", pa.int64()),
                    ("device", pa.int64()),
                    ("bytes", pa.int64()),
                    ("grid", pa.list_(pa.int64())),
                    ("block", pa.list_(pa.int64())),
                    ("Input Dims", pa.list_(pa.list_(pa.int64()))),
                    ("Input type", pa.list_(pa.string())),
                ]
            ),
        ),
    ]
)
_CONVERT = {"pid": _int_or_none, "tid": _int_or_none, "ts": _float_or_none, "dur": _float_or_none}
_CONVERT_ARGS = {
    "External id": _int_or_none,
    "correlation": _int_or_none,
    "stream": _int_or_none,
    "device": _int_or_none,
    "bytes": _int_or_none,
}


def _clean(event: dict) -> dict:
    """The slow path for events whose fields have stray types (a string stream id, a named tid)."""
    out = {k: conv(event.get(k)) for k, conv in _CONVERT.items()}
    bad = [f"{k} {event[k]!r} is not a number" for k in ("ts", "dur") if event.get(k) is not None and out[k] is None]
    out[PROBLEM_COLUMN] = "; ".join(bad) or None
    out["cat"], out["name"] = event.get("cat"), event.get("name")
    if not isinstance(out["name"], str):
        out["name"] = None
    args = event.get("args") if isinstance(event.get("args"), dict) else {}
    clean_args = {k: conv(args.get(k)) for k, conv in _CONVERT_ARGS.items()}
    if clean_args["bytes"] is None:
        clean_args["bytes"] = _int_or_none(args.get("size"))  # ROCm memcpy records `size`
    for key in ("grid", "block"):
        v = args.get(key)
        clean_args[key] = [_int_or_none(x) for x in v] if isinstance(v, list) else None
    dims = args.get("Input Dims")
    clean_args["Input Dims"] = (
        [[_int_or_none(x) for x in d] if isinstance(d, list) else None for d in dims]
        if isinstance(dims, list)
        else None
    )
    types = args.get("Input type")
    clean_args["Input type"] = [str(t) for t in types] if isinstance(types, list) else None
    out["args"] = clean_args
    return out


class _EventSink:
    """Turns batches of decoded events into Arrow record batches of the complete ('X') events we keep."""

    def __init__(self):
        self.batches: list[pa.RecordBatch] = []
        self.seen = 0

    def add(self, events: list) -> None:
        first = self.seen + 1
        self.seen += len(events)
        keep = [
            i for i, e in enumerate(events) if type(e) is dict and e.get("ph") == "X" and e.get("cat") in KIND_BY_CAT
        ]
        if not keep:
            return
        xs = [events[i] for i in keep]
        try:
            structs = pa.array(xs, type=_EVENT_TYPE)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            structs = pa.array([_clean(e) for e in xs], type=_EVENT_TYPE)
        rows = pa.array(np.asarray(keep, dtype=np.int64) + first)
        self.batches.append(pa.RecordBatch.from_struct_array(structs).append_column(ROW_COLUMN, rows))

    def add_table(self, table: pa.Table) -> None:
        first = self.seen + 1
        self.seen += table.num_rows
        keep = pc.and_(pc.equal(table["ph"], "X"), pc.is_in(table["cat"], pa.array(list(KIND_BY_CAT))))
        rows = pa.array(np.arange(first, first + table.num_rows, dtype=np.int64))
        table = table.append_column(ROW_COLUMN, rows).filter(keep).drop_columns(["ph"])
        self.batches.extend(table.combine_chunks().to_batches())

    def table(self) -> pa.Table:
        schema = pa.schema(list(_EVENT_TYPE)).append(pa.field(ROW_COLUMN, pa.int64()))
        return pa.Table.from_batches(self.batches, schema=schema)


def parse_trace(path: Path, batch: SourceBatch) -> SourceBatch:
    with _open_text(path) as fh:
        stream = _TextStream(path, fh)
        if stream.peek() == "":
            raise IngestError(path, "offset 0", "empty file")
        stream.expect("{")
        header: dict = {}
        sink = _EventSink()
        saw_events = False
        if stream.peek() == "}":
            stream.pos += 1
        else:
            while True:
                key = stream.value()
                if not isinstance(key, str):
                    raise IngestError(path, stream.offset(), "expected an object key")
                stream.expect(":")
                if key == "traceEvents":
                    saw_events = True
                    _read_events(stream, sink)
                else:
                    header[key] = stream.value()
                if stream.expect(",}") == "}":
                    break
        if not saw_events:
            raise IngestError(path, None, "no traceEvents array: not a Chrome trace")

    table = sink.table()
    batch.tables["trace_events"] = _finish(table, header)
    props = header.get("deviceProperties") or []
    batch.note = {
        "schema_version": header.get("schemaVersion"),
        "trace_name": header.get("traceName"),
        "devices": sorted({d.get("name") for d in props if isinstance(d, dict) and d.get("name")}),
        "trace_start_us": pc.min(table["ts"]).as_py() if table.num_rows else None,
        "events": sink.seen,
    }
    return batch


# In the profiler's pretty-printed layout each top-level event opens on a line of its own indented by two
# spaces. JSON strings hold no raw newline, so this separator never matches inside a string; a match at another
# depth makes the block invalid JSON, and the block then takes the exact (slower) path.
_BLOCK_SEPARATOR = ",\n  {"
_BLOCK_SCHEMA = pa.schema([pa.field("ph", pa.string()), *_EVENT_TYPE])
_BLOCK_PARSE = pa_json.ParseOptions(explicit_schema=_BLOCK_SCHEMA, unexpected_field_behavior="ignore")
_BLOCK_READ = pa_json.ReadOptions(use_threads=False, block_size=1 << 22)


def _block_events(text: str) -> pa.Table | None:
    """A run of whole events parsed by Arrow's C++ JSON reader, or None if it is not in the expected form."""
    ndjson = "\n{".join(piece.replace("\n", " ") for piece in text.split(_BLOCK_SEPARATOR))
    try:
        return pa_json.read_json(io.BytesIO(ndjson.encode()), read_options=_BLOCK_READ, parse_options=_BLOCK_PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _read_events(stream: _TextStream, sink: _EventSink) -> None:
    """Decode the traceEvents array. Runs of whole events in the buffer go to Arrow's JSON reader; what it
    rejects (stray field types, unusual layout) and the final event go through the exact decoder."""
    stream.expect("[")
    if stream.peek() == "]":
        stream.pos += 1
        return
    while True:
        if len(stream.buf) - stream.pos < CHUNK_CHARS:
            stream._more()
        cut = stream.buf.rfind(_BLOCK_SEPARATOR, stream.pos)
        if cut > stream.pos:
            table = _block_events(stream.buf[stream.pos : cut])
            if table is not None:
                sink.add_table(table)
                stream.pos = cut + 1
                continue
        if _decode_events(stream, sink, stop=cut if cut > stream.pos else len(stream.buf)):
            return


def _decode_events(stream: _TextStream, sink: _EventSink, stop: int) -> bool:
    """Decode events one by one up to buffer position `stop` (at least one event). True at the array's
    end. Elements lying wholly inside the buffer take a tight loop; one straddling the buffer's end goes
    through `stream.value()`, which refills the buffer and reports errors with their offset."""
    scan, sep = _DECODER.scan_once, _SEP.match
    pending: list = []
    closing = False
    while not closing:
        pending.append(stream.value())
        closing = stream.expect(",]") == "]"
        if stream.pos >= stop:
            break
        stream.peek()
        buf, pos = stream.buf, stream.pos
        while not closing and pos < stop:
            try:
                ev, end = scan(buf, pos)
            except (StopIteration, json.JSONDecodeError):
                break
            m = sep(buf, end)
            if m is None:
                break
            pending.append(ev)
            pos = m.end()
            closing = m.group(1) == "]"
        stream.pos = pos
        if pos >= stop:
            break
    sink.add(pending)
    return closing


def _finish(raw: pa.Table, header: dict) -> pa.Table:
    """Kinds, device names, op families, the launching CPU op, relative timestamps; in schema order."""
    n = raw.num_rows
    args = raw["args"].combine_chunks()
    ext = args.field("External id").to_numpy(zero_copy_only=False)
    corr = args.field("correlation").to_numpy(zero_copy_only=False)
    cats = raw["cat"].combine_chunks().dictionary_encode()
    kind = np.array([KIND_BY_CAT[c] for c in cats.dictionary.to_pylist()], dtype=object)[cats.indices.to_numpy()]
    gpu = np.isin(kind, list(GPU_KINDS))

    # Device: args.device, else the pid (the profiler gives each GPU its own pid).
    dev_arg = args.field("device").to_numpy(zero_copy_only=False)
    pid = raw["pid"].to_numpy(zero_copy_only=False)
    dev_index = np.where(np.isnan(dev_arg.astype(float)), pid.astype(float), dev_arg.astype(float))
    props = {_int_or_none(d.get("id")): d for d in header.get("deviceProperties") or [] if isinstance(d, dict)}
    device = np.full(n, "host", dtype=object)
    for idx in np.unique(dev_index[gpu & ~np.isnan(dev_index)]):
        p = props.get(int(idx))
        name = canonical_device(p.get("name"), _int_or_none(p.get("numSms"))) if p else "gpu"
        device[gpu & (dev_index == idx)] = name

    names = raw["name"].to_numpy(zero_copy_only=False)
    family = np.full(n, None, dtype=object)
    kernels = np.flatnonzero(kind == "kernel")
    families = {nm: classify_kernel(nm or "") for nm in set(names[kernels])}
    family[kernels] = [families[nm] for nm in names[kernels]]
    family[(kind == "memcpy") | (kind == "memset")] = "memcpy"

    # GPU event -> runtime call with the same correlation -> the CPU op that made that call: the op whose
    # External id the call carries, else (older traces number them apart) the innermost op on the call's
    # thread that encloses it in time.
    valid = ~np.isnan(ext.astype(float))
    cpu = np.flatnonzero(kind == "cpu_op")
    op_row = dict(zip(ext[cpu[valid[cpu]]].astype(np.int64).tolist(), cpu[valid[cpu]].tolist(), strict=True))
    rt = np.flatnonzero((kind == "runtime") & ~np.isnan(corr.astype(float)))
    rt_op = np.array([op_row.get(int(e), -1) if e == e else -1 for e in ext[rt]], dtype=np.int64)
    if (rt_op < 0).any():
        thread = raw["pid"].to_numpy(zero_copy_only=False).astype(float) * 1e9 + raw["tid"].to_numpy(
            zero_copy_only=False
        ).astype(float)
        ts_all = raw["ts"].to_numpy(zero_copy_only=False).astype(float)
        end_all = ts_all + np.nan_to_num(raw["dur"].to_numpy(zero_copy_only=False).astype(float))
        missing = rt_op < 0
        rt_op[missing] = _enclosing(cpu, ts_all, end_all, thread, rt[missing])
    launch = dict(zip(corr[rt].astype(np.int64).tolist(), rt_op.tolist(), strict=True))
    source_row = np.full(n, -1, dtype=np.int64)
    for i in np.flatnonzero(gpu):
        c, e = corr[i], ext[i]
        row = launch.get(int(c), -1) if c == c else -1
        if row < 0 and e == e:  # some traces put the op's External id on the kernel itself
            row = op_row.get(int(e), -1)
        source_row[i] = row
    linked = source_row >= 0
    take = pa.array(np.where(linked, source_row, 0))
    mask = pa.array(~linked)

    own = pa.array(kind == "cpu_op")

    def launched(column: pa.Array) -> pa.Array:
        """CPU ops keep their own value; GPU events take their launching op's; others get null."""
        if not n:
            return column
        return pc.if_else(own, column, pc.if_else(mask, pa.nulls(n, column.type), column.take(take)))

    ts = raw["ts"].to_numpy(zero_copy_only=False).astype(float)
    start = np.nanmin(ts) if n and np.isfinite(ts).any() else 0.0
    out = {
        "source_id": pa.nulls(n, pa.string()),
        "device": pa.array(device, pa.string()),
        "device_index": pa.array(np.where(gpu, dev_index, np.nan), pa.int64(), from_pandas=True),
        "kind": pa.array(kind, pa.string()),
        "name": raw["name"],
        "op_family": pa.array(family, pa.string()),
        "pid": raw["pid"],
        "tid": raw["tid"],
        "stream": args.field("stream"),
        "ts_us": pa.array(ts - start, pa.float64(), from_pandas=True),
        "dur_us": raw["dur"],
        "correlation": args.field("correlation"),
        "external_id": args.field("External id"),
        "cpu_op": pc.if_else(own, pa.nulls(n, pa.string()), launched(raw["name"].combine_chunks()))
        if n
        else raw["name"].combine_chunks(),
        "input_dims": launched(args.field("Input Dims")),
        "input_types": launched(args.field("Input type")),
        "grid": args.field("grid"),
        "block": args.field("block"),
        "bytes": args.field("bytes"),
    }
    arrays = [out[f.name] for f in TRACE_EVENTS] + [raw[ROW_COLUMN], raw[PROBLEM_COLUMN]]
    schema = TRACE_EVENTS.append(pa.field(ROW_COLUMN, pa.int64())).append(pa.field(PROBLEM_COLUMN, pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema)


def _enclosing(
    ops: np.ndarray, start: np.ndarray, end: np.ndarray, thread: np.ndarray, queries: np.ndarray
) -> np.ndarray:
    """For each query row, the innermost op row on the same thread whose [start, end] holds its start."""
    out = np.full(len(queries), -1, dtype=np.int64)
    order = ops[np.lexsort((-end[ops], start[ops], thread[ops]))]  # by thread, start, outer first
    for th in np.unique(thread[queries]):
        mine = order[thread[order] == th]
        if len(mine) == 0:
            continue
        parent = np.full(len(mine), -1, dtype=np.int64)
        stack: list[int] = []
        for j, row in enumerate(mine):  # ops on one thread nest: a stack gives each op its parent
            while stack and end[mine[stack[-1]]] < start[row]:
                stack.pop()
            parent[j] = stack[-1] if stack else -1
            stack.append(j)
        q = np.flatnonzero(thread[queries] == th)
        t = start[queries[q]]
        cand = np.searchsorted(start[mine], t, side="right") - 1
        inside = (cand >= 0) & (end[mine[np.maximum(cand, 0)]] >= t)
        out[q[inside]] = mine[cand[inside]]
        for qi, j, tq in zip(q[~inside], cand[~inside], t[~inside], strict=True):  # walk up to an ancestor
            while j >= 0 and end[mine[j]] < tq:
                j = parent[j]
            out[qi] = mine[j] if j >= 0 else -1
    return out
