"""Replay outputs: Parquet tables, the summary as strict JSON, PNG plots and a Perfetto / Chrome trace."""

from __future__ import annotations

from pathlib import Path

from ...warehouse.parquet import write_parquet
from .jsonout import dumps
from .perfetto import perfetto
from .plots import plots


def write(result: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("requests", "timeline", "batches", "transfers"):
        frame = result.get(name)
        if frame is not None and (name in ("requests", "timeline") or len(frame)):
            path = out_dir / f"{name}.parquet"
            write_parquet(frame, path)
            paths.append(path)
    summary = out_dir / "summary.json"
    summary.write_text(dumps(result["summary"]) + "\n")
    paths.append(summary)
    paths.append(perfetto(result, out_dir / "schedule.perfetto.json"))
    paths += plots(result, out_dir)
    return paths
