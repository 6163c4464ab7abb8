"""The `hermes-sim` command. Results go to stdout; diagnostics go through logging to stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import duckdb
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .. import __version__
from ..warehouse.batch import IngestError
from ..warehouse.store import ENV_VAR, Warehouse, default_location

log = logging.getLogger("hermes_sim")
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

app = typer.Typer(
    help="hermes-sim: trace-replay and calibration pipeline for multi-stage LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
warehouse_app = typer.Typer(help="Inspect the warehouse.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BUNDLED_SCENARIO = Path(__file__).resolve().parent.parent / "replay" / "scenarios" / "bundled.yaml"

WarehouseOpt = Annotated[
    Path | None,
    typer.Option(
        "--warehouse",
        "-w",
        envvar=ENV_VAR,
        help=f"Warehouse directory (default: ./.hermes, or ${ENV_VAR}).",
        show_default=False,
    ),
]


@app.callback()
def main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More diagnostics (-vv: debug).")] = 0,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_time=False, show_path=False)],
        force=True,
    )
    for noisy in ("great_expectations", "distributed", "asyncio", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)


@contextmanager
def _errors() -> Iterator[None]:
    """Known failures become one line on stderr and exit status 2; nothing half-written stays behind."""
    try:
        yield
    except (IngestError, FileNotFoundError, ValueError, PermissionError, duckdb.Error) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True)
        raise typer.Exit(2) from e


def _print_table(title: str, columns: list[str], rows: list[tuple]) -> None:
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    out.print(table)


def _plain_table(columns: list[str], rows: list[tuple]) -> str:
    cells = [columns] + [["NULL" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.", show_default=False)],
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Force a format instead of detecting it from the content."),
    ] = None,
    warehouse: WarehouseOpt = None,
    log_name: Annotated[str | None, typer.Option(help="Name request logs this (default: from the file).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for logs generated from distributions (ServeGen).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Ingest profiling traces, perf databases and request logs into the warehouse, all or nothing."""
    from ..ingest.runner import ingest as run_ingest

    with _errors(), Warehouse(warehouse) as wh:
        report = run_ingest(wh, paths, fmt, {"log_name": log_name, "seed": seed}, progress=not quiet)
        for b in report.committed:
            log.info(
                "%s: %s, %d rows%s",
                b.path,
                b.format,
                b.rows_accepted,
                f", {len(b.quarantine)} quarantined" if b.quarantine else "",
            )
        out.print(
            f"ingested {len(report.committed)} file(s): {report.rows_accepted} rows accepted, "
            f"{report.rows_quarantined} quarantined; {len(report.already)} already in the warehouse "
            f"(no-op); {len(report.skipped)} skipped; warehouse {wh.root}"
        )


