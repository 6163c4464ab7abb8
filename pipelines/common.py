"""What every `hermes-sim` command shares: consoles (results to stdout, diagnostics to stderr), the warehouse
option, one-line errors with exit status 2, tables, strict JSON."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..warehouse.store import ENV_VAR

log = logging.getLogger("hermes_sim")
# markup off: results and messages hold brackets (`pip install 'hermes-sim[bench]'`, list reprs) that rich
# would take for styles and drop; a styled line asks for markup itself
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200, highlight=False, markup=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)

WarehouseOpt = Annotated[
    Path | None,
    typer.Option(
        "--warehouse",
        "-w",
        envvar=ENV_VAR,
        help=f"Warehouse directory (default: ./.hermes, or ${ENV_VAR}).",
        show_default=False,
        file_okay=False,
    ),
]
# Dask: a local cluster of this many worker processes, or an existing scheduler, or none
WorkersOpt = Annotated[int | None, typer.Option(help="Local Dask workers (default 2).")]
SchedulerOpt = Annotated[str | None, typer.Option(help="An existing Dask scheduler, e.g. tcp://HOST:8786.")]
SerialOpt = Annotated[bool, typer.Option(help="No Dask: run the tasks one after another here.")]
FORMATS = ("text", "json")


@contextmanager
def dask_unless_serial(workers: int | None, scheduler: str | None, serial: bool) -> Iterator:
    """A Dask client (a local cluster of `workers`, or the scheduler at `scheduler`), or None with `serial`."""
    if serial:
        yield None
        return
    from ..replay.parallel import dask_client

    with dask_client(workers, scheduler) as client:
        yield client


def check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    if fmt not in allowed:
        err.print(f"[bold red]error:[/] --format must be one of {escape(', '.join(allowed))}, not {fmt!r}", markup=True)
        raise typer.Exit(2)
    return fmt


@contextmanager
def errors(scenario: Path | None = None) -> Iterator[None]:
    """Known failures become one line on stderr and exit status 2; nothing half-written stays behind. A scenario
    error found while running (a client's log missing, say) names the scenario file it came from."""
    import duckdb

    from ..replay.errors import ScenarioError
    from ..warehouse.batch import IngestError
    from ..warehouse.store import WarehouseBusy

    try:
        try:
            yield
        except ScenarioError as e:
            if scenario is None or e.path is not None:
                raise
            raise e.at(str(scenario)) from e
    except (
        IngestError,
        FileNotFoundError,
        ValueError,
        PermissionError,
        WarehouseBusy,
        ConnectionError,
        duckdb.Error,
    ) as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True)
        raise typer.Exit(2) from e


def print_table(title: str | None, columns: list[str], rows: list[tuple]) -> None:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in r))
    out.print(table)


def write_json(doc) -> None:
    from ..replay.outputs.jsonout import dumps

    sys.stdout.write(dumps(doc) + "\n")
