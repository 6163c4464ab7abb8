"""Which rows carry a framework's fitted eager floor? Every aggregated row simulated again at each candidate.

    hermes-sim validate silicon ../shared/data/e2e/silicon_h100.csv -w WH --out OUT
    python benchmarks/eager_floor.py --silicon ../shared/data/e2e/silicon_h100.csv --rows OUT/rows.csv -w WH

validate fits, per framework version, the host's time to launch one layer's kernels in an iteration run outside a
CUDA graph (eager_layer_us, one of validate.EAGER_LAYERS_US; an iteration with prompt tokens takes at least
layers x that), chosen by the calibration half's TPOT. This diagnostic asks where that choice comes from: every
aggregated row of FRAMEWORK (TensorRT-LLM) is simulated again at each candidate, everything else as
validate fitted it for the row (its rows.csv columns; the overhead plane is not refitted per candidate, so the
figures approximate what a calibration at that floor would give). At the fitted floor the simulation gives back
rows.csv's predictions to the bit. Printed and written to benchmarks/results/eager_floor.json: per measurement
campaign and half, TTFT and TPOT median / p90 APE at each floor; and the whole held-out half (every framework's
rows, the others at their predictions) with the framework at each floor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from _common import median_p90_ape, resimulated, validate_run
from hermes_sim.replay import validate as v

RESULTS = Path(__file__).resolve().parent / "results" / "eager_floor.json"
FRAMEWORK = "trtllm"


def _errors(pred_ttft: pd.Series, pred_tpot: pd.Series, rows: pd.DataFrame) -> dict:
    out = {
        metric: median_p90_ape(pred, rows[f"measured_{metric}_ms"])
        for metric, pred in (("ttft", pred_ttft), ("tpot", pred_tpot))
    }
    out["tpot_rows_over_15pct"] = int(((pred_tpot / rows.measured_tpot_ms - 1).abs() > 0.15).sum())
    return out


def main() -> None:
    silicon, rows, warehouse = validate_run(__doc__.splitlines()[0])
    rows = rows.reset_index(drop=True)
    mine = rows[(rows["mode"] == "agg") & (rows.backend == FRAMEWORK)]
    out: dict = {"framework": FRAMEWORK, "fitted_eager_layer_us": sorted(mine.eager_layer_us.unique().tolist())}
    by_floor = {}
    for us in v.EAGER_LAYERS_US:
        found = [resimulated(silicon.loc[r.id], r, warehouse, eager_us=us) for r in mine.itertuples()]
        by_floor[us] = pd.DataFrame(found, index=mine.index, columns=["ttft", "tpot"])
        print(f"eager floor {us:g} us a layer: {len(found)} rows simulated", flush=True)
    # each row at its own fitted floor gives back its rows.csv prediction
    own = pd.concat([by_floor[us].ttft[mine.eager_layer_us == us] for us in v.EAGER_LAYERS_US])
    out["largest_difference_from_rows_csv_at_the_fitted_floor_ms"] = float(
        (own - mine.predicted_ttft_ms[own.index]).abs().max()
    )
    out["by_campaign"] = {
        f"{campaign} ({'held out' if held else 'calibration'})": {
            f"{us:g}": _errors(by_floor[us].ttft[g.index], by_floor[us].tpot[g.index], g) for us in v.EAGER_LAYERS_US
        }
        for (campaign, held), g in mine.groupby(["campaign", "held_out"])
    }
    held = rows[rows.held_out]
    out["held_out_all_rows"] = {}
    for us in v.EAGER_LAYERS_US:
        ttft, tpot = held.predicted_ttft_ms.copy(), held.predicted_tpot_ms.copy()
        hit = held.index.intersection(mine.index)
        ttft[hit], tpot[hit] = by_floor[us].ttft[hit], by_floor[us].tpot[hit]
        out["held_out_all_rows"][f"{us:g}"] = _errors(ttft, tpot, held)
    print(json.dumps(out, indent=1))
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
