"""Predicted vs measured TTFT / TPOT of real deployments (AIConfigurator's silicon CSV layout).

Each row of a catalog model (dense, or MoE with tensor- and expert-parallel experts: moe_tp_size x moe_ep_size =
tp_size) becomes a closed-loop benchmark (fixed isl / osl) on the calibrated models of the row's `system`; rows
the engine cannot express (data-parallel attention, models outside the catalog) are listed with the reason,
never dropped silently.
- aggregated (`mode` agg): one pool of TP x PP replicas; concurrency = batch_size;
- disaggregated (`mode` disagg): a prefill pool of prefill_num_workers replicas (prefill_tp_size x
  prefill_pp_size) and a decode pool of decode_num_workers replicas (decode_tp_size x decode_pp_size, at most
  decode_batch_size sequences each), the prompt's KV moved between them over the system's catalog network link
  (per sending replica, shared by concurrent transfers); concurrency = decode_batch_size x decode_num_workers,
  as the campaigns' `silicon_concurrency` records it.

How a row is measured: aiperf's closed loop (the client AIConfigurator's benchmark template runs). aiperf runs
its warm-up requests and lets them drain before profiling begins; profiling then starts every client at once
(its opening burst: a whole round of prompts arriving together), each client sending its next request when
its last one completes, and the reported means cover every profiled request, the burst's included. So here
every client sends its first request at t = 0 and ROUNDS requests in all, and the means are over all of them
(the drained warm-up leaves nothing behind that the simulation keeps). Each request's lengths are drawn normal
around the row's isl / osl with the client's length spread (stddev / mean: aiperf's --isl-stddev /
--osl-stddev, not recorded in the CSV). Whether the clients stay in lockstep or drift apart after the burst
then emerges from the scheduler. The burst weighs 1 / ROUNDS in the means; the benchmark's own request count
per client is not recorded either (AIConfigurator's template sends 50, Dynamo's benchmarks/llm/perf.sh 10;
on vLLM's rows 6 to 8 fit best and 10 less well).

Each row runs with its framework's batching (framework_batching: scenario.FRAMEWORK_BATCHING, each framework's
overlap scheduler as its version defaults, and for TRT-LLM the token budget AIConfigurator's generator gives its
engines).

Rows are split in two by a stable hash of their id. The calibration half fits, per (device, framework):
- the serving loop's CPU overhead, outside the kernels: step_overhead_us per iteration (scheduler pass,
  launch gaps) plus sequence_overhead_us per sequence in it (scheduling it, sampling, detokenizing and
  streaming its token) plus broadcast_overhead_us per hop of the driver's tree broadcast of each step's inputs
  to its TP workers (log2 TP hops; none on one GPU: a TP group's ranks are separate processes fed by one
  scheduler), the median plane through the gap between measured TPOT and TPOT simulated without it, against
  the simulated sequences per iteration and log2 TP (the form validate_bench fits on Argonne's static batches);
- which length spread of SPREADS puts the simulated TTFT (with that overhead) closest to the measured;
- the host's time to launch one layer's kernels outside a CUDA graph (eager_layer_us): an iteration with prompt
  tokens runs eagerly (frameworks capture decode batches only) and cannot end before its host has launched every
  layer, so it takes at least layers x that. Of EAGER_LAYERS_US, at the spread chosen, each with the overhead
  plane refitted: the one with the least TPOT median APE among those that leave the TPOT p90 no worse (within
  TPOT_P90_TOLERANCE);
- the frontend latency: the request path outside the engine (the HTTP frontend, tokenization, routing to a
  worker, the first token streamed back), a fixed time every request spends before the engine sees it: of
  FRONTENDS_US, the one whose re-simulated TTFT is closest to the measured over the dense-model rows, among
  those that leave their TPOT p90 no worse (within TPOT_P90_TOLERANCE).
The other half is held out: its errors are the ones reported as the result, beside a plain roofline (the same
simulation with speed-of-light op times and no overhead), and per measurement campaign (by_campaign, with a
check of whether the campaign's server ran every request its clients sent), and per configuration the cost of a
prompt and of a decode iteration the rows imply beside the simulation's (closed_loop.prompt_and_decode_costs). The
fitted overheads and frontend latency are written next to the device's cost models and used by every replay of
that device and framework whose pool does not set them."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress

from ..calibrate.artifacts import MODELS_DIR, beats_roofline
from ..calibrate.catalog import DTYPE_BYTES, devices, models
from ..ingest.text import read_csv
from .closed_loop import closed_loop_throughput, prompt_and_decode_costs, ttft_share
from .parallel import map_ordered
from .pools.llm.build import OVERHEADS_FILE, fixed_overhead_us, read_overheads
from .pools.llm.kv import kv_blocks
from .run import simulate
from .scenario import FRAMEWORK_BATCHING, Scenario

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
ROUNDS = 8  # each client sends this many requests, the opening burst the first of them
# The settings of a row's benchmark the CSV does not record, the values validate takes for them and why: its
# summary's `assumptions`, as a replay's summary names the defaults standing in for a measurement.
ASSUMPTIONS = {
    "requests_per_client": {
        "value": ROUNDS,
        "why": "not recorded (AIConfigurator's benchmark template sends 50 a client, Dynamo's perf script 10): 8 fits "
        "vLLM's and TRT-LLM's calibration halves best of 4, 8, 16 and 50, and 50 fits far worse (TTFT median "
        "15% -> 38% for vLLM, 21% -> 34% for TRT-LLM, held out: benchmarks/ttft_client_settings.py); the burst's "
        "1 / 8 weight stands in for waiting before the first token that the simulated steady state lacks",
    },
    "trtllm_max_num_tokens": {
        "value": "isl + 1500 + max batch (aggregated), isl + 1500 (prefill workers), max batch (decode workers)",
        "why": "not recorded: AIConfigurator's generator rule (trtllm.rule) for the engines it deploys; TRT-LLM's "
        "default 8192 fits worse (TTFT median 21% -> 35% held out: benchmarks/ttft_client_settings.py)",
    },
}
# the client's length spread (stddev / mean of isl and osl, aiperf's --isl-stddev / --osl-stddev) values tried
SPREADS = (0.0, 0.05, 0.1, 0.2)
# the frontend latencies (us) tried on the calibration half: the request path outside the engine, from none to
# what a loaded HTTP frontend with tokenization might cost
FRONTENDS_US = (0.0, 10000.0, 20000.0, 40000.0)
# a campaign whose TTFT at its lowest concurrency exceeds the simulation's by this many completion intervals or
# more is named as a server short of its clients (by_campaign): one sequence short gives about 1, none about 0
SHORT_SERVER_INTERVALS = 0.5
# by_campaign's check at a campaign's highest concurrency: its throughput within this APE of the simulation's
# while the measured share of a request's lifetime before its first token is this many times the simulated one
QUEUED_THROUGHPUT_APE = 0.1
QUEUED_SHARE_RATIO = 2.0
UNNAMED_CAMPAIGN = "(rows naming no source_file)"
# how much worse (relative) a frontend latency may leave the calibration rows' TPOT p90 APE: a latency ahead of
# the engine shifts a closed loop's arrivals across iteration boundaries, which moves the p90 by a few tenths
# of a point either way (vLLM 0.12.0 on H100: 5.85% at 0, 5.89% at 20 ms, 6.43% at 40 ms)
TPOT_P90_TOLERANCE = 0.01
# the host's time to launch one layer's kernels in an eager iteration (us) tried on the calibration half: none
# (the host keeps ahead of the GPU) to a millisecond (PyTorch eager dispatch of a decoder layer's dozen-odd ops,
# each some tens of microseconds of Python and framework code)
EAGER_LAYERS_US = (0.0, 250.0, 500.0, 750.0, 1000.0)
MIN_VERSION_ROWS = 8  # a framework version with fewer calibration rows takes its framework's fit
MIN_LINE_ROWS = 5  # fewer rows fit the overhead as one constant per iteration (a line through 2-4 is noise)
# the serving loop's fitted parts per iteration, each over its column of overhead_terms
OVERHEAD_PARTS = ("step_overhead_us", "sequence_overhead_us", "broadcast_overhead_us")
Overhead = tuple[float, float, float]  # those parts' values, in that order


def _catalog_name(hf_name: str) -> str | None:
    """The catalog model of a Hugging Face name; instruction-tuned variants share their base's shapes."""
    wanted = str(hf_name).lower().removesuffix("-instruct").removesuffix("-fp8")  # FP8 checkpoints: same shapes
    for name, cfg in models().items():
        if cfg.hf_name.lower() == wanted:
            return name
    return None


