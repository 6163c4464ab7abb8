"""Building an LLM pool from its spec: KV capacity, calibrated iteration costs (shared while what prices them
is unchanged), batching policy, router, prefix cache and swap space per replica (PP: per virtual engine)."""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ....calibrate.artifacts import MODELS_DIR, file_stamp, models_path
from ....calibrate.catalog import Device
from ....calibrate.catalog import device as catalog_device
from ....calibrate.catalog import model as catalog_model
from ....calibrate.model import CostModel
from ....calibrate.ops import Parallelism
from ...loop import EventLoop
from ...scenario import LLMPoolSpec
from .batching import BATCHING
from .costs import IterationCost
from .engine import LLMPool, Replica
from .kv import BlockManager, PrefixCache, SwapSpace, kv_block_bytes, kv_blocks, kv_bytes_per_token
from .routers import ROUTERS

log = logging.getLogger(__name__)

OVERHEADS_FILE = "serving_overheads.json"  # under <warehouse>/models, written by validate: {device: {framework:}}
DEFAULT_STEP_OVERHEAD_US = 250.0  # a stand-in when nothing is calibrated: named in the summary's assumptions


class _OverheadFit(BaseModel):
    """One (device, framework) entry of the overheads file; the rest of an entry (rows, spread, versions) is
    validate's record and passes through."""

    model_config = ConfigDict(extra="allow")
    step_overhead_us: float
    sequence_overhead_us: float = 0.0
    broadcast_overhead_us: float = 0.0  # per hop of the TP broadcast; files written before it hold none
    eager_layer_us: float = 0.0  # host time per layer of an eager iteration; files written before it hold none
    frontend_latency_us: float = 0.0


_OVERHEADS = TypeAdapter(dict[str, dict[str, _OverheadFit]])


def read_overheads(path: Path) -> dict:
    """The fitted serving overheads, {device: {framework: fit}} ({} when the file does not exist). A file that is
    not that is an error naming it, where it breaks and how to recover, never a stack trace from deep in a replay
    (every replay of the warehouse reads it)."""
    if not path.exists():
        return {}
    text = path.read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); re-run `hermes-sim validate "
            "silicon` to fit the serving overheads again, or delete the file to use the default"
        ) from None
    try:
        _OVERHEADS.validate_python(doc)
    except ValidationError as e:
        where = e.errors()[0]
        field = ".".join(str(x) for x in where["loc"])
        raise ValueError(
            f"{path}: {field or 'the top level'}: {where['msg']} (expected {{device: {{framework: "
            "{step_overhead_us: number, ...}}}}); re-run `hermes-sim validate silicon` or delete the file"
        ) from None
    return doc


@dataclass(frozen=True)
class StepOverhead:
    """The serving loop's CPU time per iteration, outside the GPU kernels: a fixed part per iteration (the
    scheduler pass, kernel launch gaps and, with TP, the driver's tree broadcast of the step's inputs to its TP
    workers: broadcast_us per hop, log2 TP hops) and a part per sequence in the batch (scheduling it, sampling,
    and detokenizing and streaming its token), in microseconds, and where they came from; and the host's time to
    launch one layer's kernels in an iteration run outside a CUDA graph (eager_layer_us): such an iteration (one
    with prompt tokens) lasts at least the model's layers times it, however little its kernels compute."""

    iteration_us: float  # all of the fixed part, the broadcast's hops included
    sequence_us: float
    source: str
    broadcast_us: float = 0.0  # per hop, as fitted (already in iteration_us)
    eager_layer_us: float = 0.0

    def us(self, sequences: int) -> float:
        return self.iteration_us + self.sequence_us * sequences


@dataclass(frozen=True)
class FrontendLatency:
    """The request path outside the engine (HTTP frontend, tokenization, routing, the first token streamed back):
    microseconds every request spends before the engine sees it, and where the figure came from."""

    us: float
    source: str