@warehouse_app.command("summary")
def warehouse_summary(
    warehouse: WarehouseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Rows per table, device, op family and request log."""
    from ..warehouse.summary import summarize

    with _errors(), Warehouse(warehouse, read_only=True) as wh:
        sections = summarize(wh)
    if as_json:
        doc = {title: [dict(zip(cols, row, strict=True)) for row in rows] for title, (cols, rows) in sections.items()}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    for title, (cols, rows) in sections.items():
        _print_table(title, cols, rows)
        out.print()


@warehouse_app.command("sql")
def warehouse_sql(
    query: Annotated[str, typer.Argument(help="A SQL query over the warehouse tables and views.")],
    warehouse: WarehouseOpt = None,
) -> None:
    """Run a read-only SQL query and print the result as a plain table."""
    with _errors(), Warehouse(warehouse, read_only=True) as wh:
        cols, rows = wh.user_query(query)
    sys.stdout.write(_plain_table(cols, rows) + "\n")


MAIN_JOB_DEVICES = ("h100_sxm", "a100_sxm")


@app.command("run")
def run_main_job(warehouse: WarehouseOpt = None) -> None:
    """The main job on the embedded defaults: ingest the bundled real samples, calibrate the H100 and A100
    cost models on them, replay the bundled Azure log on H100s, and print the summary of each step."""
    from ..calibrate.pipeline import calibrate_device
    from ..calibrate.report import markdown
    from ..replay.run import simulate
    from ..replay.scenario import load

    ingest([SAMPLES], None, warehouse, None, 0, quiet=False)
    warehouse_summary(warehouse, as_json=False)
    rows = []
    with _errors():
        for device in MAIN_JOB_DEVICES:
            result = calibrate_device(
                warehouse or default_location(), device, splits=("shape_block",), random_forest=False
            )
            log.info("%s: %d models in %.1f s", device, result.fitted, result.fit_seconds)
            rows += [r for r in result.rows if r["subset"] == "catalog"]
        sys.stdout.write(markdown(rows))
        scenario = load(BUNDLED_SCENARIO)
        scenario.source.log = str(SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
        summary = simulate(scenario, warehouse or default_location())["summary"]
    sys.stdout.write("\n## Replay: " + scenario.name + "\n\n" + json.dumps(summary, indent=1) + "\n")


calibrate_app = typer.Typer(help="Fit cost models per device and report their fidelity.")
app.add_typer(calibrate_app, name="calibrate")


@calibrate_app.callback(invoke_without_command=True)
def calibrate(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option("--device", "-d", help="Device id from the catalog.")] = None,
    family: Annotated[str | None, typer.Option("--family", help="Only this op family.")] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split",
            help="Evaluation split(s): random, shape_block, extrapolation, cross_framework, "
            "cross_source (default: all).",
        ),
    ] = None,
    warehouse: WarehouseOpt = None,
    forest: Annotated[bool, typer.Option(help="Score the random-forest baseline (needs scikit-learn).")] = True,
    metrics: Annotated[Path | None, typer.Option(help="Also write the held-out metrics JSON here (DVC).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits and cross-validation.")] = 0,
) -> None:
    """Fit one cost model per (op family, dtype, framework) of a device and score it on held-out data."""
    if ctx.invoked_subcommand is not None:
        return
    if device is None:
        err.print("error: --device is required (or use `hermes-sim calibrate report`)")
        raise typer.Exit(2)
    from ..calibrate.pipeline import calibrate_device

    with _errors():
        result = calibrate_device(
            warehouse or default_location(),
            device,
            family=family,
            splits=tuple(split) if split else None,
            random_forest=forest,
            metrics_path=metrics,
            seed=seed,
        )
    out.print(result.summary)


@calibrate_app.command("report")
def calibrate_report(
    device: Annotated[str | None, typer.Option("--device", "-d", help="Only this device.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    warehouse: WarehouseOpt = None,
) -> None:
    """Held-out error of roofline, calibrated and random-forest models, per device, family and split."""
    from ..calibrate.report import load_rows, markdown

    if fmt not in ("markdown", "json"):
        err.print(f"error: --format must be markdown or json, not {fmt!r}")
        raise typer.Exit(2)
    rows = load_rows(warehouse or default_location(), device)
    if not rows:
        err.print("error: no calibration report yet; run `hermes-sim calibrate --device D` first")
        raise typer.Exit(2)
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    else:
        sys.stdout.write(markdown(rows))


profile_app = typer.Typer(help="Measure local hardware.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")


@profile_app.command("cpu")
def profile_cpu(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the Chrome-trace JSON.")] = Path(
        "hermes_cpu_profile.json"
    ),
    grid: Annotated[str, typer.Option(help="Shape grid: small (CI, ~10 s) or full.")] = "small",
    repeats: Annotated[int, typer.Option(help="Timed repetitions per shape.")] = 5,
) -> None:
    """Time GEMMs (numpy BLAS), memory streaming and brute-force vector search on this machine; write them
    as a PyTorch-profiler Chrome trace for `hermes-sim ingest` and `hermes-sim calibrate --device local_cpu`."""
    from ..calibrate import profile_cpu as prof

    with _errors():
        doc = prof.profile(grid, repeats)
        path = prof.write(doc, out_path)
    out.print(f"wrote {len(doc['traceEvents'])} events to {path}")


@app.command("replay")
def replay(
    config: Annotated[Path, typer.Argument(help="Scenario YAML.", exists=True, dir_okay=False)],
    log_path: Annotated[
        str | None, typer.Option("--log", help="Request-log file (ingested on the fly) or a log name in the warehouse.")
    ] = None,
    sweep: Annotated[
        Path | None, typer.Option(help="Sweep YAML: {parameters: {dotted.path: [values]}}, run as Dask tasks.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local Dask workers (default 2) for --sweep / --partition.")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="An existing Dask scheduler, e.g. tcp://HOST:8786.")] = None,
    partition: Annotated[
        bool, typer.Option(help="Split a round-robin log across replicas as Dask tasks (same result as serial).")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write requests / timeline Parquet and summary here.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Summary as text or json on stdout.")] = "text",
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a scenario field: dotted.path=value (repeatable; YAML values)."),
    ] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Simulate serving request logs (or synthetic / closed-loop sources) through a scenario's pools and
    pipelines."""
    from ..replay.run import simulate
    from ..replay.scenario import load

    root = warehouse or default_location()
    with _errors():
        scenario = load(config, sets or ())
        if log_path:
            if len(scenario.clients) != 1:
                raise ValueError(f"--log sets the one client's log; {config} has {len(scenario.clients)} clients")
            scenario.source.kind, scenario.source.log = "log", log_path
        if sweep:
            from ..replay.parallel import dask_client, run_sweep, sweep_points

            points = sweep_points(scenario, sweep)
            with dask_client(workers, scheduler) as client:
                table = run_sweep(points, root, client)
            if out_dir:
                out_dir.mkdir(parents=True, exist_ok=True)
                table.to_parquet(out_dir / "sweep.parquet", index=False)
            if fmt == "json":
                sys.stdout.write(table.to_json(orient="records", indent=1) + "\n")
            else:
                sys.stdout.write(_plain_table(list(table.columns), list(table.itertuples(index=False))) + "\n")
            return
        if partition:
            from ..replay.parallel import dask_client, simulate_partitioned

            with dask_client(workers, scheduler) as client:
                result = simulate_partitioned(scenario, root, client)
        else:
            result = simulate(scenario, root, progress=True)
    if out_dir:
        from ..replay.outputs import write

        write(result, out_dir)
    if fmt == "json":
        sys.stdout.write(json.dumps(result["summary"], indent=1) + "\n")
    else:
        s = result["summary"]
        out.print(
            f"{s['completed']} completed, {s['rejected']} rejected in {s['simulated_span_s']} s simulated; "
            f"TTFT p50/p99 {s['ttft_ms'].get('p50')}/{s['ttft_ms'].get('p99')} ms, TPOT p50/p99 "
            f"{s['tpot_ms'].get('p50')}/{s['tpot_ms'].get('p99')} ms, {s['throughput_output_tokens_per_s']} tok/s"
        )


validate_app = typer.Typer(help="Compare predictions with measured end-to-end results.", no_args_is_help=True)
app.add_typer(validate_app, name="validate")


@validate_app.command("silicon")
def validate_silicon(
    path: Annotated[Path, typer.Argument(help="A silicon CSV (AIConfigurator layout).", exists=True, dir_okay=False)],
    fmt: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    limit: Annotated[int | None, typer.Option(help="Simulate at most this many rows (calibrates nothing).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write rows.csv, not_expressed.csv, summary.json and a PNG here.")
    ] = None,
    metrics: Annotated[Path | None, typer.Option(help="Write the summary JSON here (a DVC metrics file).")] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Predicted vs measured TTFT / TPOT of every dense, aggregated-serving row; the rest listed with reasons.
    Calibrates each (device, framework)'s per-iteration overhead on half the rows and reports the other half.
    JSON rows carry id, model, device, tp, isl, osl, concurrency, measured/predicted/roofline ttft and tpot (ms),
    held_out and step_overhead_us; the summary the held-out median / p90 absolute percentage errors."""
    from ..replay.validate import validate, write_report

    with _errors():
        result = validate(path, warehouse or default_location(), limit, progress=True)
    if out is not None:
        for p in write_report(result, out):
            log.info("wrote %s", p)
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps(result["summary"], indent=1) + "\n")
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=1, default=str) + "\n")
        return
    lines = ["| id | tp | isl | osl | conc | TTFT meas / pred (ms) | TPOT meas / pred (ms) |", "| --- " * 7 + "|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['id']} | {r['tp']} | {r['isl']} | {r['osl']} | {r['concurrency']} | "
            f"{r['measured_ttft_ms']:.0f} / {r['predicted_ttft_ms']:.0f} | "
            f"{r['measured_tpot_ms']:.1f} / {r['predicted_tpot_ms']:.1f} |"
        )
    sys.stdout.write("\n".join(lines) + "\n\n" + json.dumps(result["summary"]) + "\n")
