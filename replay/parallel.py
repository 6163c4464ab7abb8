"""Dask: parameter sweeps as tasks, and one long log split across replicas under a static router.

A local cluster (loopback only, no dashboard) is started unless a scheduler address is given. Results come
back in the order of the inputs, so a parallel run gives the same output as a serial one."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml
from rich.progress import Progress

from .config import Scenario
from .engine import Req, Simulation
from .policies import ROUTERS
from .run import build_replicas, collect, log_requests, open_loop_requests, simulate


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or 2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def sweep_points(scenario: Scenario, sweep_file: Path) -> list[tuple[dict, Scenario]]:
    """The grid of a sweep YAML: {parameters: {"pools.0.replicas": [2, 4], "router": [...]}}."""
    doc = yaml.safe_load(Path(sweep_file).read_text()) or {}
    params = doc.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{sweep_file}: expected `parameters:` mapping dotted paths to lists of values")
    points = []
    keys = list(params)
    for values in itertools.product(*(params[k] for k in keys)):
        doc = scenario.model_dump()
        for key, value in zip(keys, values, strict=True):
            target = doc
            *path, last = key.split(".")
            for p in path:
                target = target[int(p)] if isinstance(target, list) else target[p]
            if isinstance(target, list) or last not in target:
                raise ValueError(f"{sweep_file}: {key!r} is not a scenario field")
            target[last] = value
        point = dict(zip(keys, values, strict=True))
        points.append((point, Scenario.model_validate(doc)))
    return points


def point_summary(scenario: Scenario, warehouse_root: str, skip_ahead: bool = True) -> dict:
    return simulate(scenario, Path(warehouse_root), skip_ahead)["summary"]


def run_sweep(points: list[tuple[dict, Scenario]], warehouse_root: Path, client=None, progress: bool = True):
    """Summaries of every point, serially (client None) or as Dask tasks; a DataFrame in point order."""
    results: list[dict | None] = [None] * len(points)
    for _, sc in points[:1]:
        if sc.source.kind == "log":
            log_requests(sc, warehouse_root)  # ingest here, once: workers then only read the warehouse
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("sweep", total=len(points))
        if client is None:
            for i, (_, sc) in enumerate(points):
                results[i] = point_summary(sc, str(warehouse_root))
                bar.advance(task)
        else:
            from dask.distributed import as_completed

            futures = {
                client.submit(point_summary, sc, str(warehouse_root), pure=False): i for i, (_, sc) in enumerate(points)
            }
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.advance(task)
    rows = []
    for (point, _), summary in zip(points, results, strict=True):
        rows.append(
            {
                **point,
                "completed": summary["completed"],
                "rejected": summary["rejected"],
                "ttft_p50_ms": summary["ttft_ms"].get("p50"),
                "ttft_p99_ms": summary["ttft_ms"].get("p99"),
                "tpot_p50_ms": summary["tpot_ms"].get("p50"),
                "tpot_p99_ms": summary["tpot_ms"].get("p99"),
                "throughput_req_per_s": summary["throughput_req_per_s"],
                "goodput_req_per_s": summary["goodput_req_per_s"],
            }
        )
    return pd.DataFrame(rows)


def _one_replica(scenario: Scenario, warehouse_root: str, requests: list[Req], index: int):
    pool = scenario.pools[0].model_copy(update={"replicas": 1})
    rep = build_replicas(pool, Path(warehouse_root))[0]
    sim = Simulation([rep], ROUTERS["round_robin"]())
    sim.run(requests)
    rep.index = index  # its place in the whole pool
    for r in sim.done:  # rejected requests keep -1, as in the serial run
        r.replica = index
    return sim.done, sim.rejected, rep


def simulate_partitioned(scenario: Scenario, warehouse_root: Path, client) -> dict:
    """A round-robin log split by replica: replicas never interact, so each runs as its own task and the
    merged result equals the serial run's."""
    if scenario.router != "round_robin" or scenario.source.kind == "closed_loop":
        raise ValueError("partitioned replay needs a static router (round_robin) and an open-loop source")
    requests = open_loop_requests(scenario, warehouse_root)
    n = scenario.pools[0].replicas
    parts = [[r for r in requests if r.id % n == i] for i in range(n)]
    futures = [
        client.submit(_one_replica, scenario, str(warehouse_root), part, i, pure=False) for i, part in enumerate(parts)
    ]
    sim = Simulation([], ROUTERS["round_robin"]())
    replicas = []
    for fut in futures:
        done, rejected, rep = fut.result()
        sim.done += done
        sim.rejected += rejected
        replicas.append(rep)
    return collect(scenario, sim, replicas)
