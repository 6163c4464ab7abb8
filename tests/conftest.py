"""Shared fixtures. Core tests use the bundled samples; tests marked `shared` need ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hermes_sim.ingest.runner import ingest
from hermes_sim.warehouse.store import Warehouse

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SHARED = Path(os.environ.get("HERMES_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data)")
    return path


@pytest.fixture
def wh(tmp_path: Path):
    with Warehouse(tmp_path / "wh") as w:
        yield w


@pytest.fixture(scope="session")
def sample_warehouse(tmp_path_factory) -> Path:
    """The bundled samples ingested once; tests open it read-only."""
    root = tmp_path_factory.mktemp("samples") / "wh"
    with Warehouse(root) as w:
        ingest(w, [SAMPLES], progress=False)
    return root


@pytest.fixture(scope="session")
def calibrated_warehouse(sample_warehouse: Path, tmp_path_factory) -> Path:
    """The bundled samples with H100 and A100 cost models fitted (shape-block split only); tests read it."""
    from hermes_sim.calibrate.pipeline import calibrate_device

    root = tmp_path_factory.mktemp("calibrated") / "wh"
    shutil.copytree(sample_warehouse, root)
    for device in ("h100_sxm", "a100_sxm"):
        calibrate_device(root, device, splits=("shape_block",), random_forest=False)
    return root


def counts(w: Warehouse) -> dict[str, int]:
    tables = ("sources", "kernel_samples", "trace_events", "requests", "quarantine")
    return {t: w.query(f"SELECT count(*) FROM {t}")[1][0][0] for t in tables}


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix == ".parquet"}


def copy_sample(rel: str, dest: Path) -> Path:
    src = SAMPLES / rel
    target = dest / Path(rel).name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, target)
    return target
