"""The documented Python API, as a notebook would use it."""

from __future__ import annotations

from pathlib import Path

from conftest import SAMPLES


def test_ingest_calibrate_replay_from_python(tmp_path: Path):
    from hermes_sim.api import calibrate, ingest, load_scenario, replay

    wh = tmp_path / "wh"
    report = ingest([SAMPLES / "hardware/aiconfigurator/systems/data/h100_sxm"], warehouse=wh)
    assert report.rows_accepted > 0 and not report.already
    again = ingest([SAMPLES / "hardware/aiconfigurator/systems/data/h100_sxm"], warehouse=wh)
    assert not again.committed and again.already
    cal = calibrate("h100_sxm", warehouse=wh)
    assert cal.fitted > 0 and any(r["model"] == "calibrated" for r in cal.rows)
    scenario = load_scenario(SAMPLES.parent / "replay/scenarios/bundled.yaml", ["source.limit=200"])
    result = replay(
        scenario, warehouse=wh, log=str(SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
    )
    assert len(result.requests) == 200 and result.summary["completed"] == 200
    paths = result.write(tmp_path / "out")
    assert (tmp_path / "out/summary.json") in paths
