"""The `hermes-sim` command. Results go to stdout; diagnostics go through logging to stderr (warnings only by
default; -v adds progress notes, -vv debugging). Commands live in modules by concern: this one (ingest, the
warehouse, the catalogs), cli_calibrate.py, cli_replay.py, main_job.py."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..warehouse.store import Warehouse, default_location
from .common import WarehouseOpt, errors, log, out, print_table, write_json

app = typer.Typer(
    help="hermes-sim: trace-replay and calibration pipeline for multi-stage LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
warehouse_app = typer.Typer(help="Inspect the warehouse.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(warehouse_app, name="warehouse")

QUIET_LIBRARIES = ("great_expectations", "distributed", "asyncio", "matplotlib", "tornado", "bokeh", "numexpr")


def _version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More diagnostics (-vv: debug).")] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def _skipped_summary(skipped: list[tuple[Path, str]]) -> str:
    if not skipped:
        return "0 skipped"
    by_reason: dict[str, list[str]] = {}
    for path, why in skipped:
        by_reason.setdefault(why, []).append(path.name)
    parts = []
    for why, names in by_reason.items():
        shown = ", ".join(sorted(set(names))[:3]) + (", ..." if len(set(names)) > 3 else "")
        parts.append(f"{len(names)} {why} ({shown})")
    return f"{len(skipped)} skipped: " + "; ".join(parts)


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
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="The part the profiles were measured on, for sources that do not name it (a Vidur compute "
            "folder names only the GPU family). A catalog id; see `hermes-sim devices`.",
        ),
    ] = None,
    fresh: Annotated[
        bool, typer.Option(help="Replace the warehouse's data with exactly these sources (models and reports stay).")
    ] = False,
) -> None:
    """Ingest profiling traces, perf databases and request logs into the warehouse, all or nothing. The
    warehouse stays readable while files are parsed; it is locked only for the commit."""
    from ..ingest.runner import ingest as run_ingest

    root = warehouse or default_location()
    with errors():
        if device is not None:
            from ..calibrate.catalog import device as catalog_device

            catalog_device(device)  # an unknown id is an error naming the known ones
        if fresh:
            Warehouse.clear_data(root)
        params = {"log_name": log_name, "seed": seed, "device": device}
        report = run_ingest(root, paths, fmt, params, progress=not quiet)
    for b in report.committed:
        log.info(
            "%s: %s, %d rows%s",
            b.path,
            b.format,
            b.rows_accepted,
            f", {len(b.quarantine)} quarantined" if b.quarantine else "",
        )
    for path, why in report.skipped:
        log.info("skipped %s: %s", path, why)
    out.print(
        f"ingested {len(report.committed)} file(s): {report.rows_accepted} rows accepted, "
        f"{report.rows_quarantined} quarantined; {len(report.already)} already in the warehouse "
        f"(no-op); {_skipped_summary(report.skipped)}; warehouse {root}"
    )


@warehouse_app.command("summary")
def warehouse_summary(
    warehouse: WarehouseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Rows per table, device, op family and request log."""
    from ..warehouse.summary import summarize

    with errors(), Warehouse(warehouse, read_only=True) as wh:
        sections = summarize(wh)
    if as_json:
        write_json(
            {title: [dict(zip(cols, row, strict=True)) for row in rows] for title, (cols, rows) in sections.items()}
        )
        return
    for title, (cols, rows) in sections.items():
        print_table(title, cols, rows)
        out.print()


@warehouse_app.command("sql")
def warehouse_sql(
    query: Annotated[str, typer.Argument(help="A SELECT query over the warehouse tables and views.")],
    warehouse: WarehouseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records instead of a table.")] = False,
) -> None:
    """Run a read-only SQL query (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) and print the result.
    Nothing can be written: other statements are refused, file access is limited to the warehouse's committed
    tables and the configuration is locked."""
    with errors(), Warehouse(warehouse, read_only=True) as wh:
        cols, rows = wh.user_query(query)
    if as_json:
        write_json([dict(zip(cols, r, strict=True)) for r in rows])
    else:
        print_table(None, cols, rows)


# ---- catalogs ----------------------------------------------------------------------------------------
@app.command("devices")
def list_devices(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The device catalog: GPUs, ASICs and CPUs with their key figures and the source of each."""
    from ..calibrate.catalog import devices

    rows = []
    for name, d in devices().items():
        rows.append(
            {
                "device": name,
                "class": d.device_class,
                "kind": d.kind,
                "bf16_tflops": round(d.flops("bfloat16") / 1e12, 1),
                "memory_gib": round(d.memory_bytes / 2**30),
                "memory_tb_s": round(d.memory_bandwidth / 1e12, 3),
                "scale_up_gb_s": round(d.scale_up_link().bandwidth / 1e9),
                "per_node": d.devices_per_node,
                "watts": d.power_watts,
                "usd_per_hour": d.price_per_hour_usd,
                "sources": d.sources,
            }
        )
    _catalog(rows, as_json)


@app.command("models")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The model catalog: shapes as published in each model's config."""
    from ..calibrate.catalog import models

    rows = [
        {
            "model": n,
            "role": m.role,
            "layers": m.layers,
            "hidden": m.hidden,
            "heads": m.heads,
            "kv_heads": m.kv_heads,
            "experts": m.experts,
            "params_b": round(m.weight_bytes(1.0) / 1e9, 2),
            "source": m.source,
        }
        for n, m in models().items()
    ]
    _catalog(rows, as_json)


@app.command("tiers")
def list_tiers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The memory-tier catalog for KV placement: bandwidth, latency, capacity and their source."""
    from ..calibrate.catalog import tiers

    rows = [
        {
            "tier": n,
            "gb_s": t.bandwidth / 1e9,
            "latency_us": t.latency_s * 1e6,
            "capacity_gib": round(t.capacity_bytes / 2**30),
            "source": t.source,
        }
        for n, t in tiers().items()
    ]
    _catalog(rows, as_json)


def _catalog(rows: list[dict], as_json: bool) -> None:
    if as_json:
        write_json(rows)
        return
    cols = [c for c in rows[0] if c != "sources"]
    print_table(None, cols, [tuple(r[c] for c in cols) for r in rows])
    if "sources" in rows[0]:
        out.print()
        for r in rows:
            out.print(f"{r['device']}: " + "; ".join(f"{k}: {v}" for k, v in r["sources"].items()))


from . import cli_calibrate, cli_replay, cli_studies, main_job  # noqa: E402, F401  (their commands register on `app`)
