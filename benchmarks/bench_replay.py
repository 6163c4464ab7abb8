"""Replay speed on real logs, single-pool parity, and the Dask sweep speed-up of a multi-stage scenario.

    python benchmarks/bench_replay.py [--shared ../shared/data] [--warehouse DIR] [--repeats 3]

The warehouse must hold calibrated H100 and A100 models (`hermes-sim ingest ../shared/data/hardware`, then
`hermes-sim calibrate --device h100_sxm` and `--device a100_sxm`); without them costs fall back to other tiers.
- azure_conv: benchmarks/scenarios/azure_conv_a100_llama2_70b.yaml on AzureLLMInferenceTrace_conv.csv (the
  single-pool parity scenario): the whole `hermes-sim replay` process pinned to one core (best and median of
  `repeats`, after one uncounted run that writes Python's bytecode cache, as an installed command has it), peak
  RSS, its phases in process (cost build and log read as a fresh process meets them, event loop and output
  tables best of `repeats`), and whether skip-ahead on and off give bit-identical requests (every column);
- mooncake_kv_tiers: benchmarks/scenarios/mooncake_kv_tiers.yaml (12,031 requests, KV retrieval from DRAM and a
  remote pool): the whole process on one core (best and median) and its phases in process; the rest of the
  whole process is interpreter start, imports and exit;
- sweep: 8 deployment variants of benchmarks/scenarios/disagg_prefill_h100_decode_a100.yaml (prefill replicas x
  decode replicas x decode device) over the whole log, serially and on a 2-worker local Dask cluster, both
  warmed first, alternating for SWEEP_ROUNDS rounds (each parallel round on a fresh cluster, each serial one
  with none in the process); the speed-up is the ratio of the medians (target >= 1.7x),
  with the ratio of the bests and the range of the rounds' ratios beside it (the noise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import peak_rss, update_headline

REPO = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("hermes-sim")
SCENARIOS = REPO / "benchmarks/scenarios"
SWEEP_ROUNDS = 3


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def process(scenario: Path, warehouse: Path, repeats: int, log: Path | None = None) -> dict:
    cmd = ["taskset", "-c", "0", str(EXE), "replay", str(scenario), "--format", "json", "-w", str(warehouse)]
    if log is not None:
        cmd += ["--log", str(log)]
    # as an installed command runs: Python caches its modules' bytecode (pip compiles a wheel's at install, an
    # editable install writes it on first import), which PYTHONDONTWRITEBYTECODE in a sandbox turns off; the first
    # run writes the cache and is not counted
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    peak_rss(cmd, env)
    runs = [peak_rss(cmd, env) for _ in range(repeats)]
    walls = [w for w, _, _ in runs]
    summary = json.loads(runs[-1][2])
    return {
        "wall_s_best": round(min(walls), 2),
        "wall_s_median": round(statistics.median(walls), 2),
        "wall_s_all": [round(w, 2) for w in walls],
        "peak_rss_mbytes": round(max(p for _, p, _ in runs) / 1e6, 1),
        "requests": summary["requests"],
        "completed": summary["completed"],
        "ttft_p50_ms": summary["ttft_ms"].get("p50"),
        "tpot_p50_ms": summary["tpot_ms"].get("p50"),
    }


def phases(scenario, warehouse: Path, repeats: int, skip_ahead: bool = True) -> tuple[dict, object]:
    """In process, seconds per phase: building the pools and pricing their cost grids, and reading the log into
    requests, as a fresh process meets them (the first run: later ones hit the in-process caches); the event
    loop and the output tables, best of `repeats`."""
    from hermes_sim.replay.run import collect
    from hermes_sim.replay.simulation import Simulation

    out: dict = {"loop_s_best": float("inf"), "collect_s_best": float("inf")}
    for i in range(repeats):
        t0 = time.perf_counter()
        sim = Simulation(scenario, warehouse, skip_ahead=skip_ahead)
        t1 = time.perf_counter()
        sim.prepare([c.source.initial() for c in sim.clients])
        t2 = time.perf_counter()
        sim.loop.run()
        t3 = time.perf_counter()
        sim.check()
        collected = collect(scenario, sim)
        t4 = time.perf_counter()
        if i == 0:
            out["build_s_first"], out["prepare_s_first"] = t1 - t0, t2 - t1
        out["loop_s_best"] = min(out["loop_s_best"], t3 - t2)
        out["collect_s_best"] = min(out["collect_s_best"], t4 - t3)
    return {k: round(v, 2) for k, v in out.items()}, collected


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("HERMES_SHARED_DATA", REPO.parent / "shared/data"))
    )
    ap.add_argument("--warehouse", type=Path, default=Path(os.environ.get("HERMES_WAREHOUSE", ".hermes")))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.chdir(REPO)  # the scenarios name ../shared/data relative to the repository
    from hermes_sim.replay.parallel import dask_client, point_summary, run_sweep, sweep_points
    from hermes_sim.replay.scenario import load

    azure_log = args.shared / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
    azure = SCENARIOS / "azure_conv_a100_llama2_70b.yaml"
    result: dict = {"azure_conv": process(azure, args.warehouse, args.repeats, azure_log)}
    scenario = load(azure)
    scenario.source.log = str(azure_log)
    timings, skipped = phases(scenario, args.warehouse, args.repeats)
    _, stepped = phases(scenario, args.warehouse, 1, skip_ahead=False)
    a, b = skipped["requests"], stepped["requests"]
    result["azure_conv"] |= timings
    result["azure_conv"]["skip_ahead_bit_identical"] = bool(a.equals(b))
    result["azure_conv"]["skip_ahead_max_time_difference_s"] = float(
        max((a[c] - b[c]).abs().max() for c in ("first_token_s", "completion_s"))
    )

    mooncake = SCENARIOS / "mooncake_kv_tiers.yaml"
    result["mooncake_kv_tiers"] = process(mooncake, args.warehouse, args.repeats)
    result["mooncake_kv_tiers"] |= phases(load(mooncake), args.warehouse, args.repeats)[0]

    disagg = load(SCENARIOS / "disagg_prefill_h100_decode_a100.yaml")
    with tempfile.TemporaryDirectory() as d:
        sweep = Path(d) / "sweep.yaml"
        sweep.write_text(
            "parameters:\n  pools.prefill.replicas: [1, 2]\n  pools.decode.replicas: [2, 3]\n"
            "  pools.decode.device: [a100_sxm, h100_sxm]\n"
        )
        points = sweep_points(disagg, sweep)
        run_sweep(points[:1], args.warehouse, None, progress=False)  # warm the ingest and caches
        serial, parallel = [], []
        for _ in range(SWEEP_ROUNDS):  # alternated: a slow spell of the machine falls on both sides
            # serially with no cluster in the process (its scheduler's thread would slow the serial side)
            serial.append(timed(run_sweep, points, args.warehouse, None, progress=False))
            with dask_client(workers=2) as client:
                client.run(point_summary, points[0][1], str(args.warehouse))  # warm every worker alike
                parallel.append(timed(run_sweep, points, args.warehouse, client, progress=False))
                table = run_sweep(points, args.warehouse, client, progress=False)
        same = table.equals(run_sweep(points, args.warehouse, None, progress=False))
    ratios = [s / p for s, p in zip(serial, parallel, strict=True)]
    result["sweep_8_multistage_points"] = {
        "serial_s_all": [round(x, 2) for x in serial],
        "dask_2_workers_s_all": [round(x, 2) for x in parallel],
        "serial_s_median": round(statistics.median(serial), 2),
        "dask_2_workers_s_median": round(statistics.median(parallel), 2),
        "speedup": round(statistics.median(serial) / statistics.median(parallel), 2),
        "speedup_best": round(min(serial) / min(parallel), 2),
        "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
        "dask_equals_serial": bool(same),
    }
    (REPO / "benchmarks/results/replay.json").write_text(json.dumps(result, indent=1) + "\n")
    update_headline(
        {
            "azure_replay_process_s": result["azure_conv"]["wall_s_best"],
            "azure_replay_loop_s": result["azure_conv"]["loop_s_best"],
            "mooncake_kv_tiers_process_s": result["mooncake_kv_tiers"]["wall_s_best"],
            "multistage_sweep_speedup_2_workers": result["sweep_8_multistage_points"]["speedup"],
        }
    )
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
