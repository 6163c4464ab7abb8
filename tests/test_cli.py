"""The `hermes-sim` command, run for real as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

EXE = Path(sys.executable).with_name("hermes-sim")


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("HERMES_WAREHOUSE", None) if env is None or "HERMES_WAREHOUSE" not in env else None
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=full_env, cwd=cwd)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["ingest"],
        ["warehouse"],
        ["warehouse", "summary"],
        ["warehouse", "sql"],
        ["run"],
        ["replay"],
        ["calibrate"],
        ["calibrate", "evaluate"],
        ["validate", "silicon"],
        ["devices"],
    ],
)
def test_help_everywhere(command: list[str]):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_ingest_device_must_be_a_catalog_part(tmp_path: Path):
    mlp = SAMPLES / "hardware/vidur/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    bad = run("ingest", str(mlp), "--warehouse", str(tmp_path / "wh"), "--device", "h100_nvlink", "--quiet")
    assert bad.returncode != 0 and "unknown device 'h100_nvlink'" in bad.stderr and "h100_nvl" in bad.stderr
    assert not (tmp_path / "wh").exists()
    good = run("-v", "ingest", str(mlp), "--warehouse", str(tmp_path / "wh"), "--device", "h100_nvl", "--quiet")
    assert good.returncode == 0, good.stderr


def test_ingest_summary_sql(tmp_path: Path):
    wh = tmp_path / "wh"
    log = SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
    first = run("ingest", str(log), "--warehouse", str(wh), "--quiet")
    assert first.returncode == 0, first.stderr
    assert "ingested 1 file(s): 3000 rows accepted, 0 quarantined" in first.stdout
    again = run("ingest", str(log), "--warehouse", str(wh), "--quiet")
    assert "ingested 0 file(s)" in again.stdout and "1 already in the warehouse" in again.stdout
    assert again.stderr == ""  # quiet by default
    verbose = run("-v", "ingest", str(log), "--warehouse", str(wh), "--quiet")
    assert "already ingested" in verbose.stderr  # -v says why

    summary = run("warehouse", "summary", "--json", env={"HERMES_WAREHOUSE": str(wh)})
    assert summary.returncode == 0, summary.stderr
    doc = json.loads(summary.stdout)
    assert {"table": "requests", "rows": 3000} in doc["tables"]

    sql = run("warehouse", "sql", "SELECT count(*) AS n, max(input_tokens) AS top FROM requests", "-w", str(wh))
    lines = sql.stdout.splitlines()
    assert lines[0].split() == ["n", "top"] and lines[2].split()[0] == "3000"


def test_errors_go_to_stderr_with_nonzero_status(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"traceEvents": [{"ph": "X", "ts": 1,')
    result = run("ingest", str(bad), "--warehouse", str(tmp_path / "wh"), "--quiet")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error:" in result.stderr and "bad.json" in result.stderr and "truncated JSON" in result.stderr
    missing = run("warehouse", "summary", "--warehouse", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no warehouse at" in missing.stderr
    assert not (tmp_path / "wh").exists()  # a failed first ingest leaves nothing behind
    run("ingest", str(SAMPLES / "requests/mooncake/conversation_trace.jsonl"), "-w", str(tmp_path / "wh"), "-q")
    badsql = run("warehouse", "sql", "SELECT * FROM nope", "--warehouse", str(tmp_path / "wh"))
    assert badsql.returncode == 2 and "nope" in badsql.stderr


def test_main_job_in_a_fresh_directory(tmp_path: Path):
    result = run("run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".hermes" / "catalog.duckdb").exists()
    for section in ("kernel samples by device and op family", "requests by log", "trace events by device and kind"):
        assert section in result.stdout
    assert "azure/AzureLLMInferenceTrace_conv" in result.stdout
    assert "## Replay: bundled_rag_hybrid" in result.stdout and "where the time goes, per stage" in result.stdout
    for stage in ("embed", "search", "rerank", "generate"):
        assert f" {stage} " in result.stdout
    for step in range(1, 6):
        assert f"step {step}/5" in result.stderr


def test_version_and_the_catalogs():
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == "0.1.0"
    devices = run("devices", "--json")
    doc = json.loads(devices.stdout)
    h100 = next(d for d in doc if d["device"] == "h100_sxm")
    assert h100["bf16_tflops"] == 989.0 and "datasheet" in h100["sources"]["compute"] and h100["usd_per_hour"]
    assert "host_dram" in run("tiers").stdout and "llama-3.1-8b" in run("models").stdout


def test_misleading_inputs_get_clear_errors(tmp_path: Path):
    wh = tmp_path / "wh"
    log = SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
    assert run("ingest", str(log), "-w", str(wh), "-q").returncode == 0
    bad_format = run("calibrate", "report", "--format", "yaml", "-w", str(wh))
    assert bad_format.returncode == 2 and "--format must be one of" in bad_format.stderr
    cfg = tmp_path / "s.yaml"
    cfg.write_text("pools: [{device: h100_sxm, model: llama-3.1-8b}]\n")
    no_log = run("replay", str(cfg), "-w", str(wh))
    assert no_log.returncode == 2 and "--log" in no_log.stderr
    missing = run("replay", str(cfg), "--log", str(tmp_path / "nope.csv"), "-w", str(wh))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert missing.stderr.startswith(f"error: {cfg}: clients.default.source.log: no such file")  # one line: file, field
    embed = tmp_path / "e.yaml"
    embed.write_text("pools: [{device: h100_sxm, model: bge-large-en-v1.5}]\n")
    as_generator = run("replay", str(embed), "--log", str(log), "-w", str(wh))
    assert as_generator.returncode == 2 and "embedding model, not a text generator" in as_generator.stderr
    bogus = run("calibrate", "--device", "h100_sxm", "--family", "bogus", "-w", str(wh))
    assert bogus.returncode == 2 and "unknown op family 'bogus'" in bogus.stderr
    for line in (as_generator.stderr + bogus.stderr).splitlines():
        assert len(line) < 400 and not line.startswith(" ")  # one line each, not wrapped at 80 columns


def test_profile_cpu_writes_into_the_warehouse_not_the_current_folder(tmp_path: Path):
    result = run("profile", "cpu", "--repeats", "1", "-w", str(tmp_path / "wh"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "wh/profiles/cpu.json").exists() and not list(tmp_path.glob("*.json"))


def test_a_second_writer_is_told_who_holds_the_warehouse(tmp_path: Path):
    from hermes_sim.warehouse.store import Warehouse

    wh = tmp_path / "wh"
    log = SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
    assert run("ingest", str(log), "-w", str(wh), "-q").returncode == 0
    with Warehouse(wh):  # this process holds the write lock, as a committing ingest does
        other = run("ingest", str(SAMPLES / "requests/mooncake"), "-w", str(wh), "-q")
        reader = run("warehouse", "summary", "-w", str(wh))
    assert other.returncode == 2 and f"is busy: process {os.getpid()} holds it" in other.stderr
    assert reader.returncode == 2 and "busy" in reader.stderr
    assert run("ingest", str(SAMPLES / "requests/mooncake"), "-w", str(wh), "-q").returncode == 0  # then it works


def test_calibrate_report_says_which_device_and_warehouse_lack_one(tmp_path: Path):
    # it said "no calibration report yet" for a device that does not exist, and named no warehouse
    unknown = run("calibrate", "report", "--device", "h100_sxmm", "-w", str(tmp_path))
    assert unknown.returncode == 2 and "unknown device 'h100_sxmm'; known: a100_pcie" in unknown.stderr
    none = run("calibrate", "report", "--device", "mi300x", "-w", str(tmp_path))
    assert none.returncode == 2
    assert f"no calibration report for mi300x in {tmp_path} yet" in " ".join(none.stderr.split())
