"""A replay's 90% interval: the scenario replayed with every calibrated op priced at the lower and at the upper
end of its prediction interval (from each fit's grouped-CV residuals, see calibrate/fit.py). The errors of one
op family share a cause (the kernel, the framework), so they are taken as moving together: the bounds are the
runs where every op sits at the same end. Roofline-tier ops have no interval and stay at the roofline."""

from __future__ import annotations

from pathlib import Path

from .scenario import Scenario

# (summary key, sub-key) reported as [lower-priced run, upper-priced run]
FIGURES = (
    ("ttft_ms", "p50"),
    ("ttft_ms", "p99"),
    ("tpot_ms", "p50"),
    ("tpot_ms", "p99"),
    ("e2e_ms", "p50"),
    ("e2e_ms", "p99"),
    ("throughput_output_tokens_per_s", None),
    ("goodput_req_per_s", None),
)


def _figure(summary: dict, key: str, sub: str | None):
    value = summary.get(key)
    return value.get(sub) if sub is not None and isinstance(value, dict) else value


def interval_90(scenario: Scenario, warehouse_root: Path, simulate) -> dict:
    """{figure: [value priced at the lower ends, value priced at the upper ends]} for the headline figures."""
    ends = {
        bound: simulate(scenario.model_copy(update={"price_at": bound}), Path(warehouse_root))["summary"]
        for bound in ("lower", "upper")
    }
    out = {}
    for key, sub in FIGURES:
        lo, hi = _figure(ends["lower"], key, sub), _figure(ends["upper"], key, sub)
        if lo is not None and hi is not None:
            out[f"{key}.{sub}" if sub else key] = [lo, hi]
    return out
