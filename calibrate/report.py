"""The fidelity report: Markdown tables and PNG plots from the evaluation rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

REPORTS_DIR = "reports"
ROW_FIELDS = (
    "device",
    "family",
    "dtype",
    "framework",
    "split",
    "model",
    "subset",
    "n",
    "median_ape",
    "p90_ape",
    "p99_ape",
    "coverage_90",  # the calibrated model's: share of the rows inside its nominal 90% interval
    "faster_than_roofline",  # the roofline's row: share of the rows measured faster than it (physically impossible)
)


def reports_dir(warehouse_root: Path) -> Path:
    return Path(warehouse_root) / REPORTS_DIR


def save_rows(rows: list[dict], warehouse_root: Path, device: str) -> Path:
    path = reports_dir(warehouse_root) / f"{device}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from .artifacts import rounded

    path.write_text(json.dumps(rounded([{k: r.get(k) for k in ROW_FIELDS} for r in rows]), indent=1))
    return path


def load_rows(warehouse_root: Path, device: str | None = None) -> list[dict]:
    folder = reports_dir(warehouse_root)
    files = [folder / f"{device}.json"] if device else sorted(folder.glob("*.json"))
    rows = []
    for f in files:
        if f.exists():
            rows += json.loads(f.read_text())
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "No evaluation yet: run `hermes-sim calibrate --device D`.\n"
    df = pd.DataFrame(rows)
    out = [
        "# Calibration fidelity",
        "",
        "Absolute percentage error on held-out real measurements: median / p90 / p99. Coverage: the share of",
        "those measurements inside the calibrated model's nominal 90% prediction interval (from grouped-CV",
        "residuals of its training shapes, widened past the largest fitted shape by the growth the fit measured",
        "on its own smaller and larger halves); about 90% means the interval is honest. Faster than roofline:",
        "the share of those measurements more than 5% faster than their speed of light, which no measurement of",
        "what the table's columns say can be (the table measured something else there); a model that follows the",
        "physics misses them.",
        "",
    ]
    for device, dev_rows in df.groupby("device", sort=True):
        out += [
            f"## {device}",
            "",
            "| family | dtype | framework | split | subset | n | faster than roofline | roofline | calibrated "
            "| coverage | random forest |",
            "| --- | --- | --- | --- | --- | ---: | ---: | --- | --- | ---: | --- |",
        ]
        keys = ["family", "dtype", "framework", "split", "subset"]
        for key, g in dev_rows.groupby(keys, sort=True):
            cells, coverage, faster = {}, "-", "-"
            for _, r in g.iterrows():
                cells[r["model"]] = f"{_pct(r['median_ape'])} / {_pct(r['p90_ape'])} / {_pct(r['p99_ape'])}"
                if r["model"] == "calibrated" and pd.notna(r.get("coverage_90")):
                    coverage = _pct(r["coverage_90"])
                if r["model"] == "roofline" and pd.notna(r.get("faster_than_roofline")):
                    faster = _pct(r["faster_than_roofline"])
            n = int(g["n"].iloc[0])
            out.append(
                "| " + " | ".join(map(str, key)) + f" | {n} | {faster} | {cells.get('roofline', '-')} | "
                f"{cells.get('calibrated', '-')} | {coverage} | {cells.get('random_forest', 'not run')} |"
            )
        out.append("")
    if "random_forest" not in set(df["model"]):
        out.append(
            "Random forest: not run (`hermes-sim calibrate evaluate --device D` scores it; it needs scikit-learn, "
            "`pip install 'hermes-sim[bench]'`)."
        )
        out.append("")
    return "\n".join(out) + "\n"


def plot(
    rows_by_family: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], out_dir: Path, device: str
) -> list[Path]:
    """Per family: predicted vs measured (calibrated and roofline), and error by shape (work size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for family, (measured, calibrated, roof, size) in rows_by_family.items():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        lo, hi = measured.min(), measured.max()
        ax1.loglog(measured, roof, ".", ms=2, alpha=0.3, label="roofline")
        ax1.loglog(measured, calibrated, ".", ms=2, alpha=0.4, label="calibrated")
        ax1.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax1.set(xlabel="measured latency (us)", ylabel="predicted latency (us)", title=f"{device} {family}")
        ax1.legend(markerscale=5)
        ax2.semilogx(size, 100 * np.abs(calibrated - measured) / measured, ".", ms=2, alpha=0.4)
        ax2.set(
            xlabel="work size (flops / tokens / bytes)",
            ylabel="calibrated abs. error (%)",
            title="shape_block held-out error by shape",
        )
        ax2.set_ylim(0, max(30, float(np.percentile(100 * np.abs(calibrated - measured) / measured, 99))))
        fig.tight_layout()
        path = out_dir / f"{family}.png"
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written