def _serving_fit(pool: LLMPoolSpec, warehouse_root: Path) -> tuple[dict | None, str, str]:
    """The fit `validate silicon` made for the pool's device and framework (None without one), where it came
    from, and what is missing and what is calibrated when there is none."""
    path = Path(warehouse_root) / MODELS_DIR / OVERHEADS_FILE
    fitted = read_overheads(path).get(pool.device, {})
    if pool.framework in fitted:
        f = fitted[pool.framework]
        fitted_on = f", fitted on {f['fitted_on']}" if f.get("fitted_on") else ""  # older files do not say
        return f, f"calibrated ({path.name}, {pool.device}/{pool.framework}{fitted_on})", ""
    known = ", ".join(f"{pool.device}/{fw}" for fw in fitted) or "none"
    missing = f"{pool.device}/{pool.framework}" if pool.framework else f"{pool.device} with no framework named"
    return None, "", f"{missing} (calibrated: {known})"


def fixed_overhead_us(step_us: float, broadcast_us: float, tp: int) -> float:
    """The serving loop's fixed time per iteration of a TP group: its part per iteration plus the driver's
    broadcast to its TP workers, log2 TP hops of a tree (none on one GPU)."""
    return step_us + broadcast_us * math.log2(tp)


def step_overhead(pool: LLMPoolSpec, warehouse_root: Path, fit: tuple | None = None) -> StepOverhead:
    """A pool's serving-loop overhead: its own setting, else the one calibrated for its device and framework
    against measured serving runs (`hermes-sim validate silicon`), else a default. `fit`: _serving_fit's answer,
    when the caller has it."""
    if pool.step_overhead_us is not None:
        return StepOverhead(
            pool.step_overhead_us,
            pool.sequence_overhead_us or 0.0,
            "scenario",
            eager_layer_us=pool.eager_layer_us or 0.0,
        )
    f, source, missing = fit or _serving_fit(pool, warehouse_root)
    if f is not None:
        broadcast_us = f.get("broadcast_overhead_us", 0.0)
        return StepOverhead(
            fixed_overhead_us(f["step_overhead_us"], broadcast_us, pool.tp),
            f.get("sequence_overhead_us", 0.0) if pool.sequence_overhead_us is None else pool.sequence_overhead_us,
            source,
            broadcast_us,
            f.get("eager_layer_us", 0.0) if pool.eager_layer_us is None else pool.eager_layer_us,
        )
    return StepOverhead(
        DEFAULT_STEP_OVERHEAD_US,
        pool.sequence_overhead_us or 0.0,
        f"default: no step overhead calibrated for {missing}; "
        "run `hermes-sim validate silicon`, name a pool framework, or set step_overhead_us",
        eager_layer_us=pool.eager_layer_us or 0.0,
    )


def frontend_latency(pool: LLMPoolSpec, warehouse_root: Path, fit: tuple | None = None) -> FrontendLatency:
    """A pool's frontend latency: its own setting, else the one `validate silicon` fitted for its device and
    framework with the step overhead (files written before it was fitted hold none: 0), else 0 (no frontend)."""
    if pool.frontend_latency_us is not None:
        return FrontendLatency(pool.frontend_latency_us, "scenario")
    f, source, missing = fit or _serving_fit(pool, warehouse_root)
    if f is not None:
        return FrontendLatency(f.get("frontend_latency_us", 0.0), source)
    return FrontendLatency(0.0, f"none: no frontend latency calibrated for {missing}")


# the most recently used priced grids kept: each holds per-integer tables, and a validation or search run
# builds thousands of distinct ones (a cache without a bound grew one validate run past 24 GiB)
COST_CACHE_ENTRIES = 64
_COSTS: OrderedDict[tuple, IterationCost] = OrderedDict()


def parallelism(pool: LLMPoolSpec, dev: Device) -> Parallelism:
    """How a pool's replica splits its model over devices, as its ops are priced (the engine's and `estimate`'s)."""
    return Parallelism(
        tp=pool.tp,
        pp=pool.pp,
        ep=pool.ep,
        dtype=pool.dtype,
        kv_cache_dtype=pool.kv_dtype,
        devices_per_node=dev.devices_per_node if pool.tp * pool.pp > dev.devices_per_node else None,
    )


