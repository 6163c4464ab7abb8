"""A model's forward pass as operators, for one batch composition, under tensor / pipeline parallelism.

The result is a DataFrame in the `kernel_samples` column vocabulary plus `name` and `count` (how many times the
op runs in the pass on one device), so `roofline()` and the calibrated cost models price it row by row."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .catalog import ModelConfig


@dataclass(frozen=True)
class Batch:
    """One iteration's work: prefill chunks as (new tokens, tokens already cached) and decode KV lengths."""

    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()

    @property
    def tokens(self) -> int:
        return sum(q for q, _ in self.prefill) + len(self.decode)

    @property
    def sequences(self) -> int:
        return len(self.prefill) + len(self.decode)


ACTIVATION_DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Parallelism:
    tp: int = 1
    pp: int = 1
    dtype: str = "bfloat16"
    kv_cache_dtype: str | None = None
    extra: dict = field(default_factory=dict)
    # expert parallelism inside the TP group (MoE): each device holds experts / ep experts, each sharded
    # tp / ep ways (TRT-LLM's moe_ep_size x moe_tp_size = tp_size); attention stays tensor-parallel
    ep: int = 1
    # set when a replica's GPUs span nodes of this many devices: collectives that cross a node use the
    # inter-node link (None: the replica fits in one node)
    devices_per_node: int | None = None


def layer_ops(model: ModelConfig, batch: Batch, par: Parallelism = Parallelism()) -> pd.DataFrame:
    """The ops one device runs for `batch` through its pipeline stage (layers / pp), plus the LM head on the
    last stage. Counts are per pass."""
    return pd.DataFrame(layer_rows(model, batch, par))


