"""Predicted vs measured TTFT / TPOT of real deployments (AIConfigurator's silicon CSV layout).

Each dense-model, aggregated-serving row becomes a closed-loop benchmark (concurrency = batch_size, fixed
isl / osl) on the calibrated models of the row's `system`; rows the engine cannot express are listed with the
reason, never dropped silently."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..calibrate.catalog import devices, models
from .config import Scenario
from .run import simulate

log = logging.getLogger(__name__)

REQUIRED = (
    "id",
    "model_path",
    "system",
    "mode",
    "isl",
    "osl",
    "batch_size",
    "tp_size",
    "silicon_ttft_ms",
    "silicon_tpot_ms",
)
ROUNDS = 3  # each client sends this many requests


def _catalog_name(hf_name: str) -> str | None:
    """The catalog model of a Hugging Face name; instruction-tuned variants share their base's shapes."""
    wanted = str(hf_name).lower().removesuffix("-instruct")
    for name, cfg in models().items():
        if cfg.hf_name.lower() == wanted:
            return name
    return None


def why_not(row: pd.Series) -> str | None:
    """None when the row can be simulated, else the reason it cannot."""
    if row["mode"] != "agg":
        return f"mode {row['mode']!r}: disaggregated serving is not expressed yet"
    name = _catalog_name(row["model_path"])
    if name is None:
        return f"model {row['model_path']} is not in the model catalog"
    if models()[name].experts > 1:
        return "MoE models need expert parallelism, not expressed yet"
    if row["system"] not in devices():
        return f"system {row['system']!r} is not in the device catalog"
    for col in ("attention_dp_size", "moe_ep_size"):
        if col in row and pd.notna(row[col]) and float(row[col]) > 1:
            return f"{col} = {row[col]} is not expressed yet"
    if pd.isna(row["tp_size"]) or pd.isna(row["batch_size"]):
        return "tp_size or batch_size missing"
    return None


def scenario_for(row: pd.Series) -> Scenario:
    concurrency = int(row["batch_size"])
    precision = str(row.get("precision")) if pd.notna(row.get("precision")) else "bfloat16"
    dtype = "fp8" if "fp8" in precision else "bfloat16"
    return Scenario.model_validate(
        {
            "name": str(row["id"]),
            "source": {
                "kind": "closed_loop",
                "concurrency": concurrency,
                "requests": concurrency * ROUNDS,
                "input_tokens": int(row["isl"]),
                "output_tokens": int(row["osl"]),
            },
            "pools": [
                {
                    "device": row["system"],
                    "model": _catalog_name(row["model_path"]),
                    "tp": int(row["tp_size"]),
                    "pp": int(row["pp_size"]) if pd.notna(row.get("pp_size")) else 1,
                    "dtype": dtype,
                    "kv_cache_dtype": dtype,
                    "framework": str(row.get("backend")) if pd.notna(row.get("backend")) else None,
                    "max_model_len": int(row["isl"]) + int(row["osl"]) + 16,
                    "batching": {
                        "policy": "chunked_prefill",
                        "max_num_seqs": max(concurrency, 256),
                        "max_batched_tokens": 8192,
                    },
                }
            ],
        }
    )


def validate(path: Path, warehouse_root: Path, limit: int | None = None) -> dict:
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    rows, skipped = [], []
    for _, row in df.iterrows():
        reason = why_not(row)
        if reason:
            skipped.append({"id": row["id"], "model": row["model_path"], "reason": reason})
            continue
        if limit is not None and len(rows) >= limit:
            skipped.append({"id": row["id"], "model": row["model_path"], "reason": f"beyond --limit {limit}"})
            continue
        out = simulate(scenario_for(row), warehouse_root)["summary"]
        rows.append(
            {
                "id": row["id"],
                "model": row["model_path"],
                "device": row["system"],
                "backend": row.get("backend"),
                "precision": row.get("precision"),
                "tp": int(row["tp_size"]),
                "isl": int(row["isl"]),
                "osl": int(row["osl"]),
                "concurrency": int(row["batch_size"]),
                "measured_ttft_ms": float(row["silicon_ttft_ms"]),
                "predicted_ttft_ms": out["ttft_ms"].get("mean"),
                "measured_tpot_ms": float(row["silicon_tpot_ms"]),
                "predicted_tpot_ms": out["tpot_ms"].get("mean"),
                "cost_tiers": out["cost_tiers"],
            }
        )
    table = pd.DataFrame(rows)
    summary: dict = {"rows": len(rows), "not_expressed": len(skipped)}
    if len(table):
        for metric in ("ttft", "tpot"):
            ape = (table[f"predicted_{metric}_ms"] - table[f"measured_{metric}_ms"]).abs() / table[
                f"measured_{metric}_ms"
            ]
            table[f"{metric}_ape"] = ape
            summary[f"{metric}_median_ape"] = round(float(np.median(ape)), 4)
            summary[f"{metric}_p90_ape"] = round(float(np.percentile(ape, 90)), 4)
    return {"rows": table.to_dict("records"), "not_expressed": skipped, "summary": summary}
