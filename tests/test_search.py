"""Deployment search: grid and successive halving, the content cache, constraints, bad spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLES
from hermes_sim.replay.errors import ScenarioError
from hermes_sim.replay.scenario import parse
from hermes_sim.replay.search import frontiers, load_space, run_search, write

AZURE = str(SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")


@pytest.fixture(scope="module")
def wh(calibrated_warehouse: Path, tmp_path_factory) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("search") / "wh"
    shutil.copytree(calibrated_warehouse, root)  # its own cache
    return root


def base():
    return parse(
        {
            "source": {"kind": "log", "log": AZURE, "rate_scale": 4.0},
            "pools": [
                {
                    "name": "llm",
                    "device": "h100_sxm",
                    "model": "llama-3.1-8b",
                    "framework": "vllm",
                    "step_overhead_us": 200.0,
                }
            ],
        }
    )


def space(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(body)
    return path


GRID = """parameters:
  pools.llm.device: [h100_sxm, a100_sxm]
  pools.llm.replicas: [1, 2, 3, 4]
constraints: {ttft_p99_ms: 3000, tpot_p99_ms: 100, max_devices: 4}
"""


def test_grid_search_finds_the_best_point_and_caches_every_replay(wh: Path, tmp_path: Path):
    sp = load_space(space(tmp_path, GRID))
    found, table, seconds = run_search(base(), sp, wh, progress=False)
    assert len(table) == 8 and found.replays == 8
    report = write(found, table, tmp_path / "out", seconds)
    assert report["best"]["found"] and (tmp_path / "out/pareto.png").stat().st_size > 5000
    best = report["best"]["figures"]
    feasible = table[table.feasible]
    assert best["tokens_per_dollar"] == feasible.tokens_per_dollar.max()
    assert best["ttft_p99_ms"] <= 3000 and best["devices"] <= 4
    front = report["frontiers"]["tokens_per_dollar_vs_ttft_p99"]
    assert front and all(0 < r["calibrated_share"] <= 1 for r in front)
    again, table2, _ = run_search(base(), sp, wh, progress=False)
    assert again.replays == 0 and again.cached == 8 and table2.equals(table)  # nothing recomputed
    changed = load_space(space(tmp_path, GRID.replace("[1, 2, 3, 4]", "[1, 2, 3, 4, 5]")))
    third, _, _ = run_search(base(), changed, wh, progress=False)
    assert third.replays == 2 and third.cached == 8  # only the new points


def test_halving_finds_the_grid_frontier_with_fewer_whole_log_replays(wh: Path, tmp_path: Path):
    grid_sp = load_space(space(tmp_path, GRID))
    _, grid_table, _ = run_search(base(), grid_sp, wh, progress=False)
    halving = load_space(space(tmp_path, GRID + "strategy: halving\nhalving: {eta: 2, rounds: 3}\n"))
    found, table, _ = run_search(base(), halving, wh, progress=False)
    assert found.replayed_share < len(found.points)  # fewer whole-log equivalents than the grid's 8
    grid_front = {
        (r["pools.llm.device"], r["pools.llm.replicas"]) for r in frontiers(grid_table)["tokens_per_dollar_vs_ttft_p99"]
    }
    halving_front = {
        (r["pools.llm.device"], r["pools.llm.replicas"]) for r in frontiers(table)["tokens_per_dollar_vs_ttft_p99"]
    }
    assert halving_front <= grid_front and halving_front


def test_a_constraint_no_point_meets_names_the_nearest(wh: Path, tmp_path: Path):
    sp = load_space(space(tmp_path, GRID.replace("ttft_p99_ms: 3000", "ttft_p99_ms: 0.001")))
    found, table, seconds = run_search(base(), sp, wh, progress=False)
    report = write(found, table, tmp_path / "o", seconds)
    assert not report["best"]["found"] and len(report["best"]["nearest"]) == 3
    assert report["best"]["nearest"][0]["excess"] <= report["best"]["nearest"][1]["excess"]


def test_bad_spaces_are_clear_errors(wh: Path, tmp_path: Path):
    with pytest.raises(ScenarioError, match="has no values: the space is empty"):
        load_space(space(tmp_path, "parameters:\n  pools.llm.replicas: []\n"))
    with pytest.raises(ScenarioError, match="parameters"):
        load_space(space(tmp_path, "constraints: {max_devices: 4}\n"))
    sp = load_space(space(tmp_path, "parameters:\n  pools.llm.replicaz: [1]\n"))
    with pytest.raises(ScenarioError, match="'replicaz' is not a field here"):
        run_search(base(), sp, wh, progress=False)
