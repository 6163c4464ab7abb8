"""Round trips per format on real files: what comes out of the warehouse matches the source."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLES, shared_path
from hermes_sim.ingest.formats import detect
from hermes_sim.ingest.runner import ingest
from hermes_sim.warehouse.store import Warehouse


def one(w: Warehouse, sql: str, params: list | None = None):
    return w.query(sql, params)[1][0][0]


# ---- format detection -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rel", "fmt"),
    [
        ("hardware/aiconfigurator/systems/data/a100_sxm/gemm/vllm/0.14.0/gemm_perf.parquet", "aiconfigurator"),
        ("hardware/aiconfigurator/systems/data/a100_sxm/gemm/vllm/0.22.0/reuse.yaml", "aiconfigurator-reuse"),
        ("hardware/vidur/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv", "vidur-mlp"),
        ("hardware/vidur/profiling/network/h100_dgx/all_reduce.csv", "vidur-network"),
        ("hardware/kineto/triton_example__triton_example.json.gz", "kineto"),
        ("requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "azure"),
        ("requests/mooncake/conversation_trace.jsonl", "mooncake"),
        ("requests/ragpulse/data/0_trace.jsonl", "ragpulse"),
        ("requests/servegen/reason/deepseek-r1/chunk-10-trace.csv", "servegen"),
        ("requests/servegen/reason/deepseek-r1/chunk-10-dataset.json", None),
        ("hardware/aiconfigurator/LICENSE", None),
    ],
)
def test_detects_format_from_content(rel: str, fmt: str | None):
    assert detect(SAMPLES / rel) == fmt


# ---- AIConfigurator ------------------------------------------------------------------------------
def test_aiconfigurator_gemm_round_trip(wh: Warehouse):
    path = SAMPLES / "hardware/aiconfigurator/systems/data/a100_sxm/gemm/vllm/0.14.0/gemm_perf.parquet"
    ingest(wh, [path], progress=False)
    src = pq.read_table(path).to_pandas()
    got = wh.arrow("SELECT m, n, k, dtype, latency_us, device, framework, framework_version FROM kernel_samples")
    got = got.to_pandas()
    assert len(got) == len(src)
    assert set(got.device) == {"a100_sxm"} and set(got.framework) == {"vllm"}
    assert set(got.framework_version) == {"0.14.0"}
    # milliseconds become microseconds, shapes unchanged
    merged = got.sort_values(["m", "n", "k", "latency_us"]).reset_index(drop=True)
    expect = src.assign(latency_us=src.latency * 1000).sort_values(["m", "n", "k", "latency_us"])
    assert (merged[["m", "n", "k"]].to_numpy() == expect[["m", "n", "k"]].to_numpy()).all()
    assert abs(merged.latency_us.to_numpy() - expect.latency_us.to_numpy()).max() < 1e-9


def test_aiconfigurator_attention_and_comm_families(sample_warehouse: Path):
    with Warehouse(sample_warehouse, read_only=True) as w:
        decode = w.query(
            "SELECT min(kv_len), max(kv_len), min(seq_len) FROM kernel_samples "
            "WHERE op_family = 'attention_decode' AND framework = 'vllm' AND device = 'h100_sxm'"
        )[1][0]
        src = pq.read_table(
            SAMPLES / "hardware/aiconfigurator/systems/data/h100_sxm/attention/vllm/0.14.0/"
            "generation_attention_perf.parquet"
        ).to_pandas()
        assert decode[0] == src.step.min() and decode[1] == src.step.max()
        fams = {r[0] for r in w.query("SELECT DISTINCT op_family FROM kernel_samples WHERE framework = 'nccl'")[1]}
        assert fams == {"all_gather", "all_reduce", "alltoall", "reduce_scatter"}
        assert one(w, "SELECT count(*) FROM kernel_samples WHERE message_bytes IS NULL AND framework = 'nccl'") == 0


def test_borrowed_tables_are_recorded_and_not_counted(sample_warehouse: Path):
    with Warehouse(sample_warehouse, read_only=True) as w:
        rows = w.query("SELECT path, rows_accepted, note FROM sources WHERE format = 'aiconfigurator-reuse'")[1]
        assert rows, "reuse.yaml folders must be recorded"
        for _path, accepted, note in rows:
            assert accepted == 0
            assert json.loads(note)["borrows"][0]["from_version"]
        # vLLM 0.22.0 borrows 0.14.0's GEMM table: no kernel sample claims version 0.22.0
        assert one(w, "SELECT count(*) FROM kernel_samples WHERE framework_version = '0.22.0'") == 0


def test_aiconfigurator_comm_message_sizes_are_elements_and_become_bytes(wh: Warehouse):
    """AIConfigurator's collectors log nccl-tests' byte size divided by the dtype's width (and build custom
    all-reduce tensors of `message_size` elements): a half all-reduce of n elements moves 2n bytes, an int8 one
    n. The measurements agree: at large sizes an int8 all-reduce takes about half the time of a half one of
    the same `message_size`."""
    comm = SAMPLES / "hardware/aiconfigurator/systems/data/h100_sxm/comm"
    nccl, custom = comm / "nccl/2.27.3/nccl_perf.parquet", comm / "vllm/0.14.0/custom_allreduce_perf.parquet"
    ingest(wh, [nccl, custom], progress=False)
    got = wh.arrow(
        "SELECT op_family, dtype, num_gpus, message_bytes, latency_us, framework FROM kernel_samples"
    ).to_pandas()
    src = pq.read_table(nccl).to_pandas()
    width = src.nccl_dtype.map({"half": 2, "int8": 1})
    expect = sorted(zip(src.op_name, src.num_gpus, src.message_size * width, strict=True))
    mine = got[got.framework == "nccl"]
    assert sorted(zip(mine.op_family, mine.num_gpus, mine.message_bytes, strict=True)) == expect
    src = pq.read_table(custom).to_pandas()
    assert set(src.allreduce_dtype) == {"bfloat16"}
    assert sorted(got[got.framework == "vllm"].message_bytes) == sorted(src.message_size * 2)


def test_a_file_read_by_an_older_parser_revision_is_an_error_not_a_second_copy(tmp_path: Path, monkeypatch):
    from dataclasses import replace

    from hermes_sim.ingest import formats
    from hermes_sim.warehouse.batch import IngestError

    nccl = SAMPLES / "hardware/aiconfigurator/systems/data/h100_sxm/comm/nccl/2.27.3/nccl_perf.parquet"
    current = formats.FORMATS["aiconfigurator"]
    monkeypatch.setitem(formats.FORMATS, "aiconfigurator", replace(current, revision=1))
    with Warehouse(tmp_path / "wh") as w:
        ingest(w, [nccl], progress=False)  # a warehouse built before the parser changed
    monkeypatch.setitem(formats.FORMATS, "aiconfigurator", current)
    with Warehouse(tmp_path / "wh") as w:
        before = w.query("SELECT count(*) FROM kernel_samples")[1]
        with pytest.raises(IngestError, match=r"revision 1 .* --fresh") as e:
            ingest(w, [nccl], progress=False)
        assert "message_size counts elements" in str(e.value) and str(nccl) in str(e.value)
        assert w.query("SELECT count(*) FROM kernel_samples")[1] == before  # nothing added
    with Warehouse(tmp_path / "fresh") as w:  # a fresh warehouse takes it
        assert ingest(w, [nccl], progress=False).rows_accepted == len(pq.read_table(nccl))


@pytest.mark.shared
def test_h100_tree_counts_match_the_parquet_files(tmp_path: Path):
    tree = shared_path("hardware/aiconfigurator/systems/data/h100_sxm")
    expected = 0
    for f in tree.rglob("*_perf.parquet"):
        rows = pq.ParquetFile(f).metadata.num_rows
        expected += 2 * rows if "deepep" in f.name else rows
    with Warehouse(tmp_path / "wh") as w:
        report = ingest(w, [tree], progress=False)
        assert report.rows_accepted + report.rows_quarantined == expected
        # TRT-LLM 1.2.0rc5 measured GEMMs with m = 0: real rows that fail the shape check
        reasons = dict(w.query("SELECT reason, count(*) FROM quarantine GROUP BY reason")[1])
        assert reasons == {"m must be >= 1": report.rows_quarantined}


# ---- Vidur ---------------------------------------------------------------------------------------
def test_vidur_mlp_one_row_per_op_with_gemm_shapes(wh: Warehouse):
    path = SAMPLES / "hardware/vidur/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    ingest(wh, [path], progress=False)
    src = pd.read_csv(path)
    ops = [c.split(".")[1] for c in src.columns if c.endswith(".median")]
    assert one(wh, "SELECT count(*) FROM kernel_samples") == len(src) * len(ops)
    # Llama-2-7B: hidden 4096, 32 heads (= 32 KV heads), FFN 11008, gated MLP; TP splits the output dims
    row = src.iloc[0]
    tp, tokens = int(row.num_tensor_parallel_workers), int(row.num_tokens)
    got = dict(
        (r[0], r[1:])
        for r in wh.query(
            "SELECT op_name, m, n, k, latency_us FROM kernel_samples"
            " WHERE m = ? AND tp_size = ? AND op_family = 'gemm'",
            [tokens, tp],
        )[1]
    )
    assert got["attn_pre_proj"][:3] == (tokens, 3 * 4096 // tp, 4096)
    assert got["mlp_up_proj"][:3] == (tokens, 2 * 11008 // tp, 4096)
    assert got["mlp_down_proj"][:3] == (tokens, 4096, 11008 // tp)
    widths = dict(
        wh.query(
            "SELECT op_name, n FROM kernel_samples WHERE m = ? AND tp_size = ? AND op_family = 'elementwise'",
            [tokens, tp],
        )[1]
    )
    assert widths == {"attn_rope": (32 + 32) * 128 // tp, "mlp_act": 11008 // tp, "add": 4096}  # per TP rank
    same = src[(src.num_tokens == tokens) & (src.num_tensor_parallel_workers == tp)]
    measured = {round(v * 1000, 6) for v in same["time_stats.attn_pre_proj.median"]}
    assert round(got["attn_pre_proj"][3], 6) in measured


def test_vidur_part_is_the_one_ingest_is_told_or_marked_assumed(tmp_path: Path):
    """A compute folder names the GPU family (`h100`), not the part: recorded as the SXM part with the source's
    note saying it was assumed, or as the part given by --device, a separate source (its own device model)."""
    from hermes_sim.warehouse.batch import IngestError

    mlp = SAMPLES / "hardware/vidur/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    net = SAMPLES / "hardware/vidur/profiling/network/h100_dgx/all_reduce.csv"
    with Warehouse(tmp_path / "wh") as w:
        ingest(w, [mlp, net], progress=False)
        notes = {Path(p).name: json.loads(n) for p, n in w.query("SELECT path, note FROM sources")[1]}
        assert notes["mlp.csv"]["device"] == "h100_sxm" and "names the GPU family" in notes["mlp.csv"]["device_assumed"]
        assert notes["all_reduce.csv"] == {"device": "h100_sxm", "device_from": "folder 'h100_dgx'"}
        ingest(w, [mlp], params={"device": "h100_nvl"}, progress=False)  # the same file, told its part
        by_device = dict(w.query("SELECT device, count(*) FROM kernel_samples WHERE op_family = 'norm' GROUP BY 1")[1])
        assert set(by_device) == {"h100_sxm", "h100_nvl"} and len(set(by_device.values())) == 1
        told = json.loads(w.query("SELECT note FROM sources WHERE params LIKE '%h100_nvl%'")[1][0][0])
        assert told["device_from"] == "--device" and "device_assumed" not in told
        before = one(w, "SELECT count(*) FROM kernel_samples")
        with pytest.raises(IngestError, match="names the part h100_sxm; --device h100_nvl contradicts it"):
            ingest(w, [net], params={"device": "h100_nvl"}, progress=False)
        assert one(w, "SELECT count(*) FROM kernel_samples") == before


@pytest.mark.shared
def test_vidur_attention_and_network(tmp_path: Path):
    attn = shared_path("hardware/vidur/profiling/compute/a100/meta-llama/Llama-2-70b-hf/attention_tp2_legacy.csv")
    net = shared_path("hardware/vidur/profiling/network/a100_dgx/send_recv.csv")
    src = pd.read_csv(attn)
    with Warehouse(tmp_path / "wh") as w:
        ingest(w, [attn, net], progress=False)
        fam = dict(w.query("SELECT op_family, count(*) FROM kernel_samples GROUP BY ALL")[1])
        assert fam["attention_prefill"] == int(src.is_prefill.sum())
        assert fam["attention_decode"] == int((~src.is_prefill).sum())
        assert fam["send_recv"] == len(pd.read_csv(net))
        # 64 query heads and 8 KV heads over TP=2
        assert w.query("SELECT DISTINCT num_heads, num_kv_heads, head_dim FROM kernel_samples WHERE num_heads > 0")[
            1
        ] == [(32, 4, 128)]


# ---- Kineto --------------------------------------------------------------------------------------
def _x_events(path: Path) -> list[dict]:
    kept = {"kernel", "cpu_op", "cuda_runtime", "cuda_driver", "gpu_memcpy", "gpu_memset", "user_annotation"}
    kept |= {"gpu_user_annotation", "operator"}
    doc = json.loads(gzip.decompress(path.read_bytes()))
    return [e for e in doc["traceEvents"] if e.get("ph") == "X" and e.get("cat") in kept]


@pytest.mark.parametrize(
    "name", ["amd_trace__mi250_minitoy_train_ROCm6_2_kineto.json.gz", "triton_example__triton_example.json.gz"]
)
def test_kineto_sample_round_trip(wh: Warehouse, name: str):
    path = SAMPLES / "hardware/kineto" / name
    ingest(wh, [path], progress=False)
    events = _x_events(path)
    assert one(wh, "SELECT count(*) FROM trace_events") == len(events)
    kernels = [e for e in events if e["cat"] == "kernel"]
    assert one(wh, "SELECT count(*) FROM trace_events WHERE kind = 'kernel'") == len(kernels)
    assert one(wh, "SELECT sum(dur_us) FROM trace_events WHERE kind = 'kernel'") == pytest.approx(
        sum(float(e["dur"]) for e in kernels)
    )
    # every kernel is tied to the CPU op that launched it, with that op's input shapes
    assert one(wh, "SELECT count(*) FROM trace_events WHERE kind = 'kernel' AND cpu_op IS NULL") == 0
    assert one(wh, "SELECT min(ts_us) FROM trace_events") == 0.0


def test_kineto_amd_device_and_families(wh: Warehouse):
    ingest(wh, [SAMPLES / "hardware/kineto/amd_trace__mi250_minitoy_train_ROCm6_2_kineto.json.gz"], progress=False)
    fams = dict(wh.query("SELECT op_family, count(*) FROM trace_events WHERE kind = 'kernel' GROUP BY ALL")[1])
    assert fams.get("gemm", 0) >= 1 and fams.get("elementwise", 0) >= 1
    # a generic "AMD Radeon Graphics" with 104 compute units is an MI250 GCD
    assert {r[0] for r in wh.query("SELECT DISTINCT device FROM trace_events WHERE kind = 'kernel'")[1]} == {"mi250"}
    dims = wh.query("SELECT input_dims FROM trace_events WHERE kind = 'kernel' AND cpu_op = 'aten::addmm'")[1]
    assert dims and dims[0][0] == [[128], [5, 128], [128, 128], [], []]


@pytest.mark.shared
def test_kineto_a100_trace_links_kernels_to_cpu_ops(tmp_path: Path):
    path = shared_path("hardware/kineto/trace_diff__control__control.json.gz")
    events = _x_events(path)
    with Warehouse(tmp_path / "wh") as w:
        ingest(w, [path], progress=False)
        assert one(w, "SELECT count(*) FROM trace_events") == len(events)
        total, linked = w.query("SELECT count(*), count(cpu_op) FROM trace_events WHERE kind = 'kernel'")[1][0]
        assert total == sum(e["cat"] == "kernel" for e in events)
        assert linked / total > 0.99  # older traces: by time containment on the launching thread
        fams = dict(w.query("SELECT op_family, count(*) FROM trace_events WHERE kind = 'kernel' GROUP BY ALL")[1])
        assert fams["gemm"] > 0 and fams["collective"] > 0 and fams["elementwise"] > 0
        mm = w.query("SELECT input_dims FROM trace_events WHERE cpu_op = 'aten::mm' AND op_family = 'gemm' LIMIT 1")[1][
            0
        ][0]
        assert len(mm) == 2 and len(mm[0]) == 2  # two 2-D operands


def test_kineto_layouts_give_identical_rows(tmp_path: Path):
    """Pretty-printed (fast path), compact and re-indented files (exact decoder) give the same rows."""
    from hermes_sim.ingest.kineto import parse_trace
    from hermes_sim.warehouse.batch import SourceBatch

    src = SAMPLES / "hardware/kineto/amd_trace__mi250_minitoy_train_ROCm6_2_kineto.json.gz"
    doc = json.loads(gzip.decompress(src.read_bytes()))
    variants = {"pretty": src}
    for name, indent in (("compact", None), ("indent1", 1)):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(doc, indent=indent))
        variants[name] = p
    tables = {
        k: parse_trace(p, SourceBatch(str(p), "x", "kineto", 0)).tables["trace_events"] for k, p in variants.items()
    }
    assert tables["compact"].equals(tables["pretty"]) and tables["indent1"].equals(tables["pretty"])


# ---- request logs --------------------------------------------------------------------------------
def test_azure_sample(wh: Warehouse):
    path = SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
    ingest(wh, [path], progress=False)
    src = pd.read_csv(path)
    got = wh.arrow("SELECT arrival_s, input_tokens, output_tokens FROM requests ORDER BY request_id").to_pandas()
    assert len(got) == len(src) == 3000
    assert (got.input_tokens.to_numpy() == src.ContextTokens.to_numpy()).all()
    assert (got.output_tokens.to_numpy() == src.GeneratedTokens.to_numpy()).all()
    expect = (pd.to_datetime(src.TIMESTAMP) - pd.to_datetime(src.TIMESTAMP[0])).dt.total_seconds()
    assert abs(got.arrival_s.to_numpy() - expect.to_numpy()).max() < 1e-6


@pytest.mark.shared
@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", 19366),
        ("requests/azure_llm_2023/AzureLLMInferenceTrace_code.csv", 8819),
        ("requests/mooncake/conversation_trace.jsonl", 12031),
    ],
)
def test_full_request_log_counts(tmp_path: Path, rel: str, expected: int):
    with Warehouse(tmp_path / "wh") as w:
        report = ingest(w, [shared_path(rel)], progress=False)
        assert report.rows_accepted == expected and report.rows_quarantined == 0
        assert one(w, "SELECT count(*) FROM requests") == expected


def test_mooncake_prefix_hashes(wh: Warehouse):
    path = SAMPLES / "requests/mooncake/conversation_trace.jsonl"
    ingest(wh, [path], progress=False)
    first = json.loads(path.read_text().splitlines()[0])
    row = wh.query("SELECT arrival_s, input_tokens, prefix_block_hashes FROM requests WHERE request_id = 0")[1][0]
    assert row == (0.0, first["input_length"], first["hash_ids"])
    # 512-token blocks: a request's block count covers its input
    assert one(wh, "SELECT count(*) FROM requests WHERE len(prefix_block_hashes) * 512 < input_tokens") == 0


def test_ragpulse_parts_and_sessions(wh: Warehouse):
    ingest(wh, [SAMPLES / "requests/ragpulse/data/0_trace.jsonl"], progress=False)
    assert one(wh, "SELECT count(*) FROM requests") == 600
    assert one(wh, "SELECT count(DISTINCT session_id) FROM requests") > 100
    # part token counts come from the length tables; their sum never exceeds the prompt
    row = wh.query(
        "SELECT count(*), count(passage_tokens), sum(CASE WHEN sys_prompt_tokens + passage_tokens + history_tokens"
        " + web_search_tokens + user_input_tokens > input_tokens THEN 1 ELSE 0 END) FROM requests"
    )[1][0]
    assert row[0] == row[1] == 600 and row[2] == 0
    assert one(wh, "SELECT count(*) FROM requests WHERE len(passage_hashes) = 0") < 600


@pytest.mark.shared
def test_ragpulse_full_log_clock_reset_splits_it_into_two_segments_that_never_go_back(tmp_path: Path):
    """The real trace's clock resets once (line 3,801: 0 s after 604,453 s). Every row is kept; the rows from
    the reset on are segment 1, with arrivals from their own start; no segment goes backwards."""
    with Warehouse(tmp_path / "wh") as w:
        report = ingest(w, [shared_path("requests/ragpulse/data/0_trace.jsonl")], progress=False)
        assert report.rows_accepted == 7106 and report.rows_quarantined == 0
        rows = w.query("SELECT segment, count(*), min(arrival_s) FROM requests GROUP BY 1 ORDER BY 1")[1]
        assert rows == [(0, 3800, 0.0), (1, 3306, 0.0)]
        backwards = w.query(
            "SELECT count(*) FROM (SELECT arrival_s - lag(arrival_s) OVER (PARTITION BY segment ORDER BY request_id)"
            " AS step FROM requests) WHERE step < 0"
        )[1][0][0]
        assert backwards == 0
        note = json.loads(one(w, "SELECT note FROM sources"))
        assert note["segments"] == 2 and note["segment_start_lines"] == [3801]


def test_servegen_is_seeded_and_follows_the_rates(tmp_path: Path):
    from hermes_sim.ingest.servegen import parse_servegen
    from hermes_sim.warehouse.batch import SourceBatch

    trace = SAMPLES / "requests/servegen/reason/deepseek-r1/chunk-10-trace.csv"

    def run(seed: int):
        b = SourceBatch(str(trace), "x", "servegen", 0, params={"seed": seed})
        return parse_servegen(trace, b).tables["requests"]

    a, b, c = run(0), run(0), run(1)
    assert a.equals(b) and not a.equals(c)
    windows = pd.read_csv(trace, header=None)
    expected = (windows[1] * 600).sum()
    assert abs(a.num_rows - expected) < 4 * expected**0.5 + 0.2 * expected  # high-CV arrivals vary a lot
    df = a.to_pandas()
    assert df.arrival_s.is_monotonic_increasing
    assert df.reasoning_share.between(0, 1).all() and (df.input_tokens > 0).all()
    # no arrivals in windows whose rate is zero
    idle = windows[windows[1] == 0][0].to_numpy()
    in_idle = sum(((df.arrival_s >= s) & (df.arrival_s < s + 600)).sum() for s in idle)
    assert in_idle == 0


def test_weibull_shape_matches_cv():
    import math

    from hermes_sim.ingest.servegen import weibull_shape_for_cv
    from scipy.special import gamma

    for cv in (0.3, 1.0, 2.5):
        k = weibull_shape_for_cv(cv)
        assert math.sqrt(gamma(1 + 2 / k) / gamma(1 + 1 / k) ** 2 - 1) == pytest.approx(cv, rel=1e-6)


def test_burstgpt_layout(wh: Warehouse, tmp_path: Path):
    """BurstGPT's documented columns (a synthetic fixture: the real log is not in ../shared)."""
    log = tmp_path / "BurstGPT_sample.csv"
    log.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"  # a failed request: 0 response tokens is kept
        "118,GPT-4,417,276,693,API log\n"
    )
    assert detect(log) == "burstgpt"
    ingest(wh, [log], progress=False)
    rows = wh.query("SELECT arrival_s, input_tokens, output_tokens, model, session_id FROM requests ORDER BY 1")[1]
    assert rows == [
        (0.0, 472, 18, "ChatGPT", "Conversation log"),
        (40.0, 1087, 0, "ChatGPT", "Conversation log"),
        (113.0, 417, 276, "GPT-4", "API log"),
    ]


def test_azure_2024_layout_with_time_zone(wh: Warehouse, tmp_path: Path):
    log = tmp_path / "AzureLLMInferenceTrace_code_1week.csv"
    log.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.009930+00:00,2162,5\n"
        "2024-05-10 00:00:01.509930+00:00,1099,17\n"
    )
    ingest(wh, [log], progress=False)
    assert wh.query("SELECT arrival_s, input_tokens FROM requests ORDER BY 1")[1] == [(0.0, 2162), (1.5, 1099)]
