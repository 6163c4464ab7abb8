"""Replay scenarios: YAML validated by pydantic. Policies are chosen by name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator


class Batching(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: Literal["static", "continuous", "chunked_prefill"] = "chunked_prefill"
    max_num_seqs: PositiveInt = 256
    max_batched_tokens: PositiveInt = 8192  # the chunk budget for chunked_prefill
    order: Literal["decode_first", "prefill_first"] = "decode_first"


# How each serving framework batches in the measured deployments: SGLang runs prefill batches ahead of decodes
# and does not mix them (mixed chunks are opt-in); TRT-LLM (chunked context on, as AIConfigurator's generated
# configs set it) and vLLM V1 chunk prefills into decode batches, decodes first. All use a token budget of 8192.
FRAMEWORK_BATCHING = {
    "sglang": {"policy": "continuous", "order": "prefill_first", "max_batched_tokens": 8192},
    "trtllm": {"policy": "chunked_prefill", "order": "decode_first", "max_batched_tokens": 8192},
    "vllm": {"policy": "chunked_prefill", "order": "decode_first", "max_batched_tokens": 8192},
}


class Memory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block_tokens: PositiveInt = 16
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    activation_reserve_bytes: float = Field(2 * 2**30, ge=0)
    preemption: Literal["recompute", "swap"] = "recompute"  # swap: decoding victims' KV goes to host memory
    swap_space_bytes: float = Field(4 * 2**30, ge=0)  # host memory per GPU for swapped KV (vLLM's default)
    prefix_caching: bool = False  # reuse KV of equal prompt block hashes (Mooncake / RAGPulse logs)
    prefix_block_tokens: PositiveInt = 512  # tokens per hash block in the log (Mooncake: 512)


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "main"
    device: str
    replicas: PositiveInt = 1
    model: str
    tp: PositiveInt = 1
    pp: PositiveInt = 1
    dtype: str = "bfloat16"
    kv_cache_dtype: str | None = None
    framework: str | None = None
    max_model_len: PositiveInt = 32768
    # scheduler + launch gap per iteration (CPU side); None: calibrated for the device and framework (see
    # replay/validate.py), else 250 us
    step_overhead_us: float | None = Field(None, ge=0)
    # HTTP, tokenization and queueing in the serving frontend, between a request's arrival and its routing
    frontend_latency_us: float = Field(0.0, ge=0)
    # iterations of up to this many tokens run as CUDA graphs (vLLM's default capture size; 0: always eager):
    # their kernels are priced with the graph-captured variant where one was measured (collectives)
    cuda_graph_max_tokens: int = Field(512, ge=0)
    batching: Batching = Batching()
    memory: Memory = Memory()


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["log", "synthetic", "closed_loop"] = "log"
    log: str | None = None  # a request-log file (ingested on the fly) or a log name in the warehouse
    time_scale: PositiveFloat = 1.0  # arrival times multiplied by this
    rate_scale: PositiveFloat = 1.0  # arrival rate multiplied by this (= times divided)
    limit: PositiveInt | None = None
    # synthetic
    rate_per_s: PositiveFloat = 1.0
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: PositiveFloat = 1.0
    requests: PositiveInt = 1000
    input_tokens: PositiveInt = 1024  # fixed lengths, or the means of lognormal ones
    output_tokens: PositiveInt = 128
    # fixed; lognormal (mean input/output_tokens, coefficient of variation length_cv); or log: (input, output)
    # pairs drawn with replacement from the rows of `log`, so real length mixes meet chosen arrival processes
    lengths: Literal["fixed", "lognormal", "log"] = "fixed"
    length_cv: PositiveFloat = 1.0
    # closed loop: `concurrency` clients, each sending its next request when the last one completes; client i
    # starts at i * ramp_up_s / concurrency (0: all at once)
    concurrency: PositiveInt = 1
    ramp_up_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _log_named(self) -> Source:
        if self.kind == "synthetic" and self.lengths == "log" and not self.log:
            raise ValueError("lengths: log needs `log`: a request-log file or a log name to draw lengths from")
        return self


class Slo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_ms: PositiveFloat = 2000.0
    tpot_ms: PositiveFloat = 200.0


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "scenario"
    seed: int = 0
    source: Source = Source()
    pools: list[Pool]
    router: Literal["round_robin", "least_outstanding", "session_affinity", "prefix_aware"] = "round_robin"
    slo: Slo = Slo()


def load(path: Path) -> Scenario:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from e
    try:
        return Scenario.model_validate(doc)
    except ValidationError as e:
        raise ValueError(f"{path}: {e}") from e
