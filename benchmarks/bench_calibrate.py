"""Calibration speed and fidelity on the real data in ../shared/data.

    python benchmarks/bench_calibrate.py [--shared ../shared/data] [--devices h100_sxm a100_sxm]

Builds a warehouse of the AIConfigurator trees and Vidur profiles (or reads --warehouse), then per device:
- calibrate_command_s: the documented command `hermes-sim calibrate --device D` as a whole process pinned to
  one core, best and median of --runs (fit, shape-block hold-out, printed score, plots), target <= 60 s on 2
  cores; headline figure `calibrate_<device>_s` (the best run);
- fit_s: fitting every op family (one model per family, dtype and framework);
- the held-out error table of roofline / calibrated / random forest over all splits (needs scikit-learn),
  written to benchmarks/results/calibration.md, and the target rows printed as JSON:
  shape_block on the model-catalog shapes (targets: GEMM bf16/fp8 and attention median <= 4%, p90 <= 12%;
  NCCL all-reduce median <= 5%) and extrapolation (calibrated p90 <= roofline p90 / 2, and below the forest's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss, update_headline

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("HERMES_SHARED_DATA", REPO.parent / "shared/data"))
    )
    ap.add_argument("--devices", nargs="+", default=["h100_sxm", "a100_sxm"])
    ap.add_argument("--warehouse", type=Path, help="An ingested warehouse to read instead of building one.")
    ap.add_argument("--runs", type=int, default=3, help="Runs of the calibrate command per device.")
    ap.add_argument("--command-only", action="store_true", help="Only time the calibrate command.")
    args = ap.parse_args()

    from hermes_sim.calibrate import artifacts
    from hermes_sim.calibrate.catalog import device
    from hermes_sim.calibrate.evaluate import evaluate_device
    from hermes_sim.calibrate.report import markdown
    from hermes_sim.ingest.runner import ingest
    from hermes_sim.warehouse.store import Warehouse

    hw = args.shared / "hardware"
    out = {"devices": {}}
    all_rows = []
    with tempfile.TemporaryDirectory() as d:
        wh = args.warehouse or Path(d) / "wh"
        if args.warehouse is None:
            with Warehouse(wh) as w:
                t0 = time.perf_counter()
                ingest(w, [hw / "aiconfigurator/systems/data", hw / "vidur"], progress=False)
                out["ingest_s"] = round(time.perf_counter() - t0, 1)
        for name in args.devices:
            pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
            command = [*pin, "hermes-sim", "calibrate", "--device", name, "-w", str(wh)]
            runs = sorted(peak_rss(command)[0] for _ in range(args.runs))
            out["devices"][name] = {
                "calibrate_command_s": {"best": round(runs[0], 1), "median": round(statistics.median(runs), 1)},
                "pinned_to_one_core": bool(pin),
            }
            update_headline({f"calibrate_{name}_s": round(runs[0], 1)})
        if args.command_only:
            json.dump(out, sys.stdout, indent=1)
            sys.stdout.write("\n")
            return
        with Warehouse(wh, read_only=True) as w:
            for name in args.devices:
                dev = device(name)
                t0 = time.perf_counter()
                doc = artifacts.fit_device(w, dev)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                rows = evaluate_device(w, dev)
                eval_s = time.perf_counter() - t0
                all_rows += rows
                targets = [
                    r
                    for r in rows
                    if r["subset"] == "catalog"
                    and (
                        (
                            r["split"] == "shape_block"
                            and r["family"] in ("gemm", "attention_prefill", "attention_decode")
                            and r["dtype"] in ("bfloat16", "fp8")
                        )
                        or (r["split"] == "shape_block" and r["family"] == "all_reduce" and r["framework"] == "nccl")
                        or (r["split"] == "extrapolation" and r["dtype"] in ("bfloat16", "fp8"))
                    )
                ]
                out["devices"][name] |= {
                    "fit_s_including_shape_block_holdout_fits": round(fit_s, 1),
                    "models": len(doc["models"]),
                    "skipped": len(doc["skipped"]),
                    "evaluate_s": round(eval_s, 1),
                    "targets": [
                        {
                            k: r[k]
                            for k in ("family", "dtype", "framework", "split", "model", "n", "median_ape", "p90_ape")
                        }
                        for r in targets
                    ],
                }
    results = REPO / "benchmarks/results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "calibration.md").write_text(markdown(all_rows))
    (results / "calibration.json").write_text(json.dumps(all_rows, indent=1))
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