def layer_rows(model: ModelConfig, batch: Batch, par: Parallelism = Parallelism()) -> list[dict]:
    """layer_ops as a list of row dicts (many batches' rows make one frame at once: a frame per batch costs
    pandas' constructor each time)."""
    tp, T = par.tp, batch.tokens
    if not model.splits_over(tp):
        raise ValueError(f"{model.id}: {model.heads} heads / {model.kv_heads} KV heads do not split over TP={tp}")
    layers = -(-model.layers // par.pp)
    h = model.heads // tp
    hk = max(model.kv_heads // tp, 1)
    d = model.head_dim
    rows: list[dict] = []

    # quantized dtypes (fp8, int8, fp4, ...) apply to the weight GEMMs and attention; norms, activations,
    # collectives and the LM head run on 16-bit activations, as vLLM / TRT-LLM / SGLang quantized checkpoints do
    act = par.dtype if par.dtype in ACTIVATION_DTYPES else "bfloat16"
    node = {"devices_per_node": par.devices_per_node} if par.devices_per_node else {}

    def add(name: str, family: str, count: float = layers, dtype: str = par.dtype, **shape) -> None:
        rows.append({"name": name, "op_family": family, "count": count, "dtype": dtype, **shape})

    if T == 0:
        return rows
    add("qkv_proj", "gemm", m=T, n=(h + 2 * hk) * d, k=model.hidden)
    if model.qk_norm != "none":
        # priced as one kernel over the queries and keys, per head or across heads alike (the same bytes):
        # TRT-LLM fuses both norms with RoPE (Qwen3Attention's fuse_qk_norm_rope); vLLM runs them apart unless
        # its QK-norm-RoPE fusion pass is on
        add("qk_norm", "norm", dtype=act, m=T, n=(h + hk) * d)
        if model.qk_norm == "across_heads" and tp > 1:  # the q and k variances (fp32) of every token, summed
            add("qk_norm_all_reduce", "all_reduce", dtype=act, message_bytes=T * 2 * 4, num_gpus=tp, **node)
    kv_dtype = par.kv_cache_dtype or par.dtype
    causal = model.kind == "decoder"
    # one attention kernel per layer runs every prefill chunk (a variable-length batch): equal chunks are one row,
    # the measured kernel at that batch size
    for (q, cached), same in Counter(batch.prefill).items():
        kv = cached + q if causal else q
        add(
            "attention_prefill",
            "attention_prefill",
            batch_size=same,
            seq_len=q,
            kv_len=kv,
            num_heads=h,
            num_kv_heads=hk,
            head_dim=d,
            kv_cache_dtype=kv_dtype,
        )
    if batch.decode:
        add(
            "attention_decode",
            "attention_decode",
            batch_size=len(batch.decode),
            kv_len=float(np.mean(batch.decode)),
            num_heads=h,
            num_kv_heads=hk,
            head_dim=d,
            kv_cache_dtype=kv_dtype,
        )
    add("o_proj", "gemm", m=T, n=model.hidden, k=h * d)
    gate = 2 if model.gated_mlp else 1
    if model.experts > 1:
        # Each token picks top_k of the experts (taken as uniform and independent): an expert receives at least
        # one of the T tokens with probability 1 - (1 - top_k / experts)^T, so small batches touch few experts
        # and read only their weights. A device holds experts / ep local experts, each sharded tp / ep ways, and
        # runs each layer's up and down projections as one grouped GEMM (one kernel): priced as one GEMM whose
        # rows are those routed to an active expert and whose columns are the active experts' weight matrices
        # side by side, which has the grouped GEMM's FLOPs and weight bytes and pays one launch, not one per
        # expert. The partial outputs combine in the all-reduce below, as with TP attention.
        # Under expert parallelism that all-reduce waits for the slowest rank: the one whose local experts drew
        # the most tokens' routes. A layer is priced on that rank, with the expected largest count of active
        # local experts over the ep ranks (expected_max_active), not the mean: at batch 4 on EP8 (Qwen3-235B) the
        # busiest rank reads 1.7x the mean's expert weights; once every expert is active the two agree.
        if tp % par.ep or model.experts % par.ep:
            raise ValueError(f"{model.id}: ep={par.ep} must divide TP={tp} and the {model.experts} experts")
        moe_tp, local = tp // par.ep, model.experts // par.ep
        active = 1.0 - (1.0 - model.top_k / model.experts) ** T
        routed = T * model.top_k / model.experts / active  # rows per active expert
        experts_on = expected_max_active(local, active, par.ep)
        add("router", "gemm", dtype=act, m=T, n=model.experts, k=model.hidden)
        # the kernels every fused-MoE implementation runs around its grouped GEMMs (vLLM's topk_softmax,
        # moe_align_block_size and moe_sum; TRT-LLM's routing, expand and finalize): the top-k of each token's
        # router logits, its routes sorted into expert order, and the weighted sum of a token's top_k expert
        # outputs back into one row (on the busiest rank: its routed rows); streaming kernels of the measured
        # kind "add" (fit.FAMILY_CATEGORICAL), the activation of the kind "mlp_act"
        add("moe_topk", "elementwise", dtype=act, m=T, n=model.experts, op_name="add")
        add("moe_sort", "elementwise", dtype=act, m=T, n=model.top_k, op_name="add")
        add("moe_combine", "elementwise", dtype=act, m=routed * experts_on, n=model.hidden, op_name="add")
        add("expert_up", "gemm", m=routed, n=experts_on * (gate * model.ffn // moe_tp), k=model.hidden)
        add("expert_down", "gemm", m=routed, n=experts_on * model.hidden, k=model.ffn // moe_tp)
        act_rows, act_cols = routed * experts_on, model.ffn // moe_tp
    else:
        add("mlp_up", "gemm", m=T, n=gate * model.ffn // tp, k=model.hidden)
        add("mlp_down", "gemm", m=T, n=model.hidden, k=model.ffn // tp)
        act_rows, act_cols = T, model.ffn // tp
    add("norms", "norm", count=2 * layers, dtype=act, m=T, n=model.hidden)
    add("activation", "elementwise", dtype=act, m=act_rows, n=act_cols, op_name="mlp_act")
    if tp > 1:
        add(
            "tp_all_reduce",
            "all_reduce",
            count=2 * layers,
            dtype=act,
            message_bytes=T * model.hidden * 2,
            num_gpus=tp,
            **node,
        )
    if par.pp > 1:  # stage to stage: across nodes when the replica spans them (the next stage is elsewhere)
        send_node = {"devices_per_node": 1} if par.devices_per_node and tp * par.pp > par.devices_per_node else {}
        add(
            "pp_send_recv", "send_recv", count=1, dtype=act, message_bytes=T * model.hidden * 2, num_gpus=2, **send_node
        )
    if model.kind == "decoder":
        logits = batch.sequences  # one next-token distribution per sequence
        add("lm_head", "gemm", count=1, dtype=act, m=logits, n=model.vocab // tp, k=model.hidden)
    return rows


def expected_max_active(local: int, active: float, ranks: int) -> float:
    """Expected largest number of active experts on one of `ranks` expert-parallel ranks of `local` experts each,
    every expert active with probability `active`, independently (a binomial count per rank; exact enough here:
    a simulation of top-k routing without replacement agrees within 0.1 expert at 128 experts, top 8). One rank
    gives the mean, local x active, exactly. E[max] = sum over x < local of P(max > x) = 1 - F(x)^ranks."""
    if ranks == 1:
        return local * active
    total, cdf = 0.0, 0.0
    for x in range(local):
        cdf += math.comb(local, x) * active**x * (1.0 - active) ** (local - x)
        total += 1.0 - min(cdf, 1.0) ** ranks
    return total


def catalog_gemm_shapes(models: list[ModelConfig], tps: tuple[int, ...] = (1, 2, 4, 8)) -> set[tuple[int, int]]:
    """(n, k) of every dense GEMM the catalog's models run at these TP degrees."""
    shapes = set()
    for mdl in models:
        for tp in tps:
            if not mdl.splits_over(tp):
                continue
            ops = layer_ops(mdl, Batch(decode=(1,)), Parallelism(tp=tp))
            g = ops[ops.op_family == "gemm"]
            shapes |= {(int(n), int(k)) for n, k in zip(g.n, g.k, strict=True)}
    return shapes


def catalog_head_configs(models: list[ModelConfig], tps: tuple[int, ...] = (1, 2, 4, 8)) -> set[tuple[int, int, int]]:
    """(heads, kv_heads, head_dim) per device of every catalog model at these TP degrees."""
    out = set()
    for mdl in models:
        for tp in tps:
            if mdl.splits_over(tp):
                out.add((mdl.heads // tp, max(mdl.kv_heads // tp, 1), mdl.head_dim))
    return out