AGG_COUNTS = ("tp_size", "batch_size")
DISAGG_COUNTS = ("prefill_num_workers", "prefill_tp_size", "decode_num_workers", "decode_tp_size", "decode_batch_size")


def is_disaggregated(row: pd.Series) -> bool:
    return row["mode"] == "disagg"


def why_not(row: pd.Series) -> str | None:
    """None when the row can be simulated, else the reason it cannot."""
    if row["mode"] not in ("agg", "disagg"):
        return f"mode {row['mode']!r} is neither agg nor disagg"
    name = _catalog_name(row["model_path"])
    if name is None:
        return f"model {row['model_path']} is not in the model catalog"
    if row["system"] not in devices():
        return f"system {row['system']!r} is not in the device catalog"
    prefixes = ("prefill_", "decode_") if is_disaggregated(row) else ("",)
    for p in prefixes:
        col = f"{p}attention_dp_size"
        if col in row and pd.notna(row[col]) and float(row[col]) > 1:
            return f"{col} = {row[col]} (data-parallel attention) is not expressed yet"
        if models()[name].experts == 1:
            if pd.notna(row.get(f"{p}moe_ep_size")) and float(row[f"{p}moe_ep_size"]) > 1:
                return f"{p}moe_ep_size = {row[f'{p}moe_ep_size']} on a dense model"
        elif pd.notna(row.get(f"{p}tp_size")):
            tp, ep, moe_tp = float(row[f"{p}tp_size"]), _expert_parallel(row, p), row.get(f"{p}moe_tp_size")
            if pd.notna(moe_tp) and float(moe_tp) > 0 and float(moe_tp) * ep != tp:
                return f"{p}moe_tp_size x {p}moe_ep_size = {float(moe_tp) * ep:g} is not {p}tp_size ({tp:g})"
    counts = DISAGG_COUNTS if is_disaggregated(row) else AGG_COUNTS
    for col in (*counts, "isl", "osl", "silicon_ttft_ms", "silicon_tpot_ms"):
        value = pd.to_numeric(pd.Series([row.get(col)]), errors="coerce").iloc[0]
        if pd.isna(value) or value <= 0:
            return f"{col} = {row.get(col)!r} is not a positive number"
        if col in (*counts, "isl", "osl") and value != int(value):
            return f"{col} = {row[col]!r} is not a whole number"
    return None


def preflight(row: pd.Series) -> str | None:
    """None when the row's deployment can be built (a valid scenario whose model fits each pool's devices), else
    why not. Checked without pricing: a pool's cost grids are built once the row runs (pricing every row twice
    was a tenth of a whole validate run)."""
    try:
        scenario = scenario_for(row)
        for pool in scenario.pools:
            kv_blocks(pool, devices()[pool.device], models()[pool.model])
    except ValueError as e:
        return str(e)
    return None


def _expert_parallel(row: pd.Series, prefix: str = "") -> int:
    """The row's expert-parallel degree (1 where it names none)."""
    ep = row.get(f"{prefix}moe_ep_size")
    return int(float(ep)) if pd.notna(ep) and float(ep) >= 1 else 1


def concurrency(row: pd.Series) -> int:
    """Clients in the closed loop."""
    if is_disaggregated(row):
        return _int(row, "decode_batch_size") * _int(row, "decode_num_workers")
    return _int(row, "batch_size")


def _weights_dtype(row: pd.Series) -> str:
    """The weights' GEMM dtype: the row's GEMM quantization where it names a known one (fp8_block kernels are not
    fp8 per-tensor ones), else its precision; 16-bit when neither says. The KV cache's dtype is the framework's
    default for it (LLMPoolSpec.kv_dtype)."""
    precision = str(row.get("precision")) if pd.notna(row.get("precision")) else "bfloat16"
    gemm = str(row.get("gemm_quant_mode")) if pd.notna(row.get("gemm_quant_mode")) else ""
    if gemm in DTYPE_BYTES and gemm not in ("float32", "tf32"):
        return gemm
    return "fp8" if "fp8" in precision else "bfloat16"


