"""Case study 4: disaggregated vs colocated prefill and decode, including decode on another device."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .common import Study, markdown_table

LOG = "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
LOADS = (1, 4, 8)
CONFIGS = {
    "colocated 4x H100": ["clients.chat.pipeline=colocated"],
    "2x H100 prefill + 2x H100 decode": ["clients.chat.pipeline=disagg", "pools.decode.device=h100_sxm"],
    "2x H100 prefill + 2x A100 decode": ["clients.chat.pipeline=disagg", "pools.decode.device=a100_sxm"],
}


def disaggregation(study: Study) -> dict:
    llm = {"model": "llama-3.1-8b", "framework": "vllm"}
    base = {
        "name": "disagg",
        "clients": [{"name": "chat", "source": {"kind": "log", "log": study.log(LOG)}, "pipeline": "colocated"}],
        "pools": [
            {**llm, "name": "colocated", "device": "h100_sxm", "replicas": 4, "router": "least_outstanding"},
            {
                **llm,
                "name": "prefill",
                "device": "h100_sxm",
                "replicas": 2,
                "batching": {"policy": "continuous", "order": "prefill_first", "max_batched_tokens": 16384},
            },
            {**llm, "name": "decode", "device": "h100_sxm", "replicas": 2, "router": "least_outstanding"},
        ],
        "links": [{"name": "nic", "like": "h100_sxm.network"}],
        "pipelines": {
            "colocated": {"stages": [{"name": "generate", "type": "llm", "pool": "colocated"}]},
            "disagg": {
                "stages": [
                    {"name": "prefill", "type": "prefill", "pool": "prefill"},
                    {"name": "transfer", "type": "kv_transfer", "link": "nic"},
                    {"name": "decode", "type": "decode", "pool": "decode"},
                ]
            },
        },
        "slo": {"ttft_ms": 1000, "tpot_ms": 50},
    }
    variants = [
        ({"config": name, "load": load}, [*sets, f"clients.chat.source.rate_scale={load}"])
        for name, sets in CONFIGS.items()
        for load in LOADS
    ]
    table, _ = study.run(base, variants)  # a configuration's unused pools are left out of its cost

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in CONFIGS:
        g = table[table["config"] == name].sort_values("load")
        axes[0].plot(g["load"], g["ttft_p99_ms"], marker="o", label=name)
        axes[1].plot(g["load"], g["tpot_p99_ms"], marker="o", label=name)
        axes[2].plot(g["load"], g["goodput_req_per_s"], marker="o", label=name)
    axes[0].set(xlabel="load (x the logged rate)", ylabel="TTFT p99 (ms)", title="time to first token", yscale="log")
    axes[1].set(xlabel="load (x the logged rate)", ylabel="TPOT p99 (ms)", title="time per output token")
    axes[2].set(xlabel="load (x the logged rate)", ylabel="goodput (req/s within the SLOs)", title="goodput")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Disaggregated vs colocated serving: Llama-3.1-8B on the Azure 2023 conversation log")
    study.figure(fig, "disagg.png")
    plt.close(fig)

    top = table[table["load"] == max(LOADS)].set_index("config")
    colo, same, mixed = (top.loc[n] for n in CONFIGS)
    finding = (
        f"At {max(LOADS)}x the logged load, splitting four H100s into two prefill and two decode replicas moves "
        f"TPOT p99 from {colo['tpot_p99_ms']:.1f} to {same['tpot_p99_ms']:.1f} ms and TTFT p99 from "
        f"{colo['ttft_p99_ms']:.0f} to {same['ttft_p99_ms']:.0f} ms; decoding on A100s instead gives "
        f"{mixed['tokens_per_dollar'] / colo['tokens_per_dollar']:.2f}x the colocated tokens per dollar at "
        f"{mixed['tpot_p99_ms']:.1f} ms TPOT p99."
    )
    shown = table[
        [
            "config",
            "load",
            "ttft_p50_ms",
            "ttft_p99_ms",
            "tpot_p50_ms",
            "tpot_p99_ms",
            "goodput_req_per_s",
            "cost_usd",
            "tokens_per_dollar",
        ]
    ]
    body = (
        "Colocated: chunked prefill mixed into decode batches on four H100s. Disaggregated: prefill-first "
        "replicas emit the first token and hand the prompt's KV (128 KiB a token) over a 400 Gb/s NIC, shared "
        "by concurrent transfers, to decode replicas on H100 or A100. Costs count the pools each configuration "
        "uses (the others are left out), at the catalog's on-demand prices.\n\n" + markdown_table(shown)
    )
    return study.write(
        "Disaggregated vs colocated prefill and decode",
        finding,
        f"Azure LLM inference trace 2023, conversation (`{LOG}`).",
        body,
        table,
        {
            "tpot_p99_ms_at_max_load": {n: round(float(top.loc[n]["tpot_p99_ms"]), 2) for n in CONFIGS},
            "tokens_per_dollar_ratio_a100_decode": round(
                float(mixed["tokens_per_dollar"] / colo["tokens_per_dollar"]), 3
            ),
        },
        (
            "tokens per dollar, A100 decode / colocated H100",
            round(float(mixed["tokens_per_dollar"] / colo["tokens_per_dollar"]), 3),
        ),
    )
