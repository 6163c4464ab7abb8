"""`hermes-sim estimate` (one static batch, priced) and `validate bench` (Argonne's LLM-Inference-Bench)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES
from hermes_sim.replay.errors import ScenarioError
from hermes_sim.replay.estimate import estimate
from hermes_sim.replay.validate_bench import fit_serving_overheads, validate_bench

EXE = Path(sys.executable).with_name("hermes-sim")


@pytest.fixture(scope="module")
def wh(calibrated_warehouse: Path) -> Path:
    return calibrated_warehouse


def engine_cost(wh: Path, batch: int, max_model_len: int, **fields):
    """The engine's iteration cost for a vLLM pool of Llama-3.1-8B on an H100 serving `batch` sequences."""
    from hermes_sim.replay.pools.llm.build import iteration_cost, step_overhead
    from hermes_sim.replay.scenario import LLMPoolSpec

    spec = LLMPoolSpec(
        device="h100_sxm",
        model="llama-3.1-8b",
        framework="vllm",
        max_model_len=max_model_len,
        batching={"max_batched_tokens": 8192, "max_num_seqs": batch},
        **fields,
    )
    return iteration_cost(spec, wh, step_overhead(spec, wh))


def test_estimate_prices_the_batch_as_the_engine_prices_its_iterations(wh: Path):
    est = estimate("h100_sxm", "llama-3.1-8b", 8, 512, 64, wh, framework="vllm")
    cost = engine_cost(wh, 8, 577)
    engine_prefill_ms = cost.iteration_us([(512, 0)] * 8, 0, 0) / 1e3
    assert est["prefill_ms"] == pytest.approx(engine_prefill_ms, rel=0.03)  # grids interpolate; estimate is exact
    engine_step_ms = cost.iteration_us([], 8, 8 * (512 + 32)) / 1e3
    assert est["decode_step_ms"] == pytest.approx(engine_step_ms, rel=0.03)
    assert est["e2e_ms"] == pytest.approx(est["prefill_ms"] + 63 * est["decode_step_ms"], rel=1e-3)
    assert set(est["cost_tiers"]) == {"measured-calibrated"} and "default" in est["step_overhead_source"]
    bigger = estimate("h100_sxm", "llama-3.1-8b", 32, 512, 64, wh, framework="vllm")
    assert bigger["prefill_ms"] > 3 * est["prefill_ms"] and bigger["decode_step_ms"] >= est["decode_step_ms"]
    tp2 = estimate("h100_sxm", "llama-3.1-8b", 8, 512, 64, wh, tp=2, framework="vllm")
    assert tp2["decode_step_ms"] < est["decode_step_ms"]


def test_estimate_streams_the_kv_cache_its_framework_keeps_under_fp8_weights(wh: Path):
    """vLLM keeps 16-bit KV under FP8 weights: the decode step streams those bytes, as the engine prices it."""
    est = {
        fw: estimate("h100_sxm", "llama-3.1-8b", 32, 4096, 8, wh, dtype="fp8", framework=fw)
        for fw in ("vllm", "trtllm")
    }
    assert {fw: e["kv_cache_dtype"] for fw, e in est.items()} == {"vllm": "bfloat16", "trtllm": "fp8"}
    assert est["vllm"]["kv_blocks_per_replica"] < est["trtllm"]["kv_blocks_per_replica"]
    engine_step_ms = engine_cost(wh, 32, 4105, dtype="fp8").iteration_us([], 32, 32 * (4096 + 4)) / 1e3
    assert est["vllm"]["decode_step_ms"] == pytest.approx(engine_step_ms, rel=0.03)


def test_estimate_names_the_op_families_it_priced_past_the_measured_shapes(wh: Path):
    """A prefill of 64 x 8192 tokens runs GEMMs larger than any in the bundled tables: the estimate says which
    families were priced by a rule there (and how), per call, not per process."""
    big = estimate("h100_sxm", "llama-3.1-8b", 64, 8192, 8, wh, framework="vllm")
    gemm = big["past_measured"]["gemm/bfloat16"]
    assert 0 < gemm["ops"] < gemm["of"] and "extra work at the sustained efficiency 0.8" in gemm["priced_as"]
    small = estimate("h100_sxm", "llama-3.1-8b", 8, 512, 8, wh, framework="vllm")
    assert "gemm/bfloat16" not in small["past_measured"]  # the same cached cost model: this call's ops only


def test_estimate_refuses_a_dtype_or_framework_it_does_not_know(wh: Path):
    with pytest.raises(ValueError, match=r"unknown dtype 'bf16'; known: bfloat16, .*fp8"):
        estimate("h100_sxm", "llama-3.1-8b", 1, 128, 8, wh, dtype="bf16")
    with pytest.raises(ValueError, match="unknown serving framework 'vLLM'; known: sglang, trtllm, vllm"):
        estimate("h100_sxm", "llama-3.1-8b", 1, 128, 8, wh, framework="vLLM")


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [  # each once priced as if it were a GPU serving a text generator
        ({"device": "xeon_8480p"}, "--device", "xeon_8480p is a CPU: LLM pools run on GPUs or ASICs"),
        ({"model": "bge-large-en-v1.5"}, "--model", "is an embedding model, not a text generator"),
        ({"tp": 3}, "--tp", "32 attention heads / 8 KV heads do not split over TP 3"),
        ({"ep": 2}, "--ep", "ep 2 needs a MoE model whose experts it divides"),
    ],
)
def test_estimate_refuses_what_a_replay_refuses(wh: Path, args: dict, option: str, message: str):
    call = {"device": "h100_sxm", "model": "llama-3.1-8b"} | args
    with pytest.raises(ScenarioError) as info:
        estimate(call.pop("device"), call.pop("model"), 1, 128, 8, wh, **call)
    assert info.value.field == option and message in info.value.message
    assert estimate("h100_sxm", "llama-3.1-8b", 1, 128, 8, wh, tp=16)["tp"] == 16  # two nodes: a static batch may


