"""Where a closed loop's time goes, from its end-to-end rows alone: a decode iteration, and each request's prefill.

    hermes-sim validate silicon ../shared/data/e2e/silicon_h100.csv -w WH --out OUT
    python benchmarks/prefill_split.py --rows OUT/rows.csv -w WH

A diagnostic of the cost models behind `validate`, not a model the replay uses. In steady state a closed loop
admits X requests a second (validate.closed_loop_throughput) and each running request gains one token an
iteration, so a second holds 1 / TPOT iterations. Split a second into those iterations at T_decode each (an
iteration with no prompt tokens, at the running batch) and X prompts at P each (the time the server spends on one
request's prompt beyond a decode iteration: its prefill, and whatever else an iteration carrying a prompt costs,
such as launching its kernels outside a CUDA graph):

    1 = T_decode / TPOT + X x P,   so   TPOT = T_decode + (X x TPOT) x P.

That is linear in (T_decode, P). The rows of one campaign, deployment, prompt length and concurrency measured at
several output lengths fit both (statsmodels OLS: T_decode the intercept, P the slope), alike from the measured
TTFT and TPOT and from validate's predictions, so a TTFT or TPOT error splits into a prefill cost and a decode
cost the simulation got wrong. The fit assumes T_decode and P do not move with the output length (the running
batch's KV grows a little with it), and P is determined only where prompts take a fair share of the iterations
(X x TPOT, the share of iterations that carry one if each carries one): the per-campaign summary keeps groups
where that share, at the group's shortest output, is at least MIN_PROMPT_SHARE.

Printed and written to benchmarks/results/prefill_split.json: per group, both fits; per campaign and deployment,
the median ratio measured / simulated of P and of T_decode over its groups (1.0: the simulation prices it right).
The campaign is this script's grouping only (the measurement file), never a parameter of a prediction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.api as sm
from _common import validate_run
from hermes_sim.replay import validate as v
from tabulate import tabulate

RESULTS = Path(__file__).resolve().parent / "results" / "prefill_split.json"
MIN_PROMPT_SHARE = 0.2
GROUP = ["campaign", "deployment", "isl", "concurrency"]


def split(g: pd.DataFrame, prefix: str) -> tuple[float, float]:
    """(T_decode ms, P ms) of one group's rows, from their `prefix`_ttft_ms / _tpot_ms."""
    tpot = g[f"{prefix}_tpot_ms"].to_numpy()
    share = v.closed_loop_throughput(g, prefix).to_numpy() / 1000 * tpot  # X (per ms) x TPOT
    fit = sm.OLS(tpot, np.column_stack([np.ones_like(tpot), share])).fit()
    return float(fit.params[0]), float(fit.params[1])


def groups(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for key, g in rows.groupby(GROUP):
        if g.osl.nunique() < 2:
            continue
        measured, simulated = split(g, "measured"), split(g, "predicted")
        share = float((v.closed_loop_throughput(g) / 1000 * g.measured_tpot_ms).max())
        out.append(
            dict(zip(GROUP, key, strict=True))
            | {
                "osl": sorted(int(o) for o in g.osl.unique()),
                "prompt_share": round(share, 3),
                "measured_decode_ms": round(measured[0], 2),
                "measured_prefill_ms": round(measured[1], 2),
                "simulated_decode_ms": round(simulated[0], 2),
                "simulated_prefill_ms": round(simulated[1], 2),
            }
        )
    return pd.DataFrame(out)


def main() -> None:
    _, rows, _ = validate_run(__doc__.splitlines()[0])
    rows = rows[rows["mode"] == "agg"]
    table = groups(rows)
    table["prefill_ratio"] = table.measured_prefill_ms / table.simulated_prefill_ms
    table["decode_ratio"] = table.measured_decode_ms / table.simulated_decode_ms
    kept = table[table.prompt_share >= MIN_PROMPT_SHARE]
    summary = (
        kept.groupby(["campaign", "deployment"])
        .agg(
            groups=("isl", "size"),
            prefill_ratio_median=("prefill_ratio", "median"),
            decode_ratio_median=("decode_ratio", "median"),
        )
        .round(3)
        .reset_index()
    )
    print(tabulate(summary, headers="keys", showindex=False))
    doc = {
        "min_prompt_share": MIN_PROMPT_SHARE,
        "by_campaign_and_deployment": summary.to_dict(orient="records"),
        "groups": json.loads(table.round(3).to_json(orient="records")),
    }
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