def iteration_cost(
    pool: LLMPoolSpec, warehouse_root: Path, overhead: StepOverhead, price_at: str = "point"
) -> IterationCost:
    """Priced grids are reused while what prices them stays the same: the pool's hardware, model and
    parallelism, the grids' ranges, the device's model artifact and the interval end priced (sweeps over
    batching share them). The serving-loop overhead is no part of the grids (IterationCost.fixed_us adds it):
    runs that differ only in it (validate's with and without the fitted overhead) share one pricing, each
    with its own overhead on a shallow copy."""
    key = (
        pool.model_dump_json(
            exclude={
                "replicas",
                "name",
                "memory",
                "batching",
                "frontend_latency_us",
                "router",
                "price_per_hour_usd",
                "step_overhead_us",
                "sequence_overhead_us",
                "eager_layer_us",
            }
        ),
        max(pool.batching.max_batched_tokens, pool.max_model_len),
        pool.batching.max_num_seqs,
        str(Path(warehouse_root).resolve()),
        file_stamp(models_path(warehouse_root, pool.device)),
        price_at,
    )
    if key in _COSTS:
        _COSTS.move_to_end(key)
    else:
        while len(_COSTS) >= COST_CACHE_ENTRIES:
            _COSTS.popitem(last=False)
        dev, mdl = catalog_device(pool.device), catalog_model(pool.model)
        _COSTS[key] = IterationCost(
            model=mdl,
            par=parallelism(pool, dev),
            cost=CostModel(pool.device, warehouse_root, pool.framework, bound=price_at),
            max_tokens=max(pool.batching.max_batched_tokens, pool.max_model_len),
            max_seqs=pool.batching.max_num_seqs,
            max_len=pool.max_model_len,
            step_overhead_us=0.0,
            # CUDA graphs are NVIDIA's: other devices run every iteration's kernels as launched
            cuda_graph_max_tokens=pool.cuda_graph_max_tokens if dev.vendor == "nvidia" else 0,
        )
    return _COSTS[key].with_overhead(overhead.iteration_us, overhead.sequence_us, overhead.eager_layer_us)


def build_llm_pool(
    pool: LLMPoolSpec,
    warehouse_root: Path,
    loop: EventLoop,
    default_router: str,
    skip_ahead: bool = True,
    price_at: str = "point",
) -> LLMPool:
    dev, mdl = catalog_device(pool.device), catalog_model(pool.model)
    blocks = kv_blocks(pool, dev, mdl)
    engines = pool.replicas * pool.pp  # PP: pp virtual engines per replica, each with 1/pp of the KV
    per_engine = blocks // pool.pp
    log.info(
        "%s: %d KV blocks per replica (%d tokens) after %s's weights",
        pool.name,
        blocks,
        blocks * pool.memory.block_tokens,
        mdl.id,
    )
    # the overheads file read once for both figures, and not at all when the pool sets them
    unset = pool.step_overhead_us is None or pool.frontend_latency_us is None
    fit = _serving_fit(pool, warehouse_root) if unset else None
    overhead = step_overhead(pool, warehouse_root, fit)
    cost = iteration_cost(pool, warehouse_root, overhead, price_at)
    policy = BATCHING[pool.batching.policy](pool.batching)
    block_bytes = kv_block_bytes(pool, mdl)
    host = dev.interconnects.get("pcie") or dev.scale_up_link()
    replicas = []
    for i in range(engines):
        kv = BlockManager(per_engine, pool.memory.block_tokens)
        prefix = PrefixCache(kv, pool.memory.prefix_block_tokens) if pool.memory.prefix_caching else None
        swap = None
        if pool.memory.preemption == "swap":
            space = int(pool.memory.swap_space_bytes // block_bytes)
            swap = SwapSpace(space, block_bytes, host.bandwidth, host.latency_s)
        replicas.append(Replica(i, cost, kv, policy, pool.max_model_len, prefix, swap))
    out = LLMPool(pool.name, replicas, ROUTERS[pool.router or default_router](), loop, skip_ahead)
    out.spec, out.device, out.model_id = pool, dev, mdl.id
    out.frontend = frontend_latency(pool, warehouse_root, fit)
    out.frontend_s = out.frontend.us / 1e6
    out.kv_bytes_per_token = kv_bytes_per_token(pool, mdl)
    out.hash_tokens = pool.memory.prefix_block_tokens
    out.devices_per_replica = pool.tp * pool.pp
    out.step_overhead = overhead
    return out
