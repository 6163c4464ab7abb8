"""Run a scenario: build the pool's replicas on calibrated costs, feed the request source, collect results."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress

from ..calibrate.artifacts import MODELS_DIR, models_path
from ..calibrate.catalog import device as catalog_device
from ..calibrate.catalog import model as catalog_model
from ..calibrate.model import CostModel
from ..calibrate.ops import Parallelism
from ..warehouse.store import Warehouse
from .config import Pool, Scenario
from .costs import IterationCost
from .engine import Replica, Req, Simulation
from .kv import BlockManager, PrefixCache, SwapSpace, kv_block_bytes, kv_blocks
from .policies import BATCHING, ROUTERS

log = logging.getLogger(__name__)

OVERHEADS_FILE = "serving_overheads.json"  # under <warehouse>/models, written by validate: {device: {framework:}}
DEFAULT_STEP_OVERHEAD_US = 250.0


def step_overhead_us(pool: Pool, warehouse_root: Path) -> float:
    """A pool's per-iteration CPU overhead: its own setting, else the one calibrated for its device and framework
    against measured serving runs (`hermes-sim validate silicon`), else a default."""
    if pool.step_overhead_us is not None:
        return pool.step_overhead_us
    path = Path(warehouse_root) / MODELS_DIR / OVERHEADS_FILE
    fitted = json.loads(path.read_text()).get(pool.device, {}) if path.exists() else {}
    return fitted.get(pool.framework, {}).get("step_overhead_us", DEFAULT_STEP_OVERHEAD_US)


_COSTS: dict[tuple, IterationCost] = {}


def _iteration_cost(pool: Pool, warehouse_root: Path) -> IterationCost:
    """Priced grids are reused while what prices them stays the same: the pool's hardware, model and
    parallelism, the grids' ranges, and the device's model artifact (sweeps over batching share them)."""
    artifact = models_path(warehouse_root, pool.device)
    overhead_us = step_overhead_us(pool, warehouse_root)
    key = (
        pool.model_dump_json(exclude={"replicas", "name", "memory", "batching", "frontend_latency_us"}),
        max(pool.batching.max_batched_tokens, pool.max_model_len),
        pool.batching.max_num_seqs,
        str(Path(warehouse_root).resolve()),
        artifact.stat().st_mtime_ns if artifact.exists() else 0,
        overhead_us,
    )
    if key not in _COSTS:
        _COSTS[key] = _build_cost(pool, warehouse_root, overhead_us)
    return _COSTS[key]


def build_replicas(pool: Pool, warehouse_root: Path) -> list[Replica]:
    dev, mdl = catalog_device(pool.device), catalog_model(pool.model)
    blocks = kv_blocks(pool, dev, mdl)
    log.info(
        "%s: %d KV blocks per replica (%d tokens) after %s's weights",
        pool.name,
        blocks,
        blocks * pool.memory.block_tokens,
        mdl.id,
    )
    cost = _iteration_cost(pool, warehouse_root)
    policy = BATCHING[pool.batching.policy](pool.batching)
    block_bytes = kv_block_bytes(pool, mdl)
    host = dev.interconnects.get("pcie") or dev.scale_up_link()
    replicas = []
    for i in range(pool.replicas):
        kv = BlockManager(blocks, pool.memory.block_tokens)
        prefix = PrefixCache(kv, pool.memory.prefix_block_tokens) if pool.memory.prefix_caching else None
        swap = None
        if pool.memory.preemption == "swap":
            space = int(pool.memory.swap_space_bytes // block_bytes)
            swap = SwapSpace(space, block_bytes, host.bandwidth, host.latency_s)
        replicas.append(Replica(i, cost, kv, policy, pool.max_model_len, prefix, swap))
    return replicas


def _build_cost(pool: Pool, warehouse_root: Path, overhead_us: float) -> IterationCost:
    mdl = catalog_model(pool.model)
    return IterationCost(
        model=mdl,
        par=Parallelism(tp=pool.tp, pp=pool.pp, dtype=pool.dtype, kv_cache_dtype=pool.kv_cache_dtype),
        cost=CostModel(pool.device, warehouse_root, pool.framework),
        max_tokens=max(pool.batching.max_batched_tokens, pool.max_model_len),
        max_seqs=pool.batching.max_num_seqs,
        max_len=pool.max_model_len,
        step_overhead_us=overhead_us,
        cuda_graph_max_tokens=pool.cuda_graph_max_tokens,
    )


_LOGS: dict[tuple, pd.DataFrame] = {}


def _log_frame(warehouse_root: Path, sql: str, params: tuple) -> pd.DataFrame:
    """A log's rows, read once per process while the warehouse catalog is unchanged (sweep points share it)."""
    catalog = warehouse_root / "catalog.duckdb"
    key = (str(warehouse_root.resolve()), catalog.stat().st_mtime_ns if catalog.exists() else 0, sql, params)
    if key not in _LOGS:
        with Warehouse(warehouse_root, read_only=True) as wh:
            _LOGS[key] = wh.arrow(sql, list(params)).to_pandas()
    return _LOGS[key]


