"""Replay outputs: Parquet tables, the summary JSON, PNG plots and a Perfetto / Chrome trace of the schedule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write(result: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "requests.parquet", out_dir / "timeline.parquet", out_dir / "summary.json"]
    result["requests"].to_parquet(paths[0], index=False)
    result["timeline"].to_parquet(paths[1], index=False)
    paths[2].write_text(json.dumps(result["summary"], indent=1))
    paths.append(perfetto(result, out_dir / "schedule.perfetto.json"))
    paths += plots(result, out_dir)
    return paths


def perfetto(result: dict, path: Path, max_iterations: int = 200_000) -> Path:
    """One track per replica; each timeline row (one iteration, or a run of identical decode iterations) a
    slice; each request a flow from arrival to completion."""
    tl = result["timeline"].head(max_iterations)
    events: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": int(r), "args": {"name": f"replica {int(r)}"}}
        for r in sorted(tl.replica.unique())
    ]
    for row in tl.itertuples(index=False):
        events.append(
            {
                "ph": "X",
                "cat": "iteration",
                "name": f"batch {row.batch_size}" + (f" x{row.iterations}" if row.iterations > 1 else ""),
                "pid": int(row.replica),
                "tid": 0,
                "ts": round(row.start_s * 1e6, 3),
                "dur": round((row.end_s - row.start_s) * 1e6, 3),
                "args": {
                    "iterations": int(row.iterations),
                    "tokens": int(row.tokens),
                    "kv_used_blocks": int(row.kv_used_blocks),
                },
            }
        )
    done = result["requests"][result["requests"].status == "completed"]
    for row in done.itertuples(index=False):
        pid = int(row.replica)
        events.append(
            {
                "ph": "s",
                "cat": "request",
                "name": "request",
                "id": int(row.request_id),
                "pid": pid,
                "tid": 0,
                "ts": round(row.arrival_s * 1e6, 3),
            }
        )
        events.append(
            {
                "ph": "f",
                "bp": "e",
                "cat": "request",
                "name": "request",
                "id": int(row.request_id),
                "pid": pid,
                "tid": 0,
                "ts": round(row.completion_s * 1e6, 3),
            }
        )
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path


def plots(result: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    req = result["requests"][result["requests"].status == "completed"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, col in zip(axes, ("ttft_ms", "tpot_ms", "e2e_ms"), strict=True):
        x = np.sort(req[col].dropna().to_numpy())
        if len(x):
            ax.plot(x, np.arange(1, len(x) + 1) / len(x))
        ax.set(xlabel=col, ylabel="CDF", xscale="log", title=col.replace("_ms", "").upper())
    fig.tight_layout()
    cdf = out_dir / "latency_cdf.png"
    fig.savefig(cdf, dpi=100)
    plt.close(fig)

    tl = result["timeline"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
    for r, g in tl.groupby("replica"):
        a1.plot(g.start_s, g.batch_size, lw=0.6, label=f"replica {r}")
        a2.plot(g.start_s, g.kv_used_blocks, lw=0.6)
    a1.set(ylabel="batch size")
    a2.set(ylabel="KV blocks used", xlabel="simulated time (s)")
    a1.legend(fontsize=7, ncols=4)
    fig.tight_layout()
    timeline = out_dir / "timeline.png"
    fig.savefig(timeline, dpi=100)
    plt.close(fig)
    return [cdf, timeline]
