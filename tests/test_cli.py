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
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "command", [[], ["ingest"], ["warehouse"], ["warehouse", "summary"], ["warehouse", "sql"], ["run"]]
)
def test_help_everywhere(command: list[str]):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_ingest_summary_sql(tmp_path: Path):
    wh = tmp_path / "wh"
    log = SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
    first = run("ingest", str(log), "--warehouse", str(wh), "--quiet")
    assert first.returncode == 0, first.stderr
    assert "ingested 1 file(s): 3000 rows accepted, 0 quarantined" in first.stdout
    again = run("ingest", str(log), "--warehouse", str(wh), "--quiet")
    assert "ingested 0 file(s)" in again.stdout and "1 already in the warehouse" in again.stdout
    assert "already ingested" in again.stderr  # the diagnostic says so

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
    badsql = run("warehouse", "sql", "SELECT * FROM nope", "--warehouse", str(tmp_path / "wh"))
    assert badsql.returncode == 2 and "nope" in badsql.stderr


def test_main_job_in_a_fresh_directory(tmp_path: Path):
    result = run("run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".hermes" / "catalog.duckdb").exists()
    for section in ("kernel samples by device and op family", "requests by log", "trace events by device and kind"):
        assert section in result.stdout
    assert "azure/AzureLLMInferenceTrace_conv" in result.stdout
