"""The ingest formats: detection from content, their parsers, and the companion files that shape their rows."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..warehouse.batch import IngestError, SourceBatch
from . import aiconfigurator, kineto, request_logs, servegen, vidur

HEAD_BYTES = 1 << 16


@dataclass(frozen=True)
class Format:
    name: str
    parse: Callable[[Path, SourceBatch], SourceBatch]
    describe: str
    companions: Callable[[Path], list[Path]] = lambda path: []
    # Raised when a parser's reading of the same file changes (then its rows differ): part of a source's
    # identity from 2 on, so a warehouse holding the older reading is told to rebuild, never mixed with the new
    revision: int = 1
    changed: str = ""  # what the latest revision changed, for that message


AICONFIGURATOR_REVISION_2 = "comm tables' message_size counts elements, not bytes"
VIDUR_MLP_REVISION_2 = "attn_rope's width is the query and key heads a TP rank rotates, not the full hidden size"


def _ragpulse_tables(path: Path) -> list[Path]:
    return [path.parent / t for _, t, _, _ in request_logs.RAGPULSE_PARTS if (path.parent / t).exists()]


def _collection_meta(path: Path) -> list[Path]:
    meta = path.parent / "collection_meta.yaml"
    return [meta] if meta.exists() else []


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "aiconfigurator",
            aiconfigurator.parse_perf_table,
            "AIConfigurator *_perf.parquet",
            _collection_meta,
            revision=2,
            changed=AICONFIGURATOR_REVISION_2,
        ),
        Format("aiconfigurator-reuse", aiconfigurator.parse_reuse, "AIConfigurator reuse.yaml (borrowed table)"),
        Format("vidur-mlp", vidur.parse_mlp, "Vidur mlp.csv", revision=2, changed=VIDUR_MLP_REVISION_2),
        Format("vidur-attention", vidur.parse_attention, "Vidur attention CSV"),
        Format("vidur-network", vidur.parse_network, "Vidur all_reduce.csv / send_recv.csv"),
        Format("kineto", kineto.parse_trace, "PyTorch profiler / Kineto Chrome-trace JSON (.json, .json.gz)"),
        Format("azure", request_logs.parse_azure, "Azure LLM inference trace CSV (2023, 2024)"),
        Format("burstgpt", request_logs.parse_burstgpt, "BurstGPT CSV"),
        Format("mooncake", request_logs.parse_mooncake, "Mooncake JSONL (hash_ids)"),
        Format("ragpulse", request_logs.parse_ragpulse, "RAGPulse trace JSONL + part length tables", _ragpulse_tables),
        Format(
            "servegen",
            servegen.parse_servegen,
            "ServeGen chunk-<i>-trace.csv + chunk-<i>-dataset.json",
            lambda p: [servegen.dataset_path(p)] if servegen.dataset_path(p).exists() else [],
        ),
    )
}

# Files read as part of another source, or not data: skipped quietly when walking a folder.
_COMPANION_NAMES = {"collection_meta.yaml"} | {t for _, t, _, _ in request_logs.RAGPULSE_PARTS}


def _head(path: Path) -> tuple[bytes, bool]:
    """The first bytes of a file's content (decompressed when gzipped, as far as the stream goes) and whether
    a gzip stream ended before them."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        if head[:2] != b"\x1f\x8b":
            return head, False
        f.seek(0)
        inflate = zlib.decompressobj(wbits=31)
        out = b""
        while len(out) < HEAD_BYTES and (chunk := f.read(HEAD_BYTES)):
            try:
                out += inflate.decompress(chunk, HEAD_BYTES - len(out))
            except zlib.error as e:
                raise IngestError(path, f"byte offset {f.tell() - len(chunk)}", f"corrupt gzip stream: {e}") from e
        return out, len(out) < HEAD_BYTES and not inflate.eof


def detect(path: Path) -> str | None:
    """The format of a file from its content, or None if it is none of ours."""
    head, truncated = _head(path)
    fmt = _detect(path, head)
    if fmt is None and truncated:
        size = path.stat().st_size
        raise IngestError(path, f"byte offset {size}", "the gzip stream is truncated (the file is cut short)")
    return fmt


def _detect(path: Path, head: bytes) -> str | None:
    if head.startswith(b"PAR1"):
        return "aiconfigurator"
    text = head.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        if '"traceEvents"' in text or ('"deviceProperties"' in text and '"schemaVersion"' in text):
            return "kineto"
        first = stripped.split("\n", 1)[0]
        try:
            rec = orjson.loads(first)
        except orjson.JSONDecodeError:
            return None
        if isinstance(rec, dict) and "input_length" in rec and "timestamp" in rec:
            return "ragpulse" if isinstance(rec.get("hash_ids"), dict) else "mooncake"
        return None
    first_line = stripped.split("\n", 1)[0].strip()
    header = [c.strip() for c in first_line.split(",")]
    if all(c in header for c in request_logs.AZURE_COLUMNS):
        return "azure"
    if all(c in header for c in request_logs.BURSTGPT_COLUMNS):
        return "burstgpt"
    if any(c.startswith("time_stats.") for c in header):
        if "num_tokens" in header:
            return "vidur-mlp"
        if "is_prefill" in header:
            return "vidur-attention"
        if "collective" in header:
            return "vidur-network"
    if len(header) == 6 and path.name.endswith("-trace.csv") and servegen.dataset_path(path).exists():
        return "servegen"
    if "reuse:" in text and path.suffix in (".yaml", ".yml"):
        return "aiconfigurator-reuse"
    return None


def expand(paths: list[Path], forced: str | None = None) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(file, format) for every ingestible file under the paths, in a stable order, plus the files skipped with
    the reason. A file named explicitly must be ingestible; files found in a folder that are not are skipped."""
    if forced is not None and forced not in FORMATS:
        raise ValueError(f"unknown format {forced!r}; known: {', '.join(FORMATS)}")
    chosen: list[tuple[Path, str]] = []
    skipped: list[tuple[Path, str]] = []
    for root in paths:
        if not root.exists():
            raise IngestError(root, None, "no such file or directory")
        if root.is_file():
            fmt = forced or detect(root)
            if fmt is None:
                if root.stat().st_size == 0:
                    raise IngestError(root, "offset 0", "empty file")
                raise IngestError(root, None, f"not a recognised format (pass --format; known: {', '.join(FORMATS)})")
            chosen.append((root, fmt))
            continue
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            if f.name in _COMPANION_NAMES or f.name.endswith("-dataset.json"):
                skipped.append((f, "read with the source it belongs to"))
                continue
            if f.stat().st_size == 0:
                skipped.append((f, "empty"))
                continue
            fmt = forced or detect(f)
            if fmt is None:
                skipped.append((f, "not a known format"))
            else:
                chosen.append((f, fmt))
    return chosen, skipped
