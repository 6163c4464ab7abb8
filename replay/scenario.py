"""Scenarios: YAML validated by pydantic, every field documented here. Policies, stage types and pool kinds are
chosen by name. `load(path, overrides)` reads a file, applies `--set dotted.path=value` overrides and checks every
cross-reference (pools, links, tiers, models, devices, stage graphs) before anything runs.

A scenario names:
- pools: LLM serving pools (`kind: llm`, today's replica engine) and service pools for non-LLM stages
  (`kind: service`: an embedding or reranker model, a classifier, a vector index) on GPUs, ASICs or CPUs;
- links (interconnects between pools) and tiers (KV memory tiers) that concurrent transfers contend for;
- pipelines: per request class, a small graph of stages (see replay/pipeline/);
- clients: request sources (a log, a synthetic process, a closed loop), each choosing a pipeline per request.
A single-pool scenario written without `pipelines` and `clients` (one `source`) is a one-stage pipeline on that
pool, served exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ScenarioError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def refuse_unread(model: BaseModel, unread: set[str], what: str) -> None:
    """Refuse a field that `what` never reads (`unread`), set to anything but its default: it would be ignored
    without a word (a log source given `rate_per_s`, an HNSW index given `nprobe`). Values, not
    `model_fields_set`, are compared, so a scenario dumped whole (as `--set` does) still validates."""
    fields = type(model).model_fields
    for name in (f for f in fields if f in unread):  # in the order the section declares them
        if (value := getattr(model, name)) != fields[name].default:
            reads = ", ".join(sorted(set(fields) - unread))
            raise ScenarioError(
                name, f"{what} does not read it (set to {value!r}), so it would be ignored; it reads {reads}"
            )


# ---- LLM pools ---------------------------------------------------------------------------------------
class Batching(_Strict):
    policy: Literal["static", "continuous", "chunked_prefill"] = Field(
        "chunked_prefill", description="iteration batching policy (replay/pools/llm/batching.py)"
    )
    max_num_seqs: PositiveInt = Field(256, description="most sequences running on a replica at once")
    max_batched_tokens: PositiveInt = Field(8192, description="tokens per iteration: the chunk budget")
    order: Literal["decode_first", "prefill_first"] = "decode_first"
    overlap: bool = Field(
        False,
        description="overlap scheduler (TensorRT-LLM's and SGLang's default, vLLM's async scheduling): the CPU "
        "forms iteration n+1 while iteration n runs on the GPU, so a request queued during iteration n joins "
        "iteration n+2 at the earliest",
    )


# How each serving framework batches in the measured deployments: SGLang runs prefill batches ahead of decodes
# and does not mix them (mixed chunks are opt-in), with its overlap scheduler (on by default since 0.4); vLLM V1
# chunks prefills into decode batches, decodes first, within 8192 tokens, and schedules one step ahead from 0.14
# (async scheduling on by default, its release notes; validate.framework_batching). TRT-LLM runs as
# AIConfigurator's generator configures the engines it benchmarks (ai-dynamo/aiconfigurator,
# generator/rule_plugin/benchmark/trtllm.rule and the extra_engine_args templates): chunked prefill off (whole
# prompts mixed into decode batches), the overlap scheduler on for aggregated and decode workers, off for prefill
# workers; its token budget depends on the row (validate.framework_batching).
FRAMEWORK_BATCHING = {
    "sglang": {"policy": "continuous", "order": "prefill_first", "max_batched_tokens": 8192, "overlap": True},
    "trtllm": {"policy": "continuous", "order": "decode_first", "max_batched_tokens": 8192, "overlap": True},
    "vllm": {"policy": "chunked_prefill", "order": "decode_first", "max_batched_tokens": 8192},
}
# Frameworks whose KV cache stays in the model's 16-bit activation dtype under 8-bit weights unless the pool says
# otherwise (`--kv-cache-dtype auto`, vLLM's and SGLang's default); TRT-LLM's FP8 deployments store FP8 KV. The
# H100 silicon rows tell them apart by where they turn KV-bound. vLLM's FP8 rows do so (TTFT of tens of seconds)
# where the KV in flight passes the room 16-bit KV leaves, not where FP8 KV would run out (Llama-3.1-70B at TP2,
# 64 clients of 1024 in / 8192 out: 328k tokens in flight on average, room for 243k in 16 bits and 487k in FP8;
# measured TTFT 30.8 s). TRT-LLM's FP8 rows fit only FP8 KV (Qwen3-32B at TP1, 64 clients of 4096 in / 128
# out: 266k tokens in flight, room for 162k in 16 bits and 323k in FP8; measured TTFT 1.6 s, no wait for KV).
KV_16_BIT_FRAMEWORKS = ("sglang", "vllm")


class Memory(_Strict):
    block_tokens: PositiveInt = 16
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    activation_reserve_bytes: NonNegativeInt = 2 * 2**30
    preemption: Literal["recompute", "swap"] = "recompute"  # swap: decoding victims' KV goes to host memory
    swap_space_bytes: NonNegativeInt = 4 * 2**30  # host memory per GPU for swapped KV (vLLM's default)
    prefix_caching: bool = False  # reuse KV of equal prompt block hashes (Mooncake / RAGPulse logs) in HBM
    prefix_block_tokens: PositiveInt = 512  # tokens per hash block in the log (Mooncake: 512)

    @model_validator(mode="after")
    def _swap_space_swapped_into(self) -> Memory:
        refuse_unread(self, {"swap_space_bytes"} if self.preemption == "recompute" else set(), "recompute preemption")
        return self


ROUTER_NAMES = Literal["round_robin", "least_outstanding", "session_affinity", "prefix_aware"]


class LLMPoolSpec(_Strict):
    """A pool of LLM replicas (GPUs or ASICs): the fast iteration-level engine of replay/pools/llm/."""

    kind: Literal["llm"] = "llm"
    name: str = "main"
    device: str
    replicas: PositiveInt = 1
    model: str
    tp: PositiveInt = 1
    pp: PositiveInt = 1
    ep: PositiveInt = Field(1, description="MoE: expert-parallel degree inside the TP group (experts / ep per GPU)")
    dtype: str = "bfloat16"
    kv_cache_dtype: str | None = Field(None, description="None: the framework's default (LLMPoolSpec.kv_dtype)")
    framework: str | None = Field(
        None, description="serving framework whose calibrated models price this pool: sglang, trtllm or vllm"
    )
    max_model_len: PositiveInt = 32768
    # scheduler + launch gap per iteration (CPU side), with TP the driver's broadcast to its TP workers included;
    # None: calibrated for the device and framework by `validate silicon` (a part per iteration and one per hop of
    # the broadcast, log2 TP hops); a pool with neither names the default it used in the summary's assumptions
    step_overhead_us: float | None = Field(None, ge=0)
    # ... and per sequence in the iteration (scheduling it, sampling, detokenizing and streaming its token);
    # None: calibrated with the step overhead (0 where the pool sets step_overhead_us alone)
    sequence_overhead_us: float | None = Field(None, ge=0)
    # the host's time to issue one layer's kernels in an iteration run outside a CUDA graph (one with prompt
    # tokens): its kernels cannot end before the host has launched them, so such an iteration takes at least
    # layers x this; None: calibrated with the step overhead (0 where the pool sets step_overhead_us alone)
    eager_layer_us: float | None = Field(None, ge=0)
    # the request path outside the engine (HTTP frontend, tokenization, routing, the first token streamed back),
    # spent by every request before the engine sees it; None: calibrated for the device and framework by
    # `validate silicon`, else 0 (no frontend), the summary naming which
    frontend_latency_us: float | None = Field(None, ge=0)
    # iterations of up to this many tokens run as CUDA graphs (vLLM's default capture size; 0: always eager):
    # their kernels are priced with the graph-captured variant where one was measured (NVIDIA GPUs only)
    cuda_graph_max_tokens: int = Field(512, ge=0)
    router: ROUTER_NAMES | None = Field(None, description="replica router (None: the scenario's `router`)")
    spans_nodes: bool = Field(False, description="allow TP x PP beyond one node (collectives cross nodes)")
    price_per_hour_usd: PositiveFloat | None = Field(None, description="per device; None: the catalog's price")
    batching: Batching = Batching()
    memory: Memory = Memory()

    @property
    def kv_dtype(self) -> str:
        """The KV cache's dtype: kv_cache_dtype; else the weights' dtype where it is 16 bits or wider; else, under
        narrower weights, 16 bits where the framework keeps them (KV_16_BIT_FRAMEWORKS), the weights' dtype
        otherwise (an FP8 variant's KV as plain fp8)."""
        from ..calibrate.catalog import DTYPE_BYTES

        if self.kv_cache_dtype:
            return self.kv_cache_dtype
        if DTYPE_BYTES.get(self.dtype, 2) >= 2:
            return self.dtype
        if self.framework in KV_16_BIT_FRAMEWORKS:
            return "bfloat16"
        return "fp8" if self.dtype.startswith("fp8") else self.dtype


# ---- service pools -------------------------------------------------------------------------------------
class VectorIndex(_Strict):
    """A vector index a `vector_search` stage queries (faiss layouts)."""

    type: Literal["flat", "ivf", "hnsw"] = "hnsw"
    vectors: PositiveInt = Field(description="vectors in the index")
    dim: PositiveInt = 1024
    nlist: PositiveInt = Field(4096, description="IVF: inverted lists")
    nprobe: PositiveInt = Field(16, description="IVF: lists scanned per query")
    m: PositiveInt = Field(32, description="HNSW: links per node")
    ef_search: PositiveInt = Field(64, description="HNSW: candidate list size per query")

    @model_validator(mode="after")
    def _probes_within_lists(self) -> VectorIndex:
        if self.type == "ivf" and self.nprobe > self.nlist:
            raise ValueError(f"nprobe {self.nprobe} exceeds nlist {self.nlist}: an IVF query scans at most every list")
        own = {"flat": set(), "ivf": {"nlist", "nprobe"}, "hnsw": {"m", "ef_search"}}[self.type]
        what = {"flat": "a flat index", "ivf": "an IVF index", "hnsw": "an HNSW index"}[self.type]
        refuse_unread(self, {"nlist", "nprobe", "m", "ef_search"} - own, what)
        return self


class ServicePoolSpec(_Strict):
    """Replicas of a non-LLM service (an encoder model, or a vector index) with dynamic batching: a batch
    starts when `max_batch` jobs wait or the oldest has waited `max_wait_us`."""

    kind: Literal["service"]
    name: str
    device: str
    replicas: PositiveInt = 1
    cores: PositiveInt | None = Field(None, description="CPU devices: cores per replica (default: the socket)")
    model: str | None = Field(None, description="encoder model (embed, rerank, classifier stages)")
    index: VectorIndex | None = Field(None, description="vector index (vector_search stages)")
    max_batch: PositiveInt = 32
    max_wait_us: NonNegativeFloat = 0.0
    max_tokens: PositiveInt = Field(512, description="encoder sequence length cap (longer inputs truncated)")
    dtype: str = "bfloat16"
    price_per_hour_usd: PositiveFloat | None = None

    @model_validator(mode="after")
    def _serves_a_model_or_an_index(self) -> ServicePoolSpec:
        if (self.model is None) == (self.index is None):
            raise ValueError("a service pool serves one encoder `model` or one vector `index`")
        if self.index is not None:  # a vector search reads neither encoder field (replay/pools/build.py)
            refuse_unread(self, {"max_tokens", "dtype"}, "a vector-index pool")
        return self


def _pool_kind(value) -> str:
    return (value.get("kind") or "llm") if isinstance(value, dict) else value.kind


PoolSpec = Annotated[
    Annotated[LLMPoolSpec, Tag("llm")] | Annotated[ServicePoolSpec, Tag("service")],
    Discriminator(_pool_kind),
]


# ---- links and tiers -----------------------------------------------------------------------------------
class LinkSpec(_Strict):
    """An interconnect that transfers share (processor sharing). Either `bandwidth` and `latency_s`, or `like`
    (a device's catalog interconnect, e.g. `h100_sxm.network`), whose figures and source the output names."""

    name: str
    like: str | None = None
    bandwidth: PositiveFloat | None = Field(None, description="bytes / s per direction")
    latency_s: NonNegativeFloat | None = None
    # shared: one link for every transfer; per_replica: one per sending replica (its own NICs / PCIe lanes),
    # whose bandwidth is `bandwidth` x the replica's devices (each device moves its own KV shard)
    scope: Literal["shared", "per_replica"] = "per_replica"


class TierSpec(_Strict):
    """A KV memory tier. `like` names a catalog tier (calibrate/catalog/tiers.yaml); any field overrides it."""

    name: str
    like: str | None = None
    bandwidth: PositiveFloat | None = Field(None, description="bytes / s one device sees, per direction")
    latency_s: NonNegativeFloat | None = None
    capacity_bytes: PositiveFloat | None = None
    # pool: one store every replica reads (a remote pool); replica: each replica has its own (host DRAM, NVMe)
    scope: Literal["pool", "replica"] = "pool"
    link_scope: Literal["shared", "per_replica"] = "per_replica"
    eviction: Literal["lru", "fifo"] = "lru"
    # write: every newly prefilled prompt block is written here after generation; on_evict: blocks evicted from
    # the tier before it in a kv_retrieval stage land here; none: read-only (pre-populated by other tiers only)
    admit: Literal["write", "on_evict", "none"] = "write"


# ---- stages --------------------------------------------------------------------------------------------
class _Stage(_Strict):
    name: str
    after: list[str] | None = Field(None, description="stages this one waits for (None: the previous one)")


class LLMStage(_Stage):
    """Prefill and decode on one LLM pool (colocated): the request's answer tokens."""

    type: Literal["llm"]
    pool: str = Field(description="an LLM pool, or a route stage that picks one")


class PrefillStage(_Stage):
    """Disaggregated prefill: emits the first token; its KV stays until the following kv_transfer ends."""

    type: Literal["prefill"]
    pool: str


class KVTransferStage(_Stage):
    """Moves the prompt's KV from the prefill replica to the decode pool over a named link."""

    type: Literal["kv_transfer"]
    link: str


class DecodeStage(_Stage):
    """Disaggregated decode: the remaining output tokens, on a pool that received the KV."""

    type: Literal["decode"]
    pool: str


class KVRetrievalStage(_Stage):
    """The prompt's reusable prefix blocks (the log's block hashes) looked up tier by tier beyond what the
    target replica's HBM prefix cache holds; hits are fetched over each tier's link, misses are prefilled."""

    type: Literal["kv_retrieval"]
    tiers: list[str] = Field(min_length=1)
    pool: str = Field(description="the LLM pool (or route stage) whose prefill follows")


class EmbedStage(_Stage):
    type: Literal["embed"]
    pool: str
    query_tokens: PositiveInt | None = Field(None, description="None: the log's user-input tokens, else 64")


class VectorSearchStage(_Stage):
    type: Literal["vector_search"]
    pool: str
    top_k: PositiveInt = 20


class RerankStage(_Stage):
    """A cross-encoder scores (query, passage) pairs; the kept passages' tokens join the prompt (already in
    it for logs with per-part lengths, such as RAGPulse; else keep x passage_tokens are added)."""

    type: Literal["rerank"]
    pool: str
    passages: PositiveInt | None = Field(None, description="pairs scored (None: the search's top_k)")
    keep: PositiveInt = 5
    passage_tokens: PositiveInt = 256
    query_tokens: PositiveInt | None = None


class RouteRule(_Strict):
    max_input_tokens: PositiveInt
    pool: str


class RouteStage(_Stage):
    """Dynamic model routing to one of several LLM pools; a stage with `pool: <this route>` runs there."""

    type: Literal["route"]
    method: Literal["rule", "probability", "classifier"] = "rule"
    rules: list[RouteRule] = []  # first rule whose max_input_tokens the prompt does not exceed
    default: str | None = None
    weights: dict[str, PositiveFloat] = {}  # probability (seeded), or the classifier's decision mix
    classifier_pool: str | None = Field(None, description="classifier: a service pool running the classifier")

    @model_validator(mode="after")
    def _classifier_pool_classifies(self) -> RouteStage:
        refuse_unread(self, set() if self.method == "classifier" else {"classifier_pool"}, f"a {self.method} route")
        return self


class ReasoningStage(_Stage):
    """Reasoning tokens generated as decode in `rounds` rounds, each optionally followed by a tool call."""

    type: Literal["reasoning"]
    pool: str
    rounds: PositiveInt = 1
    share: float | Literal["log"] = Field("log", description="reasoning share of output tokens (0 to 1), or the log's")
    tool_ms: NonNegativeFloat = 0.0  # after each round but the last: a tool / retrieval call's duration
    tool_tokens: NonNegativeInt = 0  # tokens the tool result adds to the context
    think_ms: NonNegativeFloat = 0.0  # client-side gap before the next round

    @field_validator("share")
    @classmethod
    def _a_fraction(cls, share: float | str) -> float | str:
        if share != "log" and not 0 <= share <= 1:
            raise ValueError(f"a share of the output tokens from 0 to 1, or `log`; got {share}")
        return share


class ToolStage(_Stage):
    """An external call: a fixed duration, adding tokens to the prompt."""

    type: Literal["tool"]
    duration_ms: NonNegativeFloat
    tokens: NonNegativeInt = 0


StageSpec = Annotated[
    LLMStage
    | PrefillStage
    | KVTransferStage
    | DecodeStage
    | KVRetrievalStage
    | EmbedStage
    | VectorSearchStage
    | RerankStage
    | RouteStage
    | ReasoningStage
    | ToolStage,
    Field(discriminator="type"),
]


class Pipeline(_Strict):
    stages: list[StageSpec] = Field(min_length=1)


# ---- clients -------------------------------------------------------------------------------------------
class Source(_Strict):
    kind: Literal["log", "synthetic", "closed_loop"] = "log"
    log: str | None = None  # a request-log file (ingested on the fly) or a log name in the warehouse
    segment: NonNegativeInt | None = Field(None, description="clock segment of a log whose clock resets")
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
    # starts at i * ramp_up_s / concurrency (0: all at once); lengths normal around input/output_tokens with
    # these standard deviations (aiperf's --isl-stddev / --osl-stddev; 0: fixed), seeded
    concurrency: PositiveInt = 1
    ramp_up_s: float = Field(0.0, ge=0)
    input_tokens_stddev: float = Field(0.0, ge=0)
    output_tokens_stddev: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _log_named(self) -> Source:
        if self.kind == "synthetic" and self.lengths == "log" and not self.log:
            raise ValueError("lengths: log needs `log`: a request-log file or a log name to draw lengths from")
        what = f"a {self.kind} source"
        if self.kind == "synthetic":
            what = f"a synthetic source with {self.arrival} arrivals and {self.lengths} lengths"
        refuse_unread(self, set(type(self).model_fields) - self.reads(), what)
        return self

    def reads(self) -> set[str]:
        """The fields this kind of source reads (replay/sources/)."""
        if self.kind == "log":
            return {"kind", "log", "segment", "time_scale", "rate_scale", "limit"}
        if self.kind == "closed_loop":
            lengths = {"input_tokens", "output_tokens", "input_tokens_stddev", "output_tokens_stddev"}
            return {"kind", "concurrency", "requests", "ramp_up_s"} | lengths
        reads = {"kind", "rate_per_s", "rate_scale", "arrival", "requests", "lengths"}
        reads |= {"cv"} if self.arrival == "gamma" else set()  # a Poisson process's CV is 1
        reads |= {"log", "segment"} if self.lengths == "log" else {"input_tokens", "output_tokens"}
        return reads | ({"length_cv"} if self.lengths == "lognormal" else set())


class PipelineRule(_Strict):
    max_input_tokens: PositiveInt
    pipeline: str


class PipelineChoice(_Strict):
    """How a client's requests pick their pipeline: by a seeded probability, by input length, or by whether a
    log field is present (e.g. RAGPulse passage tokens)."""

    by: Literal["probability", "input_tokens", "field"]
    weights: dict[str, PositiveFloat] = {}
    rules: list[PipelineRule] = []
    default: str | None = None
    field: str | None = None
    present: str | None = None
    absent: str | None = None


class Client(_Strict):
    name: str
    source: Source = Source()
    pipeline: str | PipelineChoice


class Slo(_Strict):
    ttft_ms: PositiveFloat = 2000.0
    tpot_ms: PositiveFloat = 200.0
    e2e_ms: PositiveFloat | None = None


STAGE_POOL_KIND = {
    "llm": "llm",
    "prefill": "llm",
    "decode": "llm",
    "reasoning": "llm",
    "kv_retrieval": "llm",
    "embed": "service",
    "vector_search": "service",
    "rerank": "service",
}


class Scenario(_Strict):
    name: str = "scenario"
    seed: int = 0
    clients: list[Client] = Field(min_length=1)
    pools: list[PoolSpec] = Field(min_length=1)
    links: list[LinkSpec] = []
    tiers: list[TierSpec] = []
    pipelines: dict[str, Pipeline]
    router: ROUTER_NAMES = "round_robin"
    slo: Slo = Slo()
    price_at: Literal["point", "lower", "upper"] = Field(
        "point",
        description="price every calibrated op at its prediction, or at the lower / upper end of its 90% "
        "prediction interval (`replay --interval` runs all three)",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_stage_default(cls, doc):
        """A scenario without pipelines / clients: one client (`source`) and one generation stage on its one
        LLM pool."""
        if not isinstance(doc, dict):
            return doc
        doc = dict(doc)
        source = doc.pop("source", None)
        if "pipelines" not in doc:
            llm = [p for p in doc.get("pools") or [] if isinstance(p, dict) and (p.get("kind") or "llm") == "llm"]
            if len(llm) == 1:
                name = llm[0].get("name", "main")
                doc["pipelines"] = {"default": {"stages": [{"name": "generate", "type": "llm", "pool": name}]}}
        if "clients" not in doc and isinstance(doc.get("pipelines"), dict) and len(doc["pipelines"]) == 1:
            doc["clients"] = [{"name": "default", "source": source or {}, "pipeline": next(iter(doc["pipelines"]))}]
        elif source is not None:
            raise ValueError("`source` is for scenarios without `clients`: give each client its own source")
        return doc

    @property
    def source(self) -> Source:
        """The first client's source (single-source scenarios)."""
        return self.clients[0].source

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        check_references(self)
        return self

    def pool(self, name: str):
        return next(p for p in self.pools if p.name == name)

    def used_pipelines(self) -> list[str]:
        names: list[str] = []
        for c in self.clients:
            names += [c.pipeline] if isinstance(c.pipeline, str) else _choice_targets(c.pipeline)
        return list(dict.fromkeys(names))

    def used_pools(self) -> list[str]:
        """Pools some stage of a pipeline a client sends to can run on (route targets included)."""
        used: set[str] = set()
        for name in self.used_pipelines():
            stages = self.pipelines[name].stages
            routes = {s.name for s in stages if s.type == "route"}
            for s in stages:
                pool = getattr(s, "pool", None)
                if pool and pool not in routes:
                    used.add(pool)
                if s.type == "route":
                    used |= {r.pool for r in s.rules} | set(s.weights) | ({s.default} if s.default else set())
                    if s.classifier_pool:
                        used.add(s.classifier_pool)
        return [p.name for p in self.pools if p.name in used]


def _known(names) -> str:
    return ", ".join(sorted(names)) or "(none)"


def serving_framework(name: str) -> str:
    """A serving framework whose batching and serving overheads the project models (FRAMEWORK_BATCHING): a
    misspelt one would be priced with another's kernels and the default overhead."""
    from ..calibrate.catalog import UnknownName

    if name not in FRAMEWORK_BATCHING:
        raise UnknownName("serving framework", name, list(FRAMEWORK_BATCHING))
    return name


def check_pool(p: PoolSpec) -> None:
    """A pool's names exist in the catalogs and fit its use: an LLM pool runs a text generator on a GPU or an
    ASIC, split over TP as its heads allow, within a node unless it spans nodes; a service pool's cores are a
    CPU's. `estimate` checks its one pool here too, so it refuses what a replay refuses."""
    from ..calibrate.catalog import UnknownName, devices, dtype, models

    for name, known in (("dtype", dtype), ("kv_cache_dtype", dtype), ("framework", serving_framework)):
        if getattr(p, name, None) is not None:  # a service pool has no framework nor KV cache dtype
            try:
                known(getattr(p, name))
            except UnknownName as e:
                raise ScenarioError(f"pools.{p.name}.{name}", str(e)) from e
    if p.device not in devices():
        raise ScenarioError(f"pools.{p.name}.device", f"unknown device {p.device!r}; known: {_known(devices())}")
    if p.model is not None and p.model not in models():
        raise ScenarioError(f"pools.{p.name}.model", f"unknown model {p.model!r}; known: {_known(models())}")
    dev = devices()[p.device]
    if p.kind == "llm":
        if dev.kind == "cpu":
            raise ScenarioError(f"pools.{p.name}.device", f"{p.device} is a CPU: LLM pools run on GPUs or ASICs")
        if models()[p.model].role != "generation":
            raise ScenarioError(
                f"pools.{p.name}.model", f"{p.model} is an {models()[p.model].role} model, not a text generator"
            )
        mdl = models()[p.model]
        if not mdl.splits_over(p.tp):
            raise ScenarioError(
                f"pools.{p.name}.tp",
                f"{p.model}'s {mdl.heads} attention heads / {mdl.kv_heads} KV heads do not split over TP {p.tp}",
            )
        experts = mdl.experts
        if p.ep > 1 and (experts == 1 or p.tp % p.ep or experts % p.ep):
            raise ScenarioError(
                f"pools.{p.name}.ep",
                f"ep {p.ep} needs a MoE model whose experts it divides, inside TP {p.tp} ({p.model}: "
                f"{experts} expert(s))",
            )
        if p.tp * p.pp > dev.devices_per_node and not p.spans_nodes:
            raise ScenarioError(
                f"pools.{p.name}.tp",
                f"TP {p.tp} x PP {p.pp} = {p.tp * p.pp} devices exceeds a {p.device} node "
                f"({dev.devices_per_node}); set spans_nodes: true to run its collectives over the network",
            )
    else:
        if p.cores is not None and dev.kind != "cpu":
            raise ScenarioError(f"pools.{p.name}.cores", f"{p.device} is not a CPU; cores apply to CPU pools")
        if p.cores is not None and p.cores > dev.compute_units:
            raise ScenarioError(f"pools.{p.name}.cores", f"{p.device} has {dev.compute_units} cores")


def check_references(sc: Scenario) -> None:
    """Every name a scenario uses exists and fits its use; every pipeline is an acyclic graph."""
    from ..calibrate.catalog import devices, tiers

    for what, items in (("pools", sc.pools), ("links", sc.links), ("tiers", sc.tiers), ("clients", sc.clients)):
        names = [x.name for x in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ScenarioError(what, f"names must be unique; repeated: {', '.join(dup)}")
    pools = {p.name: p for p in sc.pools}
    for p in sc.pools:
        check_pool(p)
    links = {x.name: x for x in sc.links}
    for x in sc.links:
        if x.like is None and (x.bandwidth is None or x.latency_s is None):
            raise ScenarioError(f"links.{x.name}", "give bandwidth and latency_s, or `like: <device>.<interconnect>`")
        if x.like is not None:
            dev, _, link = x.like.partition(".")
            if dev not in devices() or link not in devices()[dev].interconnects:
                known = [f"{d}.{i}" for d, spec in devices().items() for i in spec.interconnects]
                raise ScenarioError(f"links.{x.name}.like", f"unknown interconnect {x.like!r}; known: {_known(known)}")
    tier_specs = {t.name: t for t in sc.tiers}
    for t in sc.tiers:
        if t.like is not None and t.like not in tiers():
            raise ScenarioError(f"tiers.{t.name}.like", f"unknown catalog tier {t.like!r}; known: {_known(tiers())}")
        if t.like is None and None in (t.bandwidth, t.latency_s, t.capacity_bytes):
            raise ScenarioError(f"tiers.{t.name}", "give bandwidth, latency_s and capacity_bytes, or `like: <tier>`")
    for pname, pipe in sc.pipelines.items():
        check_pipeline(f"pipelines.{pname}", pipe, pools, links, tier_specs)
    for c in sc.clients:
        choice = c.pipeline
        named = [choice] if isinstance(choice, str) else _choice_targets(choice)
        for target in named:
            if target not in sc.pipelines:
                raise ScenarioError(
                    f"clients.{c.name}.pipeline", f"unknown pipeline {target!r}; known: {_known(sc.pipelines)}"
                )


def check_hash_blocks(sc: Scenario, client: Client, block_tokens: int | None) -> None:
    """A log's prefix hashes each stand for `block_tokens` tokens (Mooncake: 512). Every LLM pool whose prefix
    cache or tier lookup reads this client's hashes must count them so: otherwise each hit would be priced as
    the wrong number of tokens. None (the log does not say) checks nothing."""
    if block_tokens is None:
        return
    pools = {p.name: p for p in sc.pools if p.kind == "llm"}
    names = [client.pipeline] if isinstance(client.pipeline, str) else _choice_targets(client.pipeline)
    for name in dict.fromkeys(names):
        stages = sc.pipelines[name].stages
        routes = {s.name: route_targets(s) for s in stages if s.type == "route"}
        fetch = {p for s in stages if s.type == "kv_retrieval" for p in routes.get(s.pool, [s.pool])}
        for s in stages:
            for target in routes.get(getattr(s, "pool", None), [getattr(s, "pool", None)]):
                p = pools.get(target)
                if p is None or not (p.memory.prefix_caching or p.name in fetch):
                    continue
                if p.memory.prefix_block_tokens != block_tokens:
                    raise ScenarioError(
                        f"pools.{p.name}.memory.prefix_block_tokens",
                        f"client {client.name}'s log hashes blocks of {block_tokens} tokens; this pool counts "
                        f"{p.memory.prefix_block_tokens} per hash",
                    )


def _choice_targets(choice: PipelineChoice) -> list[str]:
    if choice.by == "probability":
        if not choice.weights:
            raise ScenarioError("pipeline.weights", "a probability choice needs weights")
        return list(choice.weights)
    if choice.by == "input_tokens":
        if not choice.default:
            raise ScenarioError("pipeline.default", "an input_tokens choice needs a default pipeline")
        return [r.pipeline for r in choice.rules] + [choice.default]
    if not (choice.field and choice.present and choice.absent):
        raise ScenarioError("pipeline", "a field choice needs field, present and absent")
    return [choice.present, choice.absent]


def check_pipeline(where: str, pipe: Pipeline, pools: dict, links: dict, tiers: dict) -> None:
    from ..calibrate.catalog import devices, models

    stages = {s.name: s for s in pipe.stages}
    if len(stages) != len(pipe.stages):
        raise ScenarioError(f"{where}.stages", "stage names must be unique")
    routes = {s.name: s for s in pipe.stages if s.type == "route"}
    llm_pools = {n for n, p in pools.items() if p.kind == "llm"}
    for i, s in enumerate(pipe.stages):
        field = f"{where}.stages.{s.name}"
        for dep in deps_of(pipe, i):
            if dep not in stages:
                raise ScenarioError(f"{field}.after", f"unknown stage {dep!r}; known: {_known(stages)}")
        want = STAGE_POOL_KIND.get(s.type)
        if want == "llm":
            if s.pool in routes:
                if s.pool not in ancestors(pipe, s.name):
                    raise ScenarioError(f"{field}.pool", f"route stage {s.pool!r} must come before this stage")
            elif s.pool not in llm_pools:
                raise ScenarioError(
                    f"{field}.pool",
                    f"{s.pool!r} is not an LLM pool or route stage; known: {_known(llm_pools | set(routes))}",
                )
        elif want == "service":
            p = pools.get(s.pool)
            if p is None or p.kind != "service":
                known = {n for n, q in pools.items() if q.kind == "service"}
                raise ScenarioError(f"{field}.pool", f"{s.pool!r} is not a service pool; known: {_known(known)}")
            dev = devices()[p.device]
            if s.type == "vector_search":
                if p.index is None:
                    raise ScenarioError(f"pools.{p.name}.index", f"stage {s.name} searches it: give the pool an index")
                if dev.kind == "asic":
                    raise ScenarioError(f"{field}.pool", f"vector search does not run on {p.device} ({dev.kind})")
            else:
                role = {"embed": "embedding", "rerank": "reranker"}[s.type]
                if p.model is None or models()[p.model].role != role:
                    raise ScenarioError(f"pools.{p.name}.model", f"stage {s.name} ({s.type}) needs an {role} model")
        if s.type == "rerank":
            pairs = rerank_pairs(pipe, s)
            if pairs is None:
                raise ScenarioError(
                    f"{field}.passages", "no vector_search stage in this pipeline gives the candidates: set passages"
                )
            if s.keep > pairs:
                raise ScenarioError(f"{field}.keep", f"keeps {s.keep} passages of the {pairs} it scores")
        if s.type == "kv_transfer" and s.link not in links:
            raise ScenarioError(f"{field}.link", f"unknown link {s.link!r}; known: {_known(links)}")
        if s.type == "kv_retrieval":
            for t in s.tiers:
                if t not in tiers:
                    raise ScenarioError(f"{field}.tiers", f"unknown tier {t!r}; known: {_known(tiers)}")
            if len(set(s.tiers)) < len(s.tiers):
                raise ScenarioError(f"{field}.tiers", f"each tier is looked up once, in order; got {s.tiers}")
        if s.type == "route":
            targets = route_targets(s)
            if not targets:
                raise ScenarioError(field, "a route needs rules and a default, or weights")
            if s.rules and not s.default:
                raise ScenarioError(f"{field}.default", "a route with rules needs a default pool")
            if s.method == "rule" and s.weights:
                raise ScenarioError(f"{field}.weights", "a rule route follows its rules; weights are for probability")
            if s.method == "probability" and (s.rules or not s.weights):
                raise ScenarioError(f"{field}.weights", "a probability route draws from its weights, without rules")
            if s.method == "classifier" and not (s.rules or s.weights):
                raise ScenarioError(f"{field}.rules", "a classifier route decides by its rules or its weights")
            for t in targets:
                if t not in llm_pools:
                    raise ScenarioError(f"{field}", f"routes to {t!r}, not an LLM pool; known: {_known(llm_pools)}")
            if s.method == "classifier":
                p = pools.get(s.classifier_pool or "")
                if p is None or p.kind != "service" or p.model is None:
                    raise ScenarioError(
                        f"{field}.classifier_pool", "a classifier route needs a service pool with a model"
                    )
    if s_cycle := cycle(pipe):
        raise ScenarioError(f"{where}.stages", f"the stage graph has a cycle: {' -> '.join(s_cycle)}")
    kinds = [s.type for s in pipe.stages]
    if ("prefill" in kinds) != ("decode" in kinds) or ("kv_transfer" in kinds) != ("prefill" in kinds):
        raise ScenarioError(f"{where}.stages", "disaggregated serving needs prefill, kv_transfer and decode stages")
    for pre in (s for s in pipe.stages if s.type == "prefill"):
        for dec in (s for s in pipe.stages if s.type == "decode"):
            a, b = pools.get(pre.pool), pools.get(dec.pool)  # None: a route stage picks the pool at run time
            if a is None or b is None:
                continue
            for what, wrote, reads in (
                ("model", a.model, b.model),
                ("KV cache dtype", a.kv_dtype, b.kv_dtype),
            ):
                if wrote != reads:
                    raise ScenarioError(
                        f"{where}.stages.{dec.name}.pool",
                        f"pool {dec.pool!r} decodes the KV cache pool {a.name!r} prefills, so their {what} must "
                        f"match: {reads} here, {wrote} there",
                    )
    gen = [s for s in pipe.stages if s.type in ("llm", "decode")]
    if len(gen) != 1:
        raise ScenarioError(
            f"{where}.stages", f"a pipeline generates its answer in one llm or decode stage, not {len(gen)}"
        )


def route_targets(stage: RouteStage) -> list[str]:
    """Every pool a route stage may send a request to: its rules' pools, its default, its weights' pools."""
    return [r.pool for r in stage.rules] + ([stage.default] if stage.default else []) + list(stage.weights)


def rerank_pairs(pipe: Pipeline, stage: RerankStage) -> int | None:
    """The (query, passage) pairs a rerank stage scores: its `passages`, else its pipeline's vector search's top_k
    (None when it has neither: check_pipeline refuses that)."""
    if stage.passages:
        return stage.passages
    return next((s.top_k for s in pipe.stages if s.type == "vector_search"), None)


def deps_of(pipe: Pipeline, i: int) -> list[str]:
    s = pipe.stages[i]
    if s.after is not None:
        return list(s.after)
    return [pipe.stages[i - 1].name] if i else []


def ancestors(pipe: Pipeline, name: str) -> set[str]:
    index = {s.name: i for i, s in enumerate(pipe.stages)}
    seen: set[str] = set()
    todo = list(deps_of(pipe, index[name]))
    while todo:
        n = todo.pop()
        if n in seen or n not in index:
            continue
        seen.add(n)
        todo += deps_of(pipe, index[n])
    return seen


def cycle(pipe: Pipeline) -> list[str] | None:
    """A cycle of stage names, or None (depth-first search over the `after` edges)."""
    index = {s.name: i for i, s in enumerate(pipe.stages)}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for d in deps_of(pipe, index[n]):
            if d not in index:
                continue
            if state.get(d) == 1:
                return [*path[path.index(d) :], d]
            if d not in state and (found := visit(d)):
                return found
        state[n] = 2
        path.pop()
        return None

    for s in pipe.stages:
        if s.name not in state and (found := visit(s.name)):
            return found
    return None


# ---- loading and overrides ---------------------------------------------------------------------------
def parse(doc: dict, where: str | None = None) -> Scenario:
    try:
        return Scenario.model_validate(doc)
    except ScenarioError as e:
        raise e.at(where) if where else e from None
    except ValidationError as e:
        raise ScenarioError(*_first_error(e, doc), path=where) from None


def _first_error(e: ValidationError, doc: dict) -> tuple[str, str]:
    """(field, message) of the first error, its path naming list items by name where they have one
    (`pools.search.index`, as the reference checks and `--set` do); a ScenarioError raised inside a section's
    validator names its field within that section; a ValueError says its own message, without pydantic's
    "Value error, " before it."""
    err = e.errors()[0]
    inner = err.get("ctx", {}).get("error")
    parts, at = [], doc
    for x in err["loc"]:
        if x in _TAGS and not (isinstance(at, dict) and x in at):  # a union member's tag, not a document key
            continue
        if isinstance(at, list) and isinstance(x, int) and x < len(at):
            at = at[x]
            parts.append(str(at["name"]) if isinstance(at, dict) and "name" in at else str(x))
        else:
            at = at.get(x) if isinstance(at, dict) else None
            parts.append(str(x))
    loc = ".".join(parts)
    if isinstance(inner, ScenarioError):
        return ".".join(x for x in (loc, inner.field) if x), inner.message
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    message = str(inner) if isinstance(inner, ValueError) else err["msg"]
    return loc or "scenario", f"{message}{more}"


_TAGS = {"llm", "service"} | {t for t in STAGE_POOL_KIND} | {"kv_transfer", "route", "tool"}


def load(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read a scenario file and apply `dotted.path=value` overrides (values in YAML syntax)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ScenarioError("yaml", f"invalid YAML: {e}", str(path)) from e
    if not isinstance(doc, dict):
        raise ScenarioError("scenario", "expected a mapping at the top level", str(path))
    scenario = parse(doc, str(path))
    return with_overrides(scenario, overrides, str(path)) if overrides else scenario


def with_overrides(scenario: Scenario, overrides, where: str | None = None) -> Scenario:
    """A copy with each `dotted.path=value` set. A path is any field of the full scenario (defaults included);
    list items by index or by name (`pools.decode.replicas=4`)."""
    doc = scenario.model_dump()
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq:
            raise ScenarioError("--set", f"expected dotted.path=value, got {item!r}", where)
        set_path(doc, key.strip(), yaml.safe_load(raw), where)
    return parse(doc, where)


def set_path(doc: dict, key: str, value, where: str | None = None) -> None:
    if key.split(".")[0] == "source" and len(doc.get("clients") or []) == 1:  # a one-client scenario's `source`
        key = "clients.0." + key
    target = doc
    *path, last = key.split(".")
    for i, part in enumerate([*path, last]):
        final = i == len(path)
        if isinstance(target, list):
            names = [x.get("name") for x in target if isinstance(x, dict)]
            if part.isdigit() and int(part) < len(target):
                idx = int(part)
            elif part in names:
                idx = names.index(part)
            else:
                raise ScenarioError(
                    key, f"no item {part!r} in this list; known: {_known(n for n in names if n)}", where
                )
            if final:
                target[idx] = value
                return
            target = target[idx]
        elif isinstance(target, dict):
            if part not in target:
                raise ScenarioError(key, f"{part!r} is not a field here; known: {_known(target)}", where)
            if final:
                target[part] = value
                return
            target = target[part]
        else:
            raise ScenarioError(key, f"{part!r}: {'.'.join([*path, last][:i])} is a value, not a section", where)
