"""Ingest throughput and peak memory on the real data in ../shared/data.

    python benchmarks/bench_ingest.py [--shared ../shared/data] [--repeat 3]

Cases:
- h100_tree: `hermes-sim ingest` of the whole H100 AIConfigurator tree into a fresh warehouse, as a fresh
  process (imports, great-expectations checks and the Parquet commit included). Target: <= 15 s on 2 cores.
- kineto_parse: the streaming trace parser on each Kineto trace, in-process after a warm-up; MB/s counts the
  uncompressed JSON. Peak memory is the RSS rise during one parse in a fresh process (warmed on the smallest
  trace) over that process before the parse. Targets:
  >= 50 MB/s and peak <= 3x the (uncompressed) file size.
- request_logs: `hermes-sim ingest` of every request log (Azure, Mooncake, RAGPulse, ServeGen) as a fresh process.
Prints one JSON document to stdout.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss

REPO = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("hermes-sim")


def _ingest_process(paths: list[Path]) -> dict:
    """`hermes-sim ingest` in a fresh process: wall time, throughput, peak RSS."""
    with tempfile.TemporaryDirectory() as d:
        wall, peak, out = peak_rss([str(EXE), "ingest", *map(str, paths), "--warehouse", f"{d}/wh", "--quiet"])
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    rows = int(out.split(": ")[1].split(" rows")[0])
    return {
        "wall_s": round(wall, 2),
        "input_mbytes": round(size / 1e6, 2),
        "mbytes_per_s": round(size / 1e6 / wall, 2),
        "rows": rows,
        "rows_per_s": round(rows / wall),
        "peak_rss_mbytes": round(peak / 1e6, 1),
        "summary": out.strip(),
    }


_PROBE = """
import sys, threading, time, psutil
from pathlib import Path
from hermes_sim.ingest.kineto import parse_trace
from hermes_sim.warehouse.batch import SourceBatch
warm, path = Path(sys.argv[1]), Path(sys.argv[2])
parse_trace(warm, SourceBatch(str(warm), "", "kineto", 0))  # imports and first-call set-up
proc, peak, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
base = proc.memory_info().rss
t = threading.Thread(target=sample)
t.start()
parse_trace(path, SourceBatch(str(path), "", "kineto", 0))
done.set()
t.join()
print(max(peak[0] - base, 0))
"""


def _kineto_parse(path: Path, repeat: int) -> dict:
    from hermes_sim.ingest.kineto import parse_trace
    from hermes_sim.warehouse.batch import SourceBatch

    raw_bytes = len(gzip.decompress(path.read_bytes())) if path.suffix == ".gz" else path.stat().st_size
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        batch = parse_trace(path, SourceBatch(str(path), "", "kineto", 0))
        best = min(best, time.perf_counter() - t0)
    rows = batch.tables["trace_events"].num_rows
    # memory: a fresh process, warmed on the smallest trace, then this one parsed once
    warm = path.parent / "triton_example__triton_example.json.gz"
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(warm), str(path)], capture_output=True, text=True, check=True
    )
    rise = int(probe.stdout.split()[-1])
    return {
        "file": path.name,
        "json_mbytes": round(raw_bytes / 1e6, 2),
        "gz_mbytes": round(path.stat().st_size / 1e6, 2),
        "parse_s": round(best, 3),
        "mbytes_per_s": round(raw_bytes / 1e6 / best, 1),
        "events_kept": rows,
        "peak_rise_mbytes": round(rise / 1e6, 1),
        "peak_over_json_size": round(rise / raw_bytes, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("HERMES_SHARED_DATA", REPO.parent / "shared/data"))
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = args.shared
    if not data.exists():
        sys.exit(f"no data at {data}")

    # warm the parser (imports, first-call set-up) so the timings measure the parse
    from hermes_sim.ingest.kineto import parse_trace
    from hermes_sim.warehouse.batch import SourceBatch

    warm = data / "hardware/kineto/triton_example__triton_example.json.gz"
    parse_trace(warm, SourceBatch(str(warm), "", "kineto", 0))

    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "kineto_parse": [_kineto_parse(p, args.repeat) for p in sorted((data / "hardware/kineto").glob("*.json*"))],
        "h100_tree": _ingest_process([data / "hardware/aiconfigurator/systems/data/h100_sxm"]),
        "kineto_ingest": _ingest_process([data / "hardware/kineto"]),
        "request_logs": _ingest_process([data / "requests"]),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
