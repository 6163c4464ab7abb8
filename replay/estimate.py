"""One static batch, priced (AIConfigurator's `estimate`): B requests of I prompt tokens and O output tokens on
one replica. The B prompts are prefilled as one batch (or, with a prefill chunk of c tokens, c tokens of each
prompt per iteration, each chunk attending to the ones before it: llama.cpp's prompt batch); then O - 1 decode
iterations of the B sequences, their KV growing from I to I + O (priced at 16 KV lengths and integrated: a decode
step's time is smooth in its KV length; a long run of equal chunks is integrated the same way). Ops are priced by
the device's cost models exactly as the engine prices an iteration (every stage of a PP replica in turn, the LM
head once, CUDA-graph variants for small decode batches on NVIDIA GPUs), each carrying its tier; the step
overhead (the serving framework's CPU time per iteration, launch gaps and the scheduler pass, plus its time per
sequence: scheduling, sampling, streaming) is included and named. A step-level figure separates cost-model
error from scheduling and client effects."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..calibrate.artifacts import file_stamp, models_path
from ..calibrate.catalog import device as catalog_device
from ..calibrate.catalog import model as catalog_model
from ..calibrate.model import CostModel
from ..calibrate.ops import Batch, layer_ops
from .errors import ScenarioError
from .pools.llm.build import parallelism, step_overhead
from .pools.llm.kv import kv_blocks
from .scenario import LLMPoolSpec, check_pool

KV_POINTS = 16
CUDA_GRAPH_MAX_TOKENS = 512  # vLLM's default capture size, as the engine's pools use


@cache
def _cost_model(device: str, root: str, framework: str | None, stamp: tuple | None) -> CostModel:
    """One CostModel per device, warehouse, framework and artifact version: it keeps what it found about devices
    to transfer from (CostModel._donor), which a validation of thousands of estimates would redo each time."""
    return CostModel(device, Path(root), framework)


def estimate(
    device: str,
    model: str,
    batch: int,
    input_tokens: int,
    output_tokens: int,
    warehouse_root: Path,
    tp: int = 1,
    pp: int = 1,
    dtype: str = "bfloat16",
    framework: str | None = None,
    ep: int = 1,
    prefill_chunk_tokens: int | None = None,
) -> dict:
    dev, mdl = catalog_device(device), catalog_model(model)
    spec = LLMPoolSpec(
        device=device,
        model=model,
        tp=tp,
        pp=pp,
        ep=ep,
        dtype=dtype,
        framework=framework,
        max_model_len=input_tokens + output_tokens + 1,
        spans_nodes=tp * pp > dev.devices_per_node,  # a static batch may span nodes: its collectives cross them
    )
    try:  # what a replay refuses (a CPU, an encoder model, TP that splits no heads), refused here too
        check_pool(spec)
    except ScenarioError as e:  # named as the option that set it: pools.main.tp -> --tp
        raise ScenarioError("--" + e.field.rsplit(".", 1)[-1], e.message) from None
    blocks = kv_blocks(spec, dev, mdl)
    need = batch * -(-(input_tokens + output_tokens) // spec.memory.block_tokens)
    overhead = step_overhead(spec, warehouse_root)
    cm = _cost_model(
        device, str(Path(warehouse_root).resolve()), framework, file_stamp(models_path(warehouse_root, device))
    )
    par = parallelism(spec, dev)
    graphs = dev.vendor == "nvidia"
    steps = max(output_tokens - 1, 0)
    kv = np.unique(np.round(np.linspace(input_tokens + 1, input_tokens + max(steps, 1), KV_POINTS))).astype(int)
    chunk = min(prefill_chunk_tokens or input_tokens, input_tokens)
    full, rest = divmod(input_tokens, chunk)  # full chunks, then a shorter last one
    # the full chunks' positions priced (every one where few), the rest interpolated; the shorter one exactly
    at_chunk = np.unique(np.round(np.linspace(0, full - 1, min(full, KV_POINTS)))).astype(int)
    chunks = [(chunk, int(j) * chunk) for j in at_chunk] + ([(rest, full * chunk)] if rest else [])
    frames = [
        layer_ops(mdl, Batch(prefill=(c,) * batch), par).assign(point=-1 - i, cuda_graph=False)
        for i, c in enumerate(chunks)
    ]
    if steps:
        for i, length in enumerate(kv):
            ops = layer_ops(mdl, Batch(decode=(int(length),) * batch), par)
            frames.append(ops.assign(point=i, cuda_graph=graphs and batch <= CUDA_GRAPH_MAX_TOKENS))
    ops = pd.concat(frames, ignore_index=True)
    pred = cm.predict(ops)
    per_stage = np.where(ops["name"] == "lm_head", 1.0, float(pp))  # each PP stage in turn; the head once
    us = pred["latency_us"].to_numpy() * ops["count"].to_numpy() * per_stage
    point = ops["point"].to_numpy()
    # a prefill iteration runs outside a CUDA graph: no faster than the host launches its layers' kernels
    kernels = np.array([us[point == -1 - i].sum() for i in range(len(chunks))])
    floors = np.maximum(mdl.layers * overhead.eager_layer_us - kernels, 0.0)  # what the floor adds
    per_iteration = kernels + floors + overhead.us(batch)
    prefill_us = float(np.interp(np.arange(full), at_chunk, per_iteration[: len(at_chunk)]).sum())
    floor_us = float(np.interp(np.arange(full), at_chunk, floors[: len(at_chunk)]).sum())
    if rest:
        prefill_us, floor_us = prefill_us + float(per_iteration[-1]), floor_us + float(floors[-1])
    decode_s = 0.0
    if steps:
        at = np.array([us[point == i].sum() for i in range(len(kv))]) + overhead.us(batch)
        decode_s = float(np.interp(np.arange(input_tokens + 1, input_tokens + steps + 1), kv, at).sum()) / 1e6
    tiers = Counter(pred["tier"])
    past = pred["past_measured"].to_numpy()
    families = (ops["op_family"] + "/" + ops["dtype"].astype(str)).to_numpy()
    past_measured = {
        fam: {
            "ops": int(past[families == fam].sum()),
            "of": int((families == fam).sum()),
            "priced_as": cm.provenance[fam]["past_measured"]["priced_as"],
        }
        for fam in sorted(set(families[past]))
    }
    return {
        "device": device,
        "model": model,
        "tp": tp,
        "pp": pp,
        "dtype": dtype,
        "kv_cache_dtype": spec.kv_dtype,
        "framework": framework,
        "batch": batch,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "prefill_chunk_tokens": chunk,
        "prefill_iterations": full + (rest > 0),
        "prefill_ms": round(prefill_us / 1e3, 4),
        "decode_step_ms": round(decode_s * 1e3 / steps, 4) if steps else None,
        "e2e_ms": round(prefill_us / 1e3 + decode_s * 1e3, 4),
        "step_overhead_us": overhead.iteration_us,  # the TP broadcast's log2 TP hops included
        "broadcast_overhead_us": overhead.broadcast_us,  # per hop
        "sequence_overhead_us": overhead.sequence_us,
        "eager_layer_us": overhead.eager_layer_us,  # the prefill's least time: layers x this
        "prefill_eager_floor_ms": round(floor_us / 1e3, 4),  # what that floor adds to the prefill's kernels
        "step_overhead_source": overhead.source,
        "cost_tiers": dict(tiers),
        # op families some of whose shapes lie past the measured ones: priced by a rule, not by the data
        "past_measured": past_measured,
        "kv_fits": need <= blocks,
        "kv_blocks_needed": need,
        "kv_blocks_per_replica": blocks,
    }
