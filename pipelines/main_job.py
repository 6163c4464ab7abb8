"""`hermes-sim run`: the main job on the embedded defaults (a DuckDB file in ./.hermes, local Dask): ingest the
bundled real samples, calibrate the H100 and A100 cost models on them, replay the bundled Azure log on two H100
replicas and a multi-stage RAG pipeline on CPU and GPU pools, and print each step's result."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..warehouse.store import default_location
from .cli import app, ingest, warehouse_summary
from .common import WarehouseOpt, err, errors, out, print_table

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
        _print_summary(single)
        t = _step(5, "replay the bundled RAGPulse log through embed -> vector search -> rerank -> generate")
        rag = load(SCENARIOS / "bundled_rag.yaml")
        rag.source.log = str(SAMPLES / "requests/ragpulse/data/0_trace.jsonl")
        _print_summary(simulate(rag, root, progress=True)["summary"])


def _print_summary(s: dict) -> None:
    out.print(f"\n## Replay: {s['scenario']}\n")
    out.print(
        f"{s['completed']} completed, {s['rejected']} rejected over {s['simulated_span_s']} s simulated; "
        f"TTFT p50 / p99 {s['ttft_ms'].get('p50')} / {s['ttft_ms'].get('p99')} ms; TPOT p50 / p99 "
        f"{s['tpot_ms'].get('p50')} / {s['tpot_ms'].get('p99')} ms; {s['throughput_output_tokens_per_s']} output "
        f"tokens/s; goodput {s['goodput_req_per_s']} req/s; energy {s['energy_j']} J; cost {s['cost_usd']} USD"
    )
    for reason, n in s["rejected_by_reason"].items():
        out.print(f"rejected {n}: {reason}")
    if s.get("stages"):
        rows = [
            (
                name,
                st["count"],
                st["queue_ms"].get("p50"),
                st["queue_ms"].get("p99"),
                st["service_ms"].get("p50"),
                st["service_ms"].get("p99"),
            )
            for name, st in s["stages"].items()
        ]
        print_table(
            "where the time goes, per stage (ms)",
            ["stage", "requests", "queue p50", "queue p99", "service p50", "service p99"],
            rows,
        )
    pools = [
        (
            name,
            p["kind"],
            p["device"],
            p["model"],
            p["devices"],
            p["utilization"],
            p["mean_batch_size"],
            ", ".join(f"{k}: {v}" for k, v in p["cost_tiers"].items()),
        )
        for name, p in s["pools"].items()
    ]
    print_table(
        "pools", ["pool", "kind", "device", "model", "devices", "utilization", "mean batch", "cost tiers"], pools
    )
    for key, a in s["assumptions"].items():
        out.print(f"assumed {key} = {a['value']}: {a['why']}")
