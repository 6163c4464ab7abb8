"""The repository itself: lint-clean, and the DVC pipeline reproduces what is committed, round-trips a remote,
and reruns only what a changed input feeds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
ENV.pop("HERMES_WAREHOUSE", None)


def test_ruff_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dvc_analytics_off_is_committed():
    assert "analytics = false" in (REPO / ".dvc" / "config").read_text()


def _clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    # the working tree may hold changes not yet committed: test what is here
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in tracked.splitlines():
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def test_dvc_repro_reproduces_what_is_committed_and_round_trips_a_remote(tmp_path: Path):
    first = _clone(tmp_path / "first")
    before = {p: (first / p).read_bytes() for p in ("dvc.lock",)}
    dvc(first, "repro", "--force")
    assert (first / ".hermes" / "catalog.duckdb").exists() and any((first / ".hermes" / "tables").rglob("*.parquet"))
    # what is committed is what the code produces: the lock (every output's hash), metrics and reports
    assert (first / "dvc.lock").read_bytes() == before["dvc.lock"]
    for folder in ("metrics", "reports"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file():
                rel = path.relative_to(REPO)
                assert (first / rel).read_bytes() == path.read_bytes(), f"{rel} differs from what is committed"
    shown = dvc(first, "metrics", "show").stdout
    assert "median_ape" in shown and "key_number" in shown
    assert all(len(line) < 1500 for line in shown.splitlines())  # headline figures, not whole tables

    storage = tmp_path / "storage"
    dvc(first, "remote", "modify", "--local", "local", "url", str(storage))
    dvc(first, "push")
    second = _clone(tmp_path / "second")
    dvc(second, "remote", "modify", "--local", "local", "url", str(storage))
    dvc(second, "pull")
    assert "up to date" in dvc(second, "status").stdout
    assert "Running stage" not in dvc(second, "repro").stdout  # nothing recomputed
    # the restored warehouse opens (its catalog rebuilt from the Parquet catalog)
    summary = subprocess.run(
        [str(BIN / "hermes-sim"), "warehouse", "summary", "-w", str(second / ".hermes")],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert summary.returncode == 0 and "kernel_samples" in summary.stdout, summary.stderr

    silicon = second / "samples/e2e/silicon_h100.csv"
    silicon.write_text("".join(silicon.read_text().splitlines(keepends=True)[:-1]))  # one measured row fewer
    status = dvc(second, "status").stdout
    assert "validate_silicon" in status and "ingest:" not in status
    rerun = dvc(second, "repro").stdout
    assert "Running stage 'validate_silicon'" in rerun
    assert "Running stage 'ingest'" not in rerun and "Running stage 'calibrate@" not in rerun
