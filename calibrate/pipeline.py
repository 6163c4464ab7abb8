"""`hermes-sim calibrate --device D`: fit, save the artifacts, evaluate, write the report and plots."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..warehouse.store import Warehouse
from . import artifacts
from .catalog import LOCAL_CPU
from .catalog import device as catalog_device
from .evaluate import evaluate_device
from .report import load_rows, markdown, plot, reports_dir, save_rows
from .splits import SPLITS

log = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    models_path: Path
    report_path: Path
    fit_seconds: float
    rows: list[dict]
    fitted: int
    skipped: int
    set_aside: list[dict]  # newer tables not fitted: host-bound floors (artifacts.HOST_BOUND_FLOOR_RATIO)
    served: list[dict]  # tables fitted as the served op (artifacts.served_latency)

    @property
    def summary(self) -> str:
        return (
            f"fitted {self.fitted} model(s), {self.skipped} group(s) left to the next tier, in "
            f"{self.fit_seconds:.1f} s -> {self.models_path}\n"
            + "".join(
                f"set aside {t['op_family']}/{t['dtype']}/{t['framework']} {t['framework_version']}: its fastest "
                f"measurement ({t['floor_us']} us) is host-bound; fitted on {t['used_instead']}\n"
                for t in self.set_aside
            )
            + "".join(
                f"fitted {t['op_family']}/{t['dtype']}/{t['framework']} as served: less {t['less']}, "
                f"{t['less_us'][0]}-{t['less_us'][1]} us (launch floor {t['launch_floor_us']} us)\n"
                for t in self.served
            )
            + markdown(self.rows)
        )


def metrics(rows: list[dict]) -> dict:
    """DVC metrics, a person's headline: the held-out error (shape-block split, catalog shapes) of the calibrated
    models and of the plain roofline, row-weighted over every op family; per family in the report."""
    df = [r for r in rows if r["subset"] == "catalog" and r["split"] == "shape_block"]
    out: dict = {}
    for model, prefix in (("calibrated", ""), ("roofline", "roofline_")):
        mine = [r for r in df if r["model"] == model]
        n = sum(r["n"] for r in mine)
        if n:
            out[f"{prefix}median_ape"] = round(sum(r["median_ape"] * r["n"] for r in mine) / n, 4)
    out["held_out_rows"] = sum(r["n"] for r in df if r["model"] == "calibrated")
    covered = [r for r in df if r["model"] == "calibrated" and r.get("coverage_90") is not None]
    if covered:  # the nominal 90% intervals' share of held-out rows inside them, row-weighted
        out["coverage_90"] = round(sum(r["coverage_90"] * r["n"] for r in covered) / sum(r["n"] for r in covered), 4)
    return out


def calibrate_device(
    warehouse_root: Path,
    device_name: str,
    family: str | None = None,
    splits: tuple[str, ...] | None = None,
    random_forest: bool = True,
    metrics_path: Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> CalibrationResult:
    """Fit one cost model per (op family, dtype, framework) of a device, save them, and score them on held-out
    data; with progress, a bar on stderr per step."""
    from rich.console import Console
    from rich.progress import Progress

    from .roofline import FAMILIES

    dev = catalog_device(device_name)
    if random_forest:
        try:
            import sklearn  # noqa: F401
        except ImportError as e:
            raise ValueError(
                "the random-forest baseline needs scikit-learn: pip install 'hermes-sim[bench]' (or leave it out)"
            ) from e
    for s in splits or ():
        if s not in SPLITS:
            raise ValueError(f"unknown split {s!r}; known: {', '.join(SPLITS)}")
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown op family {family!r}; known: {', '.join(FAMILIES)}")
    bar = Progress(console=Console(stderr=True), transient=True, disable=not progress)
    fit_task = bar.add_task(f"fit {device_name}", total=None)
    eval_task = bar.add_task(f"score {device_name}", total=None, visible=False)

    def step(task):
        return lambda done, total, name: bar.update(task, completed=done, total=total, description=name)

    with bar, Warehouse(warehouse_root, read_only=True) as wh:
        if dev.id == LOCAL_CPU:
            dev = artifacts.measured_local_cpu(wh, dev)
        t0 = time.perf_counter()
        samples, trials = artifacts.device_samples(wh, dev.id, family), {}
        doc = artifacts.fit_device(wh, dev, family, seed, step(fit_task), samples, trials)
        fit_seconds = time.perf_counter() - t0
        if not doc["models"] and not doc["skipped"]:
            what = f"op family {family!r} " if family else ""
            raise ValueError(f"no {what}kernel samples for device {device_name!r} in {warehouse_root}")
        previous = artifacts.load(warehouse_root, device_name)
        if family and previous:  # one family refitted: keep the others
            for key in ("models", "skipped", "set_aside", "served"):
                kept = [e for e in previous.get(key, []) if e.get("family", e.get("op_family")) != family]
                doc[key] = kept + doc[key]
        path = artifacts.save(doc, warehouse_root)
        plots: dict = {}
        bar.update(fit_task, visible=False)
        bar.update(eval_task, visible=True)
        rows = evaluate_device(
            wh, dev, splits or SPLITS, family, seed, random_forest, plots, step(eval_task), samples, trials
        )
    if family:
        rows = [r for r in load_rows(warehouse_root, device_name) if r["family"] != family] + rows
    report_path = save_rows(rows, warehouse_root, device_name)
    plot(plots, reports_dir(warehouse_root) / device_name, device_name)
    if metrics_path:
        Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_path).write_text(json.dumps(metrics(rows), indent=1, sort_keys=True))
    log.info("fitted %d models for %s in %.1f s", len(doc["models"]), device_name, fit_seconds)
    return CalibrationResult(
        path, report_path, fit_seconds, rows, len(doc["models"]), len(doc["skipped"]), doc["set_aside"], doc["served"]
    )
