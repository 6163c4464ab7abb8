"""Deployment search: which hardware mix, pool sizes, parallelism and batching serve a workload within its
SLOs at the lowest cost. Every point is a full replay of the scenario's log with some `--set` fields changed,
run as a Dask task; results are cached by content (the point's scenario, the cost models and logs it reads,
the tool version), so a rerun after a change recomputes only the points it touches.

Strategies:
- grid: every combination of the space's values;
- halving: seeded successive halving on prefixes of the log. Every point runs on the first 1/eta^(r-1) of each
  client's requests; the points on the lowest Pareto layers (tokens per dollar vs p99 TTFT, among those
  meeting the constraints) are kept, 1/eta of them a round, until the last round runs the whole log.

Outputs: every point's figures, the Pareto frontiers (tokens per dollar vs p99 TTFT; goodput vs devices), and
the best point per constraint set."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError

from .. import __version__
from ..calibrate.artifacts import MODELS_DIR
from ..calibrate.catalog import device as catalog_device
from ..warehouse.parquet import write_parquet
from .errors import ScenarioError
from .outputs.jsonout import dumps
from .parallel import point_summary, prepare_logs, summary_row
from .scenario import Scenario, with_overrides

log = logging.getLogger(__name__)

CACHE_DIR = "cache/search"


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_devices: PositiveFloat | None = Field(None, description="devices over every pool")
    max_cost_per_hour_usd: PositiveFloat | None = None
    ttft_p99_ms: PositiveFloat | None = None
    tpot_p99_ms: PositiveFloat | None = None
    e2e_p99_ms: PositiveFloat | None = None
    min_completed_share: float = Field(1.0, ge=0, le=1, description="completed / requests (rejections fail it)")


class Halving(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eta: PositiveInt = Field(2, ge=2, description="keep 1/eta of the points a round")
    rounds: PositiveInt = 3


class Space(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, list] = Field(min_length=1, description="--set paths to the values each may take")
    constraints: Constraints = Constraints()
    strategy: str = Field("grid", pattern="^(grid|halving)$")
    halving: Halving = Halving()
    seed: int = 0


def load_space(path: Path) -> Space:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ScenarioError("yaml", f"invalid YAML: {e}", str(path)) from e
    try:
        space = Space.model_validate(doc or {})
    except ValidationError as e:
        err = e.errors()[0]
        raise ScenarioError(".".join(map(str, err["loc"])) or "space", err["msg"], str(path)) from None
    empty = [k for k, v in space.parameters.items() if not v]
    if empty:
        raise ScenarioError(f"parameters.{empty[0]}", "has no values: the space is empty", str(path))
    return space


def grid(scenario: Scenario, space: Space, where: str) -> list[tuple[dict, Scenario]]:
    keys = list(space.parameters)
    out = []
    for values in itertools.product(*(space.parameters[k] for k in keys)):
        sets = [f"{k}={json.dumps(v)}" for k, v in zip(keys, values, strict=True)]
        out.append((dict(zip(keys, values, strict=True)), with_overrides(scenario, sets, where)))
    return out


def deployment(scenario: Scenario) -> tuple[float, float | None]:
    """Devices over every pool, and their price per hour (None when a device has no price)."""
    devices, cost = 0.0, 0.0
    for p in scenario.pools:
        dev = catalog_device(p.device)
        n = (
            p.replicas * p.tp * p.pp
            if p.kind == "llm"
            else p.replicas * ((p.cores or dev.compute_units) / dev.compute_units if dev.kind == "cpu" else 1)
        )
        devices += n
        price = p.price_per_hour_usd or dev.price_per_hour_usd
        cost = None if cost is None or price is None else cost + n * price
    return devices, cost


def _fingerprint(scenario: Scenario, warehouse_root: Path) -> str:
    """What a point's result depends on: its scenario, the cost models it prices with, the logs it reads."""
    h = hashlib.sha256(__version__.encode() + scenario.model_dump_json().encode())
    models = Path(warehouse_root) / MODELS_DIR
    for f in sorted(models.glob("*")) if models.exists() else ():  # JSON artifacts and residual tables
        h.update(f.name.encode() + f.read_bytes())
    for c in scenario.clients:
        if c.source.log and Path(c.source.log).exists():
            h.update(hashlib.sha256(Path(c.source.log).read_bytes()).digest())
    return h.hexdigest()[:24]


def _limited(scenario: Scenario, share: float, sizes: dict[str, int]) -> Scenario:
    if share >= 1:
        return scenario
    sets = [  # a log's first requests; another source's request count
        f"clients.{c.name}.source.{'limit' if c.source.kind == 'log' else 'requests'}="
        f"{max(math.ceil(sizes[c.name] * share), 1)}"
        for c in scenario.clients
    ]
    return with_overrides(scenario, sets)


def _client_sizes(scenario: Scenario, warehouse_root: Path) -> dict[str, int]:
    from .sources.logs import log_frame

    out = {}
    for c in scenario.clients:
        if c.source.kind == "log":
            out[c.name] = len(log_frame(c.source, warehouse_root, f"clients.{c.name}.source.log"))
        else:
            out[c.name] = c.source.requests
    return out


