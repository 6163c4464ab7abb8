"""Validation against Argonne's LLM-Inference-Bench (A100, H100, GH200, MI300X, MI250, ... across vLLM,
TensorRT-LLM and others): each static-batch row (B requests of I prompt and I output tokens, its batch latency)
is predicted by `estimate` through whatever tier its device has (calibrated where its measurements were
ingested, transferred from the nearest calibrated device otherwise, roofline where neither), beside a plain
roofline; errors are reported per device, framework and tier, so a user knows how far to trust an
uncalibrated device. The TTFT file (I = 1024, one output token, B = 16) checks the prefill alone. Rows the
engine cannot express (a device or model not in the catalog, a batch whose KV does not fit) are listed with the
reason; Mixtral runs with its experts sharded over TP, as vLLM and TensorRT-LLM do by default.

The serving loop's CPU time per iteration belongs to a framework release, and these runs used 2024 releases
(vLLM before its 0.6 scheduler rework, which its authors measured leaving the GPU idle for much of each step),
not the 2025 releases `validate silicon` fits. So it is fitted here, as there, on a calibration half of the
rows (by a stable hash of file and line) and reported on the other half only:
    overhead per iteration = step_overhead_us + sequence_overhead_us x B + broadcast_overhead_us x log2(TP)
the last part being the driver's broadcast of every step's inputs to its TP workers (a tree: log2(TP) hops).
It is a median (least absolute deviation) plane through each calibration row's gap per iteration (measured
minus the kernels' time, over its I iterations), per framework whose kernels this project measured (vLLM,
TensorRT-LLM), over rows of devices priced measured-calibrated only: elsewhere the gap also holds the
transferred kernels' error, which is not CPU time. A part the data would make negative is dropped. Frameworks
without measured kernels (llama.cpp, DeepSpeed-MII) keep the default step overhead, and their errors say how
far a vLLM-kernel estimate is from them.

What a row ran is read from the row itself where the column names deceive. A row's throughput times its latency
over its prompt and output tokens is the number of sequences it served: B for vLLM, TensorRT-LLM and DeepSpeed,
but 1 for every one of the 1,570 llama.cpp rows whatever its Batch Size. llama-bench's batch size is the prompt batch
(`-b`, n_batch: prompt tokens per iteration), so such a framework's row is one sequence whose prompt is prefilled
Batch Size tokens an iteration (at 1, token by token: the A100's Llama-2-7B row of 128 in and out takes 4.34 s at
batch 1 and 2.33 s at 16). Its GPUs split the layers, not the tensors (LAYER_SPLIT): one sequence takes about as
long per token on 4 GPUs as on 1 (Llama-2-7B on A100: 17.5, 18.4, 20.6 ms per token on 1, 2 and 4)."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress

from ..calibrate.catalog import devices, models
from ..calibrate.model import CALIBRATED
from ..ingest.text import read_csv
from .estimate import estimate
from .parallel import map_ordered
from .validate import OVERHEAD_PARTS, fit_overhead_parts, is_held_out, overhead_terms

# The benchmark's hardware names, and the catalog part each was measured on (by Argonne's documentation)
HARDWARE = {
    "Nvidia A100 GPU": ("a100_sxm4_40gb", "ALCF Polaris: A100 SXM4 40GB"),
    "Nvidia H100 GPU": ("h100_sxm", "assumed H100 SXM 80GB (the benchmark names ALCF's JLSE H100s, not the part)"),
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
FRAMEWORKS = {"vLLM": "vllm", "TensorRT-LLM": "trtllm"}  # the benchmark's frameworks whose kernels were measured
MIN_FIT_ROWS = 8
# Frameworks that split a model over GPUs by layers, one after another for a lone sequence (pipeline stages):
# llama.cpp's default `--split-mode layer` (its README and `llama-cli --help`)
LAYER_SPLIT = ("llama.cpp",)
SERVED_TOLERANCE = 0.02  # throughput x latency / tokens gives the sequences served within 2e-6 in this benchmark


def prompt_batch_frameworks(df: pd.DataFrame) -> set[str]:
    """Frameworks whose every row of Batch Size > 1 served one sequence (throughput x latency / tokens = 1): their
    Batch Size is the prompt batch, tokens prefilled per iteration (llama-bench's `-b`), not sequences."""
    if "Throughput" not in df.columns:
        return set()
    served = df["Throughput"] * df["Latency"] / (df["input"] + df["Input Output Length"])
    batched = df[df["Batch Size"] > 1].assign(single=(served - 1).abs() <= SERVED_TOLERANCE)
    return {str(fw) for fw, single in batched.groupby("Framework")["single"] if single.all()}


def _why_not(hw: str, model: str) -> str | None:
    if hw not in HARDWARE:
        return f"hardware {hw!r} is not in the device catalog"
    if HARDWARE[hw][0] not in devices():
        return f"device {HARDWARE[hw][0]} is not in the catalog"
    if MODELS.get(model) not in models():
        return f"model {model} is not in the model catalog"
    return None


def _estimates(args: dict, warehouse_root: str) -> tuple[dict, dict] | str:
    """One row's static batch estimated on the calibrated models and at the roofline (on no models), or why it
    cannot be priced; a task (parallel.map_ordered)."""
    try:
        with tempfile.TemporaryDirectory() as empty:
            return estimate(warehouse_root=Path(warehouse_root), **args), estimate(warehouse_root=Path(empty), **args)
    except ValueError as e:
        return str(e)


def _predict(
    rows: pd.DataFrame,
    warehouse_root: Path,
    measured: str,
    output: pd.Series,
    file: str,
    prompt_batch: set[str],
    client=None,
    advance=lambda: None,
):
    plan = []  # per row, in order: (its identity, the estimate's arguments or why it is not expressed, its figure)
    for i, r in rows.iterrows():
        base = {"line": int(i) + 2, "hardware": r["Hardware"], "model": r["Model"], "framework": r["Framework"]}
        reason = _why_not(r["Hardware"], r["Model"])
        if reason:
            plan.append((base, reason, None))
            advance()  # the bar counts every row of the file
            continue
        dev, _ = HARDWARE[r["Hardware"]]
        gpus, one = int(r["Num of Hardware"]), r["Framework"] in prompt_batch
        plan.append(
            (
                base,
                dict(
                    device=dev,
                    model=MODELS[r["Model"]],
                    batch=1 if one else int(r["Batch Size"]),
                    input_tokens=int(r["input"]),
                    output_tokens=int(output[i]),
                    tp=1 if r["Framework"] in LAYER_SPLIT else gpus,
                    pp=gpus if r["Framework"] in LAYER_SPLIT else 1,
                    framework=FRAMEWORKS.get(r["Framework"]),
                    prefill_chunk_tokens=int(r["Batch Size"]) if one else None,
                ),
                r[measured],
            )
        )
    todo = [args for _, args, _ in plan if isinstance(args, dict)]
    results = iter(map_ordered(_estimates, todo, client, advance, warehouse_root=str(warehouse_root)))
    done, skipped = [], []
    for base, args, figure in plan:
        result = next(results) if isinstance(args, dict) else args
        if isinstance(result, str):
            skipped.append({**base, "reason": result})
            continue
        est, roof = result
        if not est["kv_fits"]:
            skipped.append(
                {
                    **base,
                    "reason": f"the batch needs {est['kv_blocks_needed']} KV blocks, a replica "
                    f"has {est['kv_blocks_per_replica']}",
                }
            )
            continue
        ttft = measured == "TTFT Latency"
        # iterations the figure spans: the prefill's, then output - 1 decode steps
        steps = est["prefill_iterations"] + (0 if ttft else args["output_tokens"] - 1)
        used_us = est["step_overhead_us"] + est["sequence_overhead_us"] * args["batch"]
        predicted = est["prefill_ms"] if ttft else est["e2e_ms"]
        tiers = est["cost_tiers"]
        done.append(
            {
                **base,
                "device": args["device"],
                "tp": args["tp"],
                "pp": args["pp"],
                "batch": args["batch"],
                "prefill_chunk_tokens": est["prefill_chunk_tokens"],
                "input_tokens": args["input_tokens"],
                "output_tokens": args["output_tokens"],
                "steps": steps,
                "held_out": is_held_out(f"{file}:{base['line']}"),  # the split validate silicon uses
                "measured_ms": float(figure) * 1e3,
                # the kernels alone: neither the serving loop nor the eager floor `validate silicon` fitted
                # on 2025 releases (this benchmark fits its own overhead below)
                "kernels_ms": predicted - steps * used_us / 1e3 - est["prefill_eager_floor_ms"],
                "predicted_ms": predicted,
                "roofline_ms": roof["prefill_ms"] if ttft else roof["e2e_ms"],
                "tier": max(tiers, key=tiers.get) if tiers else "roofline",
                "overhead_source": est["step_overhead_source"],
            }
        )
    return done, skipped


def _overhead_terms(table: pd.DataFrame) -> np.ndarray:
    return overhead_terms(table["batch"].to_numpy(dtype=float), table["tp"].to_numpy(dtype=float))


def fit_serving_overheads(table: pd.DataFrame) -> dict:
    """Per framework with measured kernels, the median plane of the calibration half's batch-latency gaps per
    iteration over (1, B, log2 TP) on measured-calibrated devices (validate.fit_overhead_parts)."""
    out: dict = {}
    rows = table[~table.held_out & (table.metric == "batch_latency") & (table.tier == CALIBRATED)]
    for framework in FRAMEWORKS:
        g = rows[rows.framework == framework]
        if len(g) < MIN_FIT_ROWS:
            continue
        gap_us = ((g.measured_ms - g.kernels_ms) * 1e3 / g.steps).to_numpy()
        out[framework] = {
            **fit_overhead_parts(gap_us, g["batch"].to_numpy(dtype=float), g["tp"].to_numpy(dtype=float)),
            "calibration_rows": len(g),
            "devices": sorted(g.device.unique()),
        }
    return out


def _apply_overheads(table: pd.DataFrame, fitted: dict) -> pd.DataFrame:
    """predicted_ms: the kernels plus the framework's fitted overhead over the row's iterations, where fitted."""
    table = table.copy()
    for framework, f in fitted.items():
        hit = table.framework == framework
        sub = table[hit]
        per_step_us = _overhead_terms(sub) @ np.array([f[p] for p in OVERHEAD_PARTS])
        table.loc[hit, "predicted_ms"] = sub["kernels_ms"] + sub["steps"] * per_step_us / 1e3
        table.loc[hit, "overhead_source"] = f"fitted on this benchmark's calibration half ({framework})"
    return table


def _errors(df: pd.DataFrame, col: str) -> dict:
    ape = (df[col] - df.measured_ms).abs() / df.measured_ms
    return {"median_ape": round(float(np.median(ape)), 4), "p90_ape": round(float(np.percentile(ape, 90)), 4)}


def _scores(g: pd.DataFrame) -> dict:
    return {
        "rows": len(g),
        **_errors(g, "predicted_ms"),
        "roofline": _errors(g, "roofline_ms"),
        "kernels_only": _errors(g, "kernels_ms"),
    }


def validate_bench(
    path: Path, warehouse_root: Path, limit: int | None = None, client=None, progress: bool = False
) -> dict:
    """Every row of All_results.csv (and all_results_TTFT_ITL.csv) in `path` (a folder or one of them); with a Dask
    client, each row's estimates run as a task (the result is the serial one); with progress, a bar on stderr per
    file counts the rows estimated."""
    files = (("All_results.csv", "Latency"), ("all_results_TTFT_ITL.csv", "TTFT Latency"))
    names = [name for name, _ in files]
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    if not Path(path).is_dir() and Path(path).name not in names:
        raise ValueError(f"{path}: not one of Argonne's LLM-Inference-Bench files ({', '.join(names)})")
    if not any((folder / name).exists() for name in names):
        raise ValueError(f"{folder}: holds neither of Argonne's LLM-Inference-Bench files ({', '.join(names)})")
    out: dict = {"rows": [], "not_expressed": [], "summary": {}}
    done: list[dict] = []
    for name, measured in files:
        file = folder / name
        if not file.exists():
            continue
        df = read_csv(file, skip_blank_lines=True).dropna(how="all")
        df.columns = [c.strip() for c in df.columns]
        if measured == "Latency":
            df["input"] = df["Input Output Length"]
            output = df["Input Output Length"]
        else:
            df["input"] = df["Input Length"]
            output = df["Output Length"]
        if limit:
            df = df.head(limit)
        found = prompt_batch_frameworks(df)
        if found:
            out["summary"].setdefault("batch_size_read_as_prompt_batch", {})[name] = sorted(found)
        with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
            task = bar.add_task(name, total=len(df))
            rows, skipped = _predict(
                df, warehouse_root, measured, output, name, found, client, partial(bar.advance, task)
            )
        metric = "batch_latency" if measured == "Latency" else "ttft"
        done += [{**r, "file": name, "metric": metric} for r in rows]
        out["not_expressed"] += [{**s, "file": name} for s in skipped]
    fitted: dict = {}
    if done:
        table = pd.DataFrame(done)
        fitted = fit_serving_overheads(table)
        table = _apply_overheads(table, fitted)
        out["rows"] = table.to_dict(orient="records")
        for metric, t in table.groupby("metric", sort=False):
            test = t[t.held_out]
            out["summary"][metric] = {
                "rows": len(t),
                "held_out": _scores(test) if len(test) else {"rows": 0},
                "by_device_framework_and_tier": [
                    {"device": d, "framework": fw, "tier": tier, **_scores(g)}
                    for (d, fw, tier), g in test.groupby(["device", "framework", "tier"])
                ],
            }
    out["summary"]["serving_overheads"] = fitted
    out["summary"]["not_expressed"] = len(out["not_expressed"])
    out["summary"]["part_assumed"] = {hw: note for hw, (_, note) in HARDWARE.items()}
    out["summary"]["layers_split_over_gpus"] = list(LAYER_SPLIT)
    return out
