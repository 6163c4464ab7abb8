"""A finished simulation as tables and a summary: requests (one row each, with every stage's queue and service
time, pool and replica, the critical path, tokens and KV figures), the LLM iteration timeline, service batches,
link transfers; and the summary (latency percentiles, throughput, goodput under the SLOs, per stage, pool,
link, tier and client, energy, cost, tokens per dollar, rejections by reason, and every assumption standing in
for a measurement)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

from ..scenario import Scenario


def _ms(a, b) -> float:
    return (a - b) * 1e3 if a is not None and b is not None else np.nan


def requests_frame(sim) -> pd.DataFrame:
    runs = sorted(sim.requests, key=lambda r: r.id)
    n = len(runs)
    ok = np.array([r.reason is None for r in runs], dtype=bool)

    def times(get) -> np.ndarray:
        return np.array([np.nan if (v := get(r)) is None else v for r in runs], dtype=float)

    arrival = times(lambda r: r.arrival)
    admitted = times(lambda r: r.start[r.graph.answer])
    first, completion = times(lambda r: r.first_token), times(lambda r: r.completion)
    output = np.array([r.generated if r.reason is None else max(r.output, 1) for r in runs], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(ok & (output > 1), (completion - first) * 1e3 / np.maximum(output - 1, 1), np.nan)
    multi = len(sim.clients) > 1 or len(sim.graphs) > 1
    cols: dict = {
        "request_id": np.array([r.id for r in runs], dtype=np.int64),
        "replica": np.array([r.replicas[r.graph.answer] for r in runs], dtype=np.int64),
        "status": np.where(ok, "completed", "rejected"),
        "reason": [r.reason for r in runs],
        "arrival_s": arrival,
        "admitted_s": admitted,
        "first_token_s": first,
        "completion_s": completion,
        "input_tokens": np.array([r.prompt for r in runs], dtype=np.int64),
        "output_tokens": output,
        "queue_ms": np.where(ok, (admitted - arrival) * 1e3, np.nan),
        "ttft_ms": np.where(ok, (first - arrival) * 1e3, np.nan),
        "tpot_ms": tpot,
        "e2e_ms": np.where(ok, (completion - arrival) * 1e3, np.nan),
        "preemptions": np.array([r.preemptions for r in runs], dtype=np.int64),
        "prefix_hit_tokens": np.array([r.hit_tokens for r in runs], dtype=np.int64),
        "prefill_ms": np.where(ok, np.array([r.prefill_s for r in runs], dtype=float) * 1e3, np.nan),
    }
    single_stage = all(len(g.stages) == 1 for g in sim.graphs.values())
    if multi:
        cols["client"] = [sim.clients[r.client].spec.name for r in runs]
        cols["pipeline"] = [r.graph.name for r in runs]
    if single_stage and not multi:
        return pd.DataFrame(cols)
    cols["context_tokens"] = np.array([r.context for r in runs], dtype=np.int64)
    cols["retrieved_tokens"] = np.array([r.retrieved_tokens for r in runs], dtype=np.int64)
    cols["reasoning_tokens"] = np.array([r.reasoning_tokens for r in runs], dtype=np.int64)
    cols["critical_path"] = [r.graph.critical_path(r) for r in runs]
    names = list(dict.fromkeys(s.name for g in sim.graphs.values() for s in g.stages))
    for name in names:
        pool, start = [None] * n, np.full(n, np.nan)
        queue, service = np.full(n, np.nan), np.full(n, np.nan)
        for k, r in enumerate(runs):
            stage = r.graph.by_name.get(name)
            if stage is None:
                continue
            i = stage.index
            pool[k] = r.pools[i]
            if r.end[i] is not None:
                start[k] = r.start[i]
                queue[k] = _ms(r.start[i], r.ready[i])
                service[k] = _ms(r.end[i], r.start[i])
        cols[f"{name}_pool"], cols[f"{name}_start_s"] = pool, start
        cols[f"{name}_queue_ms"], cols[f"{name}_service_ms"] = queue, service
    stats = sorted({k for r in runs for k in r.stats})
    for k in stats:
        values = [r.stats.get(k) for r in runs]
        cols[k] = (
            values
            if any(isinstance(v, str) for v in values)
            else np.array([np.nan if v is None else v for v in values], dtype=float)
        )
    return pd.DataFrame(cols)


def timeline_frame(sim) -> pd.DataFrame:
    """One row per LLM iteration, or per run of decode iterations whose batch did not change (tokens: the row's
    total; kv_used_blocks: at its end)."""
    llm = [p for p in sim.pools.values() if p.kind == "llm"]
    reps = [(p.name, rep) for p in llm for rep in p.replicas]
    lines, counts = [t for _, rep in reps for t in rep.timeline], [len(rep.timeline) for _, rep in reps]
    cols = {
        "pool": np.repeat(np.array([name for name, _ in reps], dtype=str), counts),
        "replica": np.repeat(np.array([rep.index for _, rep in reps], dtype=np.int64), counts),
    }
    names = ("start_s", "end_s", "iterations", "batch_size", "tokens", "kv_used_blocks")
    for k, (name, dtype) in enumerate(zip(names, (float, float, int, int, int, int), strict=True)):
        cols[name] = np.fromiter((t[k] for t in lines), dtype=dtype, count=len(lines))  # column by column: fast
    frame = pd.DataFrame(cols)
    return frame.drop(columns="pool") if len(llm) == 1 and len(sim.pools) == 1 else frame


def batches_frame(sim) -> pd.DataFrame:
    rows = [(p.name, *t) for p in sim.pools.values() if p.kind == "service" for t in p.timeline]
    return pd.DataFrame(rows, columns=["pool", "replica", "start_s", "end_s", "jobs", "sequences"])


def transfers_frame(sim) -> pd.DataFrame:
    rows = [(link.name, *t) for link in sim.links.values() for t in (link.log or [])]
    return pd.DataFrame(rows, columns=["link", "start_s", "end_s", "bytes"])


def pcts(x) -> dict:
    x = pd.Series(x, dtype=float).dropna()
    if x.empty:
        return {}
    return {"mean": round(float(x.mean()), 3), **{f"p{q}": round(float(np.percentile(x, q)), 3) for q in (50, 90, 99)}}


def _reason_kind(reason: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "N", reason)


def _good(done: pd.DataFrame, slo) -> pd.DataFrame:
    keep = (done.ttft_ms <= slo.ttft_ms) & (done.tpot_ms.fillna(0) <= slo.tpot_ms)
    if slo.e2e_ms is not None:
        keep &= done.e2e_ms <= slo.e2e_ms
    return done[keep]


def facts(sim) -> dict:
    """What the summary needs from a finished simulation beyond its tables, as plain data (picklable, and
    mergeable across the parts of a partitioned replay)."""
    return {
        "pools": {name: pool_facts(p) for name, p in sim.pools.items()},
        "links": {
            link.name: {
                "transfers": link.transfers,
                "bytes": link.delivered_bytes,
                "busy_s": link.busy_s,
                "mean_in_flight": round(link.flight_s / link.busy_s, 3) if link.busy_s else 0.0,
                "bandwidth_bytes_per_s": link.bandwidth,
            }
            for link in sim.links.values()
        },
        "tiers": {
            t.name: {
                "capacity_bytes": t.capacity,
                "peak_bytes": t.peak,
                "hits": t.hits,
                "lookups": t.lookups,
                "writes": t.writes,
                "evictions": t.evictions,
            }
            for t in sim.tiers.values()
        },
        "clients": [c.spec.name for c in sim.clients],
        "assumptions": dict(sim.assumptions),
        "unused_pools": list(sim.unused_pools),
    }


def pool_facts(pool) -> dict:
    spec, dev = pool.spec, pool.device
    out = {"spec": spec, "device": dev}
    if pool.kind == "llm":
        out.update(
            busy_s=[rep.busy_us / 1e6 for rep in pool.replicas],
            iterations=[t[2] for rep in pool.replicas for t in rep.timeline],
            batch=[t[3] for rep in pool.replicas for t in rep.timeline],
            kv_tokens_per_engine=pool.replicas[0].kv.total * pool.replicas[0].kv.block_tokens,
            cost_tiers=dict(pool.replicas[0].cost.tiers),
            priced_by=dict(pool.replicas[0].cost.cost.provenance),
            step_overhead_us=pool.step_overhead.iteration_us,
            broadcast_overhead_us=pool.step_overhead.broadcast_us,
            sequence_overhead_us=pool.step_overhead.sequence_us,
            eager_layer_us=pool.step_overhead.eager_layer_us,
            step_overhead_source=pool.step_overhead.source,
            frontend_latency_us=pool.frontend.us,
            frontend_latency_source=pool.frontend.source,
            prefix=[(rep.prefix.hit_tokens, rep.prefix.lookup_tokens) for rep in pool.replicas if rep.prefix],
            swapped_blocks=[rep.swap.swapped_blocks for rep in pool.replicas if rep.swap is not None],
        )
    else:
        out.update(
            busy_s=list(pool.busy_s),
            batch=[t[4] for t in pool.timeline],
            share=pool.share,
            cost_tiers=dict(pool.cost.tiers),
            priced_by=dict(pool.cost.provenance),
        )
    return out


def merge_facts(parts: list[dict]) -> dict:
    """Facts of a pool split by replica across tasks, in replica order."""
    out = {**parts[0], "pools": {}}
    for name, first in parts[0]["pools"].items():
        merged = dict(first)
        for key in ("busy_s", "iterations", "batch", "prefix", "swapped_blocks"):
            if key in first:
                merged[key] = [x for p in parts for x in p["pools"][name][key]]
        merged["spec"] = first["spec"].model_copy(update={"replicas": len(merged["busy_s"])})
        out["pools"][name] = merged
    return out


def summarize(scenario: Scenario, facts: dict, requests: pd.DataFrame, timeline: pd.DataFrame) -> dict:
    done = requests[requests.status == "completed"]
    span = float(done.completion_s.max() - requests.arrival_s.min()) if len(done) else 0.0
    good = _good(done, scenario.slo)
    rejected = requests[requests.status == "rejected"]
    out = {
        "scenario": scenario.name,
        "requests": len(requests),
        "completed": len(done),
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(_reason_kind(r) for r in rejected.reason).most_common()),
        "simulated_span_s": round(span, 3),
        "ttft_ms": pcts(done.ttft_ms),
        "tpot_ms": pcts(done.tpot_ms),
        "e2e_ms": pcts(done.e2e_ms),
        "queue_ms": pcts(done.queue_ms),
        **({"answer_ttft_ms": pcts(done.answer_ttft_ms)} if "answer_ttft_ms" in done else {}),
        "throughput_req_per_s": round(len(done) / span, 4) if span else 0.0,
        "throughput_output_tokens_per_s": round(float(done.output_tokens.sum()) / span, 2) if span else 0.0,
        "goodput_req_per_s": round(len(good) / span, 4) if span else 0.0,
        "slo": scenario.slo.model_dump(),
        "preemptions": int(requests.preemptions.sum()),
        "iterations": int(timeline.iterations.sum()) if len(timeline) else 0,
    }
    pools = {name: _pool_summary(p, span) for name, p in facts["pools"].items()}
    out["pools"] = pools
    legacy = next(p for p in pools.values() if p["kind"] == "llm")
    out["utilization"] = legacy["replica_utilization"]
    out["kv_tokens_per_replica"] = legacy["kv_tokens_per_replica"]
    out["mean_batch_size"] = legacy["mean_batch_size"]
    out["cost_tiers"] = legacy["cost_tiers"]
    if "prefix_hit_rate" in legacy:
        out["prefix_hit_rate"] = legacy["prefix_hit_rate"]
    if "swapped_blocks" in legacy:
        out["swapped_blocks"] = legacy["swapped_blocks"]
    stage_cols = [c[: -len("_service_ms")] for c in requests.columns if c.endswith("_service_ms")]
    if stage_cols:
        out["stages"] = {
            s: {
                "count": int(done[f"{s}_service_ms"].notna().sum()),
                "queue_ms": pcts(done[f"{s}_queue_ms"]),
                "service_ms": pcts(done[f"{s}_service_ms"]),
            }
            for s in stage_cols
        }
    if facts["links"]:
        out["links"] = {
            name: {
                **f,
                "bytes": round(f["bytes"]),
                "busy_s": round(f["busy_s"], 4),
                "utilization": round(f["busy_s"] / span, 4) if span else 0.0,
            }
            for name, f in facts["links"].items()
        }
    if facts["tiers"]:
        out["tiers"] = {
            name: {
                "capacity_bytes": f["capacity_bytes"],
                "peak_bytes": round(f["peak_bytes"]),
                "hit_rate": round(f["hits"] / f["lookups"], 4) if f["lookups"] else None,
                "writes": f["writes"],
                "evictions": f["evictions"],
            }
            for name, f in facts["tiers"].items()
        }
    if len(facts["clients"]) > 1:
        out["clients"] = {}
        for name in facts["clients"]:
            mine = requests[requests.client == name]
            ok = mine[mine.status == "completed"]
            out["clients"][name] = {
                "requests": len(mine),
                "completed": len(ok),
                "ttft_ms": pcts(ok.ttft_ms),
                "tpot_ms": pcts(ok.tpot_ms),
                "e2e_ms": pcts(ok.e2e_ms),
                "goodput_req_per_s": round(len(_good(ok, scenario.slo)) / span, 4) if span else 0.0,
            }
    energy = [p["energy_j"] for p in pools.values()]
    cost = [p["cost_usd"] for p in pools.values()]
    out["energy_j"] = round(sum(energy), 1) if None not in energy else None
    out["cost_usd"] = round(sum(cost), 4) if None not in cost else None
    missing = [n for n, p in pools.items() if p["cost_usd"] is None]
    if missing:
        out["cost_missing"] = f"no price for pool(s) {', '.join(missing)}: set price_per_hour_usd"
    out["tokens_per_dollar"] = round(float(done.output_tokens.sum()) / out["cost_usd"], 1) if out["cost_usd"] else None
    out["assumptions"] = facts["assumptions"]
    if facts.get("unused_pools"):
        out["unused_pools"] = facts["unused_pools"]
    return out


def _pool_summary(f: dict, span: float) -> dict:
    spec, dev = f["spec"], f["device"]
    price, price_source = (
        (spec.price_per_hour_usd, "scenario")
        if spec.price_per_hour_usd
        else (dev.price_per_hour_usd, dev.sources.get("price"))
    )
    busy = f["busy_s"]
    if spec.kind == "llm":
        devices = spec.replicas * spec.tp * spec.pp
        device_busy_s = sum(busy) * spec.tp  # PP engines share their replica's devices (see engine.py)
        iters, batch = np.array(f["iterations"], dtype=float), np.array(f["batch"], dtype=float)
        out = {
            "kind": "llm",
            "device": spec.device,
            "model": spec.model,
            "replicas": spec.replicas,
            "tp": spec.tp,
            "pp": spec.pp,
            "dtype": spec.dtype,
            "kv_cache_dtype": spec.kv_dtype,
            "devices": devices,
            "utilization": round(device_busy_s / (span * devices), 4) if span else 0.0,
            "replica_utilization": [round(b / span, 4) if span else 0.0 for b in busy],
            "mean_batch_size": round(float(np.average(batch, weights=iters)), 2) if len(iters) else 0.0,
            "kv_tokens_per_replica": f["kv_tokens_per_engine"] * spec.pp,
            "step_overhead_us": f["step_overhead_us"],  # all of the fixed part: the TP broadcast's hops included
            "broadcast_overhead_us": f["broadcast_overhead_us"],  # per hop of it (log2 TP hops), as fitted
            "sequence_overhead_us": f["sequence_overhead_us"],
            "eager_layer_us": f["eager_layer_us"],  # an iteration with prompt tokens takes at least layers x this
            "step_overhead_source": f["step_overhead_source"],
            "frontend_latency_us": f["frontend_latency_us"],
            "frontend_latency_source": f["frontend_latency_source"],
            "cost_tiers": f["cost_tiers"],
            "priced_by": f.get("priced_by", {}),
        }
        if f["prefix"]:
            lookups = sum(lk for _, lk in f["prefix"])
            out["prefix_hit_rate"] = round(sum(h for h, _ in f["prefix"]) / lookups, 4) if lookups else 0.0
        if spec.memory.preemption == "swap":
            out["swapped_blocks"] = sum(f["swapped_blocks"])
    else:
        devices = spec.replicas * f["share"]
        device_busy_s = sum(busy) * f["share"]
        out = {
            "kind": "service",
            "device": spec.device,
            "model": spec.model or f"{spec.index.type} index ({spec.index.vectors} x {spec.index.dim})",
            "replicas": spec.replicas,
            "devices": round(devices, 4),
            "utilization": round(sum(busy) / (span * spec.replicas), 4) if span else 0.0,
            "batches": len(f["batch"]),
            "mean_batch_size": round(float(np.mean(f["batch"])), 2) if f["batch"] else 0.0,
            "cost_tiers": f["cost_tiers"],
            "priced_by": f.get("priced_by", {}),
        }
    out["energy_j"] = round(dev.power_watts * device_busy_s, 1) if dev.power_watts else None
    out["energy_source"] = f"power x busy time ({dev.sources.get('power')}); idle power not counted"
    out["cost_usd"] = round(price * devices * span / 3600, 4) if price else None
    out["price_per_device_hour_usd"] = price
    out["price_source"] = price_source
    return out


def headline(s: dict) -> dict:
    """The figures a person reads first (DVC metrics)."""
    return {
        "ttft_p99_ms": s["ttft_ms"].get("p99"),
        "tpot_p99_ms": s["tpot_ms"].get("p99"),
        "tokens_per_dollar": s["tokens_per_dollar"],
    }
