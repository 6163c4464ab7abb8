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


def test_estimate_prefills_chunk_by_chunk_as_the_engine_prices_each_chunk(wh: Path):
    """llama.cpp prefills a prompt n_batch tokens an iteration (token by token at 1): each chunk is an iteration
    attending to the chunks before it, with its own step overhead; a chunk as long as the prompt is the plain
    estimate, to the bit."""
    whole = estimate("h100_sxm", "llama-3.1-8b", 1, 512, 8, wh, framework="vllm")
    assert estimate("h100_sxm", "llama-3.1-8b", 1, 512, 8, wh, framework="vllm", prefill_chunk_tokens=512) == whole
    assert (whole["prefill_chunk_tokens"], whole["prefill_iterations"]) == (512, 1)
    chunked = estimate("h100_sxm", "llama-3.1-8b", 1, 512, 8, wh, framework="vllm", prefill_chunk_tokens=96)
    assert (chunked["prefill_chunk_tokens"], chunked["prefill_iterations"]) == (96, 6)  # 5 x 96, then 32
    cost = engine_cost(wh, 1, 521)
    chunks = [(96, 96 * j) for j in range(5)] + [(32, 480)]
    engine_ms = sum(cost.iteration_us([c], 0, 0) for c in chunks) / 1e3
    assert chunked["prefill_ms"] == pytest.approx(engine_ms, rel=0.03)
    assert chunked["prefill_ms"] > whole["prefill_ms"]  # six passes over the weights, not one
    assert chunked["decode_step_ms"] == whole["decode_step_ms"]
    assert chunked["e2e_ms"] == pytest.approx(chunked["prefill_ms"] + 7 * chunked["decode_step_ms"], rel=1e-3)
    # token by token over many chunks: the positions between the priced ones are integrated, not dropped
    tokens = estimate("h100_sxm", "llama-3.1-8b", 1, 200, 8, wh, framework="vllm", prefill_chunk_tokens=1)
    assert tokens["prefill_iterations"] == 200
    first, last = (cost.iteration_us([(1, p)], 0, 0) / 1e3 for p in (0, 199))
    assert 200 * first <= tokens["prefill_ms"] * (1 + 1e-9) and tokens["prefill_ms"] <= 200 * last * (1 + 1e-9)


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


def test_validate_bench_reads_the_sequences_a_row_served_from_its_throughput(wh: Path, tmp_path: Path):
    """Every llama.cpp row of the benchmark served one sequence whatever its Batch Size (throughput x latency =
    its prompt and output tokens): llama-bench's batch size is the prompt batch. Such a row is one sequence whose
    prompt is prefilled Batch Size tokens an iteration, on GPUs that split the layers; a vLLM row of the same
    Batch Size is that many sequences, tensor-parallel. Priced as B sequences, the llama.cpp row was B times the
    work it measured."""
    header = "Hardware,Num of Hardware,Framework,Model,Input Output Length,Batch Size,Latency,Throughput\n"
    rows = [  # (framework, GPUs, batch, latency s, sequences its throughput says it served)
        ("llama.cpp", 1, 1, 2.17, 1),
        ("llama.cpp", 2, 16, 1.23, 1),
        ("vLLM", 2, 16, 2.60, 16),
        ("llama.cpp", 1, 16, 1.22, 1),
    ]
    text = header + "".join(
        f"Nvidia H100 GPU,{g},{fw},meta-llama/Llama-2-7b-hf,128,{b},{lat},{served * 256 / lat}\n"
        for fw, g, b, lat, served in rows
    )
    (tmp_path / "All_results.csv").write_text(text)
    from hermes_sim.replay.validate_bench import prompt_batch_frameworks

    frame = pd.read_csv(tmp_path / "All_results.csv").assign(input=128)
    assert prompt_batch_frameworks(frame) == {"llama.cpp"}
    result = validate_bench(tmp_path, wh)
    assert result["summary"]["batch_size_read_as_prompt_batch"] == {"All_results.csv": ["llama.cpp"]}
    got = {(r["framework"], r["line"]): r for r in result["rows"]}
    one, layered, tensor = got["llama.cpp", 2], got["llama.cpp", 3], got["vLLM", 4]
    assert (one["batch"], one["prefill_chunk_tokens"], one["steps"]) == (1, 1, 128 + 127)  # token by token
    assert (layered["batch"], layered["prefill_chunk_tokens"], layered["steps"]) == (1, 16, 8 + 127)
    assert (layered["tp"], layered["pp"]) == (1, 2)
    assert (tensor["batch"], tensor["prefill_chunk_tokens"], tensor["tp"], tensor["pp"]) == (16, 128, 2, 1)
    # one sequence a token at a time, whatever the batch size; its layers on two GPUs in turn take as long
    assert one["kernels_ms"] > layered["kernels_ms"] > 0.5 * one["kernels_ms"]
    assert layered["kernels_ms"] == pytest.approx(got["llama.cpp", 5]["kernels_ms"], rel=0.02)


def test_validate_bench_refuses_a_file_or_folder_that_is_not_the_benchmark(tmp_path: Path):
    # a wrong file or folder gave an empty report ("0 rows not expressed"), as if every row had been read
    stray = tmp_path / "profile.json"
    stray.write_text("{}")
    with pytest.raises(ValueError, match=r"profile\.json: not one of Argonne's LLM-Inference-Bench files"):
        validate_bench(stray, tmp_path)
    with pytest.raises(ValueError, match="holds neither of Argonne's LLM-Inference-Bench files"):
        validate_bench(tmp_path, tmp_path)
