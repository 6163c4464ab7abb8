"""Case study 1: reasoning. How end-to-end latency, time to the first answer token and throughput grow with the
reasoning share of output tokens and the number of reasoning rounds (each but the last followed by a tool
call), on two hardware mixes serving Qwen3-32B."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .common import Study, markdown_table, ms_to_s

LOG = "requests/servegen/reason/deepseek-r1/chunk-10-trace.csv"
MIXES = {"2x H100 TP2": ("h100_sxm", 2), "2x A100 TP2": ("a100_sxm", 2)}
SHARES = (0.0, 0.5, "log")
ROUNDS = (1, 2, 4)


def reasoning(study: Study) -> dict:
    base = {
        "name": "reasoning",
        "clients": [{"name": "r1", "source": {"kind": "log", "log": study.log(LOG)}, "pipeline": "think"}],
        "pools": [
            {
                "name": "qwen",
                "device": "h100_sxm",
                "replicas": 2,
                "tp": 2,
                "model": "qwen3-32b",
                "framework": "vllm",
                "max_model_len": 40960,
                "memory": {"prefix_caching": True},
            }
        ],
        "pipelines": {
            "think": {
                "stages": [
                    {
                        "name": "reason",
                        "type": "reasoning",
                        "pool": "qwen",
                        "rounds": 1,
                        "share": "log",
                        "tool_ms": 250,
                        "tool_tokens": 300,
                    },
                    {"name": "answer", "type": "llm", "pool": "qwen"},
                ]
            }
        },
        "slo": {"ttft_ms": 3000, "tpot_ms": 80},
    }
    variants = []
    for mix, (dev, tp) in MIXES.items():
        for share in SHARES:
            for rounds in ROUNDS if share else (1,):
                variants.append(
                    (
                        {"mix": mix, "share": share, "rounds": rounds},
                        [
                            f"pools.qwen.device={dev}",
                            f"pools.qwen.tp={tp}",
                            f"pipelines.think.stages.reason.share={share}",
                            f"pipelines.think.stages.reason.rounds={rounds}",
                        ],
                    )
                )
    table, summaries = study.run(base, variants)
    table["answer_ttft_p50_ms"] = [s.get("answer_ttft_ms", s["ttft_ms"]).get("p50") for s in summaries]
    table["e2e_p50_ms"] = [s["e2e_ms"].get("p50") for s in summaries]
    table["share"] = table["share"].astype(str)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for mix, style in zip(MIXES, ("-", "--"), strict=True):
        for share, color in zip(SHARES, ("tab:grey", "tab:blue", "tab:red"), strict=True):
            g = table[(table["mix"] == mix) & (table["share"] == str(share))].sort_values("rounds")
            label = f"{mix}, share {'logged' if share == 'log' else share}"
            for ax, col in zip(
                axes, ("e2e_p50_ms", "answer_ttft_p50_ms", "throughput_output_tokens_per_s"), strict=True
            ):
                y = g[col] / (1e3 if col.endswith("_ms") else 1)
                ax.plot(g["rounds"], y, style, marker="o", color=color, label=label)
    axes[0].set(xlabel="reasoning rounds", ylabel="end-to-end latency p50 (s)", title="end-to-end latency")
    axes[1].set(xlabel="reasoning rounds", ylabel="time to first answer token p50 (s)", title="first answer token")
    axes[2].set(xlabel="reasoning rounds", ylabel="output tokens per second", title="throughput")
    for ax in axes:
        ax.set_xticks(ROUNDS)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Reasoning: Qwen3-32B on the ServeGen DeepSeek-R1 workload")
    study.figure(fig, "reasoning.png")
    plt.close(fig)

    def pick(mix, share, rounds, col):
        row = table[(table["mix"] == mix) & (table["share"] == str(share)) & (table["rounds"] == rounds)]
        return float(row[col].iloc[0])

    h100, a100 = MIXES
    none, one, four = (
        pick(h100, 0.0, 1, "answer_ttft_p50_ms"),
        pick(h100, "log", 1, "answer_ttft_p50_ms"),
        pick(h100, "log", 4, "answer_ttft_p50_ms"),
    )
    e2e_one, e2e_four = pick(h100, "log", 1, "e2e_p50_ms"), pick(h100, "log", 4, "e2e_p50_ms")
    mean_share = table.attrs.get("share")
    finding = (
        f"At the logged reasoning share, the first answer token comes {ms_to_s(one)} s after arrival (p50) on "
        f"{h100} with one round, against {ms_to_s(none)} s without reasoning, and {ms_to_s(four)} s with four "
        f"rounds (end-to-end {ms_to_s(e2e_one)} s -> {ms_to_s(e2e_four)} s); on {a100} the same four-round "
        f"answer takes {ms_to_s(pick(a100, 'log', 4, 'answer_ttft_p50_ms'))} s."
    )
    shown = table[
        [
            "mix",
            "share",
            "rounds",
            "ttft_p50_ms",
            "answer_ttft_p50_ms",
            "e2e_p50_ms",
            "e2e_p99_ms",
            "throughput_output_tokens_per_s",
            "tokens_per_dollar",
        ]
    ]
    body = (
        "Each request of the log reasons for `share x output` of its output tokens (`log`: its own logged "
        "`reason_ratio`), in `rounds` rounds; a 250 ms tool call adding 300 tokens follows each round but the "
        "last, then the answer is generated. A request's rounds stay on one replica, whose prefix cache keeps "
        "the context. TTFT counts the first reasoning token (streamed); the first *answer* token comes after all "
        "the rounds.\n\n" + markdown_table(shown)
    )
    del mean_share
    return study.write(
        "Reasoning share and rounds",
        finding,
        f"ServeGen DeepSeek-R1 reasoning workload, client chunk 10 (`{LOG}`), Qwen3-32B.",
        body,
        table,
        {
            "answer_ttft_p50_s": {
                "no_reasoning": ms_to_s(none),
                "logged_share_1_round": ms_to_s(one),
                "logged_share_4_rounds": ms_to_s(four),
            }
        },
        ("s to the first answer token, 4 rounds, H100", ms_to_s(four)),
    )
