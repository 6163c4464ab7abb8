"""Building pools from their specs: LLM pools (pools/llm/build.py) and service pools priced as the device
they run on (a CPU replica by its cores' share of the socket)."""

from __future__ import annotations

from pathlib import Path

from ...calibrate.catalog import Device
from ...calibrate.catalog import device as catalog_device
from ...calibrate.catalog import model as catalog_model
from ...calibrate.model import CostModel
from ..loop import EventLoop
from ..scenario import ServicePoolSpec
from .service import ServicePool
from .service_costs import encoder_cost, vector_search_cost

_COSTS: dict[tuple, object] = {}


def device_share(dev: Device, cores: int | None) -> tuple[Device, float]:
    """The part of a device one replica uses, and its fraction: a CPU replica's `cores` of the socket runs at
    that share of the socket's peak rates and memory bandwidth (a named assumption: bandwidth is not
    linear in cores near saturation); other devices are whole."""
    if cores is None or cores >= dev.compute_units:
        return dev, 1.0
    f = cores / dev.compute_units
    return dev.model_copy(
        update={
            "peak_flops": {k: v * f for k, v in dev.peak_flops.items()},
            "memory_bandwidth": dev.memory_bandwidth * f,
            "compute_units": cores,
        }
    ), f


def build_service_pool(
    spec: ServicePoolSpec, warehouse_root: Path, loop: EventLoop, max_seqs: int, price_at: str = "point"
) -> ServicePool:
    dev = catalog_device(spec.device)
    share, fraction = device_share(dev, spec.cores)
    key = (
        spec.model_dump_json(exclude={"name", "replicas", "max_wait_us", "price_per_hour_usd"}),
        max_seqs,
        str(Path(warehouse_root).resolve()),
        price_at,
    )
    if key not in _COSTS:
        cm = CostModel(spec.device, warehouse_root, None, share=share, bound=price_at)
        if spec.index is not None:
            _COSTS[key] = vector_search_cost(spec.index, cm, max_seqs, spec.cores or dev.compute_units)
        else:
            _COSTS[key] = encoder_cost(catalog_model(spec.model), cm, spec.dtype, max_seqs, spec.max_tokens)
    pool = ServicePool(spec.name, spec.replicas, spec.max_batch, spec.max_wait_us / 1e6, _COSTS[key], loop)
    pool.spec, pool.device, pool.share, pool.max_tokens = spec, dev, fraction, spec.max_tokens
    return pool
