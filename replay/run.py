"""`simulate`: build a scenario's simulation, run it, and collect its tables and summary."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from .loop import gc_paused
from .outputs.tables import batches_frame, facts, requests_frame, summarize, timeline_frame, transfers_frame
from .scenario import Scenario
from .simulation import Simulation


def simulate(
    scenario: Scenario,
    warehouse_root: Path,
    skip_ahead: bool = True,
    audit: bool = False,
    progress: bool = False,
    transfers: bool = False,
) -> dict:
    """Run one scenario. Returns {"requests", "timeline", "batches", "transfers": DataFrames, "summary": dict}.
    With progress, a bar on stderr counts finished requests; with transfers, every link transfer is kept. The
    garbage collector is paused throughout (loop.gc_paused)."""
    with gc_paused():
        sim = Simulation(scenario, Path(warehouse_root), skip_ahead, audit)
        if transfers:
            sim.keep_transfers = True
        sim.prepare()  # before the bar: a bad log fails as one line, without the bar's blank one
        with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
            task = bar.add_task("replay", total=None)
            sim.run(on_progress=lambda n, total: bar.update(task, completed=n, total=total))
        return collect(scenario, sim)


def collect(scenario: Scenario, sim: Simulation) -> dict:
    requests = requests_frame(sim)
    timeline = timeline_frame(sim)
    return {
        "requests": requests,
        "timeline": timeline,
        "batches": batches_frame(sim),
        "transfers": transfers_frame(sim),
        "summary": summarize(scenario, facts(sim), requests, timeline),
    }