def _pool(
    row: pd.Series,
    overhead: Overhead,
    spread: float,
    frontend_us: float,
    prefix: str = "",
    eager_us: float = 0.0,
    **fields,
) -> dict:
    """One LLM pool of the row's deployment (`prefix`: prefill_ / decode_ columns of a disaggregated row); its
    frontend latency is set even when 0, so a replay here never takes an earlier fit from the warehouse. The
    overhead's parts (OVERHEAD_PARTS) price the pool's own TP degree, as a replay does (build.step_overhead)."""
    pp = f"{prefix}pp_size"
    tp = _int(row, f"{prefix}tp_size")
    step_us, sequence_us, broadcast_us = overhead
    return {
        "device": row["system"],
        "model": _catalog_name(row["model_path"]),
        "tp": tp,
        "pp": _int(row, pp) if pd.notna(row.get(pp)) else 1,
        "ep": _expert_parallel(row, prefix) if models()[_catalog_name(row["model_path"])].experts > 1 else 1,
        "dtype": _weights_dtype(row),
        "framework": _framework(row) or None,
        # room for the longest drawn lengths (4 standard deviations above the means)
        "max_model_len": math.ceil((_int(row, "isl") + _int(row, "osl")) * (1 + 4 * spread)) + 16,
        "step_overhead_us": fixed_overhead_us(step_us, broadcast_us, tp),
        "sequence_overhead_us": sequence_us,
        "eager_layer_us": eager_us,
        "frontend_latency_us": frontend_us,
        **fields,
    }


def scenario_for(
    row: pd.Series,
    overhead: Overhead = (0.0, 0.0, 0.0),
    spread: float = 0.0,
    frontend_us: float = 0.0,
    eager_us: float = 0.0,
    rounds: int = ROUNDS,
) -> Scenario:
    """The row's benchmark as a scenario: its clients each sending `rounds` requests (module docstring)."""
    clients = concurrency(row)
    source = {
        "kind": "closed_loop",
        "concurrency": clients,
        "requests": clients * rounds,
        "input_tokens": _int(row, "isl"),
        "output_tokens": _int(row, "osl"),
        "input_tokens_stddev": spread * _int(row, "isl"),
        "output_tokens_stddev": spread * _int(row, "osl"),
    }
    if not is_disaggregated(row):
        batching = {**framework_batching(row, "agg"), "max_num_seqs": max(clients, 256)}
        pool = _pool(row, overhead, spread, frontend_us, eager_us=eager_us, batching=batching)
        return Scenario.model_validate({"name": str(row["id"]), "source": source, "pools": [pool]})
    prefill = _pool(  # a request crosses the frontend once, on its way to the prefill workers
        row,
        overhead,
        spread,
        frontend_us,
        "prefill_",
        eager_us,
        name="prefill",
        replicas=_int(row, "prefill_num_workers"),
        batching=framework_batching(row, "prefill"),
    )
    decode = _pool(
        row,
        overhead,
        spread,
        0.0,
        "decode_",
        eager_us,
        name="decode",
        replicas=_int(row, "decode_num_workers"),
        router="least_outstanding",
        batching={**framework_batching(row, "decode"), "max_num_seqs": _int(row, "decode_batch_size")},
    )
    return Scenario.model_validate(
        {
            "name": str(row["id"]),
            "clients": [{"name": "benchmark", "source": source, "pipeline": "disaggregated"}],
            "pools": [prefill, decode],
            "links": [{"name": "kv", "like": f"{row['system']}.network", "scope": "per_replica"}],
            "pipelines": {
                "disaggregated": {
                    "stages": [
                        {"name": "prefill", "type": "prefill", "pool": "prefill"},
                        {"name": "transfer", "type": "kv_transfer", "link": "kv"},
                        {"name": "decode", "type": "decode", "pool": "decode"},
                    ]
                }
            },
        }
    )


def framework_batching(row: pd.Series, role: str) -> dict:
    """The batching of a row's `agg`, `prefill` or `decode` workers: its framework's (FRAMEWORK_BATCHING); for
    TRT-LLM, the token budget and overlap scheduler AIConfigurator's benchmark rules give each role (trtllm.rule:
    agg max_num_tokens = max_batch_size + isl + 1500, prefill isl + 1500, decode max_batch_size; the overlap
    scheduler off on prefill workers only); for vLLM, async scheduling from 0.14 on (not with PP)."""
    batching = dict(FRAMEWORK_BATCHING.get(_framework(row), FRAMEWORK_BATCHING["vllm"]))
    if _framework(row) == "vllm":
        release = tuple(int(p) for p in re.findall(r"\d+", _version(row))[:2])
        pp = row.get(f"{'' if role == 'agg' else role + '_'}pp_size")
        batching["overlap"] = release >= (0, 14) and not (pd.notna(pp) and float(pp) > 1)
    if _framework(row) == "trtllm":
        if role == "decode":
            budget = _int(row, "decode_batch_size")
        else:
            budget = _int(row, "isl") + 1500 + (_int(row, "batch_size") if role == "agg" else 0)
        batching.update(max_batched_tokens=budget, overlap=role != "prefill")
    return batching


def _int(row: pd.Series, col: str) -> int:
    return int(float(row[col]))


def deployment(row: pd.Series) -> str:
    """The row's GPUs in words: `TP4` (aggregated) or `prefill 8 x TP1 + decode 2 x TP4`."""
    if not is_disaggregated(row):
        return f"TP{_int(row, 'tp_size')}"
    return (
        f"prefill {_int(row, 'prefill_num_workers')} x TP{_int(row, 'prefill_tp_size')} + "
        f"decode {_int(row, 'decode_num_workers')} x TP{_int(row, 'decode_tp_size')}"
    )


def _framework(row: pd.Series) -> str:
    return str(row.get("backend")) if pd.notna(row.get("backend")) else ""


def is_held_out(row_id: str) -> bool:
    """The stable half of the rows kept out of calibration (client start spread, step overhead)."""
    return hashlib.sha256(str(row_id).encode()).digest()[0] % 2 == 1


def campaign(row: pd.Series) -> str:
    """The measurement campaign a row came from (its source file's device / backend / version / name, not the
    path on the machine that wrote it): rows of one campaign share a client."""
    text = str(row.get("silicon_data_source", ""))
    path = next((p.split("=", 1)[1] for p in text.split("; ") if p.startswith("source_file=")), "")
    return "/".join(Path(path).parts[-4:]) if path else ""


