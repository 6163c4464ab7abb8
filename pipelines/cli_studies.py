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
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Default: reports/studies/NAME.", file_okay=False)
    ] = None,
    workers: Annotated[int, typer.Option(help="Local Dask workers (0: serial).")] = 2,
    metrics: Annotated[Path | None, typer.Option(help="Also write the headline metrics here (DVC).")] = None,
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
        result = STUDIES[name](Study(Path(data), warehouse or default_location(), target, client))
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"key_number": result["key_number"], "key": result["key"]}, indent=1) + "\n")
    out.print(f"{result['title']}: {result['finding']}")


@app.command("report")
def report(
    reports: Annotated[Path, typer.Option(help="The reports folder (studies/ and validate_silicon/ inside).")] = Path(
        "reports"
    ),
    warehouse: WarehouseOpt = None,
) -> None:
    """Assemble reports/README.md: the calibration's and the validation's held-out errors, the bundled replays,
    then every case study's section."""
    from ..calibrate.report import load_rows

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
    rows = [
        r
        for r in load_rows(warehouse or default_location())
        if r["subset"] == "catalog" and r["split"] == "shape_block" and r["model"] in ("calibrated", "roofline")
    ]
    if rows:
        parts += [
            "## Op-level fidelity (held-out shapes, model-catalog subset)",
            "",
            "Median / p90 absolute percentage error on shapes the fit never saw; per group in "
            "`hermes-sim calibrate report`.",
            "",
            "| device | family | dtype | framework | n | calibrated | roofline |",
            "| --- " * 7 + "|",
        ]
        groups: dict = {}
        for r in rows:
            groups.setdefault((r["device"], r["family"], r["dtype"], r["framework"]), {})[r["model"]] = r
        for (dev, fam, dtype, fw), g in sorted(groups.items()):
            cal, roof = g.get("calibrated", {}), g.get("roofline", {})
            parts.append(
                f"| {dev} | {fam} | {dtype} | {fw} | {cal.get('n', roof.get('n'))} | "
                f"{_pct(cal.get('median_ape'))} / {_pct(cal.get('p90_ape'))} | "
                f"{_pct(roof.get('median_ape'))} / {_pct(roof.get('p90_ape'))} |"
            )
        parts.append("")
    replays = [(name, reports / name / "summary.json") for name in ("replay_bundled", "replay_rag")]
    if any(p.exists() for _, p in replays):
        parts += [
            "## Replays of the bundled logs",
            "",
            "| replay | completed | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | output tokens/s | tokens per dollar |",
            "| --- " * 6 + "|",
        ]
        for _name, path in replays:
            if path.exists():
                s = json.loads(path.read_text())
                parts.append(
                    f"| {s['scenario']} | {s['completed']} | {s['ttft_ms'].get('p50')} / "
                    f"{s['ttft_ms'].get('p99')} | {s['tpot_ms'].get('p50')} / {s['tpot_ms'].get('p99')} | "
                    f"{s['throughput_output_tokens_per_s']} | {s['tokens_per_dollar']} |"
                )
        parts += [
            "",
            "Their plots, tables and Perfetto traces: [replay_bundled/](replay_bundled/), [replay_rag/](replay_rag/).",
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
