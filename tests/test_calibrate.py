"""Calibration on real measurements: catalogs, op FLOPs, roofline, fitted models, tiers, report, CPU loop."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES
from hermes_sim.calibrate import artifacts, catalog
from hermes_sim.calibrate import fit as fit_module
from hermes_sim.calibrate.evaluate import evaluate_device
from hermes_sim.calibrate.fit import TooFewSamples, ape, attention_schedule, fit_group, make_form
from hermes_sim.calibrate.model import CALIBRATED, ROOFLINE, TRANSFERRED, CostModel
from hermes_sim.calibrate.ops import Batch, Parallelism, expected_max_active, layer_ops
from hermes_sim.calibrate.pipeline import calibrate_device
from hermes_sim.calibrate.roofline import roofline
from hermes_sim.calibrate.splits import split_masks
from hermes_sim.ingest.runner import ingest
from hermes_sim.warehouse.store import Warehouse

EXE = Path(sys.executable).with_name("hermes-sim")
RECORDED_CPU_PROFILE = Path(__file__).parent / "data" / "cpu_profile_xeon_2core.json.gz"


# ---- catalogs ------------------------------------------------------------------------------------
def test_catalog_has_the_required_devices_models_and_tiers():
    devs = catalog.devices()
    for name in (
        "a100_sxm",
        "h100_sxm",
        "h200_sxm",
        "b200_sxm",
        "l40s",
        "mi300x",
        "tpu_v5e",
        "tpu_v5p",
        "gaudi3",
        "xeon_8480p",
        "epyc_9654",
        "local_cpu",
    ):
        assert name in devs
    assert {"hbm", "host_dram", "cxl_memory", "local_nvme", "remote_pool_rdma"} <= set(catalog.tiers())
    mdl = catalog.models()
    assert {"llama-2-7b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b", "qwen3-32b", "mixtral-8x7b"} <= set(mdl)
    assert {m.role for m in mdl.values()} >= {"embedding", "reranker"}
    assert all(d.sources for d in devs.values())


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown device 'h900'; known: .*h100_sxm"):
        catalog.device("h900")
    with pytest.raises(ValueError, match=r"unknown model 'gpt-5'; known: .*llama-2-7b"):
        catalog.model("gpt-5")


def test_catalog_validation_rejects_bad_entries():
    bad = catalog.Device.model_json_schema()  # the schema exists; now a device without sources
    assert "sources" in bad["properties"]
    with pytest.raises(ValueError, match="sources missing"):
        catalog.Device.model_validate(
            {
                "name": "x",
                "vendor": "x",
                "class": "x",
                "kind": "gpu",
                "compute_units": 1,
                "peak_flops": {"bfloat16": 1e12},
                "memory_bandwidth": 1e12,
                "memory_bytes": 1,
                "on_chip_bytes": 1,
                "interconnects": {},
                "power_watts": 1,
                "devices_per_node": 8,
                "price_per_hour_usd": None,
                "sources": {"compute": "x"},
            }
        )


def test_aiconfigurator_system_import_matches_the_catalog():
    imported = catalog.import_aiconfigurator_system(SAMPLES / "hardware/aiconfigurator/systems/h100_sxm.yaml")
    h100 = catalog.device("h100_sxm")
    assert imported.flops("bfloat16") == h100.flops("bfloat16") == 989e12
    assert imported.memory_bandwidth == h100.memory_bandwidth
    assert imported.scale_up_link().bandwidth == h100.scale_up_link().bandwidth


# ---- op decomposition and roofline ----------------------------------------------------------------
def test_decode_flops_are_twice_the_parameters_per_token():
    mdl = catalog.model("llama-2-7b")
    ops = layer_ops(mdl, Batch(decode=(1,) * 8))
    terms = roofline(ops, catalog.device("h100_sxm"))
    gemm = (terms["flops"] * ops["count"])[ops.op_family == "gemm"].sum()
    params = mdl.weight_bytes(1.0) - mdl.vocab * mdl.hidden  # input embedding does no matmul
    assert gemm == pytest.approx(2 * params * 8, rel=1e-9)


def test_prefill_attention_flops_are_causal():
    mdl = catalog.model("llama-3.1-8b")
    ops = layer_ops(mdl, Batch(prefill=((1024, 0),)))
    attn = ops[ops.op_family == "attention_prefill"].iloc[0]
    terms = roofline(ops[ops.op_family == "attention_prefill"], catalog.device("h100_sxm"))
    # QK^T and PV over a causal mask: 2 * 2 * heads * head_dim * sum_{i=1..q} i
    expected = 4 * 32 * 128 * (1024 * 1025 / 2)
    assert terms["flops"].iloc[0] == pytest.approx(expected)
    assert attn.kv_len == 1024 and attn.num_kv_heads == 8


def test_a_triton_prefill_kernel_that_only_masks_its_window_is_priced_for_the_whole_triangle():
    """SGLang's Triton prefill kernel masks a sliding window without skipping the KV tiles outside it: its measured
    time grows with seq^2 (x3.0 and x3.3 per doubling at 4k-16k tokens, window 1024), so its roofline and its tile
    schedule count the causal triangle; FlashAttention-3 skips the tiles and keeps the window's band."""
    base = {
        "op_family": "attention_prefill",
        "dtype": "bfloat16",
        "batch_size": 4,
        "num_heads": 8,
        "num_kv_heads": 4,
        "head_dim": 256,
        "seq_len": 16384,
        "kv_len": 16384,
    }
    rows = pd.DataFrame(
        [base | {"kernel_source": k, "window_size": w} for k, w in (("triton", 1024), ("triton", 0), ("fa3", 1024))]
    )
    masked, whole, skipped = roofline(rows, catalog.device("h100_sxm"))["flops"]
    assert masked == whole == 4 * 4 * 8 * 256 * 16384 * (16384 + 1) / 2
    assert skipped == 4 * 4 * 8 * 256 * 16384 * 1024
    tail, fixed = attention_schedule(rows, 132)
    assert tail[0] == tail[1] and fixed[0] == fixed[1] and fixed[2] > fixed[0]


def test_a_cpu_search_threaded_over_queries_computes_on_one_core_per_query():
    """faiss runs each IVF / HNSW query on one thread: one query's flops go at one core's rate however many threads
    the search has, 56 queries on 56 threads at the socket's; flat search (BLAS, database scans) and a search on
    a GPU are not limited so. Memory time is not scaled (a roofline stays a lower bound)."""
    xeon, h100 = catalog.device("xeon_8480p"), catalog.device("h100_sxm")
    rows = pd.DataFrame(
        {
            "op_family": "vector_search",
            "dtype": "float32",
            "kernel_source": ["faiss-hnsw", "faiss-hnsw", "faiss-hnsw", "faiss-ivf", "faiss-flat", "faiss-hnsw"],
            "m": [1, 1, 56, 4, 1, 1],
            "threads": [56, 1, 56, 56, 56, np.nan],
            "n": 1e7,
            "k": 1024.0,
            "search_width": 64.0,
            "num_lists": 32.0,
        }
    )
    t = roofline(rows, xeon)
    socket_us = (t["flops"] / xeon.flops("float32") * 1e6).to_numpy()
    assert t["compute_us"].to_numpy() == pytest.approx(socket_us * [56, 56, 1, 14, 1, 56])
    assert t["memory_us"].to_numpy() == pytest.approx((t["bytes"] / xeon.memory_bandwidth * 1e6).to_numpy())
    on_gpu = roofline(rows, h100)
    assert on_gpu["compute_us"].to_numpy() == pytest.approx((on_gpu["flops"] / h100.flops("float32") * 1e6).to_numpy())


def test_tensor_parallel_splits_gemms_and_adds_all_reduces():
    mdl = catalog.model("llama-2-70b")
    tp1 = layer_ops(mdl, Batch(decode=(100,) * 4), Parallelism(tp=1))
    tp4 = layer_ops(mdl, Batch(decode=(100,) * 4), Parallelism(tp=4))
    up1, up4 = (t[t.name == "mlp_up"].iloc[0] for t in (tp1, tp4))
    assert up1.n == 4 * up4.n and up1.k == up4.k
    ar = tp4[tp4.op_family == "all_reduce"].iloc[0]
    assert ar["count"] == 2 * mdl.layers and ar.message_bytes == 4 * mdl.hidden * 2
    assert "all_reduce" not in set(tp1.op_family)


