"""The schedule as a Perfetto / Chrome trace (open in ui.perfetto.dev): a process per pool with a thread per
replica, each LLM iteration (or run of identical decode iterations) and service batch a slice; a process for
the links with a thread per link, each transfer a slice; every request's stages as async slices on the pools
that served them, and one flow per request through the replicas of its stages, arrival to completion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

MAX_SLICES = 200_000
MAX_REQUESTS = 20_000


def _us(s: float) -> float:
    return round(s * 1e6, 3)


def perfetto(result: dict, path: Path) -> Path:
    req = result["requests"]
    tl = result["timeline"]
    pools = list(dict.fromkeys(tl["pool"])) if "pool" in tl else ["llm"]
    batches = result.get("batches")
    batches = batches if batches is not None else pd.DataFrame()
    pools += [p for p in dict.fromkeys(batches.get("pool", [])) if p not in pools]
    stage_cols = [c[: -len("_service_ms")] for c in req.columns if c.endswith("_service_ms")]
    for s in stage_cols:
        pools += [p for p in dict.fromkeys(req[f"{s}_pool"].dropna()) if p not in pools]
    pid = {p: i + 1 for i, p in enumerate(pools)}
    links_pid = len(pools) + 1
    events: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": pid[p], "args": {"name": f"pool {p}"}} for p in pools
    ]
    for row in tl.head(MAX_SLICES).itertuples(index=False):
        events.append(
            {
                "ph": "X",
                "cat": "iteration",
                "name": f"batch {row.batch_size}" + (f" x{row.iterations}" if row.iterations > 1 else ""),
                "pid": pid[getattr(row, "pool", "llm")],
                "tid": int(row.replica),
                "ts": _us(row.start_s),
                "dur": _us(row.end_s - row.start_s),
                "args": {
                    "iterations": int(row.iterations),
                    "tokens": int(row.tokens),
                    "kv_used_blocks": int(row.kv_used_blocks),
                },
            }
        )
    for row in batches.head(MAX_SLICES).itertuples(index=False):
        events.append(
            {
                "ph": "X",
                "cat": "batch",
                "name": f"batch {row.sequences}",
                "pid": pid[row.pool],
                "tid": int(row.replica),
                "ts": _us(row.start_s),
                "dur": _us(row.end_s - row.start_s),
                "args": {"jobs": int(row.jobs), "sequences": int(row.sequences)},
            }
        )
    transfers = result.get("transfers")
    if transfers is not None and len(transfers):
        events.append({"ph": "M", "name": "process_name", "pid": links_pid, "args": {"name": "links"}})
        tids = {name: i for i, name in enumerate(dict.fromkeys(transfers.link))}
        for name, tid in tids.items():
            events.append({"ph": "M", "name": "thread_name", "pid": links_pid, "tid": tid, "args": {"name": name}})
        for row in transfers.head(MAX_SLICES).itertuples(index=False):
            events.append(
                {
                    "ph": "X",
                    "cat": "transfer",
                    "name": f"{row.bytes / 2**20:.1f} MiB",
                    "pid": links_pid,
                    "tid": tids[row.link],
                    "ts": _us(row.start_s),
                    "dur": _us(row.end_s - row.start_s),
                }
            )
    done = req[req.status == "completed"].head(MAX_REQUESTS)
    for row in done.itertuples(index=False):
        _request_events(events, row, pid, stage_cols)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path


def _request_events(events: list, row, pid: dict, stage_cols: list) -> None:
    """The request's stages as async slices on their pools, and a flow through them, arrival to completion."""
    rid = int(row.request_id)
    steps = []
    for s in stage_cols:
        pool, start, service = getattr(row, f"{s}_pool"), getattr(row, f"{s}_start_s"), getattr(row, f"{s}_service_ms")
        if isinstance(pool, str) and pool in pid and not math.isnan(start):
            steps.append((start, s, pool, service))
    if not steps:  # a one-stage scenario: the flow runs on its replica's track
        p, tid = pid[next(iter(pid))], int(row.replica)
        events.append(
            {"ph": "s", "cat": "request", "name": "request", "id": rid, "pid": p, "tid": tid, "ts": _us(row.arrival_s)}
        )
        events.append(
            {
                "ph": "f",
                "bp": "e",
                "cat": "request",
                "name": "request",
                "id": rid,
                "pid": p,
                "tid": tid,
                "ts": _us(row.completion_s),
            }
        )
        return
    steps.sort()
    for k, (start, name, pool, service) in enumerate(steps):
        p = pid[pool]
        events.append(
            {"ph": "b", "cat": "stage", "name": name, "id": rid, "pid": p, "ts": _us(start), "args": {"request": rid}}
        )
        events.append({"ph": "e", "cat": "stage", "name": name, "id": rid, "pid": p, "ts": _us(start + service / 1e3)})
        events.append(
            {
                "ph": "s" if k == 0 else "t",
                "cat": "request",
                "name": "request",
                "id": rid,
                "pid": p,
                "tid": 0,
                "ts": _us(start),
            }
        )
    events.append(
        {
            "ph": "f",
            "bp": "e",
            "cat": "request",
            "name": "request",
            "id": rid,
            "pid": pid[steps[-1][2]],
            "tid": 0,
            "ts": _us(row.completion_s),
        }
    )