class Search:
    def __init__(self, scenario: Scenario, space: Space, warehouse_root: Path, where: str = "space"):
        self.scenario, self.space, self.root = scenario, space, Path(warehouse_root)
        self.points = grid(scenario, space, where)
        self.replays = 0  # replays actually run (cache misses), by prefix share
        self.replayed_share = 0.0  # in whole-log equivalents
        self.cached = 0

    def _evaluate(self, batch: list[tuple[dict, Scenario]], client, bar=None, task=None) -> list[dict]:
        cache = self.root / CACHE_DIR
        cache.mkdir(parents=True, exist_ok=True)
        results: list[dict | None] = [None] * len(batch)
        todo = []
        for i, (_, sc) in enumerate(batch):
            path = cache / f"{_fingerprint(sc, self.root)}.json"
            if path.exists():
                results[i] = json.loads(path.read_text())
                self.cached += 1
                if bar is not None:
                    bar.advance(task)
            else:
                todo.append((i, sc, path))
        if client is None:
            for i, sc, path in todo:
                results[i] = self._store(point_summary(sc, str(self.root)), path)
                if bar is not None:
                    bar.advance(task)
        else:
            from dask.distributed import as_completed

            futures = {
                client.submit(point_summary, sc, str(self.root), pure=False, retries=2): (i, path)
                for i, sc, path in todo
            }
            for fut in as_completed(futures):
                i, path = futures[fut]
                results[i] = self._store(fut.result(), path)
                if bar is not None:
                    bar.advance(task)
        self.replays += len(todo)
        return results

    @staticmethod
    def _store(summary: dict, path: Path) -> dict:
        path.write_text(dumps(summary))
        return json.loads(path.read_text())

    def _rows(self, batch, summaries, share: float) -> pd.DataFrame:
        rows = []
        for (point, sc), s in zip(batch, summaries, strict=True):
            devices, cost = deployment(sc)
            rows.append(
                {
                    **summary_row(point, s),
                    "devices": devices,
                    "cost_per_hour_usd": cost,
                    "completed_share": s["completed"] / s["requests"] if s["requests"] else 0.0,
                    "log_share": share,
                }
            )
        table = pd.DataFrame(rows)
        table["feasible"] = feasible(table, self.space.constraints)
        return table

    def run(self, client=None, progress: bool = True) -> pd.DataFrame:
        """Every point's figures (grid), or the last round's plus each earlier round's (halving)."""
        from rich.console import Console
        from rich.progress import Progress

        prepare_logs(self.scenario, self.root)
        space = self.space
        with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
            if space.strategy == "grid":
                task = bar.add_task("search", total=len(self.points))
                table = self._rows(self.points, self._evaluate(self.points, client, bar, task), 1.0)
                self.replayed_share = float(len(self.points) - self.cached)
                return table
            sizes = _client_sizes(self.scenario, self.root)
            alive = list(range(len(self.points)))
            rounds = []
            for r in range(space.halving.rounds):
                share = 1.0 / space.halving.eta ** (space.halving.rounds - 1 - r)
                batch = [(self.points[i][0], _limited(self.points[i][1], share, sizes)) for i in alive]
                task = bar.add_task(f"round {r + 1}: {len(batch)} points on {share:.0%} of the log", total=len(batch))
                before = self.replays
                table = self._rows(
                    [(self.points[i][0], self.points[i][1]) for i in alive],
                    self._evaluate(batch, client, bar, task),
                    share,
                )
                self.replayed_share += (self.replays - before) * share
                table["round"] = r + 1
                rounds.append(table)
                if r + 1 < space.halving.rounds:
                    keep = max(math.ceil(len(alive) / space.halving.eta), 1)
                    order = pareto_order(table)
                    alive = [alive[j] for j in order[:keep]]
            return pd.concat(rounds, ignore_index=True)


