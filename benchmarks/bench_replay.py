"""Replay speed on the real Azure conversation log, and the Dask sweep speed-up.

    python benchmarks/bench_replay.py [--shared ../shared/data] [--warehouse DIR]

The warehouse must hold calibrated A100 models (`hermes-sim ingest ../shared/data/hardware` then
`hermes-sim calibrate --device a100_sxm`); without them the costs fall back to transferred / roofline tiers.
- azure_conv: benchmarks/scenarios/azure_conv_a100_llama2_70b.yaml on AzureLLMInferenceTrace_conv.csv, in a fresh
  process pinned to one core: wall time, simulated requests per second, peak RSS (targets: <= 1 s, >= 20,000
  requests/s, < 500 MB); and the event loop alone, in process (engine_s);
- sweep: 8 points (replicas x chunk budget) of that scenario on the whole log, serially and on a 2-worker local
  Dask cluster, both warmed by one point first; each side timed twice, best kept (target: >= 1.7x).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss

REPO = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("hermes-sim")
SCENARIO = REPO / "benchmarks/scenarios/azure_conv_a100_llama2_70b.yaml"


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def engine_seconds(log: Path, warehouse: Path, repeats: int = 3) -> float:
    """The event loop alone (requests loaded and cost grids priced beforehand), best of `repeats`, in process."""
    from hermes_sim.replay.config import load
    from hermes_sim.replay.engine import Simulation
    from hermes_sim.replay.policies import ROUTERS
    from hermes_sim.replay.run import build_replicas, open_loop_requests

    scenario = load(SCENARIO)
    scenario.source.kind, scenario.source.log = "log", str(log)
    best = float("inf")
    for _ in range(repeats):
        requests = open_loop_requests(scenario, warehouse)
        sim = Simulation(build_replicas(scenario.pools[0], warehouse), ROUTERS[scenario.router]())
        t0 = time.perf_counter()
        sim.run(requests)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("HERMES_SHARED_DATA", REPO.parent / "shared/data"))
    )
    ap.add_argument("--warehouse", type=Path, default=Path(os.environ.get("HERMES_WAREHOUSE", ".hermes")))
    args = ap.parse_args()
    log = args.shared / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"

    cmd = [
        "taskset",
        "-c",
        "0",
        str(EXE),
        "replay",
        str(SCENARIO),
        "--log",
        str(log),
        "--format",
        "json",
        "-w",
        str(args.warehouse),
    ]
    wall, peak, out = peak_rss(cmd)
    summary = json.loads(out)
    engine = engine_seconds(log, args.warehouse)

    from hermes_sim.replay.config import load
    from hermes_sim.replay.parallel import dask_client, point_summary, run_sweep, sweep_points

    scenario = load(SCENARIO)
    scenario.source.kind, scenario.source.log = "log", str(log)
    with tempfile.TemporaryDirectory() as d:
        sweep = Path(d) / "sweep.yaml"
        sweep.write_text(
            "parameters:\n  pools.0.replicas: [2, 4]\n  pools.0.batching.max_batched_tokens: [256, 512, 1024, 2048]\n"
        )
        points = sweep_points(scenario, sweep)
        run_sweep(points[:1], args.warehouse, None, progress=False)  # warm the ingest and caches
        serial = min(timed(run_sweep, points, args.warehouse, None, progress=False) for _ in range(2))
        with dask_client(workers=2) as client:
            # warm every worker the way the serial run was warmed (imports, priced cost grids)
            client.run(point_summary, points[0][1], str(args.warehouse))
            parallel = min(timed(run_sweep, points, args.warehouse, client, progress=False) for _ in range(2))
    result = {
        "azure_conv": {
            "wall_s_one_core_process": round(wall, 2),
            "requests": summary["requests"],
            "simulated_requests_per_s": round(summary["requests"] / wall),
            "engine_s": round(engine, 2),
            "engine_requests_per_s": round(summary["requests"] / engine),
            "peak_rss_mbytes": round(peak / 1e6, 1),
            "iterations": summary["iterations"],
            "ttft_p50_ms": summary["ttft_ms"].get("p50"),
            "tpot_p50_ms": summary["tpot_ms"].get("p50"),
            "cost_tiers": summary["cost_tiers"],
        },
        "sweep_8_points": {
            "serial_s": round(serial, 2),
            "dask_2_workers_s": round(parallel, 2),
            "speedup": round(serial / parallel, 2),
        },
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