def log_requests(scenario: Scenario, warehouse_root: Path) -> list[Req]:
    """Requests of a log: a file (ingested into the warehouse first; a no-op when it already is) or a name."""
    src = scenario.source
    if not src.log:
        raise ValueError("source.kind 'log' needs source.log (a request-log file or a log name)")
    path = Path(src.log)
    where, params = "log_name = ?", [src.log]
    if path.exists():  # a file: ingest it unless it already is (read-only, so parallel workers can share)
        from ..ingest.runner import ingest, source_ids

        params = source_ids([path])
        where = f"source_id IN ({', '.join('?' * len(params))})"
        with Warehouse(warehouse_root, read_only=(Path(warehouse_root) / "catalog.duckdb").exists()) as wh:
            missing = not all(wh.has_source(sid) for sid in params)
        if missing:
            with Warehouse(warehouse_root) as wh:
                ingest(wh, [path], progress=False)
    sql = (
        "SELECT arrival_s, input_tokens, output_tokens, session_id, prefix_block_hashes FROM requests "
        f"WHERE {where} ORDER BY arrival_s, source_id, request_id"
    )
    if src.limit:
        sql += f" LIMIT {int(src.limit)}"
    df = _log_frame(Path(warehouse_root), sql, tuple(params))
    if df.empty:
        known = 'hermes-sim warehouse sql "SELECT DISTINCT log_name FROM requests"'
        raise ValueError(f"no requests for log {src.log!r} (see {known})")
    scale = src.time_scale / src.rate_scale
    arrival = (df["arrival_s"].to_numpy() - df["arrival_s"].iloc[0]) * scale
    sessions = df["session_id"].to_numpy()
    hashes = [tuple(h) if h is not None and len(h) else () for h in df["prefix_block_hashes"]]
    return [
        Req(i, float(a), int(p), int(o), None if s is None or s != s else s, hashes=h)
        for i, (a, p, o, s, h) in enumerate(
            zip(arrival, df["input_tokens"], df["output_tokens"], sessions, hashes, strict=True)
        )
    ]


def synthetic_requests(scenario: Scenario, warehouse_root: Path) -> list[Req]:
    """A seeded arrival process (Poisson, or Gamma with coefficient of variation cv) with fixed, lognormal or
    log-drawn lengths."""
    src = scenario.source
    rng = np.random.default_rng(scenario.seed)
    mean = 1.0 / (src.rate_per_s * src.rate_scale)
    if src.arrival == "gamma":
        shape = 1.0 / src.cv**2
        gaps = rng.gamma(shape, mean / shape, src.requests)
    else:
        gaps = rng.exponential(mean, src.requests)
    t = np.cumsum(gaps) - gaps[0]
    n = src.requests
    if src.lengths == "lognormal":
        sigma = np.sqrt(np.log1p(src.length_cv**2))
        prompt = rng.lognormal(np.log(src.input_tokens) - sigma**2 / 2, sigma, n)
        output = rng.lognormal(np.log(src.output_tokens) - sigma**2 / 2, sigma, n)
    elif src.lengths == "log":
        logged = log_requests(scenario, warehouse_root)
        pick = rng.integers(0, len(logged), n)
        prompt = np.array([logged[i].prompt for i in pick])
        output = np.array([logged[i].output for i in pick])
    else:
        prompt, output = np.full(n, src.input_tokens), np.full(n, src.output_tokens)
    prompt, output = np.maximum(np.round(prompt), 1).astype(int), np.maximum(np.round(output), 1).astype(int)
    return [Req(i, float(a), int(p), int(o)) for i, (a, p, o) in enumerate(zip(t, prompt, output, strict=True))]


def open_loop_requests(scenario: Scenario, warehouse_root: Path) -> list[Req]:
    """The requests of a source whose arrivals do not depend on completions (a log or a synthetic process)."""
    if scenario.source.kind == "synthetic":
        return synthetic_requests(scenario, warehouse_root)
    return log_requests(scenario, warehouse_root)


def simulate(
    scenario: Scenario, warehouse_root: Path, skip_ahead: bool = True, audit: bool = False, progress: bool = False
) -> dict:
    """Run one scenario; returns {"requests": DataFrame, "timeline": DataFrame, "summary": dict}. With
    progress, a bar on stderr counts finished requests."""
    if len(scenario.pools) != 1:
        raise ValueError("this engine serves one pool per scenario (multi-stage pipelines come later)")
    pool = scenario.pools[0]
    replicas = build_replicas(pool, warehouse_root)
    router = ROUTERS[scenario.router]()
    src = scenario.source
    closed_loop = None
    if src.kind == "closed_loop":
        counter = itertools.count(src.concurrency)

        def closed_loop(done: Req, now: float) -> Req | None:
            i = next(counter)
            return Req(i, now, src.input_tokens, src.output_tokens, client=done.client) if i < src.requests else None

        gap = src.ramp_up_s / src.concurrency
        requests = [Req(i, i * gap, src.input_tokens, src.output_tokens, client=i) for i in range(src.concurrency)]
    else:
        requests = open_loop_requests(scenario, warehouse_root)
    sim = Simulation(replicas, router, closed_loop, skip_ahead, audit, pool.frontend_latency_us / 1e6)
    total = src.requests if src.kind == "closed_loop" else len(requests)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("replay", total=total)
        sim.run(requests, on_progress=lambda n: bar.update(task, completed=n))
    return collect(scenario, sim, replicas)


