"""Dask for real: a LocalCluster bound to loopback only, and a `dask scheduler` with two `dask worker`
processes started here, a worker killed mid-sweep; results always equal the serial run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import SAMPLES
from hermes_sim.replay.parallel import dask_client, run_sweep, sweep_points
from hermes_sim.replay.scenario import parse

BIN = Path(sys.executable).parent
AZURE = str(SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")


@pytest.fixture(scope="module")
def wh(calibrated_warehouse: Path) -> Path:
    return calibrated_warehouse


def points(tmp_path: Path, n_replicas=(1, 2, 3, 4)):
    base = parse(
        {
            "source": {"kind": "log", "log": AZURE, "limit": 1500},
            "pools": [{"device": "h100_sxm", "model": "llama-3.1-8b", "framework": "vllm", "step_overhead_us": 200.0}],
        }
    )
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"parameters:\n  pools.main.replicas: {list(n_replicas)}\n"
        "  pools.main.batching.max_batched_tokens: [512, 2048]\n"
    )
    return sweep_points(base, sweep)


def test_local_cluster_listens_on_loopback_only_and_not_on_the_dashboard_port():
    with dask_client(2) as client:
        family = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
        listening = [c for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in family]
        # without a dashboard nothing reads the workers' stack sampler: it does not run beside the replays
        sampling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    assert 8787 not in {c.laddr.port for c in listening}
    assert sampling and not any(sampling.values())


def _start_cluster(tmp_path: Path) -> tuple[subprocess.Popen, list[subprocess.Popen], str]:
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(sched_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    while not sched_file.exists() or not sched_file.read_text().strip():
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    workers = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
                "--no-nanny",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(2)
    ]
    return scheduler, workers, address


def test_a_real_scheduler_and_workers_equal_serial_even_when_a_worker_dies(wh: Path, tmp_path: Path):
    pts = points(tmp_path)
    serial = run_sweep(pts, wh, None, progress=False)
    scheduler, workers, address = _start_cluster(tmp_path)
    try:
        with dask_client(scheduler=address) as client:
            client.wait_for_workers(2)
            result: dict = {}

            def sweep():
                result["table"] = run_sweep(pts, wh, client, progress=False)

            thread = threading.Thread(target=sweep)
            thread.start()
            while not any(client.processing().values()):  # tasks are running on the workers
                time.sleep(0.05)
            workers[0].send_signal(signal.SIGKILL)  # mid-sweep: its tasks must be rerun elsewhere
            thread.join()
            assert workers[0].wait() != 0
        pd.testing.assert_frame_equal(result["table"], serial)
    finally:
        for p in [*workers, scheduler]:
            if p.poll() is None:
                p.terminate()
                p.wait()


def test_a_scheduler_that_does_not_answer_is_a_clear_error():
    with (
        pytest.raises(ConnectionError, match=r"no Dask scheduler answered at tcp://127\.0\.0\.1:9"),
        dask_client(scheduler="tcp://127.0.0.1:9"),
    ):
        pass


def test_partitioned_replay_returns_plain_data_and_equals_serial_under_load(wh: Path):
    """The race was a worker pickling a Replica whose shared cost tables another task was filling: parts now
    come back as frames and plain facts. Run with a CPU burner beside it, several times."""
    from hermes_sim.replay.parallel import simulate_partitioned
    from hermes_sim.replay.run import simulate

    sc = parse(
        {
            "source": {"kind": "log", "log": AZURE},
            "pools": [
                {
                    "device": "a100_sxm",
                    "model": "llama-2-70b",
                    "tp": 2,
                    "replicas": 4,
                    "dtype": "float16",
                    "framework": "vllm",
                    "max_model_len": 4096,
                    "step_overhead_us": 200.0,
                }
            ],
        }
    )
    serial = simulate(sc, wh)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with dask_client(2) as client:
            for _ in range(3):
                part = simulate_partitioned(sc, wh, client)
                pd.testing.assert_frame_equal(part["requests"], serial["requests"])
                assert part["summary"]["utilization"] == serial["summary"]["utilization"]
    finally:
        burner.kill()


def test_validate_silicon_and_bench_on_dask_workers_equal_their_serial_runs(wh: Path):
    """validate silicon runs each batch of its simulations (the rooflines, each calibration trial, the held-out rows)
    and validate bench each row's estimates as tasks on worker processes; rows, what was not expressed (in file
    order) and summary come back as the serial runs give them, to the bit."""
    from hermes_sim.replay.validate import validate
    from hermes_sim.replay.validate_bench import validate_bench

    def runs(client=None) -> list[str]:
        silicon = validate(SAMPLES / "e2e/silicon_h100.csv", wh, limit=8, client=client)  # --limit: writes nothing
        bench = validate_bench(SAMPLES / "e2e/llm_inference_bench", wh, limit=60, client=client)
        return [json.dumps(r, sort_keys=True, default=str) for r in (silicon, bench)]

    serial = runs()
    with dask_client(2) as client:
        parallel = runs(client)
    silicon, bench = (json.loads(r) for r in serial)
    assert silicon["summary"]["held_out_rows"] > 0 and bench["rows"] and bench["not_expressed"]
    assert parallel == serial