def benchmark_means(
    row: pd.Series,
    warehouse_root: Path,
    overhead: Overhead = (0.0, 0.0, 0.0),
    spread: float = 0.0,
    price_at: str = "point",
    frontend_us: float = 0.0,
    eager_us: float = 0.0,
) -> dict:
    """Mean TTFT and TPOT (ms) of every request, the opening burst's included (aiperf's profiling phase: every
    client sends its first request at t = 0), the mean sequences per iteration and the cost tiers used; overhead
    is the serving loop's microseconds per iteration, per sequence and per TP hop (OVERHEAD_PARTS), spread the
    client's length spread; price_at prices the ops at their prediction or an end of their 90% interval;
    frontend_us is the request path's latency outside the engine, eager_us the host's per layer of an iteration
    run outside a CUDA graph."""
    scenario = scenario_for(row, overhead, spread, frontend_us, eager_us)
    scenario.price_at = price_at
    out = simulate(scenario, warehouse_root)
    req = out["requests"]
    req = req[req.status == "completed"]
    pools = out["summary"]["pools"]
    decode = pools.get("decode") or next(iter(pools.values()))
    return {
        "ttft_ms": float(req.ttft_ms.mean()),
        "tpot_ms": float(req.tpot_ms.mean()),
        "sequences_per_iteration": float(decode["mean_batch_size"]),
        "tiers": out["summary"]["cost_tiers"],
    }