def test_moe_layers_read_only_the_experts_a_batch_routes_to_and_split_them_over_expert_parallel_ranks():
    mdl = catalog.model("qwen3-235b-a22b")
    expert_params = 3 * mdl.hidden * mdl.ffn  # gated up (2 x ffn) and down per expert

    def expert_weights(ops):  # elements of the expert projections' weight matrices read per layer
        e = ops[ops.name.isin(["expert_up", "expert_down"])]
        return float((e.n * e.k).sum())

    tp_only = layer_ops(mdl, Batch(decode=(100,)), Parallelism(tp=4))  # every expert sharded 4 ways
    assert expert_weights(tp_only) == pytest.approx(mdl.top_k / 4 * expert_params)  # 1 token: top_k experts, 1/4 each
    assert tp_only[tp_only.name == "expert_down"].iloc[0].k == mdl.ffn // 4
    one = layer_ops(mdl, Batch(decode=(100,)), Parallelism(tp=4, ep=4))  # 32 whole experts per rank
    # the layer waits for the rank that drew the most of the token's top_k experts, not for the mean (top_k / 4)
    busiest = expected_max_active(mdl.experts // 4, mdl.top_k / mdl.experts, 4)
    assert expert_weights(one) == pytest.approx(busiest * expert_params)
    assert busiest > 1.5 * mdl.top_k / 4
    many = layer_ops(mdl, Batch(prefill=((8192, 0),)), Parallelism(tp=4, ep=4))
    assert expert_weights(many) == pytest.approx(mdl.experts / 4 * expert_params, rel=1e-6)  # every local expert
    routed = many[many.name == "expert_up"].iloc[0]
    assert routed.m * routed.n == pytest.approx(8192 * mdl.top_k / 4 * 2 * mdl.ffn, rel=1e-6)  # rows x columns
    assert len(many[many.name == "expert_up"]) == 1 and many[many.name == "expert_up"].iloc[0]["count"] == mdl.layers
    with pytest.raises(ValueError, match="ep=3 must divide"):
        layer_ops(mdl, Batch(decode=(100,)), Parallelism(tp=4, ep=3))


def test_a_moe_layer_runs_the_routing_and_combine_kernels_around_its_grouped_gemms():
    """Every fused-MoE implementation takes the top-k of the router logits, sorts the routes into expert order
    and sums each token's top_k expert outputs back into one row (on the busiest rank: its routed rows)."""
    mdl = catalog.model("qwen3-235b-a22b")
    ops = layer_ops(mdl, Batch(prefill=((8192, 0),)), Parallelism(tp=4, ep=4)).set_index("name")
    assert (ops.loc["moe_topk", ["m", "n"]] == [8192, mdl.experts]).all()
    assert (ops.loc["moe_sort", ["m", "n"]] == [8192, mdl.top_k]).all()
    combine = ops.loc["moe_combine"]
    assert combine.n == mdl.hidden and combine.m == pytest.approx(8192 * mdl.top_k / 4)  # every local expert active
    assert {"moe_topk", "moe_sort", "moe_combine"} <= set(ops[ops.op_family == "elementwise"].index)
    assert (ops.loc[["moe_topk", "moe_sort", "moe_combine"], "count"] == mdl.layers).all()
    dense = layer_ops(catalog.model("llama-3.1-8b"), Batch(decode=(100,) * 4))
    assert not {"moe_topk", "moe_sort", "moe_combine"} & set(dense.name)


def test_queries_and_keys_are_normed_where_the_architecture_norms_them():
    """Qwen3 norms each head's queries and keys (one kernel over both, as TRT-LLM fuses them; no collective);
    MiniMax-M2 norms them across all heads, so under TP the ranks all-reduce each token's two variances (fp32)
    once per layer."""
    qwen = catalog.model("qwen3-32b")
    ops = layer_ops(qwen, Batch(decode=(100,) * 4), Parallelism(tp=4)).set_index("name")
    heads = (qwen.heads + qwen.kv_heads) // 4 * qwen.head_dim
    assert (ops.loc["qk_norm", ["op_family", "m", "n", "count"]] == ["norm", 4, heads, qwen.layers]).all()
    assert "qk_norm_all_reduce" not in ops.index
    llama = layer_ops(catalog.model("llama-3.1-8b"), Batch(decode=(100,) * 4), Parallelism(tp=4))
    assert not {"qk_norm", "qk_norm_all_reduce"} & set(llama.name)
    minimax = catalog.model("minimax-m2.5")
    ops = layer_ops(minimax, Batch(decode=(100,) * 4), Parallelism(tp=4, ep=4)).set_index("name")
    reduce = ops.loc["qk_norm_all_reduce"]
    assert (reduce[["op_family", "message_bytes", "num_gpus", "count"]] == ["all_reduce", 4 * 2 * 4, 4, 62]).all()
    alone = layer_ops(minimax, Batch(decode=(100,) * 4), Parallelism(tp=1))
    assert "qk_norm" in set(alone.name) and "qk_norm_all_reduce" not in set(alone.name)


@pytest.mark.parametrize("tokens, ranks", [(1, 4), (4, 8), (16, 8), (64, 4)])
def test_the_busiest_expert_parallel_rank_matches_top_k_routing(tokens: int, ranks: int):
    """expected_max_active (independent experts, a binomial per rank) against routing itself: each token picks
    top_k distinct experts of 128, a rank holds 128 / ranks of them; the mean over draws of the busiest rank's
    active experts."""
    experts, top_k, local = 128, 8, 128 // ranks
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(3000):
        active = np.zeros(experts, bool)
        for _ in range(tokens):
            active[rng.choice(experts, top_k, replace=False)] = True
        draws.append(active.reshape(ranks, local).sum(axis=1).max())
    p = 1 - (1 - top_k / experts) ** tokens
    assert expected_max_active(local, p, ranks) == pytest.approx(np.mean(draws), rel=0.02)
    assert expected_max_active(local, p, 1) == local * p  # one rank: the mean, exactly


def test_roofline_gemm_regimes_and_ring_all_reduce():
    h100 = catalog.device("h100_sxm")
    ops = pd.DataFrame(
        {
            "op_family": ["gemm", "gemm", "all_reduce"],
            "dtype": ["bfloat16"] * 3,
            "m": [1, 8192, np.nan],
            "n": [8192, 8192, np.nan],
            "k": [8192, 8192, np.nan],
            "message_bytes": [np.nan, np.nan, 64e6],
            "num_gpus": [np.nan, np.nan, 8],
        }
    )
    t = roofline(ops, h100)
    assert t.memory_us[0] > t.compute_us[0]  # a GEMV is memory-bound
    assert t.compute_us[1] > t.memory_us[1]  # a square 8k GEMM is compute-bound
    assert t.compute_us[1] == pytest.approx(2 * 8192**3 / 989e12 * 1e6)
    ring = 2 * 7 / 8 * 64e6 / 450e9 * 1e6 + 2  # ring bus bytes over NVLink + one 2 us link latency
    assert t.memory_us[2] == pytest.approx(ring)


def test_an_eager_custom_all_reduce_first_copies_its_input_into_the_registered_buffer():
    """vLLM's and SGLang's custom all-reduce outside a CUDA graph copies its input into the IPC-registered buffer
    (S bytes read and S written in HBM) before the exchange; captured in a graph, or NCCL, it does not."""
    h100 = catalog.device("h100_sxm")
    sources = ["vLLM_custom_eager:vllm_eager", "vLLM_custom_graph:vllm_graph", "SGLang_CustomAllReduce_eager:x", "NCCL"]
    ops = pd.DataFrame(
        {"op_family": "all_reduce", "dtype": "bfloat16", "message_bytes": 64e6, "num_gpus": 8, "kernel_source": sources}
    )
    t = roofline(ops, h100)
    ring = 2 * 7 / 8 * 64e6 / 450e9 * 1e6 + 2
    copy = 2 * 64e6 / 3.35e12 * 1e6
    assert t.memory_us.tolist() == pytest.approx([ring + copy, ring, ring + copy, ring])


def test_another_frameworks_kernel_is_priced_as_the_fitted_kernel_launched_the_same_way():
    """Trained on vLLM's all-reduces (eager and graph-captured), SGLang's graph-captured kernel and TRT-LLM's
    (measured in a CUDA graph by AIConfigurator's collector) are priced as vLLM's graph variant, not as the
    baseline eager one with its host launch path."""
    h100 = catalog.device("h100_sxm")
    sizes = 2.0 ** np.arange(10, 24)
    rows = [
        {"kernel_source": k, "message_bytes": b, "num_gpus": g, "latency_us": base + b / 2e11 * 1e6}
        for k, base in (("vLLM_custom_eager:vllm_eager", 20.0), ("vLLM_custom_graph:vllm_graph", 3.0))
        for b in sizes
        for g in (2, 4, 8)
    ]
    train = pd.DataFrame(rows).assign(op_family="all_reduce", dtype="bfloat16")
    fitted = fit_group(train, "all_reduce", h100)
    unseen = ["SGLang_CustomAllReduce_graph:sglang_graph", "TRTLLM:trtllm", "vLLM_custom_graph:vllm_graph"]
    test = pd.DataFrame({"kernel_source": unseen, "message_bytes": 4096.0, "num_gpus": 2}).assign(
        op_family="all_reduce", dtype="bfloat16"
    )
    pred = fitted.predict(test, h100, roofline(test, h100))
    assert pred[0] == pytest.approx(pred[2]) and pred[1] == pytest.approx(pred[2])
    assert pred[2] < 6.0  # the graph variant's few microseconds, not the eager one's 20


def test_roofline_of_quantized_gemms_reads_their_narrow_weights_and_runs_sq_on_the_int8_cores():
    """TensorRT-LLM's weight-only INT4 / INT8 GEMMs read 0.5 / 1 byte per weight with 16-bit activations and
    bf16 math; SmoothQuant (sq) is W8A8 on the INT8 cores. Priced as 16-bit, A100 tables beat their own
    'speed of light' by up to 3.4x (10% of int4_wo rows, 31% of sq rows)."""
    a100 = catalog.device("a100_sxm")
    gemv = {"op_family": "gemm", "m": 1.0, "n": 8192.0, "k": 8192.0}
    ops = pd.DataFrame([gemv | {"dtype": d} for d in ("bfloat16", "int8_wo", "int4_wo", "sq")])
    t = roofline(ops, a100)
    weights = 8192 * 8192
    assert t.memory_us.tolist() == pytest.approx(
        [
            (weights * b + 8192 * a + 8192 * 2) / a100.memory_bandwidth * 1e6
            for a, b in ((2, 2), (2, 1), (2, 0.5), (1, 1))
        ]
    )
    square = pd.DataFrame(
        [{"op_family": "gemm", "m": 8192.0, "n": 8192.0, "k": 8192.0, "dtype": d} for d in ("int4_wo", "sq")]
    )
    t = roofline(square, a100)
    assert t.compute_us.tolist() == pytest.approx([2 * 8192**3 / r * 1e6 for r in (312e12, 624e12)])


def test_moe_dispatch_sends_a_token_once_per_rank_holding_its_experts():
    """DeepEP sends a token's hidden state once to each other rank holding one of its top_k experts: for top-8 of
    256 experts on 8 GPUs, 4.6 ranks where a copy per expert would be 7 (H100 DeepEP rows beat that by 3.8x)."""
    from hermes_sim.calibrate.roofline import moe_remote_ranks

    h100 = catalog.device("h100_sxm")
    got = moe_remote_ranks(np.array([256.0, 8.0, np.nan]), np.array([8.0, 8.0, 8.0]), np.array([8.0, 8.0, 8.0]))
    exact = 7 * (1 - math.comb(224, 8) / math.comb(256, 8))
    assert got.tolist() == pytest.approx([exact, 7.0, 7.0])  # 8 of 8 experts: every other rank; unknown: per copy
    assert 4.5 < exact < 4.7
    ops = pd.DataFrame(
        {"op_family": "moe_dispatch", "dtype": "bfloat16", "m": [4096.0], "hidden_size": 7168.0, "top_k": 8.0}
        | {"num_experts": 256.0}
    )
    bus = 4096 * 7168 * 2 * exact
    link = h100.scale_up_link()
    assert roofline(ops, h100)["memory_us"].iloc[0] == pytest.approx((bus / link.bandwidth + link.latency_s) * 1e6)


def test_measurements_faster_than_their_roofline_are_flagged_in_the_artifact_and_the_log(caplog):
    a100 = catalog.device("a100_sxm")
    group = pd.DataFrame({"op_family": "gemm", "dtype": "bfloat16", "m": 1.0, "n": 8192.0, "k": [4096.0, 8192.0]})
    roof = roofline(group, a100)["roofline_us"].to_numpy()
    group["latency_us"] = roof * [1.25, 0.5]  # the first within the roofline; the second 2x faster than physics
    with caplog.at_level(logging.WARNING, logger="hermes_sim.calibrate.artifacts"):
        got = artifacts.faster_than_roofline(group, a100, ("gemm", "bfloat16", "trtllm"))
    assert got == {"rows": 1, "share": 0.5, "max_ratio": 2.0}
    assert "gemm/bfloat16/trtllm: 1 of 2 measurements (50.0%) are faster than their roofline on a100_sxm" in caplog.text
    group["latency_us"] = roof * 1.01
    assert artifacts.faster_than_roofline(group, a100, ("gemm", "bfloat16", "trtllm")) is None


def test_the_fidelity_report_gives_the_share_of_held_out_rows_faster_than_their_roofline():
    from hermes_sim.calibrate.evaluate import _rows
    from hermes_sim.calibrate.report import markdown

    test = pd.DataFrame({"op_family": "gemm", "m": 3.0, "n": 5.0, "k": 7.0, "latency_us": [100.0] * 4})
    roof, calibrated = np.array([50.0, 104.0, 106.0, 300.0]), np.full(4, 100.0)  # 106 and 300: beat physics
    key = {"device": "a100_sxm", "family": "gemm", "dtype": "bfloat16", "framework": "trtllm"}
    rows = _rows(key, "extrapolation", test, {"roofline": roof, "calibrated": calibrated})
    by_model = {r["model"]: r for r in rows if r["subset"] == "all"}
    assert by_model["roofline"]["faster_than_roofline"] == 0.5
    assert by_model["calibrated"]["faster_than_roofline"] is None
    assert "| gemm | bfloat16 | trtllm | extrapolation | all | 4 | 50.0% |" in markdown(rows)


# ---- fitted models on real samples ------------------------------------------------------------------
def test_a_device_s_samples_come_in_the_order_the_warehouse_stores_them(sample_warehouse: Path):
    """A least-squares fit's last bits follow the order of its rows, so calibrating twice gives identical models
    only if the samples come in one order. A join's output order varies with DuckDB's threads (on the full
    H100 tree, from run to run); the samples come as the Parquet parts store them."""
    import pyarrow.parquet as pq

    with Warehouse(sample_warehouse, read_only=True) as w:
        w.con.execute("SET threads = 4")
        got = artifacts.device_samples(w, "h100_sxm")
        _, parts = w.query("SELECT relpath FROM parts WHERE table_name = 'kernel_samples' ORDER BY relpath")
    stored = pd.concat([pq.read_table(sample_warehouse / rel).to_pandas() for (rel,) in parts], ignore_index=True)
    keys = ["op_family", "framework", "framework_version", "dtype"]
    stored = stored[stored.device == "h100_sxm"]
    stored_groups = dict(list(stored.fillna({k: "" for k in keys}).groupby(keys, sort=False)))
    groups = got.fillna({k: "" for k in keys}).groupby(keys, sort=False)
    assert groups.ngroups > 5
    for key, rows in groups:
        assert rows.latency_us.tolist() == stored_groups[key].latency_us.tolist(), key
    assert got["sha256"].notna().all()


def test_a_newer_table_whose_floor_timed_the_host_is_set_aside_for_the_last_kernel_bound_one():
    """AIConfigurator's H100 vLLM 0.24.0 block-FP8 GEMM table is 55 us at its fastest, where SGLang's and TRT-LLM's
    are 3.4 and 4.3 us and vLLM 0.19.0's 6.0 us: it timed a host path, and priced from it a vLLM decode step took
    3.5x SGLang's. The fit reads 0.19.0 and the artifact says why."""
    floors = [
        ("gemm", "vllm", "fp8_block", "0.24.0", 55.088),
        ("gemm", "vllm", "fp8_block", "0.19.0", 6.030),
        ("gemm", "vllm", "fp8_block", "0.14.0", 20.512),
        ("gemm", "sglang", "fp8_block", "0.5.14", 3.381),
        ("gemm", "sglang", "fp8_block", "0.5.9", 3.835),
        ("gemm", "trtllm", "fp8_block", "1.3.0rc20", 4.298),
        ("gemm", "vllm", "bfloat16", "0.24.0", 2.452),  # another dtype: no reference for block FP8
        ("gemm", "vllm", "int8_wo", "0.30.0", 90.0),  # the only int8 table: nothing to compare it with
        ("attention_decode", "vllm", "bfloat16", "0.24.0", 99.0),  # every version far above another framework's
        ("attention_decode", "vllm", "bfloat16", "0.19.0", 98.0),
        ("attention_decode", "trtllm", "bfloat16", "1.3.0rc20", 5.47),
    ]
    chosen, set_aside = artifacts.choose_tables(floors)
    assert sorted(chosen) == sorted(
        [
            ("gemm", "vllm", "fp8_block", "0.19.0"),
            ("gemm", "sglang", "fp8_block", "0.5.14"),
            ("gemm", "trtllm", "fp8_block", "1.3.0rc20"),
            ("gemm", "vllm", "bfloat16", "0.24.0"),
            ("gemm", "vllm", "int8_wo", "0.30.0"),
            ("attention_decode", "vllm", "bfloat16", "0.24.0"),  # no better one: the newest stays
            ("attention_decode", "trtllm", "bfloat16", "1.3.0rc20"),
        ]
    )
    assert set_aside == [
        {
            "op_family": "gemm",
            "framework": "vllm",
            "dtype": "fp8_block",
            "framework_version": "0.24.0",
            "floor_us": 55.088,
            "other_frameworks_floor_us": 3.381,
            "used_instead": "0.19.0",
        }
    ]


@pytest.fixture(scope="module")
def h100_gemm(sample_warehouse: Path) -> pd.DataFrame:
    with Warehouse(sample_warehouse, read_only=True) as w:
        df = artifacts.device_samples(w, "h100_sxm", "gemm")
    return df[(df.framework == "vllm") & (df.dtype == "bfloat16")].reset_index(drop=True)


def test_calibrated_gemm_beats_roofline_on_held_out_shapes(h100_gemm: pd.DataFrame):
    h100 = catalog.device("h100_sxm")
    train, test = split_masks(h100_gemm, "gemm", "shape_block", seed=0)
    assert train.sum() > 1000 and test.sum() > 100
    held = h100_gemm[test]
    assert not set(zip(held.n, held.k, strict=True)) <= set(zip(h100_gemm[train].n, h100_gemm[train].k, strict=True))
    fitted = fit_group(h100_gemm[train], "gemm", h100, seed=0)
    err = ape(fitted.predict(held, h100), held.latency_us.to_numpy())
    roof = ape(roofline(held, h100).roofline_us.to_numpy(), held.latency_us.to_numpy())
    assert np.median(err) < 0.12 and np.median(err) < np.median(roof) / 3
    assert fitted.conf_int.shape == (len(fitted.coef), 2)
    assert (fitted.conf_int[:, 0] <= fitted.coef).all() and (fitted.coef <= fitted.conf_int[:, 1]).all()
    assert min(fitted.cv, key=fitted.cv.get) == f"degree_{fitted.form.degree}"  # chosen by held-out CV


def test_a_gemm_larger_than_any_fitted_adds_its_extra_work_at_the_sustained_efficiency(h100_gemm: pd.DataFrame):
    """Fitted on the smaller half and asked about GEMMs at least 4x larger (the extrapolation split): the edge of
    the fitted shapes plus the extra roofline time at the sustained efficiency, not the edge's efficiency over
    the whole roofline (which keeps the launch and last-wave costs in proportion: bundled sample p90 37% -> 18%).
    The issue's target: the p90 no worse than half the roofline's."""
    h100 = catalog.device("h100_sxm")
    train, test = split_masks(h100_gemm, "gemm", "extrapolation", seed=0)
    fitted = fit_group(h100_gemm[train], "gemm", h100, seed=0)
    held = h100_gemm[test]
    err = ape(fitted.predict(held, h100), held.latency_us.to_numpy())
    roof = ape(roofline(held, h100).roofline_us.to_numpy(), held.latency_us.to_numpy())
    assert np.quantile(err, 0.9) < np.quantile(roof, 0.9) / 2 and np.median(err) < 0.1
    inside = h100_gemm[train]
    edge = inside.loc[[fitted.form.work(inside).argmax()]]
    assert fitted.predict(edge, h100) == pytest.approx(fitted._predict_form(edge, roofline(edge, h100)))


def test_the_90_percent_interval_covers_about_90_percent_of_unseen_shapes(h100_gemm: pd.DataFrame):
    """The interval comes from the chosen form's grouped-CV residuals on the training shapes only; on shape
    blocks it never saw, about 90% of the measurements fall inside. Training-set residuals would give a narrower
    interval and a visibly lower coverage."""
    h100 = catalog.device("h100_sxm")
    train, test = split_masks(h100_gemm, "gemm", "shape_block", seed=0)
    fitted = fit_group(h100_gemm[train], "gemm", h100, seed=0)
    lo, hi = fitted.log_interval_90
    assert lo < 0 < hi
    held = h100_gemm[test]
    coverage = artifacts.coverage_90(fitted, fitted.predict(held, h100), held.latency_us.to_numpy())
    assert 0.8 <= coverage <= 0.98


def test_the_interval_widens_past_the_fitted_shapes_and_then_still_covers(h100_gemm: pd.DataFrame):
    """Fitted on the smaller half (by work) and asked about shapes at least 4x larger (the extrapolation split),
    the grouped-CV interval alone is far too narrow; the growth per e-fold past the fitted shapes, measured on
    the training rows alone, brings the coverage back towards 90%. Inside the fitted range nothing changes."""
    h100 = catalog.device("h100_sxm")
    train, test = split_masks(h100_gemm, "gemm", "extrapolation", seed=0)
    fitted = fit_group(h100_gemm[train], "gemm", h100, seed=0)
    assert fitted.log_interval_growth is not None and fitted.log_interval_growth > 0
    held = h100_gemm[test]
    pred, measured = fitted.predict(held, h100), held.latency_us.to_numpy()
    beyond = fitted.form.beyond(held)  # in e-folds of m n k (log1p of each dim) past the largest fitted
    assert (beyond > 0).all() and np.median(beyond) > np.log(4)
    flat = artifacts.coverage_90(fitted, pred, measured)
    widened = artifacts.coverage_90(fitted, pred, measured, held)
    assert flat < 0.7 and widened > flat + 0.2 and widened >= 0.8  # the bundled sample's GEMMs: 60% -> 88%
    inside = h100_gemm[train].head(50)
    assert (fitted.form.beyond(inside) == 0).all()
    lower, upper = fitted.interval_factors(inside)
    assert np.allclose(lower, np.exp(fitted.log_interval_90[0])) and np.allclose(
        upper, np.exp(fitted.log_interval_90[1])
    )


def test_fit_is_deterministic(h100_gemm: pd.DataFrame):
    h100 = catalog.device("h100_sxm")
    a, b = (fit_group(h100_gemm, "gemm", h100, seed=3) for _ in range(2))
    assert np.array_equal(a.coef, b.coef)


def test_too_few_samples_is_said_clearly(h100_gemm: pd.DataFrame):
    with pytest.raises(TooFewSamples, match=r"gemm on h100_sxm: 12 samples < 30"):
        fit_group(h100_gemm.head(12), "gemm", catalog.device("h100_sxm"))


def test_extrapolation_stays_bounded(h100_gemm: pd.DataFrame):
    h100 = catalog.device("h100_sxm")
    train, test = split_masks(h100_gemm, "gemm", "extrapolation", seed=0)
    fitted = fit_group(h100_gemm[train], "gemm", h100)
    held = h100_gemm[test]
    err = ape(fitted.predict(held, h100), held.latency_us.to_numpy())
    roof = ape(roofline(held, h100).roofline_us.to_numpy(), held.latency_us.to_numpy())
    assert np.percentile(err, 99) < 2.0  # no polynomial blow-up 4x beyond the fitted shapes
    assert np.median(err) < np.median(roof)


def test_a_streaming_kernel_of_an_unmeasured_width_costs_its_bytes_at_the_nearest_measured_width(
    sample_warehouse: Path,
):
    """An RMSNorm over a width no table measured (a head's 128 dims, MiniMax's hidden 3072) is priced as the same
    elements at the nearest measured width, never below the fastest measured kernel. Fitted on m and n alone,
    the full H100 tree priced 2048 x 128 at 255 us and 4 x 3072 at three times 4 x 4096."""
    h100 = catalog.device("h100_sxm")
    with Warehouse(sample_warehouse, read_only=True) as w:
        norms = artifacts.device_samples(w, "h100_sxm", "norm")
    fitted = fit_group(norms, "norm", h100)
    narrowest = fitted.form.width_range[0]
    assert fitted.form.width_range == [norms.n.min(), norms.n.max()] and narrowest >= 4096

    def price(m: list[float], n: list[float]) -> np.ndarray:
        return fitted.predict(pd.DataFrame({"op_family": "norm", "dtype": "float16", "m": m, "n": n}), h100)

    head, same_bytes = (
        price([2048, 4], [128, 3072]),
        price([2048 * 128 / narrowest, 4 * 3072 / narrowest], [narrowest] * 2),
    )
    assert head == pytest.approx(same_bytes)
    assert (head <= 1.01 * price([2048, 4], [narrowest] * 2)).all()  # fewer bytes: no dearer, within the fit's ripple
    assert fitted.form.latency_min_us == norms.latency_us.min()
    assert (price([1, 4, 1], [128, 8, 1]) == norms.latency_us.min()).all()  # a launch does not shrink


def test_a_norm_larger_than_any_fitted_streams_at_the_rate_the_largest_fitted_ones_reached(sample_warehouse: Path):
    """Fitted on the smaller half of the measured norms and asked about kernels at least 4x larger (the
    extrapolation split): they keep the largest fitted ones' efficiency (about 0.35 of HBM bandwidth), not one
    decaying towards 0.8, which priced them at half their measured time (median 48.6% -> 16.4% here)."""
    h100 = catalog.device("h100_sxm")
    with Warehouse(sample_warehouse, read_only=True) as w:
        norms = artifacts.device_samples(w, "h100_sxm", "norm")
    train, test = split_masks(norms, "norm", "extrapolation", seed=0)
    held = norms[test]
    predicted = fit_group(norms[train], "norm", h100).predict(held, h100)
    assert len(held) >= 10 and np.median(ape(predicted, held.latency_us.to_numpy())) < 0.25
    assert np.median(predicted / held.latency_us.to_numpy()) > 0.75


def test_elementwise_kernels_are_fitted_by_the_kind_each_row_measured(sample_warehouse: Path):
    """Vidur's elementwise table holds residual adds, RoPE and the gated activation: fitted apart (op_name), an add
    of an activation's shape costs half of it, and held-out shapes are priced closer (here 3.2% / 27.6% pooled);
    a replay's activation names its kind, and the MoE's light kernels theirs."""
    h100 = catalog.device("h100_sxm")
    with Warehouse(sample_warehouse, read_only=True) as w:
        ew = artifacts.device_samples(w, "h100_sxm", "elementwise")
    train, test = split_masks(ew, "elementwise", "shape_block", seed=0)
    fitted = fit_group(ew[train], "elementwise", h100)
    assert fitted.form.categories["op_name"] == ["add", "attn_rope", "mlp_act"]
    err = ape(fitted.predict(ew[test], h100), ew[test].latency_us.to_numpy())
    assert np.median(err) < 0.02 and np.quantile(err, 0.9) < 0.2
    same = pd.DataFrame(
        {"op_family": "elementwise", "dtype": "float16", "m": 2048, "n": 11008, "op_name": ["add", "mlp_act"]}
    )
    add, activation = fitted.predict(same, h100)
    assert add < 0.7 * activation
    ops = layer_ops(catalog.model("qwen3-235b-a22b"), Batch(decode=(100,) * 4), Parallelism(tp=4, ep=4))
    kinds = ops[ops.op_family == "elementwise"].set_index("name")["op_name"]
    assert kinds["activation"] == "mlp_act" and (kinds.drop("activation") == "add").all()


def test_a_family_only_vidur_measured_is_scored_on_its_own_held_out_shapes(sample_warehouse: Path):
    """Vidur's samples are the cross-source test set where another source measured the family; where only Vidur
    did (norms, activations on H100), its fitted model prices every iteration, so it is scored like the rest."""
    with Warehouse(sample_warehouse, read_only=True) as w:
        rows = evaluate_device(w, catalog.device("h100_sxm"), ("shape_block",), "norm", random_forest=False)
    scored = {r["model"] for r in rows if r["framework"] == "vidur" and r["split"] == "shape_block"}
    assert scored == {"roofline", "calibrated"}


def test_decode_attention_past_the_measured_kv_lengths_streams_the_extra_kv(sample_warehouse: Path):
    """A100 TRT-LLM decode attention fitted on KV lengths below 2048: at short KV its time is mostly fixed costs
    (launch, per head group), so the edge's efficiency times a 32x larger roofline priced 64k-token decodes at
    3x their measured time (median). The extra KV is streamed at the sustained rate instead; inside the measured
    range nothing changes."""
    with Warehouse(sample_warehouse, read_only=True) as wh:
        df = artifacts.device_samples(wh, "a100_sxm", "attention_decode")
    trt = df[(df.framework == "trtllm") & (df.dtype == "bfloat16")].reset_index(drop=True)
    a100 = catalog.device("a100_sxm")
    fitted = fit_group(trt[trt.kv_len < 2048], "attention_decode", a100, seed=0)
    held = trt[trt.kv_len > 4096]
    measured = held.latency_us.to_numpy()
    err = ape(fitted.predict(held, a100), measured)
    edge_efficiency = ape(fitted._predict_form(held, roofline(held, a100)), measured)
    roof = ape(roofline(held, a100).roofline_us.to_numpy(), measured)
    assert len(held) > 500
    assert np.median(edge_efficiency) > 1.5 and np.median(err) < 0.25 and np.median(err) < np.median(roof)
    inside = trt[trt.kv_len < 2048]
    assert np.array_equal(fitted.predict(inside, a100), fitted._predict_form(inside, roofline(inside, a100)))


def test_a_large_batch_measured_only_with_short_kv_has_its_edge_there(sample_warehouse: Path):
    """The extrapolation split fits decode attention on the smaller half of the work (batch x KV): its large
    batches were measured with short KV only. Their edge is the longest KV measured at that batch size (or a
    larger one), not the longest KV of any batch: A100 vLLM held-out p90 is then under half the roofline's, and
    with the marginal edge alone it is worse than the roofline."""
    with Warehouse(sample_warehouse, read_only=True) as wh:
        df = artifacts.device_samples(wh, "a100_sxm", "attention_decode")
    vllm = df[(df.framework == "vllm") & (df.dtype == "bfloat16")].reset_index(drop=True)
    a100 = catalog.device("a100_sxm")
    train, test = split_masks(vllm, "attention_decode", "extrapolation", seed=0)
    fitted = fit_group(vllm[train], "attention_decode", a100, seed=0)
    held = vllm[test]
    measured = held.latency_us.to_numpy()
    roof = np.percentile(ape(roofline(held, a100).roofline_us.to_numpy(), measured), 90)
    assert np.percentile(ape(fitted.predict(held, a100), measured), 90) < roof / 2
    fitted.form.kv_hull = []
    assert np.percentile(ape(fitted.predict(held, a100), measured), 90) > roof


def test_the_attention_schedule_counts_the_kernel_s_blocks_and_its_last_wave():
    """One thread block per (sequence, query head, 128 query rows), each reading the KV blocks up to its last row."""
    ops = pd.DataFrame(
        {
            "batch_size": [1, 256, 1, 1],
            "seq_len": [2048, 2048, 128, 8192],
            "kv_len": [2048, 2048, 1152, 8192],
            "num_heads": [8, 8, 8, 8],
            "window_size": [0, 0, 0, 1024],
        }
    )
    tail, per_block = attention_schedule(ops, units=132)
    # 8 heads x 16 tiles reading 1..16 blocks (8.5 on average); the longest, 16 blocks, sets a 132-unit GPU's time
    assert tail[0] == pytest.approx(math.log1p(16 * 132 / (8 * 16 * 8.5)))
    assert per_block[0] == pytest.approx(1 / 8.5)
    assert tail[1] < 0.01  # 256 sequences: many waves, the total work sets the time
    assert per_block[2] == pytest.approx(1 / 9)  # a 128-token chunk after 1024 cached tokens reads 8 + 1 blocks
    assert per_block[3] == pytest.approx(1 / 9)  # a 1024-token window caps every block at 8 + 1 blocks
    assert tail[2] == pytest.approx(math.log1p(9 * 132 / (8 * 9)))


@pytest.fixture(scope="module")
def a100_sglang_prefill(sample_warehouse: Path) -> pd.DataFrame:
    with Warehouse(sample_warehouse, read_only=True) as wh:
        df = artifacts.device_samples(wh, "a100_sxm", "attention_prefill")
    return df[(df.framework == "sglang") & (df.dtype == "bfloat16")].reset_index(drop=True)


def test_prefill_attention_extrapolates_along_the_kernel_s_tile_schedule(a100_sglang_prefill, monkeypatch):
    """Fitted on the smaller half of the work (batch x query x KV length), prefill attention 4x and more past it:
    the polynomial alone carries the small shapes' last-wave losses into large batches and long sequences. With
    the tile schedule in the design, the held-out p90 is under half the roofline's (the issue's target); without,
    it is not (bundled A100 SGLang rows: 18% vs 42%, the roofline's 62%)."""
    a100 = catalog.device("a100_sxm")
    df = a100_sglang_prefill
    train, test = split_masks(df, "attention_prefill", "extrapolation", seed=0)
    held = df[test]
    measured = held.latency_us.to_numpy()
    roof = np.percentile(ape(roofline(held, a100).roofline_us.to_numpy(), measured), 90)
    fitted = fit_group(df[train], "attention_prefill", a100, seed=0)
    assert fitted.form.tile_schedule and len(held) > 1000
    assert np.percentile(ape(fitted.predict(held, a100), measured), 90) < roof / 2

    def without_schedule(*args, **kwargs):
        return dataclasses.replace(make_form(*args, **kwargs), tile_schedule=False)

    monkeypatch.setattr(fit_module, "make_form", without_schedule)
    plain = fit_group(df[train], "attention_prefill", a100, seed=0)
    assert np.percentile(ape(plain.predict(held, a100), measured), 90) > roof / 2


def test_a_prefill_batch_past_the_fitted_work_is_no_less_efficient_than_the_largest_fitted_batch(
    a100_sglang_prefill,
):
    a100 = catalog.device("a100_sxm")
    df = a100_sglang_prefill
    train, _ = split_masks(df, "attention_prefill", "extrapolation", seed=0)
    fitted = fit_group(df[train], "attention_prefill", a100, seed=0)
    edge = df[train].sort_values("seq_len").iloc[[-1]]  # the longest fitted sequence, at its batch
    larger = pd.concat([edge.assign(batch_size=b) for b in (64, 128, 256)], ignore_index=True)
    efficiency = roofline(larger, a100).roofline_us.to_numpy() / fitted.predict(larger, a100)
    at_edge = roofline(edge, a100).roofline_us.to_numpy() / fitted.predict(edge, a100)
    assert (fitted.form.beyond(larger) > 0).all()
    assert (efficiency >= at_edge * (1 - 1e-9)).all()


def test_a_prefill_model_fitted_before_the_tile_schedule_prices_as_it_did(a100_sglang_prefill, monkeypatch):
    """Artifacts written before the schedule entered the design hold no `tile_schedule`: read back, they price
    with the columns their coefficients were fitted on. One written by a newer version, with form fields this
    one does not know, is a clear error naming them."""
    a100 = catalog.device("a100_sxm")

    def without_schedule(*args, **kwargs):
        return dataclasses.replace(make_form(*args, **kwargs), tile_schedule=False)

    monkeypatch.setattr(fit_module, "make_form", without_schedule)
    fitted = fit_group(a100_sglang_prefill, "attention_prefill", a100, seed=0)
    entry = {"form": dataclasses.asdict(fitted.form), "coefficients": fitted.coef.tolist()}
    entry["form"].pop("tile_schedule")
    entry.update(conf_int_95=fitted.conf_int.tolist(), r2=fitted.r2, n=fitted.n)
    entry["surface"] = dataclasses.asdict(fitted.surface)
    old = artifacts.fitted_from_entry(entry)
    np.testing.assert_array_equal(old.predict(a100_sglang_prefill, a100), fitted.predict(a100_sglang_prefill, a100))
    newer = {**entry, "family": "attention_prefill", "form": {**entry["form"], "tile_schedule": True, "later": 1}}
    with pytest.raises(ValueError, match=r"models/a100_sxm.json: the attention_prefill model .*\(later\).*newer"):
        artifacts.fitted_from_entry(newer, "models/a100_sxm.json")


# ---- artifacts, tiers, report ---------------------------------------------------------------------
def test_a_collective_is_not_capped_by_other_gpu_counts_inside_its_measured_range(sample_warehouse: Path):
    """A100 NCCL all-reduce, 8 MiB held out (its neighbours 4 and 16 MiB measured): at 4 and 8 GPUs it costs
    2.5x its roofline, more than 2 GPUs' larger messages do. A bound pooled over GPU counts cut those predictions
    by 13-15%; each GPU count's own measurements must carry it."""
    with Warehouse(sample_warehouse, read_only=True) as wh:
        df = artifacts.device_samples(wh, "a100_sxm", "all_reduce")
    nccl = df[(df.framework == "nccl") & (df.dtype == "float16")].reset_index(drop=True)
    test = (nccl.message_bytes == 8 * 2**20).to_numpy()
    a100 = catalog.device("a100_sxm")
    fitted = fit_group(nccl[~test], "all_reduce", a100, seed=0)
    held = nccl[test & (nccl.num_gpus >= 4)]
    err = ape(fitted.predict(held, a100), held.latency_us.to_numpy())
    assert len(held) >= 2 and err.max() < 0.05, err
    beyond = nccl[nccl.message_bytes == nccl.message_bytes.max()].assign(message_bytes=2**34)
    assert np.isfinite(fitted.predict(beyond, a100)).all()  # beyond the largest message the bound still holds


@pytest.fixture(scope="module")
def calibrated(sample_warehouse: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cal") / "wh"
    shutil.copytree(sample_warehouse, root)
    calibrate_device(root, "h100_sxm", family="gemm", splits=("shape_block", "cross_source"), random_forest=False)
    return root


def test_a_cost_model_names_the_rule_that_priced_shapes_past_the_measured_ones(calibrated: Path):
    """A replay's summary (priced_by) says when a constant, not a measurement, priced part of an op family."""
    model = CostModel("h100_sxm", calibrated, framework="vllm")
    inside = pd.DataFrame({"op_family": "gemm", "dtype": "bfloat16", "m": [64, 512], "n": 4096, "k": 4096})
    model.predict(inside)
    assert "past_measured" not in model.provenance["gemm/bfloat16"]
    huge = pd.DataFrame({"op_family": "gemm", "dtype": "bfloat16", "m": [65536], "n": 65536, "k": 65536})
    pred = model.predict(huge)
    past = model.provenance["gemm/bfloat16"]["past_measured"]
    assert past["share_of_priced_shapes"] == pytest.approx(1 / 3, abs=1e-3)  # 1 of the 3 priced so far
    assert "sustained efficiency 0.8" in past["priced_as"] and "SUSTAINED_EFFICIENCY" in past["priced_as"]
    roof = pred["roofline_us"].iloc[0]
    assert roof / 0.8 < pred["latency_us"].iloc[0] < roof / 0.8 * 1.01  # the edge's fixed costs are a sliver


def test_artifact_has_provenance_and_statistics(calibrated: Path):
    doc = artifacts.load(calibrated, "h100_sxm")
    assert doc["tool_version"] and doc["device"] == "h100_sxm"
    entry = next(m for m in doc["models"] if m["framework"] == "vllm" and m["dtype"] == "bfloat16")
    assert entry["n"] > 1000 and entry["holdout"]["split"] == "shape_block"
    assert all(len(s["sha256"]) == 64 for s in entry["sources"])
    assert len(entry["coefficients"]) == len(entry["conf_int_95"])


def test_tiers(calibrated: Path):
    ops = layer_ops(catalog.model("llama-3.1-8b"), Batch(prefill=((512, 0),), decode=(900,) * 16))
    on_h100 = CostModel("h100_sxm", calibrated).predict(ops)
    gemm = ops.op_family == "gemm"
    assert set(on_h100.tier[gemm]) == {CALIBRATED}
    assert set(on_h100.tier[~gemm]) == {ROOFLINE}  # only GEMMs were calibrated in this warehouse
    on_h200 = CostModel("h200_sxm", calibrated).predict(ops)
    assert set(on_h200.tier[gemm]) == {TRANSFERRED}
    # same compute, more bandwidth: the transferred H200 GEMM time is never slower than H100's
    assert (on_h200.latency_us[gemm] <= on_h100.latency_us[gemm] * 1.0001).all()
    assert (on_h100.latency_us > 0).all() and (on_h200.latency_us > 0).all()


def test_cost_models_share_a_device_s_fitted_models_until_its_artifact_changes(calibrated: Path, tmp_path: Path):
    root = tmp_path / "wh"
    shutil.copytree(calibrated, root)
    ops = layer_ops(catalog.model("llama-3.1-8b"), Batch(prefill=((512, 0),)))
    first, second = CostModel("h100_sxm", root), CostModel("h100_sxm", root, framework="vllm")
    assert first.models is second.models  # read from the artifact once, shared read-only
    assert CALIBRATED in set(first.predict(ops).tier)
    path = artifacts.models_path(root, "h100_sxm")
    path.write_text(json.dumps(json.loads(path.read_text()) | {"models": []}))  # recalibrated in place: nothing fits
    assert set(CostModel("h100_sxm", root).predict(ops).tier) == {ROOFLINE}


def test_price_bounds_bracket_the_prediction_and_leave_the_roofline(calibrated: Path):
    ops = layer_ops(catalog.model("llama-3.1-8b"), Batch(prefill=((512, 0),), decode=(900,) * 16))
    point, lower, upper = (CostModel("h100_sxm", calibrated, bound=b).predict(ops) for b in ("point", "lower", "upper"))
    gemm = ops.op_family == "gemm"
    assert (lower.latency_us[gemm] < point.latency_us[gemm]).all()
    assert (point.latency_us[gemm] < upper.latency_us[gemm]).all()
    assert lower.latency_us[~gemm].equals(point.latency_us[~gemm])  # roofline tier: no interval
    on_h200 = [CostModel("h200_sxm", calibrated, bound=b).predict(ops).latency_us[gemm] for b in ("lower", "upper")]
    assert (on_h200[0] < on_h200[1]).all()  # a transferred efficiency carries its donor's interval
    entry = next(m for m in artifacts.load(calibrated, "h100_sxm")["models"] if m["dtype"] == "bfloat16")
    assert 0.0 <= entry["holdout"]["coverage_90"] <= 1.0 and len(entry["interval_90_log"]) == 2
    with pytest.raises(ValueError, match="unknown price bound 'middle'"):
        CostModel("h100_sxm", calibrated, bound="middle")


def test_report_json_rows(calibrated: Path):
    result = subprocess.run(
        [str(EXE), "calibrate", "report", "--format", "json", "-w", str(calibrated)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    fields = {"device", "family", "dtype", "split", "model", "n", "median_ape", "p90_ape", "p99_ape"}
    assert rows and all(fields <= set(r) for r in rows)
    assert {r["split"] for r in rows} == {"shape_block", "cross_source"}
    assert {r["model"] for r in rows} == {"roofline", "calibrated"}
    assert all((r["faster_than_roofline"] is None) == (r["model"] != "roofline") for r in rows)
    md = subprocess.run([str(EXE), "calibrate", "report", "-w", str(calibrated)], capture_output=True, text=True)
    assert "| gemm | bfloat16 | vllm | shape_block |" in md.stdout
    assert "| n | faster than roofline | roofline | calibrated |" in md.stdout
    assert (calibrated / "reports/h100_sxm/gemm.png").stat().st_size > 10_000


def test_calibrate_unknown_device_is_a_clear_error(calibrated: Path):
    result = subprocess.run(
        [str(EXE), "calibrate", "--device", "h900", "-w", str(calibrated)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown device 'h900'" in result.stderr


def test_random_forest_baseline_runs(sample_warehouse: Path):
    pytest.importorskip("sklearn")
    with Warehouse(sample_warehouse, read_only=True) as w:
        rows = evaluate_device(w, catalog.device("a100_sxm"), ("shape_block",), "attention_decode")
    models = {r["model"] for r in rows}
    assert models == {"roofline", "calibrated", "random_forest"}


# ---- the local-hardware loop ---------------------------------------------------------------------
def test_profile_ingest_calibrate_on_this_machine(tmp_path: Path):
    """The whole loop live: this machine is profiled, ingested and calibrated, and its models price searches.
    Live timings follow the machine's load, so fidelity is checked on a recorded profile (the next test)."""
    trace = tmp_path / "cpu.json"
    prof = subprocess.run([str(EXE), "profile", "cpu", "--out", str(trace)], capture_output=True, text=True)
    assert prof.returncode == 0, prof.stderr
    doc = json.loads(trace.read_text())
    assert doc["traceName"] == "hermes-sim profile cpu"
    names = {e["name"] for e in doc["traceEvents"]}
    assert names == {
        "aten::mm",
        "aten::copy_",
        "hermes::vector_search",
        "faiss::search_flat",
        "faiss::search_ivf",
        "faiss::search_hnsw",
    }
    with Warehouse(tmp_path / "wh") as w:
        ingest(w, [trace], progress=False)
    calibrate_device(tmp_path / "wh", "local_cpu", splits=("shape_block",), random_forest=False)
    models = artifacts.load(tmp_path / "wh", "local_cpu")
    assert {(m["family"], m["framework"]) for m in models["models"]} >= {
        ("gemm", "hermes-profile"),
        ("vector_search", "faiss"),
    }
    assert "measured by hermes-sim profile cpu" in models["device_figures"]["sources"]["compute"]
    search = pd.DataFrame(
        {
            "op_family": ["vector_search"],
            "dtype": ["float32"],
            "kernel_source": ["faiss-hnsw"],
            "m": [4],
            "n": [10000],
            "k": [256],
            "search_width": [32],
            "num_lists": [16],
            "threads": [2],
            "top_k": [10],
        }
    )
    pred = CostModel("local_cpu", tmp_path / "wh").predict(search)
    assert pred.tier.iloc[0] == CALIBRATED and pred.latency_us.iloc[0] > 0
    xeon = CostModel("xeon_8480p", tmp_path / "wh").predict(search)
    assert xeon.tier.iloc[0] == "transferred"  # a catalog CPU borrows this CPU's measured efficiency
    assert CostModel("h100_sxm", tmp_path / "wh").predict(search).tier.iloc[0] == "roofline"  # never a CPU's


def test_cpu_models_fitted_on_a_recorded_profile_beat_the_roofline_on_held_out_shapes(tmp_path: Path):
    """A real `hermes-sim profile cpu` trace of a 2-core Xeon VM, recorded on a quiet machine (tests/data):
    the fitted GEMM and faiss models score better than the plain roofline on held-out shapes."""
    with Warehouse(tmp_path / "wh") as w:
        ingest(w, [RECORDED_CPU_PROFILE], progress=False)
    result = calibrate_device(tmp_path / "wh", "local_cpu", splits=("shape_block",), random_forest=False)
    rows = {(r["family"], r["framework"], r["model"]): r for r in result.rows if r["subset"] == "all"}
    for family, framework in (("gemm", "hermes-profile"), ("vector_search", "faiss")):
        fitted, plain = rows[family, framework, "calibrated"], rows[family, framework, "roofline"]
        assert fitted["median_ape"] < plain["median_ape"], (family, fitted["median_ape"], plain["median_ape"])


def test_refitting_one_family_keeps_the_others(calibrated: Path, sample_warehouse: Path, tmp_path: Path):
    root = tmp_path / "wh"
    shutil.copytree(calibrated, root)
    calibrate_device(root, "h100_sxm", family="attention_decode", splits=("shape_block",), random_forest=False)
    families = {m["family"] for m in artifacts.load(root, "h100_sxm")["models"]}
    assert {"gemm", "attention_decode"} <= families
    from hermes_sim.calibrate.report import load_rows

    assert {"gemm", "attention_decode"} <= {r["family"] for r in load_rows(root, "h100_sxm")}


def test_a_gemm_table_timed_with_a_dynamic_fp8_input_scale_is_fitted_as_the_served_static_scale_op():
    """AIConfigurator's TRT-LLM FP8 GEMMs were timed computing the input scale on the fly; a served checkpoint has a
    static one. H100 rows at m = 1, n = 5120, k = 1024: TRT-LLM FP8 13.3 us, vLLM FP8 6.1 us, TRT-LLM bf16 6.8 us,
    and the device's fastest GEMM 2.45 us (its launch floor)."""
    h100 = catalog.device("h100_sxm")
    rows = pd.DataFrame(
        {
            "op_family": "gemm",
            "framework": ["trtllm", "vllm", "trtllm", "vllm", "trtllm", "trtllm"],
            "dtype": ["fp8", "fp8", "bfloat16", "bfloat16", "fp8", "fp8"],
            "m": [1, 1, 1, 1, 1, 8192],
            "n": [5120, 5120, 5120, 128, 128, 5120],
            "k": [1024, 1024, 1024, 128, 128, 5120],
            "latency_us": [13.3, 6.1, 6.8, 2.45, 6.0, 300.0],
        }
    )
    got, notes = artifacts.served_latency(rows, h100)
    extra = 2 * 2.45 + 2 * np.array([1 * 1024, 8192 * 5120]) / h100.memory_bandwidth * 1e6  # two ops + one read
    assert got[[1, 2, 3]].tolist() == [6.1, 6.8, 2.45]  # other tables as measured
    assert got[[0, 5]] == pytest.approx([13.3, 300.0] - extra)
    assert got[4] == 2.45  # never under the launch floor
    assert notes == [
        {
            "op_family": "gemm",
            "framework": "trtllm",
            "dtype": "fp8",
            "less": "the dynamic FP8 input-scale computation its collector timed (artifacts.DYNAMIC_SCALE_TABLES)",
            "launch_floor_us": 2.45,
            "less_us": [round(2 * 2.45 + 2 * 128 / h100.memory_bandwidth * 1e6, 3), round(extra[1], 3)],
        }
    ]
    assert artifacts.served_latency(rows[rows.framework == "vllm"], h100)[1] == []
    from hermes_sim.calibrate.pipeline import CalibrationResult

    summary = CalibrationResult(Path("m.json"), Path("r"), 1.0, [], 1, 0, [], notes).summary
    assert "fitted gemm/fp8/trtllm as served: less the dynamic FP8 input-scale computation" in summary


def test_a_set_aside_table_is_logged_named_in_the_summary_and_kept_through_a_refit(
    sample_warehouse: Path, tmp_path: Path, monkeypatch, caplog
):
    """The bundled A100 GEMM tables hold no host-bound one; with the ratio at 0.999, SGLang 0.5.10's floor (2.477
    us) counts as above vLLM's (2.454 us) and 0.5.9's (2.418 us) does not: the fit reads 0.5.9 and says so."""
    root = tmp_path / "wh"
    shutil.copytree(sample_warehouse, root)
    monkeypatch.setattr(artifacts, "HOST_BOUND_FLOOR_RATIO", 0.999)
    with caplog.at_level(logging.WARNING, logger="hermes_sim.calibrate.artifacts"):
        result = calibrate_device(root, "a100_sxm", family="gemm", splits=("shape_block",), random_forest=False)
    assert [(t["framework"], t["framework_version"], t["used_instead"]) for t in result.set_aside] == [
        ("sglang", "0.5.10", "0.5.9")
    ]
    assert "gemm/bfloat16/sglang 0.5.10: fastest measurement 2.5 us" in caplog.text
    assert "set aside gemm/bfloat16/sglang 0.5.10" in result.summary
    doc = artifacts.load(root, "a100_sxm")
    sglang = [m for m in doc["models"] if m["framework"] == "sglang" and m["family"] == "gemm"]
    assert [m["framework_version"] for m in sglang] == ["0.5.9"]
    calibrate_device(root, "a100_sxm", family="attention_decode", splits=("shape_block",), random_forest=False)
    assert artifacts.load(root, "a100_sxm")["set_aside"] == doc["set_aside"]  # another family refitted


# ---- the measured residual surface ---------------------------------------------------------------
def test_residual_surface_returns_measured_points_interpolates_between_and_fades_outside():
    from hermes_sim.calibrate.surface import ResidualSurface

    sizes = pd.DataFrame({"m": [1, 1, 16, 16], "kv_len": [1, 1023, 1, 1023]})
    cells = pd.DataFrame({"kernel_source": ["fa3"] * 4})
    resid = np.array([0.1, 0.3, -0.1, 0.5])
    surface = ResidualSurface.build(["m", "kv_len"], cells, sizes, resid)
    assert surface.correction(cells, sizes) == pytest.approx(resid)  # at the measured points, the measurement
    mid = pd.DataFrame({"m": [1], "kv_len": [31]})  # linear in log1p(size) between the measured 1 and 1023
    t = (np.log(32) - np.log(2)) / (np.log(1024) - np.log(2))
    assert surface.correction(cells.iloc[:1], mid) == pytest.approx([0.1 + t * 0.2])
    far = pd.DataFrame({"m": [1], "kv_len": [1023 * 16]})  # 16x beyond the grid: two e-foldings of 4x
    assert surface.correction(cells.iloc[:1], far)[0] == pytest.approx(0.3 * np.exp(-np.log(16) / np.log(4)), rel=1e-3)
    unseen = pd.DataFrame({"kernel_source": ["triton"]})
    assert surface.correction(unseen, sizes.iloc[:1]) == pytest.approx([0.0])  # a cell never measured: no correction


def test_residual_surface_travels_with_the_artifact_and_its_loss_is_an_error(calibrated: Path, tmp_path: Path):
    entry = next(m for m in artifacts.load(calibrated, "h100_sxm")["models"] if m["framework"] == "vllm")
    assert entry["surface"]["dims"] and len(entry["surface"]["values"]) > 100
    root = tmp_path / "wh"
    shutil.copytree(calibrated, root)
    shapes = pd.DataFrame({"op_family": "gemm", "dtype": "bfloat16", "m": [3, 96, 700], "n": 4096, "k": 4096})
    with_table = CostModel("h100_sxm", root, framework="vllm").predict(shapes)["latency_us"].to_numpy()
    samples = artifacts.device_samples(Warehouse(calibrated, read_only=True), "h100_sxm", "gemm")
    group = samples[(samples["framework"] == "vllm") & (samples["dtype"] == "bfloat16")].reset_index(drop=True)
    fresh = fit_group(group, "gemm", catalog.device("h100_sxm"))
    assert with_table == pytest.approx(fresh.predict(shapes, catalog.device("h100_sxm")), rel=1e-6)
    table = artifacts.residuals_path(root, "h100_sxm")
    table.write_bytes(table.read_bytes()[:5000])  # cut short (a full disk, a copy interrupted)
    unreadable = r"residuals\.parquet: not a readable residual table .*recalibrate with `hermes-sim calibrate"
    with pytest.raises(ValueError, match=unreadable):
        CostModel("h100_sxm", root)
    table.unlink()
    with pytest.raises(FileNotFoundError, match=r"residuals\.parquet is missing"):
        CostModel("h100_sxm", root)
    doc = artifacts.models_path(root, "h100_sxm")
    doc.write_text(doc.read_text()[:300])
    with pytest.raises(ValueError, match=r"h100_sxm\.json: not valid JSON at line \d+ column \d+"):
        CostModel("h100_sxm", root)


def test_an_attention_op_priced_without_a_window_gets_its_measured_cells_correction():
    """Replays price attention ops that name no window; the table's dense-attention rows say window 0."""
    from hermes_sim.calibrate.fit import make_form

    form = make_form(
        "attention_decode",
        pd.DataFrame({"batch_size": [1, 2], "kv_len": [1, 2], "num_heads": [32, 8], "window_size": [0, 128]}),
        1,
        catalog.device("h100_sxm"),
    )
    unnamed = form.cells(pd.DataFrame({"batch_size": [4], "kv_len": [9], "num_heads": [32]}))
    named = form.cells(pd.DataFrame({"batch_size": [4], "kv_len": [9], "num_heads": [32], "window_size": [0]}))
    pd.testing.assert_frame_equal(unnamed, named)
