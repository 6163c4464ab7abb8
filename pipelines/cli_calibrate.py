"""`hermes-sim calibrate`, `calibrate evaluate`, `calibrate report`, `profile cpu`, `validate silicon`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..warehouse.store import default_location
from .cli import app
from .common import (
    SchedulerOpt,
    SerialOpt,
    WarehouseOpt,
    WorkersOpt,
    check_format,
    dask_unless_serial,
    err,
    errors,
    log,
    out,
    write_json,
)

calibrate_app = typer.Typer(help="Fit cost models per device and report their fidelity.", rich_markup_mode=None)
app.add_typer(calibrate_app, name="calibrate")

DeviceOpt = Annotated[str | None, typer.Option("--device", "-d", help="Device id from the catalog.")]
FamilyOpt = Annotated[str | None, typer.Option("--family", help="Only this op family.")]


@calibrate_app.callback(invoke_without_command=True)
def calibrate(
    ctx: typer.Context,
    device: DeviceOpt = None,
    family: FamilyOpt = None,
    warehouse: WarehouseOpt = None,
    metrics: Annotated[Path | None, typer.Option(help="Also write the held-out metrics JSON here (DVC).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits and cross-validation.")] = 0,
) -> None:
    """Fit one cost model per (op family, dtype, framework) of a device and print its error on held-out
    shapes (shape-block split) beside the plain roofline. `calibrate evaluate` runs every split and the
    random-forest baseline."""
    if ctx.invoked_subcommand is not None:
        return
    if device is None:
        err.print("error: --device is required (see `hermes-sim devices`), or use `calibrate evaluate` / `report`")
        raise typer.Exit(2)
    from ..calibrate.pipeline import calibrate_device

    with errors():
        result = calibrate_device(
            warehouse or default_location(),
            device,
            family=family,
            splits=("shape_block",),
            random_forest=False,
            metrics_path=metrics,
            seed=seed,
            progress=True,
        )
    out.print(result.summary)


@calibrate_app.command("evaluate")
def calibrate_evaluate(
    device: DeviceOpt = None,
    family: FamilyOpt = None,
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split", help="random, shape_block, extrapolation, cross_framework, cross_source (default: all)."
        ),
    ] = None,
    warehouse: WarehouseOpt = None,
    forest: Annotated[bool, typer.Option(help="Score the random-forest baseline (needs scikit-learn).")] = True,
    metrics: Annotated[Path | None, typer.Option(help="Also write the held-out metrics JSON here (DVC).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits and cross-validation.")] = 0,
) -> None:
    """The full fidelity report: fit, then score on every split against the roofline and a Vidur-like random
    forest."""
    from ..calibrate.pipeline import calibrate_device

    if device is None:
        err.print("error: --device is required (see `hermes-sim devices`)")
        raise typer.Exit(2)
    with errors():
        result = calibrate_device(
            warehouse or default_location(),
            device,
            family=family,
            splits=tuple(split) if split else None,
            random_forest=forest,
            metrics_path=metrics,
            seed=seed,
            progress=True,
        )
    out.print(result.summary)


@calibrate_app.command("report")
def calibrate_report(
    device: DeviceOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="text (Markdown) or json.")] = "text",
    warehouse: WarehouseOpt = None,
) -> None:
    """Held-out error of roofline, calibrated and random-forest models, per device, family and split."""
    from ..calibrate.catalog import device as catalog_device
    from ..calibrate.report import load_rows, markdown

    check_format(fmt, ("text", "markdown", "json"))
    root = warehouse or default_location()
    with errors():
        if device is not None:
            catalog_device(device)  # an unknown name lists the known ones
    rows = load_rows(root, device)
    if not rows:
        err.print(
            f"error: no calibration report {'for ' + device + ' ' if device else ''}in {root} yet; run "
            f"`hermes-sim calibrate --device {device or 'D'}` first"
        )
        raise typer.Exit(2)
    if fmt == "json":
        write_json(rows)
    else:
        sys.stdout.write(markdown(rows))


profile_app = typer.Typer(help="Measure local hardware.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(profile_app, name="profile")


@profile_app.command("cpu")
def profile_cpu(
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Trace to write (default: <warehouse>/profiles/cpu.json).")
    ] = None,
    grid: Annotated[str, typer.Option(help="Shape grid: small (CI, ~10 s) or full.")] = "small",
    repeats: Annotated[int, typer.Option(help="Timed repetitions per shape.")] = 5,
    warehouse: WarehouseOpt = None,
) -> None:
    """Time GEMMs (numpy BLAS), memory streaming and vector search (brute force, and faiss flat / IVF / HNSW
    when faiss-cpu is installed) on this machine; write them as a PyTorch-profiler Chrome trace for
    `hermes-sim ingest` and `hermes-sim calibrate --device local_cpu`."""
    from ..calibrate import profile_cpu as prof

    path = out_path or (warehouse or default_location()) / "profiles" / "cpu.json"
    with errors():
        doc = prof.profile(grid, repeats)
        path = prof.write(doc, path)
    out.print(f"wrote {len(doc['traceEvents'])} events to {path}")


validate_app = typer.Typer(
    help="Compare predictions with measured end-to-end results.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(validate_app, name="validate")


@validate_app.command("silicon")
def validate_silicon(
    path: Annotated[Path, typer.Argument(help="A silicon CSV (AIConfigurator layout).", exists=True, dir_okay=False)],
    fmt: Annotated[str, typer.Option("--format", help="text (Markdown) or json.")] = "text",
    limit: Annotated[int | None, typer.Option(help="Simulate at most this many rows (calibrates nothing).")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Write rows.csv, not_expressed.csv, summary.json and a PNG here.", file_okay=False),
    ] = None,
    metrics: Annotated[Path | None, typer.Option(help="Write the summary JSON here (a DVC metrics file).")] = None,
    interval: Annotated[
        bool,
        typer.Option(
            help="Also replay each held-out row with its ops at the ends of their 90% prediction intervals and "
            "report the share of measurements inside (the cost models' uncertainty only)."
        ),
    ] = False,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    serial: SerialOpt = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Predicted vs measured TTFT / TPOT of every dense, aggregated-serving row; the rest listed with reasons.
    Calibrates each (device, framework)'s per-iteration overhead on half the rows and reports the other half.
    JSON rows carry id, model, device, tp, isl, osl, concurrency, measured/predicted/roofline ttft and tpot (ms),
    held_out and the serving loop's step_overhead_us, sequence_overhead_us and broadcast_overhead_us (per hop of
    the TP broadcast) and eager_layer_us (the least host time per layer of an iteration with prompt tokens); the
    summary the held-out median / p90 absolute percentage errors of TTFT, TPOT and the closed loop's throughput."""
    from ..replay.outputs.jsonout import dumps
    from ..replay.validate import validate, write_report

    check_format(fmt, ("text", "markdown", "json"))
    with errors(), dask_unless_serial(workers, scheduler, serial) as client:
        result = validate(path, warehouse or default_location(), limit, progress=True, interval=interval, client=client)
    if out_dir is not None:
        for p in write_report(result, out_dir):
            log.info("wrote %s", p)
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        s = result["summary"]
        held, roof = s.get("held_out") or {}, s.get("held_out_roofline") or {}
        head = {
            "held_out_rows": s.get("held_out_rows", 0),
            **{k: held.get(k) for k in ("ttft_median_ape", "tpot_median_ape", "throughput_median_ape")},
            **{f"roofline_{m}_median_ape": roof.get(f"{m}_median_ape") for m in ("ttft", "tpot", "throughput")},
        }
        coverage = s.get("held_out_interval_90_coverage") or {}
        head |= {f"interval_90_{k}": coverage[k] for k in ("ttft_coverage", "tpot_coverage") if k in coverage}
        metrics.write_text(dumps(head) + "\n")
    if fmt == "json":
        write_json(result)
        return
    lines = ["| id | tp | isl | osl | conc | TTFT meas / pred (ms) | TPOT meas / pred (ms) |", "| --- " * 7 + "|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['id']} | {r['tp']} | {r['isl']} | {r['osl']} | {r['concurrency']} | "
            f"{r['measured_ttft_ms']:.0f} / {r['predicted_ttft_ms']:.0f} | "
            f"{r['measured_tpot_ms']:.1f} / {r['predicted_tpot_ms']:.1f} |"
        )
    for r in result["not_expressed"]:
        lines.append(f"not expressed: {r['id']} (line {r.get('line')}): {r['reason']}")
    sys.stdout.write("\n".join(lines) + "\n\n" + dumps(result["summary"], indent=None) + "\n")