def median_plane(gap_us: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The median (least absolute deviation) plane through per-iteration gaps over the columns of X (the first a
    constant): a column that does not vary is left out, a part the data would make negative is dropped and the
    rest refitted (no serving loop saves time per sequence or per TP hop); a left-out part is 0."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import IterationLimitWarning

    keep = [j for j in range(X.shape[1]) if j == 0 or np.ptp(X[:, j]) > 0]
    while True:
        with warnings.catch_warnings():
            # a median plane is often not unique (a flat set of optima): the iterations then alternate between
            # equally good planes without settling. Over 200 bootstrap fits of the H100 calibration gaps, the
            # 2 that ran out of iterations were within 1e-9 of the exact least-absolute-deviation optimum
            warnings.simplefilter("ignore", IterationLimitWarning)
            params = sm.QuantReg(gap_us, X[:, keep]).fit(q=0.5, max_iter=5000).params
        negative = [k for k, p in zip(keep, params, strict=True) if p < 0]
        if not negative or len(keep) == 1:
            break
        keep = [k for k in keep if k != negative[0]]
    coef = np.zeros(X.shape[1])
    coef[keep] = np.maximum(params, 0.0)
    return coef


def overhead_terms(sequences: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """The serving loop's parts per iteration (OVERHEAD_PARTS): 1, the sequences in the batch, log2 TP (the hops
    of the driver's tree broadcast of each step's inputs to its TP workers; 0 on one GPU)."""
    return np.column_stack([np.ones(len(sequences)), sequences, np.log2(tp)])


def fit_overhead_parts(gap_us: np.ndarray, sequences: np.ndarray, tp: np.ndarray) -> dict:
    """The serving loop's parts (OVERHEAD_PARTS, us, to 2 places): the median plane of per-iteration gaps over
    overhead_terms."""
    coef = median_plane(gap_us, overhead_terms(sequences, tp))
    return {part: round(float(c), 2) for part, c in zip(OVERHEAD_PARTS, coef, strict=True)}


def _overhead_plane(g: pd.DataFrame) -> dict:
    """The median plane through the rows' TPOT gaps (measured minus simulated without the overhead) against
    their sequences per iteration and log2 of their TP degree (overhead_terms): a fixed part per iteration, a part
    per sequence and a part per hop of the TP broadcast, each floored at 0. Fewer than MIN_LINE_ROWS rows give one
    constant."""
    gap_us = ((g.measured_tpot_ms - g.tpot_no_overhead_ms) * 1e3).to_numpy()
    if len(g) < MIN_LINE_ROWS:
        step_us = round(max(float(np.median(gap_us)), 0.0), 2)
        return {**dict.fromkeys(OVERHEAD_PARTS, 0.0), "step_overhead_us": step_us, "calibration_rows": len(g)}
    tp = g["tp"].to_numpy(dtype=float) if "tp" in g else np.ones(len(g))
    parts = fit_overhead_parts(gap_us, g.sequences_per_iteration.to_numpy(dtype=float), tp)
    return {**parts, "calibration_rows": len(g)}


def _fit_step_overheads(table: pd.DataFrame) -> dict:
    """Per (device, framework) over the calibration half's dense-model rows, the serving loop's overhead plane
    (_overhead_plane); under `versions`, the same per framework version (backend_version) with at least
    MIN_VERSION_ROWS rows (a scheduler's cost changes between releases; replays of a pool, which names no
    version, take the framework's line). MoE rows stay out: their expert GEMMs are priced by the dense GEMM
    model standing in for grouped MoE kernels, so their TPOT gap holds that stand-in's error, not the serving
    loop's CPU time."""
    out: dict = {}
    for (dev, fw), g in table[~table.held_out & ~table.moe].groupby(["device", "backend"]):
        entry = out.setdefault(dev, {})[fw] = _overhead_plane(g)
        if "backend_version" in g:
            versions = {
                str(v): _overhead_plane(gv) for v, gv in g.groupby("backend_version") if len(gv) >= MIN_VERSION_ROWS
            }
            if versions:
                entry["versions"] = versions
    return out


def _means_task(call: tuple[pd.Series, dict], warehouse_root: str | None) -> dict:
    """benchmark_means of one (row, keyword arguments) call, as a task (a Dask worker runs it in its own process);
    without a warehouse, on none: every op at its roofline time."""
    row, kwargs = call
    if warehouse_root is None:
        with tempfile.TemporaryDirectory() as empty:
            return benchmark_means(row, Path(empty), **kwargs)
    return benchmark_means(row, Path(warehouse_root), **kwargs)


class Runs:
    """Runs batches of benchmark_means calls, each a (row, keyword arguments) pair: one after another here, or as
    tasks on a Dask client (parallel.map_ordered). Results come back in the order of the calls and each simulation
    depends on its inputs alone, so both give the same output to the bit. `advance` is called once per finished
    call."""

    def __init__(self, warehouse_root: Path, client=None, advance=lambda: None):
        self.root, self.client, self.advance = str(warehouse_root), client, advance

    def means(self, calls: list[tuple[pd.Series, dict]], roofline: bool = False) -> list[dict]:
        """The calls' results; with `roofline`, on no cost models."""
        root = None if roofline else self.root
        return map_ordered(_means_task, calls, self.client, self.advance, warehouse_root=root)


def _version(row: pd.Series) -> str:
    return str(row.get("backend_version")) if pd.notna(row.get("backend_version")) else ""


def _fitted(fitted: dict, row: pd.Series) -> dict:
    """What was fitted for the row's device and framework, its version's own fit overriding."""
    entry = fitted.get(row["system"], {}).get(_framework(row), {})
    return {**entry, **entry.get("versions", {}).get(_version(row), {})}


def _step_overhead(fitted: dict, row: pd.Series) -> Overhead:
    f = _fitted(fitted, row)
    return tuple(f.get(part, 0.0) for part in OVERHEAD_PARTS)


def _spread(fitted: dict, row: pd.Series) -> float:
    return _fitted(fitted, row).get("client_length_spread", 0.0)


def _frontend(fitted: dict, row: pd.Series) -> float:
    return _fitted(fitted, row).get("frontend_latency_us", 0.0)


def _eager(fitted: dict, row: pd.Series) -> float:
    return _fitted(fitted, row).get("eager_layer_us", 0.0)


def pick_guarded(objective: dict[float, float], tpot_p90: dict[float, float]) -> float:
    """Of the candidates (us; 0 among them), the one with the least objective (an APE) among those whose TPOT p90
    APE is no worse than 0's, within TPOT_P90_TOLERANCE of it; the smaller on a tie. The frontend latency's
    objective is the TTFT median, the eager floor's the TPOT median."""
    allowed = [us for us in objective if tpot_p90[us] <= tpot_p90[0.0] * (1 + TPOT_P90_TOLERANCE)]
    return min(allowed, key=lambda us: (objective[us], us))


def _calibrate(expressible: list, rows: list[dict], runs: Runs) -> tuple[dict, dict]:
    """On the calibration half, for each client length spread of SPREADS: the rows simulated without the
    overhead, the overhead fitted on their TPOT gaps, the rows simulated again with it. Per (device,
    framework), and per framework version with at least MIN_VERSION_ROWS rows, the spread whose TTFT is
    closest to the measured (median APE) is kept with its overhead; then, at that spread, the eager floor of
    EAGER_LAYERS_US whose TPOT is closest (the overhead refitted with it); then, at those, the frontend latency of
    FRONTENDS_US whose TTFT is closest. Each step's simulations run as one batch of `runs`. Returns the fitted
    {device: {framework: {..., versions: {version: ...}}}} and the kept simulations {row index: benchmark_means}."""
    cal = [i for i, rec in enumerate(rows) if not rec["held_out"]]

    def trial(spread_of: dict[int, float], eager_us: float = 0.0) -> tuple[dict, dict]:
        """The calibration rows, each at its spread and with the eager floor, simulated without the overhead,
        the overhead plane fitted on their TPOT gaps, and the rows simulated again with it: (the fit, {row:
        simulation, with the run without the overhead's TPOT and sequences per iteration})."""
        table = pd.DataFrame(rows)
        bare = runs.means([(expressible[i], {"spread": spread_of[i], "eager_us": eager_us}) for i in cal])
        for i, sim in zip(cal, bare, strict=True):
            table.loc[i, ["tpot_no_overhead_ms", "sequences_per_iteration"]] = (
                sim["tpot_ms"],
                sim["sequences_per_iteration"],
            )
        fitted = _fit_step_overheads(table)
        calls = [
            (
                expressible[i],
                {"overhead": _step_overhead(fitted, expressible[i]), "spread": spread_of[i], "eager_us": eager_us},
            )
            for i in cal
        ]
        sims = dict(zip(cal, runs.means(calls), strict=True))
        for i in cal:
            sims[i].update(table.loc[i, ["tpot_no_overhead_ms", "sequences_per_iteration"]].to_dict())
        return fitted, sims

    trials = {spread: trial(dict.fromkeys(cal, spread)) for spread in SPREADS}

    def choose(members: list[int], dev: str, fw: str, version: str | None = None) -> tuple[dict, float]:
        """The spread (and the overhead fitted at it) for these rows; a version's entry holds only what was
        fitted for the version itself (its overhead may be its framework's)."""
        errors = {}
        for spread, (_, sims) in trials.items():
            ape = [abs(sims[i]["ttft_ms"] - rows[i]["measured_ttft_ms"]) / rows[i]["measured_ttft_ms"] for i in members]
            errors[spread] = float(np.median(ape))
        best = min(SPREADS, key=lambda x: (errors[x], x))
        fit = trials[best][0].get(dev, {}).get(fw, {})
        if version is None:
            entry = {"step_overhead_us": 0.0, "sequence_overhead_us": 0.0, **fit}
            entry.pop("versions", None)
        else:
            entry = dict(fit.get("versions", {}).get(version, {}))
        entry["client_length_spread"] = best
        entry["calibration_ttft_median_ape_by_spread"] = {str(k): round(v, 4) for k, v in errors.items()}
        entry["calibration_rows"] = len(members)
        return entry, best

    chosen: dict = {}
    spread_of: dict[int, float] = {}
    groups: dict[tuple, list[int]] = {}
    for i in cal:
        groups.setdefault((rows[i]["device"], rows[i]["backend"]), []).append(i)
    versions_of: dict[tuple, dict[str, list[int]]] = {}
    for (dev, fw), members in groups.items():
        entry, best = choose(members, dev, fw)
        spread_of.update(dict.fromkeys(members, best))
        versions = versions_of[dev, fw] = {}
        for i in members:
            versions.setdefault(rows[i]["backend_version"], []).append(i)
        for ver, vm in versions.items():
            if len(vm) >= MIN_VERSION_ROWS:
                entry.setdefault("versions", {})[ver], vbest = choose(vm, dev, fw, ver)
                spread_of.update(dict.fromkeys(vm, vbest))
        chosen.setdefault(dev, {})[fw] = entry

    # the eager floor: each calibration row at its spread with each candidate (trial: the overhead plane refitted);
    # eager_runs[us][i]: (the fit, the simulation)
    eager_runs = {0.0: {i: (trials[spread_of[i]][0], trials[spread_of[i]][1][i]) for i in cal}}
    for us in EAGER_LAYERS_US[1:]:
        fitted, sims = trial(spread_of, us)
        eager_runs[us] = {i: (fitted, sims[i]) for i in cal}

    def ape(sims: dict, members: list[int], metric: str) -> np.ndarray:
        return np.array([abs(sims[i][f"{metric}_ms"] / rows[i][f"measured_{metric}_ms"] - 1) for i in members])

    def entries():
        """(device, framework, version or None, its entry in `chosen`, its calibration rows): each framework's
        entry, then each of its versions that has one."""
        for (dev, fw), members in groups.items():
            entry = chosen[dev][fw]
            for ver, vm in [(None, members), *versions_of[dev, fw].items()]:
                target = entry if ver is None else entry.get("versions", {}).get(ver)
                if target is not None:
                    yield dev, fw, ver, target, vm

    by_eager = {us: {i: eager_runs[us][i][1] for i in cal} for us in eager_runs}

    def eager(members: list[int]) -> tuple[float, dict]:
        """The candidate whose TPOT is closest to the measured (median APE) over these rows, among those that leave
        their TPOT p90 APE no worse than without a floor (pick_guarded): a floor on eager iterations is an
        iteration cost, fitted on TPOT as the overhead plane is. The smaller on a tie."""
        median = {us: float(np.median(ape(sims, members, "tpot"))) for us, sims in by_eager.items()}
        p90 = {us: float(np.percentile(ape(sims, members, "tpot"), 90)) for us, sims in by_eager.items()}
        errors = {
            str(us): {"tpot_median_ape": round(median[us], 4), "tpot_p90_ape": round(p90[us], 4)} for us in by_eager
        }
        return pick_guarded(median, p90), errors

    eager_of: dict[int, float] = {}
    for dev, fw, ver, target, vm in entries():
        us, errors = eager(vm)
        fit = eager_runs[us][vm[0]][0].get(dev, {}).get(fw, {}) if us else {}
        if ver is not None:
            fit = fit.get("versions", {}).get(ver, {})
        target.update({part: fit[part] for part in OVERHEAD_PARTS if part in fit})  # refitted with the floor
        target["eager_layer_us"] = us
        target["calibration_tpot_errors_by_eager_layer_us"] = errors
        eager_of.update(dict.fromkeys(vm, us))

    # the frontend latency: each calibration row simulated again with each candidate, at its spread, eager floor
    # and overhead (a closed loop's TTFT does not shift by the latency added: arrivals move across iteration
    # boundaries)
    by_frontend = {0.0: {i: eager_runs[eager_of[i]][i][1] for i in cal}}
    for us in FRONTENDS_US[1:]:
        calls = [
            (
                expressible[i],
                {
                    "overhead": _step_overhead(eager_runs[eager_of[i]][i][0], expressible[i]),
                    "spread": spread_of[i],
                    "frontend_us": us,
                    "eager_us": eager_of[i],
                },
            )
            for i in cal
        ]
        by_frontend[us] = dict(zip(cal, runs.means(calls), strict=True))

    def frontend(members: list[int]) -> tuple[float, dict]:
        """The candidate whose simulated TTFT is closest to the measured (median APE) over the dense-model rows
        (MoE rows' TTFT holds the grouped-GEMM stand-in's error), among those that leave their TPOT p90 APE no
        worse than without a frontend (pick_guarded): a latency outside the engine cannot explain TPOT, and in a
        closed loop it moves arrivals across iteration boundaries, which can (H100, TRT-LLM at 20 ms: held-out TPOT
        p90 15.3% -> 17.0%). The smaller on a tie; 0 without dense rows."""
        dense = [i for i in members if not rows[i]["moe"]]
        if not dense:
            return 0.0, {}
        ttft = {us: float(np.median(ape(sims, dense, "ttft"))) for us, sims in by_frontend.items()}
        tpot = {us: float(np.percentile(ape(sims, dense, "tpot"), 90)) for us, sims in by_frontend.items()}
        return pick_guarded(ttft, tpot), {
            str(us): {"ttft_median_ape": round(ttft[us], 4), "tpot_p90_ape": round(tpot[us], 4)} for us in ttft
        }

    frontend_of: dict[int, float] = {}
    for _, _, _, target, vm in entries():
        us, errors = frontend(vm)
        target["frontend_latency_us"] = us
        target["calibration_errors_by_frontend_us"] = errors
        frontend_of.update(dict.fromkeys(vm, us))
    kept: dict = {}
    for i in cal:
        sim = by_frontend[frontend_of[i]][i]
        base = eager_runs[eager_of[i]][i][1]  # the overhead plane's inputs stay those of the run without it
        kept[i] = {**sim, **{k: base[k] for k in ("tpot_no_overhead_ms", "sequences_per_iteration")}}
    return chosen, kept


def _rounded(value: float) -> float | None:
    """4 decimals, None for NaN (the summary is strict JSON)."""
    return round(value, 4) if math.isfinite(value) else None


def _errors(table: pd.DataFrame, prefix: str = "predicted") -> dict:
    """Median and p90 APE of TTFT, TPOT and the closed loop's throughput (closed_loop_throughput)."""
    out = {}
    for metric in ("ttft", "tpot", "throughput"):
        if metric == "throughput":
            measured, got = closed_loop_throughput(table), closed_loop_throughput(table, prefix)
        else:
            measured, got = table[f"measured_{metric}_ms"], table[f"{prefix}_{metric}_ms"]
        ape = (got - measured).abs() / measured
        out[f"{metric}_median_ape"] = round(float(np.median(ape)), 4) if len(ape) else None
        out[f"{metric}_p90_ape"] = round(float(np.percentile(ape, 90)), 4) if len(ape) else None
    return out


def unexplained_ttft_intervals(table: pd.DataFrame) -> pd.Series:
    """Per row, the measured TTFT the prediction leaves unexplained, in completion intervals: (osl x measured TPOT)
    / clients, the time between two of a closed loop's requests finishing. NaN where that interval is 0."""
    interval = table.osl * table.measured_tpot_ms / table.concurrency
    return ((table.measured_ttft_ms - table.predicted_ttft_ms) / interval).where(interval > 0)


def by_campaign(table: pd.DataFrame) -> list[dict]:
    """Per measurement campaign (aggregated rows): the held-out errors, and two checks of how it was measured.

    At the campaign's lowest concurrency, the TTFT the simulation leaves unexplained, counted in completion
    intervals (unexplained_ttft_intervals; median over those rows). In a closed loop a server running every
    client's request starts each next one at once; one running a sequence fewer makes every request wait for the
    next completion, about one interval. At SHORT_SERVER_INTERVALS or more the campaign is named as a server short
    of its clients: its TTFT says more about how it was measured than about the cost models
    (benchmarks/ttft_admission.py simulates that server).

    At its highest concurrency, the closed loop's throughput error (closed_loop_throughput) beside the share of a
    request's lifetime spent before its first token, measured and simulated (ttft_share; medians over those
    rows). Where the throughput is within QUEUED_THROUGHPUT_APE but the measured share is QUEUED_SHARE_RATIO times
    the simulated one or more, the campaign's server served as fast as simulated but kept requests waiting before
    their prefill that the simulation ran in its batch (a cap on running requests, or an admission path outside
    the engine): named as queueing before the first token, its TTFT and TPOT at that load trade against each
    other, not against the cost models."""
    out = []
    agg = table[table["mode"] == "agg"]
    for name, g in agg.groupby("campaign", sort=True):
        clients = int(g.concurrency.min())
        excess = unexplained_ttft_intervals(g[g.concurrency == clients]).dropna()
        intervals = round(float(excess.median()), 3) if len(excess) else None
        short = intervals is not None and intervals >= SHORT_SERVER_INTERVALS
        peak = int(g.concurrency.max())
        busiest = g[g.concurrency == peak]
        throughput = _errors(busiest)["throughput_median_ape"]
        measured_share, predicted_share = (float(ttft_share(busiest, p).median()) for p in ("measured", "predicted"))
        queued = (
            throughput is not None
            and throughput <= QUEUED_THROUGHPUT_APE
            and measured_share >= QUEUED_SHARE_RATIO * predicted_share
        )
        held = g[g.held_out]
        name = name or UNNAMED_CAMPAIGN
        out.append(
            {
                "campaign": name,
                "rows": len(g),
                "held_out_rows": len(held),
                **_errors(held),
                "lowest_concurrency": clients,
                "ttft_unexplained_completion_intervals": intervals,
                "server_short_of_clients": short,
                "highest_concurrency": peak,
                "throughput_median_ape_at_highest": throughput,
                "ttft_share_at_highest": {"measured": _rounded(measured_share), "simulated": _rounded(predicted_share)},
                "server_queues_before_first_token": queued,
            }
        )
        if short:
            log.warning(
                "campaign %s: at %d clients its TTFT exceeds the simulation's by %.2f completion intervals; its "
                "server seems to run fewer sequences than its clients send",
                name,
                clients,
                intervals,
            )
        if queued:
            log.warning(
                "campaign %s: at %d clients its throughput is within %.0f%% of the simulation's, but its requests "
                "spend %.2f of their lifetime before the first token against the simulation's %.2f: its server "
                "held requests back that the simulation ran in its batch",
                name,
                peak,
                100 * throughput,
                measured_share,
                predicted_share,
            )
    return out


def _coverage(table: pd.DataFrame) -> dict:
    """Share of rows whose measured TTFT / TPOT lies inside the [lower, upper]-priced prediction."""
    out = {"rows": len(table)}
    for metric in ("ttft", "tpot"):
        lo, hi = table[f"predicted_{metric}_ms_lower"], table[f"predicted_{metric}_ms_upper"]
        inside = (table[f"measured_{metric}_ms"] >= lo) & (table[f"measured_{metric}_ms"] <= hi)
        out[f"{metric}_coverage"] = round(float(inside.mean()), 4) if len(table) else None
    return out


def validate(
    path: Path,
    warehouse_root: Path,
    limit: int | None = None,
    progress: bool = False,
    interval: bool = False,
    client=None,
) -> dict:
    """Every expressible row replayed; with interval, each held-out row also at the lower and upper ends of its
    ops' 90% prediction intervals, and the share of measurements inside reported (it covers the cost models'
    uncertainty only: not the step overhead's, the client spread's or the scheduler's). With a Dask client, each
    batch of simulations (Runs) runs as its tasks; the result is the serial one to the bit."""
    df = read_csv(path)  # a malformed or non-UTF-8 file is an error naming it and the position
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if limit is None:  # the fits are merged into this file at the end: a broken one fails now, not after the run
        read_overheads(Path(warehouse_root) / MODELS_DIR / OVERHEADS_FILE)
    expressible, skipped = [], []
    for i, row in df.iterrows():
        reason = why_not(row)
        if reason is None and limit is not None and len(expressible) >= limit:
            reason = f"beyond --limit {limit}"
        if reason is None:
            reason = preflight(row)
        if reason:
            skipped.append({"id": row["id"], "line": int(i) + 2, "model": row["model_path"], "reason": reason})
        else:
            expressible.append(row)
    rows = []
    bar = Progress(console=Console(stderr=True), transient=True, disable=not progress)
    calibration_rows = sum(not is_held_out(r["id"]) for r in expressible)
    held_rows = len(expressible) - calibration_rows
    task = bar.add_task(
        "validate",
        total=len(expressible)
        + (2 * len(SPREADS) + 2 * (len(EAGER_LAYERS_US) - 1) + len(FRONTENDS_US) - 1) * calibration_rows
        + held_rows * (3 if interval else 1),
    )
    with bar:
        runs = Runs(warehouse_root, client, lambda: bar.advance(task))
        roofs = runs.means([(row, {}) for row in expressible], roofline=True)
        for row, roof in zip(expressible, roofs, strict=True):
            rows.append(
                {
                    "id": row["id"],
                    "model": row["model_path"],
                    "device": row["system"],
                    "backend": _framework(row),
                    "backend_version": _version(row),
                    "precision": row.get("precision"),
                    "kv_cache_dtype": scenario_for(row).pools[0].kv_dtype,  # the framework's default (kv_dtype)
                    "mode": row["mode"],
                    "moe": models()[_catalog_name(row["model_path"])].experts > 1,
                    "deployment": deployment(row),
                    "tp": _int(row, "decode_tp_size" if is_disaggregated(row) else "tp_size"),
                    "isl": _int(row, "isl"),
                    "osl": _int(row, "osl"),
                    "concurrency": concurrency(row),
                    "held_out": is_held_out(row["id"]),
                    "measured_ttft_ms": float(row["silicon_ttft_ms"]),
                    "measured_tpot_ms": float(row["silicon_tpot_ms"]),
                    "tpot_no_overhead_ms": np.nan,  # calibration rows: TPOT simulated without the overhead
                    "sequences_per_iteration": np.nan,
                    "roofline_ttft_ms": roof["ttft_ms"],
                    "roofline_tpot_ms": roof["tpot_ms"],
                    # faster than this closed loop could decode at the speed of light: the row measured something
                    # other than its columns say (fewer sequences in flight, other lengths). Not a TTFT rule: the
                    # roofline loop's clients stay in lockstep, queueing every prompt behind a whole round
                    "tpot_faster_than_roofline": bool(
                        beats_roofline(np.float64(roof["tpot_ms"]), np.float64(row["silicon_tpot_ms"]))
                    ),
                }
            )
        # a copy: a caller editing its result must not edit the next run's
        summary: dict = {"rows": len(rows), "not_expressed": len(skipped), "assumptions": copy.deepcopy(ASSUMPTIONS)}
        if rows:
            fitted, predicted = _calibrate(expressible, rows, runs)  # the calibration rows' kept runs
            fits = [
                {
                    "overhead": _step_overhead(fitted, row),
                    "spread": _spread(fitted, row),
                    "frontend_us": _frontend(fitted, row),
                    "eager_us": _eager(fitted, row),
                }
                for row in expressible
            ]
            held_idx = [i for i in range(len(expressible)) if i not in predicted]
            predicted.update(zip(held_idx, runs.means([(expressible[i], fits[i]) for i in held_idx]), strict=True))
            if interval:
                bounds = {
                    bound: dict(
                        zip(
                            held_idx,
                            runs.means([(expressible[i], {**fits[i], "price_at": bound}) for i in held_idx]),
                            strict=True,
                        )
                    )
                    for bound in ("lower", "upper")
                }
            for i, row in enumerate(expressible):
                fit, pred = fits[i], predicted[i]
                rows[i].update(
                    campaign=campaign(row),
                    **dict(zip(OVERHEAD_PARTS, fit["overhead"], strict=True)),
                    client_length_spread=fit["spread"],
                    eager_layer_us=fit["eager_us"],
                    frontend_latency_us=fit["frontend_us"],
                    tpot_no_overhead_ms=pred.get("tpot_no_overhead_ms", np.nan),
                    sequences_per_iteration=pred.get("sequences_per_iteration", np.nan),
                    predicted_ttft_ms=pred["ttft_ms"],
                    predicted_tpot_ms=pred["tpot_ms"],
                    cost_tiers=pred["tiers"],
                )
                if interval and rows[i]["held_out"]:
                    for bound, ends in bounds.items():
                        rows[i].update(
                            {
                                f"predicted_ttft_ms_{bound}": ends[i]["ttft_ms"],
                                f"predicted_tpot_ms_{bound}": ends[i]["tpot_ms"],
                            }
                        )
            table = pd.DataFrame(rows)
            held = table[table.held_out]
            summary.update(
                {
                    "held_out_rows": len(held),
                    "held_out": _errors(held),
                    "held_out_roofline": _errors(held, "roofline"),
                    "held_out_tpot_faster_than_roofline": int(held.tpot_faster_than_roofline.sum()),
                    "held_out_by_model_and_backend": [
                        {"model": m, "backend": b, "rows": len(g), **_errors(g)}
                        for (m, b), g in held.groupby(["model", "backend"])
                    ],
                    "held_out_by_mode": [{"mode": m, "rows": len(g), **_errors(g)} for m, g in held.groupby("mode")],
                    "by_campaign": by_campaign(table),
                    "prompt_and_decode_costs": prompt_and_decode_costs(table),
                    "all_rows": _errors(table),
                    "serving_overheads": fitted,
                }
            )
            if interval and len(held):
                summary["held_out_interval_90_coverage"] = _coverage(held)
            if limit is None:
                save_overheads(Path(warehouse_root) / MODELS_DIR / OVERHEADS_FILE, fitted, path)
    return {"rows": rows, "not_expressed": skipped, "summary": summary}


def save_overheads(target: Path, fitted: dict, source: Path) -> None:
    """Merge fitted serving overheads into the warehouse's file: each (device, framework) fitted here replaces
    the one before it, every other is kept (validating an A100 CSV does not erase the H100 fit), and each names
    the file it was fitted on (replays show it as the overhead's source). A fit replacing one made on more
    calibration rows of another file is logged: every replay of that device and framework now uses it."""
    saved = read_overheads(target)
    for dev, frameworks in fitted.items():
        for fw, fit in frameworks.items():
            fit["fitted_on"] = Path(source).name
            before = saved.get(dev, {}).get(fw) or {}
            if (
                before.get("fitted_on") != fit["fitted_on"]
                and before.get("calibration_rows", 0) > fit["calibration_rows"]
            ):
                log.warning(
                    "%s/%s: the serving overhead fitted on %s (%d calibration rows) replaces the one fitted on %s (%d)",
                    dev,
                    fw,
                    fit["fitted_on"],
                    fit["calibration_rows"],
                    before.get("fitted_on", "an unnamed file"),
                    before["calibration_rows"],
                )
            saved.setdefault(dev, {})[fw] = fit
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved, indent=1))
    tmp.replace(target)


