"""`hermes-sim run`: the main job on the embedded defaults (a DuckDB file in ./.hermes, local Dask): ingest the
bundled real samples, calibrate the H100 and A100 cost models on them, replay the bundled Azure log on two H100
replicas and a multi-stage RAG pipeline on CPU and GPU pools, and print each step's result."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..warehouse.store import default_location
from .cli import app, ingest, warehouse_summary
from .cli_replay import print_summary
from .common import WarehouseOpt, err, errors

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SCENARIOS = Path(__file__).resolve().parent.parent / "replay" / "scenarios"
DEVICES = ("h100_sxm", "a100_sxm")


def _step(n: int, what: str) -> float:
    err.print(f"[bold]step {n}/5[/]: {what}", markup=True)
    return time.perf_counter()


@app.command("run")
def run_main_job(warehouse: WarehouseOpt = None) -> None:
    """The main job: ingest the bundled samples, calibrate H100 and A100, replay the bundled Azure log and a
    multi-stage RAG pipeline, printing each step's result."""
    from ..calibrate.pipeline import calibrate_device
    from ..calibrate.report import markdown
    from ..replay.run import simulate
    from ..replay.scenario import load

    root = warehouse or default_location()
    t = _step(1, "ingest the bundled real samples")
    ingest([SAMPLES], None, warehouse, None, 0, quiet=False)
    warehouse_summary(warehouse, as_json=False)
    rows = []
    with errors():
        for i, device in enumerate(DEVICES):
            t = _step(2 + i, f"calibrate {device} (shape-block held-out error)")
            result = calibrate_device(root, device, splits=("shape_block",), random_forest=False, progress=True)
            err.print(f"  {device}: {result.fitted} models in {time.perf_counter() - t:.1f} s")
            rows += [r for r in result.rows if r["subset"] == "catalog"]
        sys.stdout.write(markdown(rows))
        t = _step(4, "replay the bundled Azure conversation log on 2 H100 replicas of Llama-3.1-8B")
        scenario = load(SCENARIOS / "bundled.yaml")
        scenario.source.log = str(SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
        single = simulate(scenario, root, progress=True)["summary"]
        print_summary(single)
        t = _step(5, "replay the bundled RAGPulse log through embed -> vector search -> rerank -> generate")
        rag = load(SCENARIOS / "bundled_rag.yaml")
        rag.source.log = str(SAMPLES / "requests/ragpulse/data/0_trace.jsonl")
        print_summary(simulate(rag, root, progress=True)["summary"])