@validate_app.command("bench")
def validate_bench(
    path: Annotated[
        Path, typer.Argument(help="Argonne LLM-Inference-Bench folder (or its All_results.csv).", exists=True)
    ],
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    limit: Annotated[int | None, typer.Option(help="At most this many rows per file.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write rows.csv, not_expressed.csv, summary.json.", file_okay=False)
    ] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    serial: SerialOpt = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Predicted vs measured static-batch latency (and TTFT) of the Argonne LLM-Inference-Bench rows, through
    whatever tier each device has; errors per device and tier beside a plain roofline."""
    import pandas as pd

    from ..replay.outputs.jsonout import dumps
    from ..replay.validate_bench import validate_bench as run

    check_format(fmt)
    with errors(), dask_unless_serial(workers, scheduler, serial) as client:
        result = run(path, warehouse or default_location(), limit, client, progress=True)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(result["rows"]).to_csv(out_dir / "rows.csv", index=False)
        pd.DataFrame(result["not_expressed"]).to_csv(out_dir / "not_expressed.csv", index=False)
        (out_dir / "summary.json").write_text(dumps(result["summary"]) + "\n")
    if fmt == "json":
        write_json(result)
        return
    for metric, s in result["summary"].items():
        if not isinstance(s, dict) or "by_device_framework_and_tier" not in s:
            continue
        h = s["held_out"]
        if not h["rows"]:
            continue
        out.print(
            f"{metric}: {s['rows']} rows, {h['rows']} held out: median / p90 APE {h['median_ape']:.1%} / "
            f"{h['p90_ape']:.1%} (roofline {h['roofline']['median_ape']:.1%}, kernels without the serving "
            f"loop {h['kernels_only']['median_ape']:.1%})"
        )
        for g in s["by_device_framework_and_tier"]:
            out.print(
                f"  {g['device']:<16} {g['framework']:<14} {g['tier']:<20} {g['rows']:>4} rows  "
                f"{g['median_ape']:.1%} / {g['p90_ape']:.1%}  (roofline {g['roofline']['median_ape']:.1%})"
            )
    for fw, f in result["summary"]["serving_overheads"].items():
        out.print(
            f"serving loop of {fw} (fitted on {f['calibration_rows']} calibration rows): {f['step_overhead_us']} us "
            f"per iteration + {f['sequence_overhead_us']} us per sequence + {f['broadcast_overhead_us']} us per "
            "doubling of TP"
        )
    for file, frameworks in result["summary"].get("batch_size_read_as_prompt_batch", {}).items():
        out.print(
            f"{file}: {', '.join(frameworks)} served one sequence a row whatever its Batch Size (throughput x latency "
            "= its tokens): Batch Size read as the prompt batch, tokens prefilled an iteration"
        )
    out.print(f"{result['summary']['not_expressed']} rows not expressed (--out lists them with the reason)")
