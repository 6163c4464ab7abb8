"""Case study 2: hybrid CPU-accelerator RAG. Where query embedding and vector search should run (a Xeon CPU
pool or an H100), at which batch sizes and batching waits, and the latency / throughput frontier."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .common import Study, markdown_table

LOG = "requests/ragpulse/data/0_trace.jsonl"
PLACEMENTS = {
    "CPU (Xeon 8480+, 16 cores per replica)": [
        "pools.embedder.device=xeon_8480p",
        "pools.embedder.cores=16",
        "pools.search.device=xeon_8480p",
        "pools.search.cores=16",
        "pools.search.index.type=hnsw",
    ],
    "GPU (H100)": [
        "pools.embedder.device=h100_sxm",
        "pools.embedder.cores=null",
        "pools.search.device=h100_sxm",
        "pools.search.cores=null",
        "pools.search.index.type=flat",
    ],
}
BATCH = (8, 32)
WAIT_US = (500, 4000)
LOADS = {"1x": 0.02, "4x": 0.005}  # time_scale: the 7.7 h sample replayed 50x, 200x faster


def rag_placement(study: Study) -> dict:
    base = {
        "name": "rag",
        "clients": [{"name": "rag", "source": {"kind": "log", "log": study.log(LOG), "segment": 0}, "pipeline": "rag"}],
        "pools": [
            {
                "kind": "service",
                "name": "embedder",
                "device": "xeon_8480p",
                "cores": 16,
                "replicas": 2,
                "model": "bge-large-en-v1.5",
                "max_batch": 8,
                "max_wait_us": 500,
            },
            {
                "kind": "service",
                "name": "search",
                "device": "xeon_8480p",
                "cores": 16,
                "replicas": 2,
                "index": {"type": "hnsw", "vectors": 10_000_000, "dim": 1024},
                "max_batch": 8,
                "max_wait_us": 500,
            },
            {
                "kind": "service",
                "name": "reranker",
                "device": "h100_sxm",
                "model": "bge-reranker-large",
                "max_batch": 128,
                "max_wait_us": 2000,
            },
            {
                "name": "llm",
                "device": "h100_sxm",
                "replicas": 2,
                "model": "llama-3.1-8b",
                "framework": "vllm",
                "router": "least_outstanding",
            },
        ],
        "pipelines": {
            "rag": {
                "stages": [
                    {"name": "embed", "type": "embed", "pool": "embedder"},
                    {"name": "search", "type": "vector_search", "pool": "search", "top_k": 20},
                    {"name": "rerank", "type": "rerank", "pool": "reranker", "keep": 6},
                    {"name": "generate", "type": "llm", "pool": "llm"},
                ]
            }
        },
        "slo": {"ttft_ms": 1000, "tpot_ms": 100},
    }
    variants = []
    for place, sets in PLACEMENTS.items():
        for batch in BATCH:
            for wait in WAIT_US:
                for load, scale in LOADS.items():
                    label = {"placement": place, "max_batch": batch, "max_wait_us": wait, "load": load}
                    variants.append(
                        (
                            label,
                            [
                                *sets,
                                f"pools.embedder.max_batch={batch}",
                                f"pools.search.max_batch={batch}",
                                f"pools.embedder.max_wait_us={wait}",
                                f"pools.search.max_wait_us={wait}",
                                f"clients.rag.source.time_scale={scale}",
                            ],
                        )
                    )
    table, summaries = study.run(base, variants)

    def retrieval(s, q):
        return sum(
            s["stages"][st]["queue_ms"].get(q, 0) + s["stages"][st]["service_ms"].get(q, 0)
            for st in ("embed", "search", "rerank")
        )

    table["retrieval_p50_ms"] = [retrieval(s, "p50") for s in summaries]
    table["retrieval_p99_ms"] = [retrieval(s, "p99") for s in summaries]
    table["embed_tier"] = [", ".join(s["pools"]["embedder"]["cost_tiers"]) for s in summaries]
    table["search_tier"] = [", ".join(s["pools"]["search"]["cost_tiers"]) for s in summaries]

    fig, ax = plt.subplots(figsize=(8, 5))
    for place, marker in zip(PLACEMENTS, ("o", "s"), strict=True):
        g = table[table["placement"] == place]
        ax.scatter(g["throughput_req_per_s"], g["retrieval_p99_ms"], marker=marker, s=40, label=place)
        for _, r in g.iterrows():
            ax.annotate(
                f"b{r['max_batch']}/w{r['max_wait_us'] / 1e3:g}ms",
                (r["throughput_req_per_s"], r["retrieval_p99_ms"]),
                fontsize=6,
            )
    ax.set(
        xlabel="served requests per second",
        ylabel="retrieval latency p99: embed + search + rerank (ms)",
        title="Hybrid RAG on RAGPulse: where retrieval runs",
        yscale="log",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    study.figure(fig, "rag_frontier.png")
    plt.close(fig)

    high = table[table["load"] == "4x"]
    best = {place: high[high["placement"] == place].sort_values("retrieval_p99_ms").iloc[0] for place in PLACEMENTS}
    cpu, gpu = (best[p] for p in PLACEMENTS)
    finding = (
        f"At 4x the logged load, the best CPU placement (batch {cpu['max_batch']}, wait {cpu['max_wait_us']} us) "
        f"keeps retrieval p99 at {cpu['retrieval_p99_ms']:.1f} ms against {gpu['retrieval_p99_ms']:.1f} ms on the "
        f"H100 (batch {gpu['max_batch']}, wait {gpu['max_wait_us']} us), for {cpu['tokens_per_dollar']:,.0f} vs "
        f"{gpu['tokens_per_dollar']:,.0f} output tokens per dollar over the whole deployment."
    )
    shown = table[
        [
            "placement",
            "max_batch",
            "max_wait_us",
            "load",
            "retrieval_p50_ms",
            "retrieval_p99_ms",
            "ttft_p99_ms",
            "throughput_req_per_s",
            "tokens_per_dollar",
            "embed_tier",
            "search_tier",
        ]
    ]
    body = (
        "Query embedding (bge-large) and vector search (10M 1024-d vectors: HNSW on the CPUs, a flat scan on the "
        "GPU) run on two replicas of either placement; 20 candidates are reranked on an H100 and Llama-3.1-8B "
        "answers on two H100s. Each point's pools batch up to `max_batch` queries or wait `max_wait_us`. The "
        "tiers say how each pool was priced: no GPU vector-search measurement is in the data, so GPU search is "
        "priced at its roofline; CPU prices are transferred from this machine's faiss profile when one was "
        "calibrated (`hermes-sim profile cpu`), else roofline.\n\n" + markdown_table(shown)
    )
    return study.write(
        "Hybrid CPU-accelerator RAG",
        finding,
        f"RAGPulse RAG-serving trace, its first clock segment (`{LOG}`).",
        body,
        table,
        {
            "retrieval_p99_ms_4x": {
                "cpu": round(float(cpu["retrieval_p99_ms"]), 2),
                "gpu": round(float(gpu["retrieval_p99_ms"]), 2),
            }
        },
        (
            "retrieval p99 ms, GPU / CPU placement, 4x load",
            round(float(gpu["retrieval_p99_ms"] / cpu["retrieval_p99_ms"]), 3),
        ),
    )
