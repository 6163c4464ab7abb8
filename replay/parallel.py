"""Dask: parameter sweeps as tasks, and one long log split across replicas under a static router.

A local cluster (loopback only, no dashboard, nothing on :8787) is started unless a scheduler address is given.
Results come back in the order of the inputs, so a parallel run gives the same output as a serial one. Tasks
return plain data (frames, dicts), never engine objects: a worker may still be using what built them."""

from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml
from rich.progress import Progress

from .errors import ScenarioError
from .loop import gc_paused
from .outputs.tables import facts, merge_facts, requests_frame, summarize, timeline_frame
from .run import simulate
from .scenario import Scenario, check_hash_blocks, with_overrides
from .simulation import Simulation
from .sources import SOURCES

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
# A local cluster has no dashboard, so nothing reads what the workers' statistical profiler (a stack sample every
# 10 ms), system monitor (every 500 ms) and loop-blocked tick (every 20 ms) collect; each wakes a thread that
# takes the GIL from the running replay. Off or slowed for the clusters started here (the memory monitor stays).
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "500ms",
}


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None):
    import dask
    from dask.distributed import Client, LocalCluster

    for name in ("distributed", "distributed.scheduler", "distributed.worker", "distributed.nanny"):
        logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as e:
            raise ConnectionError(f"no Dask scheduler answered at {scheduler} within {CONNECT_TIMEOUT_S} s: {e}") from e
        with client:
            yield client
        return
    with (
        dask.config.set(LOCAL_CLUSTER_CONFIG),
        LocalCluster(
            n_workers=workers or 2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # the scheduler always serves HTTP (health, metrics): on a random loopback port, never :8787,
            # and without the dashboard
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def sweep_points(scenario: Scenario, sweep_file: Path) -> list[tuple[dict, Scenario]]:
    """The grid of a sweep YAML: {parameters: {"pools.0.replicas": [2, 4], "router": [...]}}; each path is
    any `--set` path."""
    doc = yaml.safe_load(Path(sweep_file).read_text()) or {}
    params = doc.get("parameters") if isinstance(doc, dict) else None
    if not isinstance(params, dict) or not params or not all(isinstance(v, list) and v for v in params.values()):
        raise ScenarioError(
            "parameters", "expected `parameters:` mapping dotted scenario paths to non-empty lists", str(sweep_file)
        )
    keys = list(params)
    points = []
    for values in itertools.product(*(params[k] for k in keys)):
        sets = [
            f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in zip(keys, values, strict=True)
        ]
        points.append((dict(zip(keys, values, strict=True)), with_overrides(scenario, sets, str(sweep_file))))
    return points


def point_summary(scenario: Scenario, warehouse_root: str, skip_ahead: bool = True) -> dict:
    return simulate(scenario, Path(warehouse_root), skip_ahead)["summary"]


def summary_row(point: dict, summary: dict) -> dict:
    return {
        **point,
        "completed": summary["completed"],
        "rejected": summary["rejected"],
        "ttft_p50_ms": summary["ttft_ms"].get("p50"),
        "ttft_p99_ms": summary["ttft_ms"].get("p99"),
        "tpot_p50_ms": summary["tpot_ms"].get("p50"),
        "tpot_p99_ms": summary["tpot_ms"].get("p99"),
        "e2e_p99_ms": summary["e2e_ms"].get("p99"),
        "throughput_req_per_s": summary["throughput_req_per_s"],
        "throughput_output_tokens_per_s": summary["throughput_output_tokens_per_s"],
        "goodput_req_per_s": summary["goodput_req_per_s"],
        "energy_j": summary["energy_j"],
        "cost_usd": summary["cost_usd"],
        "tokens_per_dollar": summary["tokens_per_dollar"],
        "calibrated_share": calibrated_share(summary),
    }


def calibrated_share(summary: dict) -> float:
    """The share of a point's priced ops that came from measurements of that very device."""
    counts: dict[str, int] = {}
    for p in summary["pools"].values():
        for tier, n in p["cost_tiers"].items():
            counts[tier] = counts.get(tier, 0) + n
    total = sum(counts.values())
    return round(counts.get("measured-calibrated", 0) / total, 4) if total else 0.0


def prepare_logs(scenario: Scenario, warehouse_root: Path) -> None:
    """Ingest every log file a scenario reads, here and once: workers then only read the warehouse."""
    from .sources.logs import log_frame

    for c in scenario.clients:
        if c.source.kind == "log" or (c.source.kind == "synthetic" and c.source.lengths == "log"):
            log_frame(c.source, warehouse_root, f"clients.{c.name}.source.log")


def run_sweep(points: list[tuple[dict, Scenario]], warehouse_root: Path, client=None, progress: bool = True):
    """Summaries of every point, serially (client None) or as Dask tasks; a DataFrame in point order."""
    results = run_summaries(points, warehouse_root, client, progress)
    return pd.DataFrame([summary_row(p, s) for (p, _), s in zip(points, results, strict=True)])


def map_ordered(fn, items: list, client=None, advance=lambda: None, **kwargs) -> list:
    """fn(item, **kwargs) for every item: here one after another (client None), or as Dask tasks, each retried on
    another worker if its worker dies. Results in the order of the items; advance() once per finished item."""
    if client is None:
        out = []
        for item in items:
            out.append(fn(item, **kwargs))
            advance()
        return out
    from dask.distributed import as_completed

    futures = client.map(fn, items, pure=False, retries=2, **kwargs)
    for _ in as_completed(futures):
        advance()
    return client.gather(futures)


def run_summaries(points: list[tuple[dict, Scenario]], warehouse_root: Path, client=None, progress: bool = True):
    """Every point's whole summary, in point order."""
    if points:
        prepare_logs(points[0][1], warehouse_root)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("sweep", total=len(points))
        scenarios = [sc for _, sc in points]
        return map_ordered(
            point_summary, scenarios, client, lambda: bar.advance(task), warehouse_root=str(warehouse_root)
        )


def _one_replica(scenario: Scenario, warehouse_root: str, specs: list, index: int) -> tuple:
    """One replica's share of a round-robin log, as plain data: its requests, timeline and facts (built, run and
    tabulated with the collector paused, as simulate does)."""
    pool = scenario.pools[0]
    with gc_paused():
        sim = Simulation(
            scenario.model_copy(update={"pools": [pool.model_copy(update={"replicas": 1})]}), Path(warehouse_root)
        )
        sim.run(initial=[specs])
        req, tl = requests_frame(sim), timeline_frame(sim)
    req.loc[req.replica >= 0, "replica"] = index  # rejected requests keep -1, as in the serial run
    tl["replica"] = index
    return req, tl, facts(sim)


def simulate_partitioned(scenario: Scenario, warehouse_root: Path, client) -> dict:
    """A round-robin log split by replica: replicas never interact, so each runs as its own task and the
    merged result equals the serial run's."""
    pools = scenario.pools
    single = (
        len(pools) == 1 and len(scenario.clients) == 1 and all(len(p.stages) == 1 for p in scenario.pipelines.values())
    )
    src = scenario.source
    if not single or (pools[0].router or scenario.router) != "round_robin" or src.kind == "closed_loop":
        raise ScenarioError(
            "--partition",
            "needs one pool, one client, one-stage pipelines, a round_robin router and an open-loop source",
        )
    source = SOURCES[src.kind](src, warehouse_root, scenario.seed)
    specs = source.initial()
    check_hash_blocks(scenario, scenario.clients[0], source.hash_block_tokens)
    for i, s in enumerate(specs):
        s.key = i
    n = pools[0].replicas
    parts = [[s for s in specs if s.key % n == i] for i in range(n)]
    futures = [
        client.submit(_one_replica, scenario, str(warehouse_root), part, i, pure=False) for i, part in enumerate(parts)
    ]
    results = [f.result() for f in futures]
    requests = pd.concat([r for r, _, _ in results]).sort_values("request_id").reset_index(drop=True)
    timeline = pd.concat([t for _, t, _ in results], ignore_index=True)
    merged = merge_facts([f for _, _, f in results])
    return {"requests": requests, "timeline": timeline, "summary": summarize(scenario, merged, requests, timeline)}
