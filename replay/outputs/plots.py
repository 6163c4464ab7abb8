"""PNG plots with titles and units: latency CDFs (SLO lines, p50 / p90 / p99 marks), the LLM timeline (batch
size and KV use against capacity), and for multi-stage pipelines where the time goes per stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = {
    "ttft_ms": "time to first token (ms)",
    "tpot_ms": "time per output token (ms)",
    "e2e_ms": "end-to-end latency (ms)",
}


def plots(result: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    slo = summary.get("slo", {})
    name = summary.get("scenario", "")
    req = result["requests"][result["requests"].status == "completed"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, col in zip(axes, ("ttft_ms", "tpot_ms", "e2e_ms"), strict=True):
        x = np.sort(req[col].dropna().to_numpy())
        if len(x):
            ax.plot(x, np.arange(1, len(x) + 1) / len(x), lw=1.2)
            for q, style in ((50, ":"), (90, "-."), (99, "--")):
                v = float(np.percentile(x, q))
                ax.axvline(v, color="grey", ls=style, lw=0.8, label=f"p{q} {v:,.1f} ms")
            ax.set_xscale("log")
        target = slo.get(col)
        if target:
            ax.axvline(target, color="red", lw=1.2, label=f"SLO {target:,.0f} ms")
        ax.set(xlabel=LABELS[col], ylabel="fraction of completed requests", title=LABELS[col].split(" (")[0])
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{name}: latency CDFs ({len(req):,} completed requests)")
    fig.tight_layout()
    paths = [out_dir / "latency_cdf.png"]
    fig.savefig(paths[0], dpi=100, metadata={"Software": None})
    plt.close(fig)

    tl = result["timeline"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    groups = tl.groupby(["pool", "replica"] if "pool" in tl else ["replica"])
    for key, g in list(groups)[:16]:
        label = "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        a1.plot(g.start_s, g.batch_size, lw=0.6, label=f"replica {label}")
        a2.plot(g.start_s, g.kv_used_blocks, lw=0.6)
    pools = summary.get("pools", {})
    for pname, p in pools.items():
        if p.get("kind") == "llm" and p.get("kv_tokens_per_replica"):
            block = 16
            cap = p["kv_tokens_per_replica"] / max(p.get("pp", 1), 1) / block
            a2.axhline(cap, color="red", lw=1, ls="--", label=f"{pname} KV capacity ({cap:,.0f} blocks)")
    a1.set(ylabel="batch size (sequences)", title=f"{name}: LLM replicas over time")
    a2.set(ylabel="KV blocks used", xlabel="simulated time (s)")
    if len(groups) > 1 or len(tl):
        a1.legend(fontsize=7, ncols=4, loc="upper right")
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    paths.append(out_dir / "timeline.png")
    fig.savefig(paths[-1], dpi=100, metadata={"Software": None})
    plt.close(fig)

    stages = summary.get("stages")
    if stages:
        names = list(stages)
        queue = [stages[s]["queue_ms"].get("mean", 0.0) for s in names]
        service = [stages[s]["service_ms"].get("mean", 0.0) for s in names]
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
        y = np.arange(len(names))
        ax.barh(y, queue, color="tab:orange", label="queueing")
        ax.barh(y, service, left=queue, color="tab:blue", label="service")
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set(xlabel="mean time per request (ms)", title=f"{name}: where the time goes, per stage")
        ax.legend(fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        paths.append(out_dir / "stages.png")
        fig.savefig(paths[-1], dpi=100, metadata={"Software": None})
        plt.close(fig)
    return paths
