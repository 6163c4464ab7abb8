"""Validation against Argonne's LLM-Inference-Bench (A100, H100, GH200, MI300X, MI250, ... across vLLM,
TensorRT-LLM and others): each static-batch row (B requests of I prompt and I output tokens, its batch latency)
is predicted by `estimate` through whatever tier its device has (calibrated where its measurements were
ingested, transferred from the nearest calibrated device otherwise, roofline where neither), beside a plain
roofline; errors are reported per device and tier, so a user knows how far to trust an uncalibrated device.
The TTFT file (I = 1024, one output token, B = 16) checks the prefill alone. Rows the engine cannot express
(a device or model not in the catalog, a batch whose KV does not fit) are listed with the reason; Mixtral runs
with its experts sharded over TP, as vLLM and TensorRT-LLM do by default."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..calibrate.catalog import devices, models
from .estimate import estimate

# The benchmark's hardware names, and the catalog part each was measured on (by Argonne's documentation)
HARDWARE = {
    "Nvidia A100 GPU": ("a100_sxm4_40gb", "ALCF Polaris: A100 SXM4 40GB"),
    "Nvidia H100 GPU": ("h100_sxm", "assumed H100 SXM 80GB (the benchmark does not say SXM or PCIe)"),
    "Nvidia GH200 GPU": ("gh200", "GH200 96GB HBM3"),
    "AMD MI300X GPU": ("mi300x", "MI300X 192GB"),
    "AMD MI250 GPU": ("mi250", "one MI250 GCD per GPU counted"),
}
MODELS = {
    "meta-llama/Llama-2-7b-hf": "llama-2-7b",
    "meta-llama/Llama-2-70b-hf": "llama-2-70b",
    "meta-llama/Meta-Llama-3-8B": "llama-3.1-8b",  # Llama 3 and 3.1 share their shapes
    "meta-llama/Meta-Llama-3-70B": "llama-3.1-70b",
    "mistralai/Mistral-7B-v0.1": "mistral-7b",
    "Qwen/Qwen2-7B": "qwen2-7b",
    "Qwen/Qwen2-72B": "qwen2-72b",
    "mistralai/Mixtral-8x7B-v0.1": "mixtral-8x7b",  # MoE: experts sharded over TP (the frameworks' default)
}
FRAMEWORKS = {"vLLM": "vllm", "TensorRT-LLM": "trtllm"}


def _why_not(hw: str, model: str) -> str | None:
    if hw not in HARDWARE:
        return f"hardware {hw!r} is not in the device catalog"
    if HARDWARE[hw][0] not in devices():
        return f"device {HARDWARE[hw][0]} is not in the catalog"
    if MODELS.get(model) not in models():
        return f"model {model} is not in the model catalog"
    return None


def _predict(rows: pd.DataFrame, warehouse_root: Path, measured: str, output: pd.Series) -> tuple[list, list]:
    done, skipped = [], []
    with tempfile.TemporaryDirectory() as empty:
        for i, r in rows.iterrows():
            line = int(i) + 2
            reason = _why_not(r["Hardware"], r["Model"])
            base = {"line": line, "hardware": r["Hardware"], "model": r["Model"], "framework": r["Framework"]}
            if reason:
                skipped.append({**base, "reason": reason})
                continue
            dev, _ = HARDWARE[r["Hardware"]]
            args = dict(
                device=dev,
                model=MODELS[r["Model"]],
                batch=int(r["Batch Size"]),
                input_tokens=int(r["input"]),
                output_tokens=int(output[i]),
                tp=int(r["Num of Hardware"]),
                framework=FRAMEWORKS.get(r["Framework"]),
            )
            try:
                est = estimate(warehouse_root=warehouse_root, **args)
                roof = estimate(warehouse_root=Path(empty), **args)
            except ValueError as e:
                skipped.append({**base, "reason": str(e)})
                continue
            if not est["kv_fits"]:
                skipped.append(
                    {
                        **base,
                        "reason": f"the batch needs {est['kv_blocks_needed']} KV blocks, a replica "
                        f"has {est['kv_blocks_per_replica']}",
                    }
                )
                continue
            tiers = est["cost_tiers"]
            done.append(
                {
                    **base,
                    "device": dev,
                    "tp": args["tp"],
                    "batch": args["batch"],
                    "input_tokens": args["input_tokens"],
                    "output_tokens": args["output_tokens"],
                    "measured_ms": float(r[measured]) * 1e3,
                    "predicted_ms": est["e2e_ms"] if measured != "TTFT Latency" else est["prefill_ms"],
                    "roofline_ms": roof["e2e_ms"] if measured != "TTFT Latency" else roof["prefill_ms"],
                    "tier": max(tiers, key=tiers.get) if tiers else "roofline",
                }
            )
    return done, skipped


def _errors(df: pd.DataFrame, col: str) -> dict:
    ape = (df[col] - df.measured_ms).abs() / df.measured_ms
    return {"median_ape": round(float(np.median(ape)), 4), "p90_ape": round(float(np.percentile(ape, 90)), 4)}


def validate_bench(path: Path, warehouse_root: Path, limit: int | None = None) -> dict:
    """Every row of All_results.csv (and all_results_TTFT_ITL.csv) in `path` (a folder or one of them)."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    out: dict = {"rows": [], "not_expressed": [], "summary": {}}
    for name, measured in (("All_results.csv", "Latency"), ("all_results_TTFT_ITL.csv", "TTFT Latency")):
        file = folder / name
        if not file.exists():
            continue
        df = pd.read_csv(file, skip_blank_lines=True).dropna(how="all")
        df.columns = [c.strip() for c in df.columns]
        if measured == "Latency":
            df["input"] = df["Input Output Length"]
            output = df["Input Output Length"]
        else:
            df["input"] = df["Input Length"]
            output = df["Output Length"]
        if limit:
            df = df.head(limit)
        done, skipped = _predict(df, warehouse_root, measured, output)
        metric = "batch_latency" if measured == "Latency" else "ttft"
        for r in done:
            r["metric"] = metric
        out["rows"] += done
        out["not_expressed"] += [{**s, "file": name} for s in skipped]
        table = pd.DataFrame(done)
        if len(table):
            out["summary"][metric] = {
                "rows": len(table),
                "all": {**_errors(table, "predicted_ms"), "roofline": _errors(table, "roofline_ms")},
                "by_device_and_tier": [
                    {
                        "device": d,
                        "tier": t,
                        "rows": len(g),
                        **_errors(g, "predicted_ms"),
                        "roofline": _errors(g, "roofline_ms"),
                    }
                    for (d, t), g in table.groupby(["device", "tier"])
                ],
            }
    out["summary"]["not_expressed"] = len(out["not_expressed"])
    out["summary"]["part_assumed"] = {hw: note for hw, (_, note) in HARDWARE.items()}
    return out
