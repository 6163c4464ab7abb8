"""The multi-stage engine: pipelines of stages on several pools, links and tiers, on the bundled real logs."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLES
from hermes_sim.replay.errors import ScenarioError
from hermes_sim.replay.run import simulate
from hermes_sim.replay.scenario import Scenario, parse, with_overrides

AZURE = str(SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
MOONCAKE = str(SAMPLES / "requests/mooncake/conversation_trace.jsonl")
RAGPULSE = str(SAMPLES / "requests/ragpulse/data/0_trace.jsonl")
SERVEGEN = str(SAMPLES / "requests/servegen")

LLAMA8 = {"device": "h100_sxm", "model": "llama-3.1-8b", "framework": "vllm", "step_overhead_us": 200.0}


@pytest.fixture(scope="module")
def wh(calibrated_warehouse: Path) -> Path:
    return calibrated_warehouse


def sc(doc: dict) -> Scenario:
    return parse(copy.deepcopy(doc))


def log(path: str, **kw) -> dict:
    return {"kind": "log", "log": path, **kw}


# ---- one engine for the old and the new -----------------------------------------------------------------
def test_a_single_pool_scenario_is_a_one_stage_pipeline_with_identical_results(wh: Path):
    old_style = {"source": log(AZURE, limit=400), "pools": [{**LLAMA8, "name": "p", "replicas": 2}]}
    explicit = {
        "clients": [{"name": "c", "source": log(AZURE, limit=400), "pipeline": "chat"}],
        "pools": [{**LLAMA8, "name": "p", "replicas": 2}],
        "pipelines": {"chat": {"stages": [{"name": "generate", "type": "llm", "pool": "p"}]}},
    }
    a, b = simulate(sc(old_style), wh)["requests"], simulate(sc(explicit), wh)["requests"]
    pd.testing.assert_frame_equal(a, b)


def test_the_bundled_scenario_gives_what_the_single_pool_engine_gave(wh: Path):
    """Golden figures of the pre-multi-stage engine (commit 2b001e7) on this scenario and warehouse: the
    sums of 3,000 completion and first-token times (s). Any drift in the fast LLM engine moves them. When the
    calibration changes, they are re-taken by running 2b001e7's `replay.run.simulate` on the warehouse this
    commit builds (2b001e7 run with this commit's calibrate/, ingest/ and warehouse/, which it only reads from,
    and this commit's pools/llm/costs.py dropped into its replay/costs.py, relative imports adjusted). Last:
    elementwise kernels fitted by kind, the activation priced as one (calibrate.fit.FAMILY_CATEGORICAL); both
    engines 173318 iterations, identical sums."""
    from hermes_sim.replay.scenario import load

    scenario = load(SAMPLES.parent / "replay/scenarios/bundled.yaml")
    scenario.source.log = AZURE
    out = simulate(scenario, wh)
    req = out["requests"]
    assert out["summary"]["iterations"] == 173318
    assert req.completion_s.sum() == pytest.approx(970555.2215239827, rel=1e-9)
    assert req.first_token_s.sum() == pytest.approx(965050.336571201, rel=1e-9)


# ---- retrieval-augmented generation ------------------------------------------------------------------------
def rag(**over) -> dict:
    doc = {
        "clients": [{"name": "rag", "source": log(RAGPULSE, time_scale=0.002), "pipeline": "rag"}],
        "pools": [
            {
                "kind": "service",
                "name": "embedder",
                "device": "xeon_8480p",
                "cores": 16,
                "replicas": 2,
                "model": "bge-large-en-v1.5",
                "max_batch": 16,
                "max_wait_us": 2000,
            },
            {
                "kind": "service",
                "name": "search",
                "device": "xeon_8480p",
                "cores": 16,
                "index": {"type": "hnsw", "vectors": 10_000_000, "dim": 1024},
                "max_batch": 32,
                "max_wait_us": 1000,
            },
            {
                "kind": "service",
                "name": "reranker",
                "device": "h100_sxm",
                "model": "bge-reranker-large",
                "max_batch": 64,
                "max_wait_us": 2000,
            },
            {**LLAMA8, "name": "llm", "replicas": 2},
        ],
        "pipelines": {
            "rag": {
                "stages": [
                    {"name": "embed", "type": "embed", "pool": "embedder"},
                    {"name": "search", "type": "vector_search", "pool": "search", "top_k": 20},
                    {"name": "rerank", "type": "rerank", "pool": "reranker", "keep": 6},
                    {"name": "generate", "type": "llm", "pool": "llm"},
                ]
            }
        },
    }
    for k, v in over.items():
        doc[k] = v
    return doc


def test_rag_pipeline_times_every_stage_in_order_on_its_pool(wh: Path):
    out = simulate(sc(rag()), wh)
    req, s = out["requests"], out["summary"]
    assert (req.status == "completed").all() and len(req) == 600
    order = ["embed", "search", "rerank", "generate"]
    for a, b in itertools.pairwise(order):  # each stage starts after the one before ended
        end_a = req[f"{a}_start_s"] + req[f"{a}_service_ms"] / 1e3
        assert (req[f"{b}_start_s"] + 1e-9 >= end_a).all()
    assert set(req.embed_pool) == {"embedder"} and set(req.generate_pool) == {"llm"}
    # RAGPulse prompts already hold their passages: the retrieved tokens are the log's, not added again
    assert (req.context_tokens == req.input_tokens).all()
    assert (req.retrieved_tokens > 0).mean() > 0.5
    assert set(s["stages"]) == set(order) and s["pools"]["search"]["kind"] == "service"
    assert s["pools"]["search"]["cost_tiers"]  # every service price carries its tier
    assert req.critical_path.iloc[0] == "embed>search>rerank>generate"
    # the embedder batches under max_wait: queueing never exceeds the wait plus a batch ahead of it
    assert req.embed_queue_ms.max() < 2.0 + 2 * req.embed_service_ms.max() + 1e-6


def test_rag_on_a_log_without_part_lengths_adds_keep_times_passage_tokens(wh: Path):
    doc = rag()
    doc["clients"][0]["source"] = log(AZURE, limit=200)
    req = simulate(sc(doc), wh)["requests"]
    assert (req.context_tokens == req.input_tokens + 6 * 256).all()
    assert (req.retrieved_tokens == 6 * 256).all()


def test_a_cpu_pool_is_priced_as_that_cpu_and_costs_more_time_than_a_gpu(wh: Path):
    cpu = simulate(sc(rag()), wh)["summary"]["stages"]["embed"]["service_ms"]["p50"]
    doc = rag()
    doc["pools"][0] = {**doc["pools"][0], "device": "h100_sxm", "cores": None}
    gpu = simulate(sc(doc), wh)["summary"]["stages"]["embed"]["service_ms"]["p50"]
    assert cpu > 3 * gpu


# ---- KV cache retrieval from memory tiers ---------------------------------------------------------------------
def kv_tiers(bandwidth: float = 25e9, **over) -> dict:
    return {
        "clients": [{"name": "chat", "source": log(MOONCAKE, limit=400), "pipeline": "chat"}],
        "pools": [{**LLAMA8, "name": "llm", "replicas": 2, "max_model_len": 131072}],
        "tiers": [
            {"name": "dram", "like": "host_dram", "scope": "replica", "capacity_bytes": 5e10},
            {"name": "remote", "like": "remote_pool_rdma", "bandwidth": bandwidth, "admit": "on_evict"},
        ],
        "pipelines": {
            "chat": {
                "stages": [
                    {"name": "fetch", "type": "kv_retrieval", "tiers": ["dram", "remote"], "pool": "llm"},
                    {"name": "generate", "type": "llm", "pool": "llm"},
                ]
            }
        },
        **over,
    }


def test_kv_retrieval_fetches_reused_prefixes_and_prefills_the_rest(wh: Path):
    out = simulate(sc(kv_tiers()), wh, transfers=True)
    req, s = out["requests"], out["summary"]
    fetched = req.fetch_dram_blocks + req.fetch_remote_blocks
    assert fetched.sum() > 0 and req.fetch_recomputed_blocks.sum() > 0
    # Mooncake's conversation log reuses prefixes: a request that fetched KV prefills fewer tokens
    hits = req[fetched > 0]
    assert (hits.fetch_service_ms > 0).all()
    assert s["tiers"] and any(t["writes"] for t in s["tiers"].values())
    assert all(t["peak_bytes"] <= t["capacity_bytes"] for t in s["tiers"].values())
    none = sc(kv_tiers())
    none.pipelines["chat"].stages.pop(0)
    cold = simulate(none, wh)["summary"]
    assert s["ttft_ms"]["p50"] < cold["ttft_ms"]["p50"]


def test_a_pool_counts_the_logs_prefix_hashes_as_the_log_does(wh: Path):
    """Mooncake hashes 512-token blocks (its ingest note says so): a pool reading them as 16 tokens each once ran,
    pricing every hit at 1/32 of its tokens."""
    doc = kv_tiers()
    doc["pools"][0]["memory"] = {"prefix_block_tokens": 16}
    with pytest.raises(ScenarioError) as info:
        simulate(sc(doc), wh)
    assert info.value.field == "pools.llm.memory.prefix_block_tokens"
    assert "client chat's log hashes blocks of 512 tokens; this pool counts 16 per hash" in info.value.message
    doc["pipelines"]["chat"]["stages"].pop(0)  # no tier lookup and no prefix cache: the hashes are not read
    simulate(sc(doc), wh)
    doc["pools"][0]["memory"]["prefix_caching"] = True
    with pytest.raises(ScenarioError, match="blocks of 512 tokens; this pool counts 16"):
        simulate(sc(doc), wh)
    from hermes_sim.replay.parallel import simulate_partitioned

    one = {"source": log(MOONCAKE, limit=20), "pools": [{**doc["pools"][0], "router": "round_robin"}]}
    with pytest.raises(ScenarioError, match="blocks of 512 tokens; this pool counts 16"):
        simulate_partitioned(sc(one), wh, client=None)  # refused before any task is sent


def test_transfers_alone_on_a_link_take_bytes_over_bandwidth_and_shared_ones_longer(wh: Path):
    out = simulate(sc(kv_tiers()), wh, transfers=True)
    links = out["summary"]["links"]
    alone = shared = 0
    for name, tr in out["transfers"].groupby("link"):
        tr = tr.sort_values("start_s").reset_index(drop=True)
        ideal = tr.bytes / links[name]["bandwidth_bytes_per_s"]
        for i, t in tr.iterrows():
            others = tr.drop(index=i)
            overlap = ((others.start_s < t.end_s) & (others.end_s > t.start_s)).any()
            took = t.end_s - t.start_s
            if overlap:
                shared += 1
                assert took >= ideal[i] * (1 - 1e-9)  # sharing never speeds a transfer up
            else:
                alone += 1
                assert took == pytest.approx(ideal[i], rel=1e-9)
    assert alone and shared


def test_slower_tiers_fetch_slower_and_contention_shows_under_load(wh: Path):
    fast = simulate(sc(kv_tiers(bandwidth=25e9)), wh)["requests"]
    slow = simulate(sc(kv_tiers(bandwidth=1e9)), wh)["requests"]
    assert slow.fetch_service_ms.sum() > fast.fetch_service_ms.sum()


@pytest.mark.parametrize("doc", [lambda: kv_tiers(), lambda: disagg()], ids=["kv_tiers", "disaggregated"])
def test_skip_ahead_gives_bit_identical_requests_to_stepping_in_a_pipeline(wh: Path, doc):
    ahead = simulate(sc(doc()), wh)["requests"]
    stepped = simulate(sc(doc()), wh, skip_ahead=False)
    assert (stepped["timeline"].iterations == 1).all()
    pd.testing.assert_frame_equal(ahead, stepped["requests"], check_exact=True)


def test_tier_keys_separate_models_and_are_shared_by_pools_of_one_model(wh: Path):
    """Equal block hashes are the same KV only within one model: a tier's key is the hash offset by the model's
    slot (0 for the first model, so its keys are the hashes themselves)."""
    from hermes_sim.replay.simulation import Simulation

    doc = kv_tiers()
    doc["pools"] = [
        {**LLAMA8, "name": "llm", "replicas": 1, "max_model_len": 131072},
        {**LLAMA8, "name": "twin", "replicas": 1, "max_model_len": 131072},
        {**LLAMA8, "name": "other", "model": "mistral-7b", "replicas": 1, "max_model_len": 32768},
    ]
    doc["clients"] += [
        {"name": "twin", "source": log(MOONCAKE, limit=5), "pipeline": "twin"},
        {"name": "other", "source": log(MOONCAKE, limit=5), "pipeline": "other"},
    ]
    for name in ("twin", "other"):
        doc["pipelines"][name] = {
            "stages": [
                {"name": "fetch", "type": "kv_retrieval", "tiers": ["dram", "remote"], "pool": name},
                {"name": "generate", "type": "llm", "pool": name},
            ]
        }
    pools = Simulation(sc(doc), wh).pools
    assert pools["llm"].kv_key_base == pools["twin"].kv_key_base == 0
    assert pools["other"].kv_key_base == 1 << 64  # beyond every int64 hash of the first model


# ---- disaggregated prefill and decode -------------------------------------------------------------------------
def disagg(decode_device: str = "a100_sxm") -> dict:
    return {
        "clients": [{"name": "chat", "source": log(AZURE, limit=300), "pipeline": "pd"}],
        "pools": [
            {**LLAMA8, "name": "prefill", "replicas": 1},
            {**LLAMA8, "name": "decode", "device": decode_device, "replicas": 1},
        ],
        "links": [{"name": "net", "like": "h100_sxm.network"}],
        "pipelines": {
            "pd": {
                "stages": [
                    {"name": "prefill", "type": "prefill", "pool": "prefill"},
                    {"name": "transfer", "type": "kv_transfer", "link": "net"},
                    {"name": "decode", "type": "decode", "pool": "decode"},
                ]
            }
        },
    }


def test_disaggregated_prefill_hands_the_kv_over_a_link_to_another_device(wh: Path):
    out = simulate(sc(disagg()), wh, transfers=True)
    req, s = out["requests"], out["summary"]
    assert (req.status == "completed").all()
    from hermes_sim.calibrate.catalog import model

    m = model("llama-3.1-8b")
    per_token = 2 * m.layers * m.kv_heads * m.head_dim * 2
    assert (req.transfer_bytes == req.input_tokens * per_token).all()
    assert s["links"]["net[prefill/0]"]["bytes"] == pytest.approx(req.transfer_bytes.sum())
    assert (req.first_token_s <= req.transfer_start_s + 1e-12).all()  # the first token comes from prefill
    assert (req.output_tokens == req.output_tokens.clip(lower=1)).all()
    assert s["pools"]["decode"]["device"] == "a100_sxm" and s["pools"]["prefill"]["kv_tokens_per_replica"] > 0


def test_disaggregated_decode_on_a_slower_device_has_a_slower_tpot(wh: Path):
    a100 = simulate(sc(disagg("a100_sxm")), wh)["summary"]["tpot_ms"]["p50"]
    h100 = simulate(sc(disagg("h100_sxm")), wh)["summary"]["tpot_ms"]["p50"]
    assert a100 > h100


# ---- routing between models ----------------------------------------------------------------------------------
def test_a_rule_routes_short_prompts_to_the_small_model_and_long_ones_to_the_big_one(wh: Path):
    doc = {
        "clients": [{"name": "c", "source": log(AZURE, limit=300), "pipeline": "routed"}],
        "pools": [
            {**LLAMA8, "name": "small"},
            {
                "device": "a100_sxm",
                "model": "llama-2-70b",
                "name": "big",
                "tp": 4,
                "framework": "vllm",
                "step_overhead_us": 200.0,
                "max_model_len": 4096,
                "dtype": "float16",
            },
        ],
        "pipelines": {
            "routed": {
                "stages": [
                    {
                        "name": "route",
                        "type": "route",
                        "rules": [{"max_input_tokens": 1024, "pool": "small"}],
                        "default": "big",
                    },
                    {"name": "generate", "type": "llm", "pool": "route"},
                ]
            }
        },
    }
    req = simulate(sc(doc), wh)["requests"]
    ok = req[req.status == "completed"]
    assert (ok[ok.input_tokens <= 1024].generate_pool == "small").all()
    assert (ok[ok.input_tokens > 1024].generate_pool == "big").all()
    assert (req.route_pool == np.where(req.input_tokens <= 1024, "small", "big")).all()


def test_probability_routing_is_seeded_and_follows_the_weights(wh: Path):
    doc = {
        "clients": [{"name": "c", "source": log(AZURE, limit=600), "pipeline": "p"}],
        "pools": [{**LLAMA8, "name": "a"}, {**LLAMA8, "name": "b"}],
        "pipelines": {
            "p": {
                "stages": [
                    {"name": "route", "type": "route", "method": "probability", "weights": {"a": 3, "b": 1}},
                    {"name": "generate", "type": "llm", "pool": "route"},
                ]
            }
        },
    }
    one, two = simulate(sc(doc), wh)["requests"], simulate(sc(doc), wh)["requests"]
    assert one.generate_pool.tolist() == two.generate_pool.tolist()
    assert 0.65 < (one.generate_pool == "a").mean() < 0.85


@pytest.mark.parametrize(
    ("route", "field", "message"),
    [  # `method: probability` beside rules once routed by the rules, silently; each method now takes only its own
        ({"method": "probability", "rules": [{"max_input_tokens": 1024, "pool": "a"}], "default": "b"}, "weights", ""),
        (
            {"method": "probability", "default": "a"},
            "weights",
            "a probability route draws from its weights, without rules",
        ),
        (
            {"method": "rule", "weights": {"a": 1}, "rules": [{"max_input_tokens": 9, "pool": "a"}], "default": "b"},
            "weights",
            "",
        ),
        (
            {"method": "classifier", "classifier_pool": "cls", "default": "a"},
            "rules",
            "decides by its rules or its weights",
        ),
        (
            {"method": "classifier", "classifier_pool": "cls", "rules": [{"max_input_tokens": 9, "pool": "a"}]},
            "default",
            "",
        ),
    ],
)
def test_a_route_takes_only_what_its_method_uses(route: dict, field: str, message: str):
    doc = {
        "clients": [{"name": "c", "source": log(AZURE, limit=10), "pipeline": "p"}],
        "pools": [
            {**LLAMA8, "name": "a"},
            {**LLAMA8, "name": "b"},
            {"kind": "service", "name": "cls", "device": "h100_sxm", "model": "bge-large-en-v1.5"},
        ],
        "pipelines": {
            "p": {"stages": [{"name": "r", "type": "route", **route}, {"name": "g", "type": "llm", "pool": "r"}]}
        },
    }
    with pytest.raises(ScenarioError) as info:
        sc(doc)
    assert info.value.field == f"pipelines.p.stages.r.{field}" and message in info.value.message


# ---- reasoning -------------------------------------------------------------------------------------------------
def reasoning(rounds: int, share="log") -> dict:
    return {
        "clients": [
            {
                "name": "r1",
                "source": log(str(SAMPLES / "requests/servegen/reason/deepseek-r1/chunk-10-trace.csv"), limit=150),
                "pipeline": "think",
            }
        ],
        "pools": [{**LLAMA8, "name": "llm", "replicas": 2, "memory": {"prefix_caching": True}}],
        "pipelines": {
            "think": {
                "stages": [
                    {
                        "name": "reason",
                        "type": "reasoning",
                        "pool": "llm",
                        "rounds": rounds,
                        "share": share,
                        "tool_ms": 300,
                        "tool_tokens": 200,
                    },
                    {"name": "answer", "type": "llm", "pool": "llm"},
                ]
            }
        },
    }


def test_reasoning_generates_the_logged_share_then_the_answer(wh: Path):
    req = simulate(sc(reasoning(1)), wh)["requests"]
    assert (req.status == "completed").all()
    assert (req.reasoning_tokens > 0).mean() > 0.5
    assert (req.output_tokens == np.maximum(req.output_tokens, req.reasoning_tokens + 1)).all()
    assert (req.reason_start_s <= req.answer_start_s).all()


def test_more_rounds_with_tool_calls_take_longer_end_to_end(wh: Path):
    one = simulate(sc(reasoning(1)), wh)["summary"]["e2e_ms"]["p50"]
    three = simulate(sc(reasoning(3)), wh)["summary"]["e2e_ms"]["p50"]
    assert three > one + 500  # two tool calls of 300 ms, at least


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_reasoning_share_outside_0_to_1_is_refused_before_the_run(share: float):
    # a negative share once reached the engine as a negative token count and failed there with an IndexError
    with pytest.raises(
        ScenarioError, match=rf"pipelines\.think\.stages\.reason\.share: .*from 0 to 1, or `log`; got {share}"
    ):
        sc(reasoning(1, share=share))
    assert sc(reasoning(1, share=0.0)).pipelines["think"].stages[0].share == 0.0


def test_a_logged_reasoning_share_missing_from_the_log_is_refused_before_the_run(wh: Path):
    # it once failed at the first request, mid-run; the log's rows are read before anything runs
    doc = reasoning(1)
    doc["clients"][0]["source"] = log(AZURE, limit=40)
    with pytest.raises(ScenarioError) as info:
        simulate(sc(doc), wh)
    assert info.value.field == "pipelines.think.stages.reason.share"
    assert "share: log, but 40 of client r1's 40 requests have no reasoning share in their log" in info.value.message
    doc["pipelines"]["think"]["stages"][0]["share"] = 0.5
    assert (simulate(sc(doc), wh)["requests"].status == "completed").all()


# ---- several clients and models at once -----------------------------------------------------------------------
def test_several_clients_share_the_pools_and_are_reported_each(wh: Path):
    doc = rag()
    doc["clients"].append({"name": "chat", "source": log(AZURE, limit=300), "pipeline": "chat"})
    doc["pipelines"]["chat"] = {"stages": [{"name": "generate", "type": "llm", "pool": "llm"}]}
    out = simulate(sc(doc), wh)
    s, req = out["summary"], out["requests"]
    assert set(s["clients"]) == {"rag", "chat"} and s["clients"]["chat"]["requests"] == 300
    assert set(req[req.client == "chat"].pipeline) == {"chat"}
    assert req.request_id.tolist() == list(range(900))  # client blocks of ids, in client order


# ---- parallelism, outputs ----------------------------------------------------------------------------------------
def test_pipeline_parallel_tpot_never_falls_with_pp(wh: Path):
    """One sequence at a time, so batching plays no part: each token passes through every stage in turn."""
    tpot, engines = [], []
    for pp in (1, 2, 4):
        doc = {
            "source": {
                "kind": "closed_loop",
                "concurrency": 1,
                "requests": 3,
                "input_tokens": 512,
                "output_tokens": 64,
            },
            "pools": [
                {
                    "device": "a100_sxm",
                    "model": "llama-2-70b",
                    "tp": 2,
                    "pp": pp,
                    "dtype": "float16",
                    "framework": "vllm",
                    "step_overhead_us": 0.0,
                    "max_model_len": 4096,
                }
            ],
        }
        out = simulate(sc(doc), wh)
        tpot.append(out["summary"]["tpot_ms"]["p50"])
        engines.append(len(out["summary"]["utilization"]))
    assert tpot[0] <= tpot[1] <= tpot[2]  # the stage-to-stage sends add, nothing is saved
    assert tpot[2] < tpot[0] * 1.3
    assert engines == [1, 2, 4]  # pp batches in flight per replica (its throughput)


def test_summary_names_energy_cost_and_every_stand_in(wh: Path):
    s = simulate(sc({"source": log(AZURE, limit=100), "pools": [{"device": "h100_sxm", "model": "llama-3.1-8b"}]}), wh)[
        "summary"
    ]
    assert s["energy_j"] > 0 and s["cost_usd"] > 0 and s["tokens_per_dollar"] > 0
    assert "Mercatus" in s["pools"]["main"]["price_source"]
    assert "pools.main.step_overhead_us" in s["assumptions"]  # no framework: the default overhead is named
    assert "pools.main.memory.activation_reserve_bytes" in s["assumptions"]  # the KV capacity's estimate too
    pool = {"device": "h100_sxm", "model": "llama-3.1-8b", "memory": {"activation_reserve_bytes": 3 * 2**30}}
    measured = simulate(sc({"source": log(AZURE, limit=20), "pools": [pool]}), wh)["summary"]
    assert "pools.main.memory.activation_reserve_bytes" not in measured["assumptions"]
    assert s["rejected_by_reason"] == {}
    assert "pools.main.kv_cache_dtype" not in s["assumptions"] and s["pools"]["main"]["kv_cache_dtype"] == "bfloat16"
    fp8 = {"device": "h100_sxm", "model": "llama-3.1-8b", "dtype": "fp8", "framework": "vllm"}
    kept = simulate(sc({"source": log(AZURE, limit=20), "pools": [fp8]}), wh)["summary"]
    assert kept["assumptions"]["pools.main.kv_cache_dtype"]["value"] == kept["pools"]["main"]["kv_cache_dtype"]
    assert kept["pools"]["main"]["kv_cache_dtype"] == "bfloat16" and "--kv-cache-dtype auto" in str(kept["assumptions"])
    told = simulate(sc({"source": log(AZURE, limit=20), "pools": [{**fp8, "kv_cache_dtype": "fp8"}]}), wh)["summary"]
    assert "pools.main.kv_cache_dtype" not in told["assumptions"] and told["pools"]["main"]["kv_cache_dtype"] == "fp8"


def test_outputs_are_written_with_stage_tracks(wh: Path, tmp_path: Path):
    import json

    from hermes_sim.replay.outputs import write

    out = simulate(sc(disagg()), wh, transfers=True)
    write(out, tmp_path)
    trace = json.loads((tmp_path / "schedule.perfetto.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"] if e["ph"] == "b"}
    assert {"prefill", "transfer", "decode"} <= names
    assert {e["ph"] for e in trace["traceEvents"]} >= {"X", "s", "t", "f", "b", "e"}
    assert json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert (tmp_path / "stages.png").stat().st_size > 5000 and (tmp_path / "transfers.parquet").exists()


# ---- bad input: clear errors before anything runs ---------------------------------------------------------------
BAD = [
    ({"pipelines.rag.stages.0.pool": "nope"}, "pipelines.rag.stages.embed.pool", "'nope' is not a service pool"),
    ({"pools.0.device": "tpu_v9"}, "pools.embedder.device", "unknown device 'tpu_v9'; known: a100_pcie, a100_sxm"),
    ({"pools.3.model": "gpt-9"}, "pools.llm.model", "unknown model 'gpt-9'"),
    (
        {"pools.1.device": "tpu_v5e", "pools.1.cores": None},
        "pipelines.rag.stages.search.pool",
        "vector search does not run on tpu_v5e",
    ),
    ({"pools.3.device": "xeon_8480p"}, "pools.llm.device", "xeon_8480p is a CPU"),
    ({"pools.3.model": "bge-large-en-v1.5"}, "pools.llm.model", "is an embedding model, not a text generator"),
    ({"pools.3.tp": 16}, "pools.llm.tp", "exceeds a h100_sxm node (8)"),
    ({"pools.3.tp": 3}, "pools.llm.tp", "32 attention heads / 8 KV heads do not split over TP 3"),
    ({"pools.3.kv_cache_dtype": "fp9"}, "pools.llm.kv_cache_dtype", "unknown dtype 'fp9'; known: bfloat16"),
    ({"pools.0.dtype": "bf16"}, "pools.embedder.dtype", "unknown dtype 'bf16'"),
    ({"pools.3.framework": "vllmm"}, "pools.llm.framework", "unknown serving framework 'vllmm'; known: sglang"),
    ({"pools.3.ep": 2}, "pools.llm.ep", "ep 2 needs a MoE model whose experts it divides"),
    ({"pipelines.rag.stages.1.after": ["rerank"]}, "pipelines.rag.stages", "cycle: "),
    ({"pipelines.rag.stages.1.after": ["ghost"]}, "pipelines.rag.stages.search.after", "unknown stage 'ghost'"),
    ({"pipelines.rag.stages.2.keep": 21}, "pipelines.rag.stages.rerank.keep", "keeps 21 passages of the 20 it scores"),
    ({"pipelines.rag.stages.2.passages": 4}, "pipelines.rag.stages.rerank.keep", "keeps 6 passages of the 4 it scores"),
    (  # a rerank with no search before it and no `passages` was priced at 20 pairs, a number nobody gave
        {"pipelines.rag.stages.1": {"name": "search", "type": "embed", "pool": "embedder"}},
        "pipelines.rag.stages.rerank.passages",
        "no vector_search stage in this pipeline gives the candidates",
    ),
]


@pytest.mark.parametrize(("sets", "field", "message"), BAD)
def test_bad_scenarios_name_the_field_and_the_known_names(sets: dict, field: str, message: str):
    doc = rag()
    for key, value in sets.items():
        target = doc
        *path, last = key.split(".")
        for p in path:
            target = target[int(p)] if isinstance(target, list) else target[p]
        target[int(last) if isinstance(target, list) else last] = value
    with pytest.raises(ScenarioError) as info:
        sc(doc)
    assert info.value.field == field and message in info.value.message


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ({"model": "qwen3-32b"}, "their model must match: qwen3-32b here, llama-3.1-8b there"),
        ({"kv_cache_dtype": "fp8"}, "their KV cache dtype must match: fp8 here, bfloat16 there"),
    ],
)
def test_a_decode_pool_reads_the_kv_cache_its_prefill_pool_wrote(pool: dict, message: str):
    doc = disagg()
    doc["pools"][1].update(pool)
    with pytest.raises(ScenarioError) as info:
        sc(doc)
    assert info.value.field == "pipelines.pd.stages.decode.pool" and message in info.value.message
    doc["pools"][1].update(model="llama-3.1-8b", kv_cache_dtype=None, tp=2)  # another TP is fine: the KV is re-laid
    sc(doc)


def test_an_ivf_index_scans_no_more_lists_than_it_has():
    doc = rag()
    doc["pools"][1]["index"] = {"type": "ivf", "vectors": 10_000_000, "dim": 1024, "nlist": 1024, "nprobe": 2048}
    with pytest.raises(ScenarioError, match=r"pools\.search\.index.*nprobe 2048 exceeds nlist 1024"):
        sc(doc)
    doc["pools"][1]["index"]["nprobe"] = 1024
    assert sc(doc).pool("search").index.nprobe == 1024


@pytest.mark.parametrize(
    ("sets", "field", "message"),
    [  # each was accepted and ignored: the replay ran as if it were not there
        (["pools.search.index.nprobe=8"], "pools.search.index.nprobe", "an HNSW index does not read it (set to 8)"),
        (
            ["pools.search.index={type: ivf, vectors: 1000, ef_search: 128}"],
            "pools.search.index.ef_search",
            "an IVF index does not read it",
        ),
        (["source.rate_per_s=5"], "clients.rag.source.rate_per_s", "a log source does not read it (set to 5.0)"),
        (["source.concurrency=4"], "clients.rag.source.concurrency", "a log source does not read it"),
        (
            ["source={kind: synthetic, cv: 2.5}"],
            "clients.rag.source.cv",
            "a synthetic source with poisson arrivals and fixed lengths does not read it",
        ),
        (["source={kind: synthetic, length_cv: 0.5}"], "clients.rag.source.length_cv", "fixed lengths does not read"),
        (["source={kind: synthetic, time_scale: 2}"], "clients.rag.source.time_scale", "does not read it"),
        (["source={kind: closed_loop, lengths: lognormal}"], "clients.rag.source.lengths", "a closed_loop source"),
        (["pools.llm.memory.swap_space_bytes=1024"], "pools.llm.memory.swap_space_bytes", "recompute preemption"),
        (["pools.search.max_tokens=64"], "pools.search.max_tokens", "a vector-index pool does not read it"),
        (  # its pool was counted among the used ones, priced and billed, and never sent a job
            ["pipelines.rag.stages.generate={name: generate, type: route, default: llm, classifier_pool: reranker}"],
            "pipelines.rag.stages.generate.classifier_pool",
            "a rule route does not read it (set to 'reranker')",
        ),
        (  # refused when the pool was built, after every check had passed
            ["pools.embedder.index={vectors: 1000}"],
            "pools.embedder",
            "a service pool serves one encoder `model` or one vector `index`",
        ),
    ],
)
def test_a_field_its_kind_never_reads_is_refused_not_ignored(sets: list, field: str, message: str):
    with pytest.raises(ScenarioError) as info:
        with_overrides(sc(rag()), sets, "rag.yaml")
    assert info.value.field == field and message in info.value.message, info.value
    assert info.value.path == "rag.yaml"


def test_fields_a_kind_reads_are_accepted_and_a_whole_dump_validates():
    ok = [
        "source={kind: synthetic, arrival: gamma, cv: 2.5, lengths: lognormal, length_cv: 0.5}",
        "pools.llm.memory={preemption: swap, swap_space_bytes: 1024}",
        "pools.search.index={type: ivf, vectors: 1000, nlist: 64, nprobe: 8}",
    ]
    scenario = with_overrides(sc(rag()), ok)
    assert scenario.clients[0].source.cv == 2.5 and scenario.pool("search").index.nprobe == 8
    assert Scenario.model_validate(scenario.model_dump()) == scenario  # defaults written out are still defaults


def test_unknown_links_tiers_and_set_paths(tmp_path: Path):
    doc = disagg()
    doc["pipelines"]["pd"]["stages"][1]["link"] = "fiber"
    with pytest.raises(ScenarioError, match="unknown link 'fiber'; known: net"):
        sc(doc)
    doc = kv_tiers()
    doc["pipelines"]["chat"]["stages"][0]["tiers"] = ["dram", "tape"]
    with pytest.raises(ScenarioError, match="unknown tier 'tape'; known: dram, remote"):
        sc(doc)
    doc["pipelines"]["chat"]["stages"][0]["tiers"] = ["remote", "dram", "remote"]
    with pytest.raises(
        ScenarioError, match=r"each tier is looked up once, in order; got \['remote', 'dram', 'remote'\]"
    ):
        sc(doc)
    with pytest.raises(ScenarioError, match=r"'replicaz' is not a field here; known: .*replicas"):
        with_overrides(sc(disagg()), ["pools.decode.replicaz=2"])
    with pytest.raises(ScenarioError, match="no item 'ghost' in this list; known: decode, prefill"):
        with_overrides(sc(disagg()), ["pools.ghost.replicas=2"])
    assert with_overrides(sc(disagg()), ["pools.decode.replicas=3"]).pool("decode").replicas == 3


def test_a_model_that_does_not_fit_is_refused_before_anything_runs(wh: Path):
    doc = {"source": log(AZURE, limit=10), "pools": [{"device": "l40s", "model": "llama-2-70b", "name": "big"}]}
    with pytest.raises(ScenarioError, match=r"pools.big: llama-2-70b at TP=1 PP=1 does not fit on l40s"):
        simulate(sc(doc), wh)