def collect(scenario: Scenario, sim: Simulation, replicas: list[Replica]) -> dict:
    reqs = sorted(sim.done + sim.rejected, key=lambda r: r.id)
    ok = np.array([r.reason is None for r in reqs], dtype=bool)

    def times(attr: str) -> np.ndarray:  # seconds; NaN where unset (rejected requests)
        return np.array([getattr(r, attr) if getattr(r, attr) is not None else np.nan for r in reqs], dtype=float)

    arrival, admitted = times("arrival"), times("admitted")
    first, completion = times("first_token"), times("completion")
    output = np.array([r.output for r in reqs], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(ok & (output > 1), (completion - first) * 1e3 / np.maximum(output - 1, 1), np.nan)
    requests = pd.DataFrame(
        {
            "request_id": np.array([r.id for r in reqs], dtype=np.int64),
            "replica": np.array([r.replica for r in reqs], dtype=np.int64),
            "status": np.where(ok, "completed", "rejected"),
            "reason": [r.reason for r in reqs],
            "arrival_s": arrival,
            "admitted_s": admitted,
            "first_token_s": first,
            "completion_s": completion,
            "input_tokens": np.array([r.prompt for r in reqs], dtype=np.int64),
            "output_tokens": output,
            "queue_ms": np.where(ok, (admitted - arrival) * 1e3, np.nan),
            "ttft_ms": np.where(ok, (first - arrival) * 1e3, np.nan),
            "tpot_ms": tpot,
            "e2e_ms": np.where(ok, (completion - arrival) * 1e3, np.nan),
            "preemptions": np.array([r.preemptions for r in reqs], dtype=np.int64),
            "prefix_hit_tokens": np.array([r.hit_tokens for r in reqs], dtype=np.int64),
        }
    )
    # one row per iteration, or per run of decode iterations whose batch did not change (tokens: the row's total;
    # kv_used_blocks: at its end)
    timeline = pd.DataFrame(
        [(rep.index, *t) for rep in replicas for t in rep.timeline],
        columns=["replica", "start_s", "end_s", "iterations", "batch_size", "tokens", "kv_used_blocks"],
    )
    return {"requests": requests, "timeline": timeline, "summary": summarize(scenario, requests, timeline, replicas)}


def _pcts(x: pd.Series) -> dict:
    x = x.dropna()
    if x.empty:
        return {}
    return {"mean": round(float(x.mean()), 3), **{f"p{q}": round(float(np.percentile(x, q)), 3) for q in (50, 90, 99)}}


def summarize(scenario: Scenario, requests: pd.DataFrame, timeline: pd.DataFrame, replicas: list[Replica]) -> dict:
    done = requests[requests.status == "completed"]
    span = float(done.completion_s.max() - requests.arrival_s.min()) if len(done) else 0.0
    slo = scenario.slo
    good = done[(done.ttft_ms <= slo.ttft_ms) & (done.tpot_ms.fillna(0) <= slo.tpot_ms)]
    tiers = replicas[0].cost.tiers if replicas else {}
    return {
        "scenario": scenario.name,
        "requests": len(requests),
        "completed": len(done),
        "rejected": int((requests.status == "rejected").sum()),
        "simulated_span_s": round(span, 3),
        "ttft_ms": _pcts(done.ttft_ms),
        "tpot_ms": _pcts(done.tpot_ms),
        "e2e_ms": _pcts(done.e2e_ms),
        "queue_ms": _pcts(done.queue_ms),
        "throughput_req_per_s": round(len(done) / span, 4) if span else 0.0,
        "throughput_output_tokens_per_s": round(float(done.output_tokens.sum()) / span, 2) if span else 0.0,
        "goodput_req_per_s": round(len(good) / span, 4) if span else 0.0,
        "slo": slo.model_dump(),
        "preemptions": int(requests.preemptions.sum()),
        "iterations": int(timeline.iterations.sum()),
        "swapped_blocks": [rep.swap.swapped_blocks for rep in replicas if rep.swap is not None],
        "utilization": [round(rep.busy_us / 1e6 / span, 4) if span else 0.0 for rep in replicas],
        "kv_tokens_per_replica": replicas[0].kv.total * replicas[0].kv.block_tokens if replicas else 0,
        "mean_batch_size": round(float(np.average(timeline.batch_size, weights=timeline.iterations)), 2)
        if len(timeline)
        else 0.0,
        "prefix_hit_rate": [round(rep.prefix.hit_rate, 4) for rep in replicas if rep.prefix is not None],
        "cost_tiers": dict(tiers),
    }
