"""The repository itself: lint-clean, and the DVC pipeline reproduces on a fresh copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def test_ruff_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dvc_analytics_off_is_committed():
    assert "analytics = false" in (REPO / ".dvc" / "config").read_text()


def test_dvc_repro_on_a_fresh_clone(tmp_path: Path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # the working tree may hold changes not yet committed: test what is here
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in tracked.splitlines():
        src = REPO / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("HERMES_WAREHOUSE", None)
    result = subprocess.run([str(BIN / "dvc"), "repro", "--force"], cwd=clone, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (clone / ".hermes" / "catalog.duckdb").exists()
    assert any((clone / ".hermes" / "tables").rglob("*.parquet"))
