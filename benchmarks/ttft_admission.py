"""Does a campaign's server run every request its clients send? TTFT against one sequence slot fewer.

    hermes-sim validate silicon ../shared/data/e2e/silicon_h100.csv -w WH --out OUT
    python benchmarks/ttft_admission.py --silicon ../shared/data/e2e/silicon_h100.csv --rows OUT/rows.csv -w WH

A diagnostic of the measurement campaigns, not a model the replay uses. In a closed loop of C clients and a server
running up to C sequences, a client's next request starts at once. With one sequence slot fewer, in steady state
one request always waits for the next completion: about one completion interval, (osl x TPOT) / C. Its TTFT
then grows with the output length, which a server that runs every request never shows at low C (a request's
prompt and the running batch do not depend on osl).

For every held-out aggregated row of rows.csv, with the parameters validate fitted for it (its columns
step_overhead_us ... eager_layer_us: at k = 0 this gives back its predicted_ttft_ms to the bit), the row is
simulated again with the replica's sequence limit at C - 1 (k = 1). Printed and written to
benchmarks/results/ttft_admission.json, per campaign (the measurement file): TTFT and TPOT median / p90 APE at
k = 0 and k = 1, and per concurrency the median measured TTFT excess over the prediction (= k = 0) in completion
intervals (about 1 at C = 8 for a server one slot short, about 0 for one that is not). The campaign is this
script's grouping only: it names which measurements behave how, it is never a parameter of a prediction.

At each campaign's highest concurrency it asks the question validate's by_campaign raises there
(server_queues_before_first_token): would a limit on running sequences below the clients explain requests that
wait before their first token? Those held-out rows are simulated again with the limit at each share of
RUNNING_LIMIT_SHARES of the clients (1.0 gives back the predictions); per campaign, TTFT, TPOT and closed-loop
throughput (validate.closed_loop_throughput) median / p90 APE at each share.
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import median_p90_ape, resimulated, validate_run
from hermes_sim.replay import validate as v

RESULTS = Path(__file__).resolve().parent / "results" / "ttft_admission.json"
SLOTS_SHORT = (0, 1)
RUNNING_LIMIT_SHARES = (1.0, 0.85, 0.7)


def running_limits(silicon, rows, warehouse: Path) -> dict:
    """Per campaign, its held-out rows at its highest concurrency simulated with the running-sequence limit at each
    share of RUNNING_LIMIT_SHARES of the clients: TTFT, TPOT and throughput median / p90 APE (%)."""
    busy = rows[rows.concurrency == rows.groupby("campaign").concurrency.transform("max")].copy()
    prefixes = {}  # share -> the columns' prefix: the predictions at no limit, a re-simulation below it
    for share in RUNNING_LIMIT_SHARES:
        prefixes[share] = "predicted" if share == 1.0 else f"limit{share:g}"
        if share < 1.0:
            found = [
                resimulated(silicon.loc[r.id], r, warehouse, short=r.concurrency - round(share * r.concurrency))
                for r in busy.itertuples()
            ]
            busy[f"{prefixes[share]}_ttft_ms"], busy[f"{prefixes[share]}_tpot_ms"] = zip(*found, strict=True)
    out: dict = {}
    for name, g in busy.groupby("campaign"):
        out[name] = {"highest_concurrency": int(g.concurrency.iloc[0]), "rows": len(g)}
        for share, p in prefixes.items():
            out[name][f"{share:g}"] = {
                "ttft_median_p90_ape": median_p90_ape(g[f"{p}_ttft_ms"], g.measured_ttft_ms),
                "tpot_median_p90_ape": median_p90_ape(g[f"{p}_tpot_ms"], g.measured_tpot_ms),
                "throughput_median_p90_ape": median_p90_ape(
                    v.closed_loop_throughput(g, p), v.closed_loop_throughput(g)
                ),
            }
    return out


def main() -> None:
    silicon, rows, warehouse = validate_run(__doc__.splitlines()[0])
    rows = rows[rows.held_out & (rows["mode"] == "agg")].copy()
    for short in SLOTS_SHORT:
        found = [resimulated(silicon.loc[r.id], r, warehouse, short=short) for r in rows.itertuples()]
        rows[f"ttft_k{short}"], rows[f"tpot_k{short}"] = zip(*found, strict=True)
    drift = (rows.ttft_k0 - rows.predicted_ttft_ms).abs().max()
    rows["excess_intervals"] = v.unexplained_ttft_intervals(rows)  # what validate's by_campaign counts
    out: dict = {"held_out_rows": len(rows), "k0_max_difference_from_rows_csv_ms": round(float(drift), 6)}
    for name, g in [("all", rows), *rows.groupby("campaign")]:
        entry = {"rows": len(g)}
        for short in SLOTS_SHORT:
            entry[f"k{short}"] = {
                "ttft_median_p90_ape": median_p90_ape(g[f"ttft_k{short}"], g.measured_ttft_ms),
                "tpot_median_p90_ape": median_p90_ape(g[f"tpot_k{short}"], g.measured_tpot_ms),
            }
        if name != "all":
            entry["excess_completion_intervals_by_concurrency"] = {
                str(c): round(float(x), 2) for c, x in g.groupby("concurrency").excess_intervals.median().items()
            }
        out[name] = entry
    out["running_limit_at_highest_concurrency"] = running_limits(silicon, rows, warehouse)
    print(json.dumps(out, indent=1))
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
