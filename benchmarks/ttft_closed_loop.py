"""Why `validate silicon` misses TTFT: the measured TTFT in units of one prompt's prefill.

    hermes-sim validate silicon ../shared/data/e2e/silicon_h100.csv -w WH --out OUT
    python benchmarks/ttft_closed_loop.py --silicon ../shared/data/e2e/silicon_h100.csv --rows OUT/rows.csv -w WH

For every aggregated dense-model row whose clients' KV fits the replica (C x (isl + osl) tokens: beyond it
requests wait for whole lifetimes, another regime), the single-prompt prefill p1 (one prompt of isl tokens on
the row's deployment, priced by the calibrated cost models with the framework's step overhead: `estimate`) and
the measured TTFT / p1, the number of prompts' worth of prefill a request waits for, its own included. Printed:
its median per framework, deployment, isl and concurrency C; then, per framework, the line TTFT / p1 = a + b C
fitted on the calibration half (median regression) and scored on the held-out half, beside the simulator's and
the plain roofline's errors on the same held-out rows (from rows.csv); and per measurement campaign (a grouping
of the report, never a parameter) and concurrency, the measured and the simulated TTFT in units of p1's kernels
alone (no eager floor, no step overhead) over the deployment and isl cells. Written to
benchmarks/results/ttft_closed_loop.json.

A diagnostic, not a model the replay uses: a line fitted to TTFT is a residual, not a mechanism. What it
separates: the cost models (p1, and the TPOT the same rows confirm) from how the benchmark's closed-loop
clients bunch up in front of the prefill. In full lockstep a request waits for half its round's prompts (b =
0.5); fully desynchronised clients wait for about their own prompt (a = 1, b = 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import statsmodels.api as sm
from _common import validate_run
from hermes_sim.replay import validate as v
from hermes_sim.replay.estimate import estimate

RESULTS = Path(__file__).resolve().parent / "results" / "ttft_closed_loop.json"


def _ape(pred: pd.Series, meas: pd.Series) -> dict:
    e = (pred - meas).abs() / meas
    return {"median_ape": round(float(e.median()), 4), "p90_ape": round(float(e.quantile(0.9)), 4)}


def single_prompt(row: pd.Series, warehouse: Path) -> dict:
    """p1 (one prompt of isl tokens prefilled alone) and whether every client's isl + osl tokens fit the KV."""
    one = estimate(
        device=row["system"],
        model=v._catalog_name(row["model_path"]),
        batch=1,
        input_tokens=v._int(row, "isl"),
        output_tokens=v._int(row, "osl"),
        warehouse_root=warehouse,
        tp=v._int(row, "tp_size"),
        dtype=v._weights_dtype(row),  # the KV cache's dtype is the framework's default, as validate's pools keep
        framework=v._framework(row) or None,
    )
    fits = v.concurrency(row) * one["kv_blocks_needed"] <= one["kv_blocks_per_replica"]
    # the kernels alone: without the eager floor and the step overhead the warehouse's fit adds
    overhead_ms = (one["step_overhead_us"] + one["sequence_overhead_us"]) / 1e3
    kernels_ms = one["prefill_ms"] - one["prefill_eager_floor_ms"] - overhead_ms
    return {"p1_ms": one["prefill_ms"], "p1_kernels_ms": kernels_ms, "kv_fits": fits}


def _spread(cells: pd.Series) -> list[float]:
    """[lowest, median, highest] of per-cell medians."""
    return [round(float(cells.min()), 2), round(float(cells.median()), 2), round(float(cells.max()), 2)]


def main() -> None:
    silicon, rows, warehouse = validate_run(__doc__.splitlines()[0])
    rows = rows[(rows["mode"] == "agg") & ~rows["moe"].astype(bool)]
    found = [single_prompt(silicon.loc[i], warehouse) for i in rows["id"]]
    rows = rows.assign(**pd.DataFrame(found, index=rows.index))
    out: dict = {"rows_kv_bound": int((~rows.kv_fits).sum())}
    rows = rows[rows.kv_fits]
    rows = rows.assign(prefills=rows.measured_ttft_ms / rows.p1_ms)
    table = rows.pivot_table(index=["backend", "tp", "isl"], columns="concurrency", values="prefills", aggfunc="median")
    print("measured TTFT / single-prompt prefill, median per framework, TP, isl (rows) and concurrency (columns)")
    print(table.round(2).to_string())
    out["by_framework"] = {}
    for fw, g in rows.groupby("backend"):
        cal, held = g[~g.held_out], g[g.held_out]
        if len(cal) < 5 or g.concurrency.nunique() < 2 or held.empty:
            continue
        line = sm.QuantReg(cal.prefills, sm.add_constant(cal.concurrency.astype(float))).fit(q=0.5)
        a, b = (float(x) for x in line.params)
        law = (a + b * held.concurrency) * held.p1_ms
        out["by_framework"][fw] = {
            "calibration_rows": len(cal),
            "held_out_rows": len(held),
            "a": round(a, 3),
            "b_per_client": round(b, 4),
            "held_out": {
                "p1_times_line": _ape(law, held.measured_ttft_ms),
                "simulator": _ape(held.predicted_ttft_ms, held.measured_ttft_ms),
                "roofline": _ape(held.roofline_ttft_ms, held.measured_ttft_ms),
            },
            "median_prefills_by_concurrency": {
                str(c): round(float(x), 3) for c, x in g.groupby("concurrency").prefills.median().items()
            },
        }
    # per measurement campaign and concurrency, TTFT in prompts' kernels (p1 without the floor or overhead), measured
    # and simulated: [lowest, median, highest] over the (TP, isl) cells' medians. A measured spread that stays narrow
    # across TP and isl where the simulated one does not says the simulation's queue, not its kernels, differs
    out["kernel_prefills_by_campaign"] = {
        str(campaign): {
            str(c): {
                side: _spread(cg.assign(x=cg[col] / cg.p1_kernels_ms).groupby(["tp", "isl"]).x.median())
                for side, col in (("measured", "measured_ttft_ms"), ("simulated", "predicted_ttft_ms"))
            }
            for c, cg in g.groupby("concurrency")
        }
        for campaign, g in rows.groupby("campaign")
    }
    print(json.dumps(out, indent=1))
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
