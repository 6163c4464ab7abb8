"""What the case studies share: where the data is, running variants of a scenario on Dask, and writing a
section."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...replay.outputs.jsonout import dumps
from ...replay.parallel import run_summaries, summary_row
from ...replay.scenario import Scenario, parse, with_overrides


@dataclass
class Study:
    data: Path  # a data root laid out like ../shared/data (the bundled samples by default)
    warehouse: Path
    out: Path
    client: object = None  # a Dask client, or None to run serially
    figures: list[str] = field(default_factory=list)

    def log(self, rel: str) -> str:
        path = self.data / rel
        if not path.exists():
            raise FileNotFoundError(f"{path}: the study reads this log (pass --data ../shared/data or the samples)")
        return str(path)

    def run(self, base: dict | Scenario, variants: list[tuple[dict, list[str]]]) -> tuple[pd.DataFrame, list[dict]]:
        """Replay every variant (`--set` overrides of the base); the table of headline figures and the summaries."""
        scenario = base if isinstance(base, Scenario) else parse(base)
        points = [(label, with_overrides(scenario, sets) if sets else scenario) for label, sets in variants]
        summaries = run_summaries(points, self.warehouse, self.client, progress=False)
        table = pd.DataFrame([summary_row(label, s) for (label, _), s in zip(points, summaries, strict=True)])
        return table, summaries

    def figure(self, fig, name: str) -> str:
        self.out.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=100, metadata={"Software": None})
        self.figures.append(name)
        return name

    def write(
        self,
        title: str,
        finding: str,
        data_used: str,
        body: str,
        table: pd.DataFrame,
        metrics: dict,
        key: tuple[str, float | None] = ("", None),
    ) -> dict:
        """The section, every point, the detailed metrics; `key` is the one number (name, value) DVC shows."""
        self.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(self.out / "points.csv", index=False, float_format="%.6g")
        figures = "\n".join(f"![{name}]({name})" for name in self.figures)
        (self.out / "section.md").write_text(
            f"## {title}\n\n**Finding.** {finding}\n\n*Data:* {data_used}\n\n{figures}\n\n{body.strip()}\n\n"
            f"Every point: [points.csv](points.csv).\n"
        )
        doc = {"title": title, "finding": finding, "key_number": key[1], "key": key[0], **metrics}
        (self.out / "metrics.json").write_text(dumps(doc) + "\n")
        return json.loads(dumps(doc))


def markdown_table(df: pd.DataFrame, digits: int = 1) -> str:
    return df.to_markdown(index=False, floatfmt=f",.{digits}f")


def ms_to_s(x) -> float:
    return round(float(x) / 1e3, 2) if x == x and x is not None else float("nan")