def test_estimate_cli_json():
    out = subprocess.run(
        [
            str(EXE),
            "estimate",
            "--device",
            "a100_sxm",
            "--model",
            "llama-2-7b",
            "--batch",
            "4",
            "--input-tokens",
            "256",
            "--output-tokens",
            "32",
            "--format",
            "json",
            "-w",
            "/nonexistent-warehouse",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["cost_tiers"] == {"roofline": doc["cost_tiers"]["roofline"]}  # no models: every op at roofline
    assert doc["prefill_ms"] > 0 and doc["decode_step_ms"] > 0


def test_validate_bench_reports_held_out_errors_per_device_framework_and_tier(wh: Path):
    result = validate_bench(SAMPLES / "e2e/llm_inference_bench", wh, limit=60)
    rows = result["rows"]
    assert rows and {r["metric"] for r in rows} == {"batch_latency", "ttft"}
    tiers = {(r["device"], r["tier"]) for r in rows}
    assert ("a100_sxm4_40gb", "transferred") in tiers  # no 40 GB measurements: borrowed from the 80 GB part
    assert ("h100_sxm", "measured-calibrated") in tiers
    reasons = " ".join(r["reason"] for r in result["not_expressed"])
    assert "not in the device catalog" in reasons and "KV blocks, a replica has" in reasons
    assert {r["held_out"] for r in rows} == {True, False}  # two halves, by a stable hash
    assert all(r["kernels_ms"] <= r["predicted_ms"] + 1e-9 for r in rows)  # the serving loop only adds time
    summary = result["summary"]["batch_latency"]
    assert summary["rows"] == sum(1 for r in rows if r["metric"] == "batch_latency")
    groups = summary["by_device_framework_and_tier"]
    assert sum(g["rows"] for g in groups) == summary["held_out"]["rows"]  # scored on the held-out half only
    assert all(g["rows"] > 0 and g["median_ape"] >= 0 for g in groups)


def _bench_table(parts: dict[str, float], rows: int = 40) -> pd.DataFrame:
    """Rows whose measured time is their kernels' plus a known serving-loop overhead per iteration."""
    rng = np.random.default_rng(0)
    batch = rng.choice([1, 16, 32, 64], rows)
    tp = rng.choice([1, 2, 4], rows)
    steps = rng.choice([128, 256, 512], rows)
    kernels_ms = rng.uniform(500, 5000, rows)
    per_step_us = parts["step"] + parts["sequence"] * batch + parts["broadcast"] * np.log2(tp)
    return pd.DataFrame(
        {
            "framework": "vLLM",
            "device": "h100_sxm",
            "tier": "measured-calibrated",
            "metric": "batch_latency",
            "held_out": False,
            "batch": batch,
            "tp": tp,
            "steps": steps,
            "kernels_ms": kernels_ms,
            "measured_ms": kernels_ms + steps * per_step_us / 1e3,
        }
    )


def test_bench_serving_overhead_fit_recovers_its_parts_and_drops_one_the_data_makes_negative():
    got = fit_serving_overheads(_bench_table({"step": 1500.0, "sequence": 60.0, "broadcast": 800.0}))["vLLM"]
    assert got["step_overhead_us"] == pytest.approx(1500.0, rel=1e-3)
    assert got["sequence_overhead_us"] == pytest.approx(60.0, rel=1e-3)
    assert got["broadcast_overhead_us"] == pytest.approx(800.0, rel=1e-3)
    # a gap that falls with TP is not a broadcast cost: that part is dropped, the others refitted
    got = fit_serving_overheads(_bench_table({"step": 1500.0, "sequence": 60.0, "broadcast": -300.0}))["vLLM"]
    assert got["broadcast_overhead_us"] == 0.0 and got["step_overhead_us"] > 0
    # transferred-tier rows hold the borrowed kernels' error, not CPU time: they fit nothing
    table = _bench_table({"step": 1500.0, "sequence": 60.0, "broadcast": 800.0}).assign(tier="transferred")
    assert fit_serving_overheads(table) == {}


def test_validate_bench_refuses_a_file_or_folder_that_is_not_the_benchmark(tmp_path: Path):
    # a wrong file or folder gave an empty report ("0 rows not expressed"), as if every row had been read
    stray = tmp_path / "profile.json"
    stray.write_text("{}")
    with pytest.raises(ValueError, match=r"profile\.json: not one of Argonne's LLM-Inference-Bench files"):
        validate_bench(stray, tmp_path)
    with pytest.raises(ValueError, match="holds neither of Argonne's LLM-Inference-Bench files"):
        validate_bench(tmp_path, tmp_path)