def feasible(table: pd.DataFrame, c: Constraints) -> np.ndarray:
    ok = (table["completed_share"] >= c.min_completed_share - 1e-12).to_numpy().copy()
    for col, limit in (
        ("devices", c.max_devices),
        ("cost_per_hour_usd", c.max_cost_per_hour_usd),
        ("ttft_p99_ms", c.ttft_p99_ms),
        ("tpot_p99_ms", c.tpot_p99_ms),
        ("e2e_p99_ms", c.e2e_p99_ms),
    ):
        if limit is not None:
            ok &= (table[col].fillna(np.inf) <= limit).to_numpy()
    return ok


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point beats on both: x larger is better, y smaller is better (NaN never on it)."""
    n = len(x)
    keep = np.isfinite(x) & np.isfinite(y)
    for i in range(n):
        if not keep[i]:
            continue
        better = (x >= x[i]) & (y <= y[i]) & ((x > x[i]) | (y < y[i])) & np.isfinite(x) & np.isfinite(y)
        if better.any():
            keep[i] = False
    return keep


def pareto_order(table: pd.DataFrame) -> list[int]:
    """Row positions by Pareto layer (tokens per dollar up, p99 TTFT down), feasible points first; ties by
    tokens per dollar."""
    x = table["tokens_per_dollar"].to_numpy(dtype=float)
    y = table["ttft_p99_ms"].to_numpy(dtype=float)
    layer = np.full(len(table), np.inf)
    left = np.ones(len(table), dtype=bool)
    k = 0
    while left.any():
        xs, ys = np.where(left, x, np.nan), np.where(left, y, np.nan)
        front = pareto_mask(xs, ys) & left
        if not front.any():
            break
        layer[front] = k
        left &= ~front
        k += 1
    feas = table["feasible"].to_numpy()
    return sorted(range(len(table)), key=lambda i: (not feas[i], layer[i], -np.nan_to_num(x[i], nan=-np.inf)))


def frontiers(table: pd.DataFrame) -> dict:
    final = table[table["log_share"] >= 1.0]
    out = {}
    for name, xcol, ycol in (
        ("tokens_per_dollar_vs_ttft_p99", "tokens_per_dollar", "ttft_p99_ms"),
        ("goodput_vs_devices", "goodput_req_per_s", "devices"),
    ):
        mask = pareto_mask(final[xcol].to_numpy(dtype=float), final[ycol].to_numpy(dtype=float))
        front = final[mask].sort_values(ycol)
        out[name] = json.loads(front.to_json(orient="records"))
    return out


def best(table: pd.DataFrame, space: Space, params: list[str]) -> dict:
    """The feasible point with the most tokens per dollar (then goodput), or the nearest misses."""
    final = table[table["log_share"] >= 1.0]
    ok = final[final["feasible"]]
    if len(ok):
        top = ok.sort_values(["tokens_per_dollar", "goodput_req_per_s"], ascending=False).iloc[0]
        return {"found": True, "point": {p: _plain(top[p]) for p in params}, "figures": json.loads(top.to_json())}
    c = space.constraints
    miss = []
    for _, row in final.iterrows():
        excess = 0.0
        for col, limit in (
            ("devices", c.max_devices),
            ("cost_per_hour_usd", c.max_cost_per_hour_usd),
            ("ttft_p99_ms", c.ttft_p99_ms),
            ("tpot_p99_ms", c.tpot_p99_ms),
            ("e2e_p99_ms", c.e2e_p99_ms),
        ):
            v = row[col]
            if limit is not None:
                excess += max((v if v == v else np.inf) / limit - 1, 0)
        excess += max(c.min_completed_share - row["completed_share"], 0)
        miss.append(excess)
    order = np.argsort(miss)[:3]
    return {
        "found": False,
        "nearest": [json.loads(final.iloc[i].to_json()) | {"excess": round(float(miss[i]), 4)} for i in order],
    }


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def plot_frontier(table: pd.DataFrame, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = table[table["log_share"] >= 1.0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, xcol, ycol, xlabel, ylabel in (
        (a, "ttft_p99_ms", "tokens_per_dollar", "p99 time to first token (ms)", "output tokens per dollar"),
        (b, "devices", "goodput_req_per_s", "devices (GPUs, ASICs, CPU sockets)", "goodput under the SLOs (req/s)"),
    ):
        feas = final["feasible"].to_numpy()
        ax.scatter(final[xcol][~feas], final[ycol][~feas], c="lightgrey", s=18, label="misses a constraint")
        ax.scatter(final[xcol][feas], final[ycol][feas], c="tab:blue", s=22, label="meets the constraints")
        if xcol == "ttft_p99_ms":
            mask = pareto_mask(final[ycol].to_numpy(dtype=float), final[xcol].to_numpy(dtype=float))
        else:
            mask = pareto_mask(final[ycol].to_numpy(dtype=float), final[xcol].to_numpy(dtype=float))
        front = final[mask].sort_values(xcol)
        ax.plot(front[xcol], front[ycol], "r-o", ms=4, lw=1, label="Pareto frontier")
        if xcol == "ttft_p99_ms":
            ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def write(search: Search, table: pd.DataFrame, out_dir: Path, seconds: float) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(table, out_dir / "points.parquet")
    params = list(search.space.parameters)
    report = {
        "scenario": search.scenario.name,
        "strategy": search.space.strategy,
        "points": len(search.points),
        "replays": search.replays,
        "replays_whole_log_equivalent": round(search.replayed_share, 3),
        "cached": search.cached,
        "seconds": round(seconds, 2),
        "points_per_second": round(len(search.points) / seconds, 3) if seconds else None,
        "replays_per_second": round(search.replays / seconds, 3) if seconds and search.replays else None,
        "constraints": search.space.constraints.model_dump(),
        "best": best(table, search.space, params),
        "frontiers": frontiers(table),
    }
    (out_dir / "search.json").write_text(dumps(report) + "\n")
    plot_frontier(
        table, out_dir / "pareto.png", f"{search.scenario.name}: deployment search ({len(search.points)} points)"
    )
    return report


def run_search(
    scenario: Scenario, space: Space, warehouse_root: Path, client=None, progress: bool = True, where: str = "space"
) -> tuple[Search, pd.DataFrame, float]:
    search = Search(scenario, space, warehouse_root, where)
    t0 = time.perf_counter()
    table = search.run(client, progress)
    return search, table, time.perf_counter() - t0
