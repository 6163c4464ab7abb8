"""Ingest files and folders into the warehouse as one transaction."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..warehouse.batch import IngestError, SourceBatch, file_sha256
from ..warehouse.schema import DATA_TABLES
from ..warehouse.store import Warehouse
from ..warehouse.validation import validate
from .formats import FORMATS, expand

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    committed: list[SourceBatch]
    already: list[tuple[str, str]]  # (path, source id) of files ingested before: no-ops
    skipped: list[tuple[Path, str]]  # files in folders left out, with the reason

    @property
    def rows_accepted(self) -> int:
        return sum(b.rows_accepted for b in self.committed)

    @property
    def rows_quarantined(self) -> int:
        return sum(len(b.quarantine) for b in self.committed)


def _content_hash(path: Path, companions: list[Path]) -> str:
    if not companions:
        return file_sha256(path)
    h = hashlib.sha256(file_sha256(path).encode())
    for c in companions:
        h.update(c.name.encode() + file_sha256(c).encode())
    return h.hexdigest()


def source_ids(paths: list[Path], fmt: str | None = None, params: dict | None = None) -> list[str]:
    """The source ids these files would have, from their content alone (nothing is parsed)."""
    files, _ = expand([Path(p) for p in paths], fmt)
    return [
        SourceBatch(
            path=str(path),
            sha256=_content_hash(path, FORMATS[name].companions(path)),
            format=name,
            size_bytes=0,
            params=_format_params(name, params or {}),
        ).source_id
        for path, name in files
    ]


def ingest(
    warehouse: Warehouse | Path | str,
    paths: list[Path],
    fmt: str | None = None,
    params: dict | None = None,
    progress: bool = True,
) -> IngestReport:
    """Parse, validate and commit every file under `paths`; all of them or, on any error, none. Given a
    warehouse directory, the warehouse is opened read-only to see what it holds, and for writing only to
    commit: other commands keep reading it while the files are parsed."""
    if not isinstance(warehouse, Warehouse):
        root = Path(warehouse)
        if (root / "catalog.duckdb").exists():
            with Warehouse(root, read_only=True) as wh:
                known = _known_sources(wh)
        else:
            known = {}
        batches, already, skipped = _parse(known, paths, fmt, params, progress)
        with Warehouse(root) as wh:
            report = wh.commit(batches)
        return IngestReport(report.committed, already + [(b.path, b.source_id) for b, _ in report.skipped], skipped)
    batches, already, skipped = _parse(_known_sources(warehouse), paths, fmt, params, progress)
    report = warehouse.commit(batches)
    return IngestReport(report.committed, already + [(b.path, b.source_id) for b, _ in report.skipped], skipped)


Known = dict[str, tuple[str, str, dict]]  # source_id -> (content hash, format, parameters)


def _known_sources(wh: Warehouse) -> Known:
    """source_id -> (content hash, format, parameters) of every source the warehouse holds."""
    rows = wh.query("SELECT source_id, sha256, format, params FROM sources")[1]
    return {sid: (sha, fmt, json.loads(params or "{}")) for sid, sha, fmt, params in rows}


def _older_reading(known: Known, batch: SourceBatch) -> tuple[str, int] | None:
    """(source id, revision) of this very file read by an older revision of its parser, if the warehouse has it."""
    mine = {k: v for k, v in batch.params.items() if k != "revision"}
    for sid, (sha, fmt, params) in known.items():
        same_file = sha == batch.sha256 and fmt == batch.format and sid != batch.source_id
        if same_file and {k: v for k, v in params.items() if k != "revision"} == mine:
            return sid, int(params.get("revision", 1))
    return None


def _parse(known: Known, paths: list[Path], fmt: str | None, params: dict | None, progress: bool):
    files, skipped = expand([Path(p) for p in paths], fmt)
    for f, why in skipped:
        log.debug("skipping %s: %s", f, why)
    batches: list[SourceBatch] = []
    already: list[tuple[str, str]] = []
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=len(files))
        for path, name in files:
            bar.update(task, description=path.name)
            spec = FORMATS[name]
            batch = SourceBatch(
                path=str(path),
                sha256=_content_hash(path, spec.companions(path)),
                format=name,
                size_bytes=path.stat().st_size,
                params=_format_params(name, params or {}),
            )
            stale = None if batch.source_id in known else _older_reading(known, batch)
            if stale:
                raise IngestError(
                    path,
                    None,
                    f"this file is in the warehouse as source {stale[0]}, read by revision {stale[1]} of the "
                    f"{name} parser; revision {spec.revision} reads it differently ({spec.changed}), and the two "
                    "would be counted together: rebuild the warehouse from its inputs with `hermes-sim ingest "
                    "--fresh PATH...`",
                )
            if batch.source_id in known or any(b.source_id == batch.source_id for b in batches):
                log.info("%s: already ingested as source %s; nothing to do", path, batch.source_id)
                already.append((str(path), batch.source_id))
            else:
                batches.append(spec.parse(path, batch))
            bar.advance(task)
    for table in DATA_TABLES:
        validate(table, batches)
    return batches, already, skipped


def _format_params(fmt: str, params: dict) -> dict:
    """The parameters that shape this format's rows (and so belong to its source identity), with the parser's
    revision once it has changed how it reads the format."""
    out: dict = {"revision": FORMATS[fmt].revision} if FORMATS[fmt].revision > 1 else {}
    if params.get("log_name") and fmt in ("azure", "burstgpt", "mooncake", "ragpulse", "servegen"):
        out["log_name"] = params["log_name"]
    if fmt == "servegen":
        out["seed"] = int(params.get("seed", 0))
    if params.get("device") and fmt.startswith("vidur"):  # the part, where the source does not name it
        out["device"] = params["device"]
    return out
