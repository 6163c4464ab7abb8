"""Hardware and model catalogs: YAML in calibrate/catalog/, validated by pydantic.

The local machine is added at run time as `local_cpu` (its peak rates come from `hermes-sim profile cpu`
measurements when they exist, otherwise from a conservative per-core estimate)."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path
from typing import Literal

import psutil
import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator

CATALOG_DIR = Path(__file__).resolve().parent / "catalog"
LOCAL_CPU = "local_cpu"
# the catalog is read by every command: libyaml's parser where PyYAML was built with it (10x faster), same result
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _safe_load(text: str):
    return yaml.load(text, Loader=_LOADER)  # a safe loader: plain data only


DTYPE_BYTES = {"float32": 4, "tf32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_block": 1, "int8": 1, "fp4": 0.5}
# GEMM quantization modes whose operands differ (TensorRT-LLM's QuantMode, as AIConfigurator's A100 tables name
# them): (activation bytes, weight bytes, the dtype the tensor cores run). Weight-only INT4 / INT8 keep 16-bit
# activations and dequantize the weights into bf16 tensor-core math; SmoothQuant (sq) is W8A8 on the INT8 cores.
# Priced as 16-bit everywhere, their roofline was slower than the measurements (up to 3.4x for int4_wo).
GEMM_OPERANDS = {"int4_wo": (2.0, 0.5, "bfloat16"), "int8_wo": (2.0, 1.0, "bfloat16"), "sq": (1.0, 1.0, "int8")}


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bandwidth: PositiveFloat  # bytes/s per direction
    latency_s: float = Field(ge=0)


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = ""
    name: str
    vendor: str
    device_class: str = Field(alias="class")
    kind: Literal["gpu", "asic", "cpu"]
    compute_units: PositiveInt
    peak_flops: dict[str, PositiveFloat]
    memory_bandwidth: PositiveFloat
    memory_bytes: PositiveInt
    on_chip_bytes: PositiveInt
    interconnects: dict[str, Link]
    power_watts: PositiveFloat | None
    devices_per_node: PositiveInt = Field(description="devices one node holds (TP beyond it crosses nodes)")
    price_per_hour_usd: PositiveFloat | None = Field(description="on-demand rental per device-hour, or null")
    sources: dict[str, str]

    @model_validator(mode="after")
    def _has_sources(self) -> Device:
        missing = {"compute", "memory", "interconnect", "power", "node", "price"} - set(self.sources)
        if missing:
            raise ValueError(f"sources missing for {sorted(missing)}")
        if "bfloat16" not in self.peak_flops and "float32" not in self.peak_flops:
            raise ValueError("peak_flops needs bfloat16 or float32")
        return self

    def flops(self, dtype: str) -> float:
        """Peak dense rate for a dtype; falls back to the nearest wider type the device has."""
        for d in (dtype, *_WIDER.get(dtype, ())):
            if d in self.peak_flops:
                return self.peak_flops[d]
        return self.peak_flops.get("bfloat16") or self.peak_flops["float32"]

    def scale_up_link(self) -> Link:
        """The fastest link between devices of one node (NVLink, Infinity Fabric, ICI, RoCE, else PCIe)."""
        for name in ("nvlink", "infinity_fabric", "ici", "roce", "pcie", "network"):
            if name in self.interconnects:
                return self.interconnects[name]
        raise ValueError(f"{self.id} has no interconnect")


_WIDER = {
    **{mode: (compute,) for mode, (_, _, compute) in GEMM_OPERANDS.items()},
    "fp8_block": ("fp8", "int8", "bfloat16"),
    "fp8": ("int8", "bfloat16"),
    "fp4": ("fp8", "int8", "bfloat16"),
    "int8": ("fp8", "bfloat16"),
    "float16": ("bfloat16",),
    "bfloat16": ("float16", "float32"),
    "tf32": ("float32",),
}


class MemoryTier(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    bandwidth: PositiveFloat
    latency_s: float = Field(ge=0)
    capacity_bytes: PositiveInt
    source: str


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = ""
    hf_name: str
    kind: Literal["decoder", "encoder"]
    role: Literal["generation", "embedding", "reranker"] = "generation"
    layers: PositiveInt
    hidden: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    ffn: PositiveInt
    vocab: PositiveInt
    gated_mlp: bool
    experts: PositiveInt = 1
    top_k: PositiveInt = 1
    # RMSNorm of the queries and keys before RoPE: over each head's dims (Qwen3's q_norm / k_norm), or over all
    # heads at once (MiniMax-M2: under TP the ranks all-reduce the per-token variances, one collective per layer)
    qk_norm: Literal["none", "per_head", "across_heads"] = "none"
    source: str

    @model_validator(mode="after")
    def _shapes(self) -> ModelConfig:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.top_k > self.experts:
            raise ValueError("top_k exceeds experts")
        return self

    def splits_over(self, tp: int) -> bool:
        """Whether its attention heads shard over TP devices (KV heads split, or replicate when fewer than TP)."""
        return not (self.heads % tp or (self.kv_heads % tp and tp % self.kv_heads))

    def weight_bytes(self, dtype_bytes: float = 2.0) -> float:
        per_layer = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim  # qkv
        per_layer += self.heads * self.head_dim * self.hidden  # o_proj
        per_layer += self.experts * (3 if self.gated_mlp else 2) * self.hidden * self.ffn
        return dtype_bytes * (self.layers * per_layer + 2 * self.vocab * self.hidden)


class UnknownName(ValueError):
    def __init__(self, what: str, name: str, known: list[str]):
        super().__init__(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")


def _load(file: str, key: str, model: type[BaseModel]) -> dict:
    path = CATALOG_DIR / file
    doc = _safe_load(path.read_text())
    out = {}
    for name, body in (doc.get(key) or {}).items():
        try:
            out[name] = model.model_validate({**body, "id": name})
        except ValidationError as e:
            raise ValueError(f"{path}: {key}.{name}: {e}") from e
    return out


@cache
def devices() -> dict[str, Device]:
    out = _load("devices.yaml", "devices", Device)
    out[LOCAL_CPU] = local_cpu()
    return out


@cache
def tiers() -> dict[str, MemoryTier]:
    return _load("tiers.yaml", "tiers", MemoryTier)


@cache
def models() -> dict[str, ModelConfig]:
    return _load("models.yaml", "models", ModelConfig)


def device(name: str) -> Device:
    found = devices()
    if name not in found:
        raise UnknownName("device", name, list(found))
    return found[name]


def model(name: str) -> ModelConfig:
    found = models()
    if name not in found:
        raise UnknownName("model", name, list(found))
    return found[name]


def dtype(name: str) -> str:
    """A dtype the cost models know (weights, activations or KV cache): a misspelt one would price as 16-bit."""
    if name not in DTYPE_BYTES:
        raise UnknownName("dtype", name, list(DTYPE_BYTES))
    return name


def local_cpu() -> Device:
    """This machine, from what the OS reports. Peak rates are a per-core estimate (2 x 256-bit FMA at the
    reported clock); `hermes-sim profile cpu` measures the real ones."""
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    freq = psutil.cpu_freq()
    ghz = (freq.max or freq.current) / 1000 if freq and (freq.max or freq.current) else 2.5
    fp32 = cores * ghz * 1e9 * 32
    mem = psutil.virtual_memory().total
    return Device(
        id=LOCAL_CPU,
        name=platform.processor() or platform.machine() or "local CPU",
        vendor="local",
        device_class="x86-cpu" if platform.machine() in ("x86_64", "AMD64") else "cpu",
        kind="cpu",
        compute_units=cores,
        peak_flops={"float32": fp32, "float64": fp32 / 2, "bfloat16": fp32},
        memory_bandwidth=20e9 * max(1, cores // 4),
        memory_bytes=mem,
        on_chip_bytes=32 * 2**20,
        interconnects={"pcie": Link(bandwidth=16e9, latency_s=1e-5)},
        power_watts=None,
        devices_per_node=1,
        price_per_hour_usd=None,
        sources={
            "compute": f"estimated: {cores} cores x {ghz:.2f} GHz x 32 fp32 flops/cycle",
            "memory": "estimated: 20 GB/s per 4 cores; capacity from the OS",
            "interconnect": "assumed PCIe 4.0 x8",
            "power": "unknown",
            "node": "this machine",
            "price": "unknown",
        },
    )


def import_aiconfigurator_system(path: Path) -> Device:
    """A Device from an AIConfigurator `systems/<gpu>.yaml` spec sheet."""
    doc = _safe_load(Path(path).read_text())
    gpu, node = doc["gpu"], doc.get("node", {})
    flops = {}
    for key, dtype in (
        ("bfloat16_tc_flops", "bfloat16"),
        ("fp8_tc_flops", "fp8"),
        ("int8_tc_flops", "int8"),
        ("fp4_tc_flops", "fp4"),
    ):
        if gpu.get(key):
            flops[dtype] = float(gpu[key])
    flops.setdefault("float16", flops["bfloat16"])
    name = Path(path).stem
    links = {"nvlink": Link(bandwidth=node["intra_node_bw"], latency_s=node.get("p2p_latency", 1e-5))}
    if node.get("pcie_bw"):
        links["pcie"] = Link(bandwidth=node["pcie_bw"], latency_s=node.get("p2p_latency", 1e-5))
    if node.get("inter_node_bw"):
        links["network"] = Link(bandwidth=node["inter_node_bw"], latency_s=node.get("p2p_latency", 1e-5))
    src = f"AIConfigurator {Path(path).name}"
    return Device(
        id=name,
        name=name,
        vendor="nvidia",
        device_class=f"nvidia-sm{gpu.get('sm_version', 0)}",
        kind="gpu",
        compute_units=1,
        peak_flops=flops,
        memory_bandwidth=float(gpu["mem_bw"]),
        memory_bytes=int(gpu["mem_capacity"]),
        on_chip_bytes=1,
        interconnects=links,
        power_watts=gpu.get("power"),
        devices_per_node=int(node.get("num_gpus_per_node", 8)),
        price_per_hour_usd=None,
        sources={
            "compute": src,
            "memory": src,
            "interconnect": src,
            "power": src,
            "node": src,
            "price": "not in AIConfigurator's spec sheets",
        },
    )