def write_report(result: dict, out_dir: Path) -> list[Path]:
    """rows.csv, not_expressed.csv, summary.json and predicted_vs_measured.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(result["rows"])
    paths = [out_dir / "rows.csv", out_dir / "not_expressed.csv", out_dir / "summary.json"]
    table.to_csv(paths[0], index=False)
    pd.DataFrame(result["not_expressed"], columns=["id", "model", "reason"]).to_csv(paths[1], index=False)
    paths[2].write_text(json.dumps(result["summary"], indent=1))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, metric in zip(axes, ("ttft", "tpot"), strict=True):
        if len(table):
            measured = table[f"measured_{metric}_ms"]
            ax.scatter(measured, table[f"roofline_{metric}_ms"], s=8, c="0.75", label="roofline")
            for held, color in ((False, "tab:blue"), (True, "tab:orange")):
                part = table[table.held_out == held]
                label = "calibrated, held-out rows" if held else "calibrated, calibration rows"
                ax.scatter(part[f"measured_{metric}_ms"], part[f"predicted_{metric}_ms"], s=10, c=color, label=label)
            lo, hi = float(measured.min()) / 2, float(measured.max()) * 2
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel=f"measured {metric.upper()} (ms)", ylabel="predicted (ms)")
        ax.legend(fontsize=7)
    summary = result["summary"]
    fig.suptitle(
        f"Predicted vs measured serving latency: {summary.get('rows', 0)} silicon rows "
        f"({summary.get('held_out_rows', 0)} held out), calibrated models beside a plain roofline"
    )
    fig.tight_layout()
    plot = out_dir / "predicted_vs_measured.png"
    fig.savefig(plot, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return [*paths, plot]
