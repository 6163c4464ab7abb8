"""How much of the TTFT miss could two benchmark settings the silicon CSV does not record explain?

    hermes-sim validate silicon ../shared/data/e2e/silicon_h100.csv -w WH --out OUT
    python benchmarks/ttft_client_settings.py --silicon ../shared/data/e2e/silicon_h100.csv --rows OUT/rows.csv -w WH

A diagnostic of validate's stand-ins, not a model the replay uses. Two settings of a row's benchmark are not in
the CSV, and validate takes a fixed value for each:
- the requests each client sends (validate.ROUNDS = 8). The profiling phase opens with every client sending at
  once (a burst that waits behind a whole round of prompts), so the burst's weight in the mean TTFT is 1 /
  requests. AIConfigurator's benchmark template sends 50 a client, Dynamo's perf script 10;
- TRT-LLM's token budget per iteration (validate.framework_batching: AIConfigurator's generator rule, isl + 1500 +
  max batch for an aggregated engine, so about one whole prompt an iteration), against TRT-LLM's own default
  max_num_tokens (8192).

Every aggregated row of rows.csv is simulated again with the parameters validate fitted for it (its overhead,
spread, eager floor and frontend columns, fitted at validate's values: at those values this gives back its
predictions to the bit), with each value of REQUESTS_PER_CLIENT in turn and, for TRT-LLM rows, with TRT-LLM's
default budget. Per framework and half (calibration / held out): TTFT and TPOT median / p90 APE (%). Written to
benchmarks/results/ttft_client_settings.json. The simulations run as tasks on a local Dask cluster of WORKERS processes.

A setting that fits one framework's rows better on its calibration half and not on the other half says that
the benchmark's real value differs between campaigns; only a value better on both halves would be a finding.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from _common import median_p90_ape, resimulated, validate_run
from hermes_sim.replay import validate as v
from hermes_sim.replay.parallel import dask_client, map_ordered

RESULTS = Path(__file__).resolve().parent / "results" / "ttft_client_settings.json"
REQUESTS_PER_CLIENT = (4, v.ROUNDS, 16, 50)
TRTLLM_DEFAULT_MAX_NUM_TOKENS = 8192  # TRT-LLM's BuildConfig / LLM API default
WORKERS = 2


def _simulated(item: tuple, warehouse: str) -> tuple[float, float]:
    row, fitted, rounds, budget = item
    return resimulated(row, fitted, Path(warehouse), rounds=rounds, token_budget=budget)


def _scores(rows: pd.DataFrame, ttft: pd.Series, tpot: pd.Series) -> dict:
    out = {}
    for half, held in (("calibration", False), ("held_out", True)):
        x = rows.held_out == held
        out[half] = {
            "rows": int(x.sum()),
            "ttft_median_p90_ape": median_p90_ape(ttft[x], rows.measured_ttft_ms[x]),
            "tpot_median_p90_ape": median_p90_ape(tpot[x], rows.measured_tpot_ms[x]),
        }
    return out


def main() -> None:
    silicon, rows, warehouse = validate_run(__doc__.splitlines()[0])
    rows = rows[rows["mode"] == "agg"].reset_index(drop=True)
    variants = [(f"requests_per_client={n}", rows, n, None) for n in REQUESTS_PER_CLIENT]
    trtllm = rows[rows.backend == "trtllm"].reset_index(drop=True)
    default = TRTLLM_DEFAULT_MAX_NUM_TOKENS
    variants.append((f"trtllm_max_num_tokens={default}", trtllm, None, default))
    items = [
        (silicon.loc[r.id], r, rounds, budget) for _, subset, rounds, budget in variants for _, r in subset.iterrows()
    ]
    with dask_client(WORKERS) as client:
        found = iter(map_ordered(_simulated, items, client, warehouse=str(warehouse)))
    out: dict = {}
    for name, subset, _, _ in variants:
        sims = [next(found) for _ in range(len(subset))]
        ttft = pd.Series([t for t, _ in sims], index=subset.index)
        tpot = pd.Series([p for _, p in sims], index=subset.index)
        for framework, group in subset.groupby("backend"):
            out.setdefault(framework, {})[name] = _scores(group, ttft[group.index], tpot[group.index])
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
