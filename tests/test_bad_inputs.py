"""Bad input gets a clear error or quarantined rows, and loses nothing already in the warehouse."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLES, counts, files_under
from hermes_sim.ingest.runner import ingest
from hermes_sim.warehouse.batch import IngestError
from hermes_sim.warehouse.store import Warehouse

AMD_TRACE = SAMPLES / "hardware/kineto/amd_trace__mi250_minitoy_train_ROCm6_2_kineto.json.gz"
A100_GEMM = SAMPLES / "hardware/aiconfigurator/systems/data/a100_sxm/gemm/vllm/0.14.0/gemm_perf.parquet"


@pytest.fixture
def seeded(wh: Warehouse) -> Warehouse:
    """A warehouse with prior data that every bad ingest must leave intact."""
    ingest(wh, [SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"], progress=False)
    return wh


def assert_untouched(w: Warehouse, before: dict, files: set) -> None:
    assert counts(w) == before
    assert files_under(w.root) == files


def expect_error(w: Warehouse, path: Path, match: str, fmt: str | None = None, names: Path | None = None) -> None:
    before, files = counts(w), files_under(w.root)
    with pytest.raises(IngestError, match=match) as info:
        ingest(w, [path], fmt=fmt, progress=False)
    assert str(names or path) in str(info.value)
    assert_untouched(w, before, files)


# ---- structurally broken files: a clear error naming file and position --------------------------------------
def test_truncated_trace_json(seeded: Warehouse, tmp_path: Path):
    text = gzip.decompress(AMD_TRACE.read_bytes()).decode()
    bad = tmp_path / "truncated.json"
    bad.write_text(text[: len(text) // 2])
    expect_error(seeded, bad, r"offset \d+: truncated JSON")


@pytest.mark.parametrize("keep", [0.5, 0.02])
@pytest.mark.parametrize("fmt", [None, "kineto"])
def test_truncated_gzip_stream_says_so(seeded: Warehouse, tmp_path: Path, keep: float, fmt: str | None):
    data = AMD_TRACE.read_bytes()
    bad = tmp_path / "truncated.json.gz"
    bad.write_bytes(data[: int(len(data) * keep)])
    expect_error(seeded, bad, r"byte offset \d+.*: the gzip stream is truncated", fmt=fmt)


def test_non_utf8_byte_is_reported_at_its_offset_in_the_file(seeded: Warehouse, tmp_path: Path):
    head = b"TIMESTAMP,ContextTokens,GeneratedTokens\n" + b"2023-11-16 18:15:46.0000000,100,10\n" * 5
    bad = tmp_path / "azure.csv"
    bad.write_bytes(head + b"2023-11-16 18:15:47.0000000,1\xff0,10\n")
    at = len(head) + len("2023-11-16 18:15:47.0000000,1")
    expect_error(seeded, bad, rf"line 7, byte offset {at}: not UTF-8")


def test_malformed_trace_json_names_the_offset(seeded: Warehouse, tmp_path: Path):
    text = gzip.decompress(AMD_TRACE.read_bytes()).decode()
    cut = text.index('"cat": "kernel"')
    bad = tmp_path / "malformed.json"
    bad.write_text(text[:cut] + '"cat": kernel"' + text[cut + len('"cat": "kernel"') :])
    before, files = counts(seeded), files_under(seeded.root)
    with pytest.raises(IngestError, match=r"malformed.json: offset (\d+): malformed JSON") as info:
        ingest(seeded, [bad], progress=False)
    offset = int(info.value.position.split()[1])
    assert abs(offset - cut) < 50  # points at the damage
    assert_untouched(seeded, before, files)


def test_missing_columns(seeded: Warehouse, tmp_path: Path):
    bad = tmp_path / "azure.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n")
    expect_error(seeded, bad.with_name("x.csv"), "no such file")  # and a missing path is an error too
    bad.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n")
    expect_error(seeded, bad, r"line 1: missing column\(s\) \['GeneratedTokens'\]", fmt="azure")


def test_missing_parquet_columns(seeded: Warehouse, tmp_path: Path):
    table = pq.read_table(A100_GEMM).drop_columns(["k"])
    bad = tmp_path / "gemm_perf.parquet"
    pq.write_table(table, bad)
    expect_error(seeded, bad, r"missing column\(s\) \['k'\]")


def test_wrong_format_file(seeded: Warehouse, tmp_path: Path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a trace\n")
    expect_error(seeded, bad, "not a recognised format")
    # forcing a format onto the wrong file fails at its first line
    expect_error(seeded, SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "line 1", fmt="mooncake")
    expect_error(seeded, A100_GEMM, "offset 19: not UTF-8 text", fmt="azure")


def test_empty_file(seeded: Warehouse, tmp_path: Path):
    bad = tmp_path / "empty.jsonl"
    bad.write_text("")
    expect_error(seeded, bad, "empty file")
    expect_error(seeded, bad, "empty file", fmt="mooncake")
    expect_error(seeded, bad, "empty file", fmt="kineto")


def test_servegen_pdf_is_parsed_safely(seeded: Warehouse, tmp_path: Path):
    folder = tmp_path / "deepseek-r1"
    folder.mkdir()
    (folder / "chunk-0-trace.csv").write_text("0,0.5,1.0,Gamma,1,1\n")
    evil = "__import__('os').system('echo pwned')"
    (folder / "chunk-0-dataset.json").write_text(
        json.dumps({"0": {"input_tokens": evil, "output_tokens": "{1: 1.0}", "reason_ratio": "{0.5: 1.0}"}})
    )
    expect_error(
        seeded,
        folder / "chunk-0-trace.csv",
        "window 0, input_tokens: PDF is not a literal dict",
        "servegen",
        names=folder / "chunk-0-dataset.json",
    )


@pytest.mark.parametrize(
    ("rate", "message"),
    [  # before: numpy's "Maximum allowed dimension exceeded" or an OverflowError, naming neither file nor line
        ("inf", "line 2: rate is not finite"),
        ("1e300", r"line 2: rate 1e\+300 req/s over a 600 s window: Maximum allowed dimension exceeded"),
    ],
)
def test_a_servegen_rate_no_window_can_hold_names_its_line(seeded: Warehouse, tmp_path: Path, rate: str, message):
    folder = tmp_path / "deepseek-r1"
    folder.mkdir()
    (folder / "chunk-0-trace.csv").write_text(f"0,0.5,1.0,Gamma,1,1\n600,{rate},1.0,Gamma,1,1\n")
    pdfs = {"input_tokens": "{10: 1.0}", "output_tokens": "{1: 1.0}", "reason_ratio": "{0.5: 1.0}"}
    (folder / "chunk-0-dataset.json").write_text(json.dumps({"0": pdfs}))
    expect_error(seeded, folder / "chunk-0-trace.csv", message, "servegen")


# ---- bad rows: quarantined with the reason, the rest accepted --------------------------------------------
def test_negative_and_nan_latencies_are_quarantined(seeded: Warehouse, tmp_path: Path):
    table = pq.read_table(A100_GEMM).slice(0, 10)
    latency = table["latency"].to_numpy().copy()
    latency[2], latency[5], latency[7] = -0.5, np.nan, 0.0
    bad = tmp_path / "gemm_perf.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("latency"), "latency", pa.array(latency)), bad)
    report = ingest(seeded, [bad], progress=False)
    assert report.rows_accepted == 7 and report.rows_quarantined == 3
    rows = dict(seeded.query("SELECT row_number, reason FROM quarantine ORDER BY row_number")[1])
    assert rows == {3: "latency_us must be > 0", 6: "latency_us is missing or NaN", 8: "latency_us must be > 0"}
    assert seeded.query("SELECT min(latency_us) > 0 FROM kernel_samples")[1][0][0]


def test_non_monotone_timestamps_are_quarantined(seeded: Warehouse, tmp_path: Path):
    bad = tmp_path / "azure.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0000000,100,10\n"
        "2023-11-16 18:15:47.0000000,200,20\n"
        "2023-11-16 18:15:45.0000000,300,30\n"  # earlier than the line before
        "2023-11-16 18:15:48.0000000,400,40\n"
    )
    report = ingest(seeded, [bad], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (3, 1)
    q = seeded.query("SELECT path, row_number, reason, record FROM quarantine")[1]
    assert q[0][:3] == (str(bad), 4, "arrival -1 s goes back: earlier than the last accepted row (line 3: 1 s)")
    assert q[0][3] == "2023-11-16 18:15:45.0000000,300,30"  # the row as written


def test_a_row_that_jumps_ahead_is_quarantined_not_the_good_row_after_it(seeded: Warehouse, tmp_path: Path):
    bad = tmp_path / "azure.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0000000,100,10\n"
        "2023-11-17 18:15:47.0000000,200,20\n"  # a day ahead of its neighbours
        "2023-11-16 18:15:47.0000000,300,30\n"
        "2023-11-16 18:15:48.0000000,400,40\n"
    )
    report = ingest(seeded, [bad], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (3, 1)
    row, reason = seeded.query("SELECT row_number, reason FROM quarantine")[1][0]
    assert row == 3 and reason.startswith("arrival 86401 s jumps ahead of the rows around it")
    kept = seeded.query(f"SELECT input_tokens FROM requests WHERE source_id != '{_first_source(seeded)}'")[1]
    assert [r[0] for r in kept] == [100, 300, 400]


def test_a_clock_reset_starts_a_segment_that_never_goes_back(seeded: Warehouse, tmp_path: Path):
    lines = [json.dumps({"timestamp": t, "input_length": 10, "output_length": 5}) for t in (0, 10, 20, 30)]
    lines += [json.dumps({"timestamp": t, "input_length": 20, "output_length": 5}) for t in (2, 12, 22)]
    bad = tmp_path / "mooncake.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    report = ingest(seeded, [bad], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (7, 0)
    rows = seeded.query(
        "SELECT segment, round(arrival_s, 9) FROM requests WHERE log_name LIKE 'mooncake/%' ORDER BY request_id"
    )
    assert rows[1] == [(0, 0.0), (0, 0.01), (0, 0.02), (0, 0.03), (1, 0.0), (1, 0.01), (1, 0.02)]


def _first_source(w: Warehouse) -> str:
    return w.query("SELECT source_id FROM sources ORDER BY ingested_at LIMIT 1")[1][0][0]


def test_huge_counts_keep_their_value_and_get_the_right_reason(seeded: Warehouse, tmp_path: Path, capfd):
    bad = tmp_path / "azure.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0000000,100,10\n"
        "2023-11-16 18:15:47.0000000,1e308,20\n"
        "2023-11-16 18:15:48.0000000,400,40\n"
    )
    report = ingest(seeded, [bad], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (2, 1)
    row, reason, record = seeded.query("SELECT row_number, reason, record FROM quarantine")[1][0]
    assert (row, reason) == (3, "input_tokens exceeds 2^63 - 1 (no real count)")
    assert record == "2023-11-16 18:15:47.0000000,1e308,20"
    assert "RuntimeWarning" not in capfd.readouterr().err


def test_long_quarantined_records_are_kept_whole(seeded: Warehouse, tmp_path: Path):
    rec = {"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": list(range(3000))}
    good = json.dumps(rec)
    bad = tmp_path / "mooncake.jsonl"
    bad.write_text(good + "\n" + good.replace('"input_length": 10', '"input_length": -1') + "\n" + good + "\n")
    ingest(seeded, [bad], progress=False)
    record = seeded.query("SELECT record FROM quarantine")[1][0][0]
    assert len(record) > 10000 and json.loads(record)["hash_ids"] == list(range(3000))


def test_kineto_unparseable_and_absurd_times_are_quarantined(seeded: Warehouse, tmp_path: Path):
    doc = json.loads(gzip.decompress(AMD_TRACE.read_bytes()))
    kernels = [i for i, e in enumerate(doc["traceEvents"]) if e.get("cat") == "kernel"][:3]
    doc["traceEvents"][kernels[0]]["dur"] = "abc"
    doc["traceEvents"][kernels[1]]["dur"] = 1e308
    doc["traceEvents"][kernels[2]]["ts"] = 1e308
    bad = tmp_path / "trace.json"
    bad.write_text(json.dumps(doc))
    report = ingest(seeded, [bad], progress=False)
    reasons = sorted(r for (r,) in seeded.query("SELECT reason FROM quarantine")[1])
    assert report.rows_quarantined == 3
    assert reasons == [
        "dur 'abc' is not a number",
        "dur_us exceeds 1e12 us (11.6 days)",
        "ts_us is more than 1e12 us after the trace start",
    ]


def test_unparseable_values_are_quarantined_with_line_numbers(seeded: Warehouse, tmp_path: Path):
    bad = tmp_path / "azure.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0000000,100,10\n"
        "not a time,200,20\n"
        "2023-11-16 18:15:48.0000000,-5,30\n"
        "2023-11-16 18:15:49.0000000,7.5,30\n"
        "2023-11-16 18:15:50.0000000,400,\n"
    )
    report = ingest(seeded, [bad], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (1, 4)
    reasons = dict(seeded.query("SELECT row_number, reason FROM quarantine")[1])
    assert reasons == {
        3: "arrival time is missing or unparseable",
        4: "input_tokens must be >= 0",
        5: "input_tokens is missing or not an integer",
        6: "output_tokens is missing or not an integer",
    }


def test_malformed_jsonl_line_is_quarantined(seeded: Warehouse, tmp_path: Path):
    lines = (SAMPLES / "requests/mooncake/conversation_trace.jsonl").read_text().splitlines()[:5]
    lines[2] = lines[2][:20]  # cut mid-record
    bad = tmp_path / "mooncake.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    report = ingest(seeded, [bad], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (4, 1)
    row, reason = seeded.query("SELECT row_number, reason FROM quarantine")[1][0]
    assert row == 3 and reason.startswith("malformed JSON line")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [  # before: 1.5 and `true` were stored as block 1, the string as no prefix at all, an id past int64 failed
        # the whole ingest with an OverflowError, and an input_length of `true` became a 1-token prompt
        ("hash_ids", [7, 1.5], "hash_ids: id '1.5' is not an integer"),
        ("hash_ids", "abc", "hash_ids: expected a list of integer ids, got str 'abc'"),
        ("hash_ids", [True], "hash_ids: id 'True' is not an integer"),
        ("hash_ids", [2**63], "hash_ids: id 9223372036854775808 does not fit in a signed 64-bit integer"),
        ("input_length", True, "input_length: true is not a number"),
    ],
)
def test_a_mooncake_row_whose_ids_or_counts_are_not_integers_is_quarantined(
    seeded: Warehouse, tmp_path: Path, field: str, value, reason: str
):
    lines = (SAMPLES / "requests/mooncake/conversation_trace.jsonl").read_text().splitlines()[:3]
    rec = json.loads(lines[1])
    rec[field] = value
    bad = tmp_path / "mooncake.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n")
    report = ingest(seeded, [bad], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (2, 1)
    row, got, record = seeded.query("SELECT row_number, reason, record FROM quarantine")[1][0]
    assert (row, got, record) == (2, reason, json.dumps(rec))


def test_a_ragpulse_row_whose_prompt_part_ids_are_not_a_list_is_quarantined(seeded: Warehouse, tmp_path: Path):
    src = SAMPLES / "requests/ragpulse/data"
    for f in src.glob("[1-5]_*.jsonl"):  # the length tables it reads beside the trace
        (tmp_path / f.name).write_bytes(f.read_bytes())
    lines = (src / "0_trace.jsonl").read_text().splitlines()[:4]
    recs = [json.loads(line) for line in lines]
    recs[1]["hash_ids"]["passages_ids"] = 7398  # one id, not a list of them
    recs[2]["hash_ids"] = [1, 2]
    (tmp_path / "0_trace.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    report = ingest(seeded, [tmp_path / "0_trace.jsonl"], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (2, 2)
    assert dict(seeded.query("SELECT row_number, reason FROM quarantine")[1]) == {
        2: "hash_ids.passages_ids: expected a list of integer ids, got int '7398'",
        3: "hash_ids: expected an object of prompt parts, got list",
    }


VIDUR_NETWORK = SAMPLES / "hardware/vidur/profiling/network/h100_dgx/all_reduce.csv"


def _vidur_network_with(tmp_path: Path, column: str, value: str, line: int = 2) -> Path:
    lines = VIDUR_NETWORK.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    bad = tmp_path / "profiling/network/h100_dgx/all_reduce.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("\n".join(lines) + "\n")
    return bad


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [  # before: 2048.5 stored as 2048 bytes, 'True' as a size-less row, 1e30 and 'fast' failed the whole file
        # with a message naming neither the file nor the row
        ("size", "2048.5", "size 2048.5 is not a whole number"),
        ("size", "True", "size 'True' is not a number"),
        ("size", "1e30", "size 1e+30 exceeds 2^63 - 1"),
        ("time_stats.all_reduce.median", "fast", "time_stats.all_reduce.median 'fast' is not a number"),
    ],
)
def test_a_vidur_row_whose_value_is_not_its_columns_kind_is_quarantined(
    seeded: Warehouse, tmp_path: Path, column: str, value: str, reason: str
):
    bad = _vidur_network_with(tmp_path, column, value)
    report = ingest(seeded, [bad], progress=False)
    rows = len(VIDUR_NETWORK.read_text().splitlines()) - 1
    assert (report.rows_accepted, report.rows_quarantined) == (rows - 1, 1)
    row, got = seeded.query("SELECT row_number, reason FROM quarantine")[1][0]
    assert (row, got) == (2, reason)


def test_a_vidur_network_file_holds_one_collective(seeded: Warehouse, tmp_path: Path):
    # it was an error, printing pandas' array of the names found on several lines and naming the header
    bad = _vidur_network_with(tmp_path, "collective", "all_gather", line=5)
    expect_error(seeded, bad, r"line 5: collective 'all_gather': one file holds one collective \('all_reduce'\)")


def test_a_vidur_mlp_row_with_a_flag_that_is_not_true_or_false_is_quarantined_in_every_op(
    seeded: Warehouse, tmp_path: Path
):
    src = SAMPLES / "hardware/vidur/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    df = pd.read_csv(src)
    df["use_gated_mlp"] = df["use_gated_mlp"].astype(str)
    df.loc[0, "use_gated_mlp"] = "maybe"  # read as false before: the up projection priced at half its width
    bad = tmp_path / "profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    bad.parent.mkdir(parents=True)
    df.to_csv(bad, index=False)
    report = ingest(seeded, [bad], progress=False)
    ops = report.rows_quarantined
    assert ops >= 10 and report.rows_accepted == (len(df) - 1) * ops
    assert set(seeded.query("SELECT row_number, reason FROM quarantine")[1]) == {
        (2, "use_gated_mlp 'maybe' is not true or false")
    }


def _aiconfigurator_gemm_with(tmp_path: Path, column: str, values: list) -> Path:
    t = pq.read_table(A100_GEMM).slice(0, 20)
    t = t.set_column(t.column_names.index(column), column, pa.array(values))
    bad = tmp_path / "systems/data/a100_sxm/gemm/vllm/0.14.0/gemm_perf.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(t, bad)
    return bad


@pytest.mark.parametrize(
    ("value", "reason"),
    [  # before: a null m was kept as a GEMM without a shape; 7.5 and 1e30 failed the file without naming it
        (None, "m is missing"),
        (7.5, "m 7.5 is not a whole number"),
        (1e30, "m 1e+30 exceeds 2^63 - 1"),
    ],
)
def test_an_aiconfigurator_row_without_a_whole_shape_is_quarantined(seeded: Warehouse, tmp_path: Path, value, reason):
    m = [float(x) for x in pq.read_table(A100_GEMM).slice(0, 20)["m"].to_pylist()]
    m[3] = value
    report = ingest(seeded, [_aiconfigurator_gemm_with(tmp_path, "m", m)], progress=False)
    assert (report.rows_accepted, report.rows_quarantined) == (19, 1)
    assert seeded.query("SELECT row_number, reason FROM quarantine")[1] == [(4, reason)]


def test_an_aiconfigurator_column_of_text_where_numbers_belong_fails_the_file(seeded: Warehouse, tmp_path: Path):
    latency = [str(x) for x in pq.read_table(A100_GEMM).slice(0, 20)["latency"].to_pylist()]
    bad = _aiconfigurator_gemm_with(tmp_path, "latency", latency)
    expect_error(seeded, bad, "column 'latency' holds string, not numbers")
