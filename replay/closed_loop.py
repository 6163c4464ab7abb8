"""What a closed loop's TTFT and TPOT imply, measured or simulated alike: its throughput, the share of a request's
life before its first token, and its time split into decode iterations and prompts.

`validate silicon` scores these beside TTFT and TPOT: a closed loop's latencies move when a server changes where
its requests wait, while its throughput and its decode / prompt split say whether the simulation got the serving
capacity and the cost of each kind of iteration right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm

# prompt_and_decode_costs: a group's prompt cost is determined where prompts take at least this share of the
# iterations at its shortest output (below it, the prompt term is a small correction to TPOT and its fit is noise)
MIN_PROMPT_SHARE = 0.2
# ... reported per configuration (SPLIT_SUMMARY); the rows of one configuration, prompt length and load measured at
# several output lengths form a group (SPLIT_GROUP)
SPLIT_SUMMARY = ("device", "backend", "backend_version", "model", "deployment")
SPLIT_GROUP = (*SPLIT_SUMMARY, "isl", "concurrency")


def _lifetime_ms(table: pd.DataFrame, prefix: str) -> pd.Series:
    """Each row's request lifetime: TTFT + (osl - 1) x TPOT."""
    return table[f"{prefix}_ttft_ms"] + (table.osl - 1) * table[f"{prefix}_tpot_ms"]


def closed_loop_throughput(table: pd.DataFrame, prefix: str = "measured") -> pd.Series:
    """Requests per second of each row's closed loop, by Little's law: its clients each keep one request in flight
    for its lifetime, so the loop completes concurrency / lifetime a second. Derived alike from the measured and
    the predicted TTFT and TPOT, it compares the serving capacity apart from where a request waits (before its
    first token, or in the batch)."""
    return table.concurrency / (_lifetime_ms(table, prefix) / 1000)


def ttft_share(table: pd.DataFrame, prefix: str = "measured") -> pd.Series:
    """The share of each row's request lifetime spent before its first token."""
    return table[f"{prefix}_ttft_ms"] / _lifetime_ms(table, prefix)


def prompt_share(table: pd.DataFrame, prefix: str = "measured") -> pd.Series:
    """X x TPOT: the closed loop's prompts per iteration (X its throughput per ms), the share of iterations that
    carry a prompt if each carries one."""
    return closed_loop_throughput(table, prefix) / 1000 * table[f"{prefix}_tpot_ms"]


def decode_and_prompt_ms(group: pd.DataFrame, prefix: str = "measured") -> tuple[float, float]:
    """(T_decode, P) in ms from one group's rows: the same configuration and load at several output lengths.

    In steady state each running request gains one token an iteration, so a second holds 1 / TPOT iterations;
    split it into those iterations at T_decode each (no prompt tokens, at the running batch) and X prompts at P
    each (what the server spends on one request's prompt beyond a decode iteration: its prefill, and whatever
    else an iteration carrying a prompt costs): 1 = T_decode / TPOT + X x P, so TPOT = T_decode + (X x TPOT) x P,
    linear in both (statsmodels OLS: T_decode the intercept, P the slope). It assumes neither moves with the
    output length (the batch's KV grows a little with it)."""
    tpot = group[f"{prefix}_tpot_ms"].to_numpy(dtype=float)
    share = prompt_share(group, prefix).to_numpy(dtype=float)
    fit = sm.OLS(tpot, np.column_stack([np.ones_like(tpot), share])).fit()
    return float(fit.params[0]), float(fit.params[1])


def prompt_and_decode_costs(table: pd.DataFrame) -> list[dict]:
    """Per configuration (SPLIT_SUMMARY) of the aggregated rows: the cost of a prompt and of a decode iteration the
    measurements imply, over the simulation's (decode_and_prompt_ms on the measured and on the predicted TTFT and
    TPOT of each group of SPLIT_GROUP measured at two output lengths or more), median over the groups where
    prompts take at least MIN_PROMPT_SHARE of the iterations. 1.0: the simulation prices that kind of iteration
    right; a TTFT or TPOT error then splits into the two costs, or lies in neither (where requests wait)."""
    rows = table[table["mode"] == "agg"]
    found = []
    for key, g in rows.groupby(list(SPLIT_GROUP), sort=True, dropna=False):
        if g.osl.nunique() < 2 or prompt_share(g).max() < MIN_PROMPT_SHARE:
            continue
        (decode, prompt), (sim_decode, sim_prompt) = (decode_and_prompt_ms(g, p) for p in ("measured", "predicted"))
        found.append((*key[: len(SPLIT_SUMMARY)], prompt / sim_prompt, decode / sim_decode))
    ratios = pd.DataFrame(found, columns=[*SPLIT_SUMMARY, "prompt", "decode"])
    return [
        {name: None if pd.isna(value) else value for name, value in zip(SPLIT_SUMMARY, key, strict=True)}
        | {
            "groups": len(g),
            "prompt_cost_measured_over_simulated": round(float(g.prompt.median()), 3),
            "decode_iteration_measured_over_simulated": round(float(g.decode.median()), 3),
        }
        for key, g in ratios.groupby(list(SPLIT_SUMMARY), sort=True, dropna=False)
    ]
