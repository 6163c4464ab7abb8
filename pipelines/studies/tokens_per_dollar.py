"""Case study 5: tokens per dollar. A deployment search on one workload (the Azure conversation log at 4x its
rate): the best deployment within the SLOs against the naive one (H100s only, the fewest that meet them)."""

from __future__ import annotations

from ...replay.scenario import parse
from ...replay.search import Space, best, frontiers, plot_frontier, run_search
from .common import Study, markdown_table

LOG = "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
SPACE = {
    "parameters": {
        "pools.llm.device": ["h100_sxm", "a100_sxm", "h200_sxm", "mi300x"],
        "pools.llm.replicas": [1, 2, 3, 4],
        "pools.llm.batching.max_batched_tokens": [2048, 8192],
    },
    "constraints": {"ttft_p99_ms": 2000, "tpot_p99_ms": 50},
    "strategy": "grid",
}


def tokens_per_dollar(study: Study) -> dict:
    base = parse(
        {
            "name": "tokens_per_dollar",
            "clients": [
                {
                    "name": "chat",
                    "source": {"kind": "log", "log": study.log(LOG), "rate_scale": 4.0},
                    "pipeline": "chat",
                }
            ],
            "pools": [
                {
                    "name": "llm",
                    "device": "h100_sxm",
                    "replicas": 2,
                    "model": "llama-3.1-8b",
                    "framework": "vllm",
                    "router": "least_outstanding",
                }
            ],
            "pipelines": {"chat": {"stages": [{"name": "generate", "type": "llm", "pool": "llm"}]}},
            "slo": {"ttft_ms": 2000, "tpot_ms": 50},
        }
    )
    space = Space.model_validate(SPACE)
    search, table, _ = run_search(base, space, study.warehouse, study.client, progress=False)
    params = list(space.parameters)
    top = best(table, space, params)
    naive_rows = table[table["feasible"] & (table["pools.llm.device"] == "h100_sxm")]
    naive = (
        naive_rows.sort_values(["devices", "tokens_per_dollar"], ascending=[True, False]).iloc[0]
        if len(naive_rows)
        else None
    )
    (study.out).mkdir(parents=True, exist_ok=True)
    plot_frontier(table, study.out / "search_pareto.png", "Deployment search: Llama-3.1-8B, Azure conversation log x4")
    study.figures.append("search_pareto.png")
    if not top["found"] or naive is None:
        finding = "No deployment in the space meets the SLOs; see the nearest points below."
        ratio = None
    else:
        f = top["figures"]
        ratio = f["tokens_per_dollar"] / naive["tokens_per_dollar"]
        finding = (
            f"The best deployment within TTFT p99 <= 2 s and TPOT p99 <= 50 ms, {f['pools.llm.replicas']}x "
            f"{f['pools.llm.device']} ({f['pools.llm.batching.max_batched_tokens']}-token budget), serves "
            f"{f['tokens_per_dollar']:,.0f} output tokens per dollar, {ratio:.2f}x the naive all-H100 deployment "
            f"({int(naive['pools.llm.replicas'])}x H100, {naive['tokens_per_dollar']:,.0f}); "
            f"{f['calibrated_share']:.0%} of its op prices were measured on that device (the rest transferred)."
        )
    shown = table[
        [
            *params,
            "devices",
            "cost_per_hour_usd",
            "ttft_p99_ms",
            "tpot_p99_ms",
            "tokens_per_dollar",
            "calibrated_share",
            "feasible",
        ]
    ]
    body = (
        f"{len(search.points)} points (device x replicas x chunk budget), each a full replay, as Dask tasks. "
        "Devices without measurements in the warehouse are priced by transfer from the nearest calibrated "
        "device (`calibrated_share` < 1): treat their figures with that in mind.\n\n" + markdown_table(shown, 2)
    )
    return study.write(
        "Tokens per dollar",
        finding,
        f"Azure LLM inference trace 2023, conversation (`{LOG}`), at 4x its rate.",
        body,
        table,
        {
            "tokens_per_dollar_gain": round(ratio, 3) if ratio else None,
            "points": len(search.points),
            "best": top.get("point"),
            "frontier": [
                {k: r[k] for k in (*params, "tokens_per_dollar", "ttft_p99_ms")}
                for r in frontiers(table)["tokens_per_dollar_vs_ttft_p99"]
            ],
        },
        ("tokens per dollar, best / all-H100", round(ratio, 3) if ratio else None),
    )
