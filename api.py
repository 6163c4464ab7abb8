"""The Python API, for notebooks and scripts:

    from hermes_sim.api import calibrate, ingest, replay
    ingest(["../shared/data/requests/mooncake"], warehouse=".hermes")
    calibrate("h100_sxm", warehouse=".hermes")
    result = replay("benchmarks/scenarios/mooncake_kv_tiers.yaml", warehouse=".hermes",
                    sets=["pools.llm.replicas=4"])
    result.requests        # a DataFrame: one row per request, every stage's queue and service time
    result.summary["ttft_ms"]["p99"], result.summary["stages"], result.summary["pools"]
    result.write("out/")   # Parquet, strict JSON, PNGs and a Perfetto trace

Every function takes the warehouse directory (default ./.hermes or $HERMES_WAREHOUSE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


def _root(warehouse) -> Path:
    from .warehouse.store import default_location

    return Path(warehouse) if warehouse is not None else default_location()


def ingest(paths, warehouse=None, fmt: str | None = None, log_name: str | None = None, seed: int = 0):
    """Ingest files or folders into the warehouse, all or nothing; returns the IngestReport (committed
    sources, files already there, files skipped with the reason)."""
    from .ingest.runner import ingest as run

    return run(_root(warehouse), [Path(p) for p in paths], fmt, {"log_name": log_name, "seed": seed}, progress=False)


def calibrate(device: str, warehouse=None, family: str | None = None, splits=("shape_block",), forest: bool = False):
    """Fit a device's cost models and score them on held-out shapes; returns the CalibrationResult (rows of
    median / p90 / p99 error per family beside the roofline, and where the models were saved)."""
    from .calibrate.pipeline import calibrate_device

    return calibrate_device(
        _root(warehouse), device, family=family, splits=tuple(splits) if splits else None, random_forest=forest
    )


def load_scenario(path, sets=()):
    """A scenario from YAML, with `dotted.path=value` overrides applied and every reference checked."""
    from .replay.scenario import load

    return load(Path(path), list(sets))


@dataclass
class ReplayResult:
    requests: pd.DataFrame
    timeline: pd.DataFrame
    batches: pd.DataFrame
    transfers: pd.DataFrame
    summary: dict

    def write(self, out_dir) -> list[Path]:
        from .replay.outputs import write

        return write(self.__dict__, Path(out_dir))


def replay(
    scenario, warehouse=None, sets=(), log: str | None = None, transfers: bool = False, interval: bool = False
) -> ReplayResult:
    """Simulate a scenario (a path, or a Scenario) and return its tables and summary; with interval, the
    summary's `interval_90` gives each headline figure's [lower, upper] with every calibrated op at the ends of
    its 90% prediction interval (two more replays)."""
    from .replay.run import simulate
    from .replay.scenario import Scenario, with_overrides

    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if sets:
        sc = with_overrides(sc, list(sets))
    if log is not None:
        sc.source.kind, sc.source.log = "log", log
    out = simulate(sc, _root(warehouse), transfers=transfers)
    if interval:
        from .replay.interval import interval_90

        out["summary"]["interval_90"] = interval_90(sc, _root(warehouse), simulate)
    return ReplayResult(out["requests"], out["timeline"], out["batches"], out["transfers"], out["summary"])
