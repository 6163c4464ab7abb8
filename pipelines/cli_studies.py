"""`hermes-sim study NAME`: one case study; `hermes-sim report`: reports/README.md from every section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..warehouse.store import default_location
from .cli import app
from .common import WarehouseOpt, err, errors, out

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@app.command("study")
def study(
    name: Annotated[str, typer.Argument(help="reasoning, rag, kv_tiers, disagg or tokens_per_dollar.")],
    data: Annotated[Path, typer.Option(help="A data root laid out like ../shared/data.")] = SAMPLES,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Default: reports/studies/NAME.")] = None,
    workers: Annotated[int, typer.Option(help="Local Dask workers (0: serial).")] = 2,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run one case study: its replays (as Dask tasks), a Markdown section with its finding, PNGs, every point
    as CSV and its headline metrics."""
    import contextlib

    from ..replay.parallel import dask_client
    from .studies import STUDIES
    from .studies.common import Study

    if name not in STUDIES:
        err.print(f"error: unknown study {name!r}; known: {', '.join(STUDIES)}")
        raise typer.Exit(2)
    target = out_dir or Path("reports/studies") / name
    with errors(), dask_client(workers) if workers else contextlib.nullcontext() as client:
        metrics = STUDIES[name](Study(Path(data), warehouse or default_location(), target, client))
    out.print(f"{metrics['title']}: {metrics['finding']}")


@app.command("report")
def report(
    reports: Annotated[Path, typer.Option(help="The reports folder (studies/ and validate_silicon/ inside).")] = Path(
        "reports"
    ),
) -> None:
    """Assemble reports/README.md: the validation's headline errors, then every case study's section."""
    parts = [
        "# hermes-sim report",
        "",
        "Reproduced by `dvc repro` from the raw data (the bundled samples by default; the full sets with "
        "`dvc repro -S ingest.path=../shared/data -S studies.data=../shared/data`).",
        "",
    ]
    summary = reports / "validate_silicon" / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        held, roof = s.get("held_out", {}), s.get("held_out_roofline", {})
        parts += [
            "## End-to-end fidelity (measured H100 serving runs, held-out half)",
            "",
            "| metric | calibrated engine | plain roofline |",
            "| --- | --- | --- |",
        ]
        for m in ("ttft", "tpot"):
            parts.append(
                f"| {m.upper()} median / p90 APE | {_pct(held.get(f'{m}_median_ape'))} / "
                f"{_pct(held.get(f'{m}_p90_ape'))} | {_pct(roof.get(f'{m}_median_ape'))} / "
                f"{_pct(roof.get(f'{m}_p90_ape'))} |"
            )
        parts += [
            "",
            f"{s.get('held_out_rows', 0)} held-out rows; {s.get('not_expressed', 0)} rows listed as not "
            "expressed, with reasons, in [validate_silicon/not_expressed.csv](validate_silicon/not_expressed.csv).",
            "",
        ]
    for section in sorted((reports / "studies").glob("*/section.md")):
        rel = section.parent.relative_to(reports).as_posix()
        text = section.read_text()
        text = text.replace("](", f"]({rel}/").replace(f"]({rel}/http", "](http")
        parts += [text, ""]
    (reports / "README.md").write_text("\n".join(parts).rstrip() + "\n")
    out.print(f"wrote {reports / 'README.md'}")


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, int | float) else "-"
