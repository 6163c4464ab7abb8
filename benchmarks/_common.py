"""Shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil


def peak_rss(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run a command (in `env`, or this one's); (wall seconds, peak RSS bytes sampled every 5 ms, stdout). Exits on
    failure."""
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.005)
    out, err = child.communicate()
    if child.returncode:
        sys.exit(f"{cmd} failed: {err}")
    return time.perf_counter() - t0, peak, out


HEADLINE = Path(__file__).resolve().parent / "results" / "headline.json"


def update_headline(figures: dict) -> None:
    """Merge a benchmark's headline figures into results/headline.json (what `dvc metrics show` lists)."""
    doc = json.loads(HEADLINE.read_text()) if HEADLINE.exists() else {}
    doc.update(figures)
    HEADLINE.write_text(json.dumps(dict(sorted(doc.items())), indent=1) + "\n")


def validate_run(description: str) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """From the command line of a script reading a `hermes-sim validate silicon --out` run: the silicon CSV (rows
    by id), that run's rows.csv, and the warehouse it ran on."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--silicon", type=Path, default=Path("../shared/data/e2e/silicon_h100.csv"))
    ap.add_argument("--rows", type=Path, required=True, help="rows.csv of `hermes-sim validate silicon --out`")
    ap.add_argument("-w", "--warehouse", type=Path, required=True)
    args = ap.parse_args()
    silicon = pd.read_csv(args.silicon).set_index("id", drop=False)
    rows = pd.read_csv(args.rows)
    return silicon, rows[rows["id"].isin(silicon.index)], args.warehouse


def resimulated(
    row: pd.Series,
    fitted,
    warehouse: Path,
    eager_us: float | None = None,
    short: int = 0,
    rounds: int | None = None,
    token_budget: int | None = None,
):
    """(mean TTFT ms, mean TPOT ms) of a silicon row's benchmark simulated again with the parameters validate fitted
    for it (`fitted`: its rows.csv record), the eager floor at eager_us where given, the replica's sequence limit
    at clients - short, each client sending `rounds` requests and the replica's token budget per iteration at
    `token_budget` where given. With none of them, it gives back rows.csv's predictions."""
    from hermes_sim.replay import validate as v
    from hermes_sim.replay.run import simulate

    overhead = (fitted.step_overhead_us, fitted.sequence_overhead_us, fitted.broadcast_overhead_us)
    eager = fitted.eager_layer_us if eager_us is None else eager_us
    scenario = v.scenario_for(
        row, overhead, fitted.client_length_spread, fitted.frontend_latency_us, eager, rounds or v.ROUNDS
    )
    if short:
        scenario.pools[0].batching.max_num_seqs = v.concurrency(row) - short
    if token_budget:
        scenario.pools[0].batching.max_batched_tokens = token_budget
    req = simulate(scenario, warehouse)["requests"]
    req = req[req.status == "completed"]
    return float(req.ttft_ms.mean()), float(req.tpot_ms.mean())


def median_p90_ape(pred: pd.Series, meas: pd.Series) -> list[float]:
    """[median, p90] absolute percentage error (%), 2 decimals."""
    e = (pred / meas - 1).abs() * 100
    return [round(float(e.median()), 2), round(float(e.quantile(0.9)), 2)]
