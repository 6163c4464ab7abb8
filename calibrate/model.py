"""Predicting op times on a device, with the tier each prediction came from.

Tiers, best first:
- measured-calibrated: a fitted model of this device, family and dtype (float16 and bfloat16 share one);
- transferred: the device has no model for the family, so the nearest calibrated device's efficiency
  (its prediction over its roofline, on the same ops) scales this device's roofline;
- roofline: nothing calibrated anywhere for the family: the plain speed-of-light time.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import MODELS_DIR, file_stamp, fitted_from_entry, load, models_path, or_none, residuals_path
from .catalog import LOCAL_CPU, Device, device, devices
from .fit import PAST_MEASURED_DEFAULT, PAST_MEASURED_RULE, Fitted
from .roofline import roofline

log = logging.getLogger(__name__)

CALIBRATED, TRANSFERRED, ROOFLINE = "measured-calibrated", "transferred", "roofline"
FRAMEWORK_PREFERENCE = ("vllm", "sglang", "trtllm", "nccl", "vidur", "hermes-profile")
BOUNDS = ("point", "lower", "upper")
_DTYPE_TWINS = {"float16": "bfloat16", "bfloat16": "float16", "fp8_block": "fp8", "fp8": "fp8_block"}


# Fitted models read back from their artifacts, kept per warehouse and device while the files are unchanged: a
# validation or sweep builds a CostModel per simulated pool, and reading the residual surfaces each time cost a
# validate run about a quarter of its time (profiled on 40 rows). Few devices are priced in one process; the
# bound keeps memory flat.
ARTIFACT_CACHE_ENTRIES = 8
_FITTED: OrderedDict[tuple, tuple[dict | None, dict]] = OrderedDict()


def _fitted_models(root: Path, device_name: str) -> tuple[dict | None, dict[tuple[str, str], list[tuple[str, Fitted]]]]:
    """A device's measured peak rates (local CPU profiles) and fitted models by (family, dtype), each with the
    measurements behind it; shared read-only by every CostModel of that artifact."""
    key = (
        str(root.resolve()),
        device_name,
        file_stamp(models_path(root, device_name)),
        file_stamp(residuals_path(root, device_name)),
    )
    if key in _FITTED:
        _FITTED.move_to_end(key)
        return _FITTED[key]
    doc = load(root, device_name)
    out: dict[tuple[str, str], list[tuple[str, Fitted]]] = {}
    for e in (doc or {}).get("models", []):
        fitted = fitted_from_entry(e, str(models_path(root, device_name)))
        fitted.origin = {
            "device": doc.get("device"),
            "framework": e["framework"],
            "framework_version": or_none(e.get("framework_version")),  # older artifacts hold NaN
            "dtype": e["dtype"],
            "samples": e.get("n"),
            "sources": [x["source_id"] for x in e.get("sources", [])],
        }
        out.setdefault((e["family"], e["dtype"]), []).append((e["framework"], fitted))
    while len(_FITTED) >= ARTIFACT_CACHE_ENTRIES:
        _FITTED.popitem(last=False)
    _FITTED[key] = ((doc or {}).get("device_figures"), out)
    return _FITTED[key]


def past_measured_rule(fitted: Fitted) -> str:
    """How a fit prices an op past its measured shapes, in words, naming the constant it stands on."""
    return PAST_MEASURED_RULE.get(fitted.form.family, PAST_MEASURED_DEFAULT)


class CostModel:
    def __init__(
        self,
        device_name: str,
        warehouse_root: Path,
        framework: str | None = None,
        share: Device | None = None,
        bound: str = "point",
    ):
        # share: the part of the device a pool replica uses (a CPU replica's cores), priced at its own rates;
        # bound: "point", or "lower" / "upper" to price each fitted op at that end of its 90% prediction interval
        # (a roofline-tier op has none: it stays at the roofline, a lower bound)
        if bound not in BOUNDS:
            raise ValueError(f"unknown price bound {bound!r}; known: {', '.join(BOUNDS)}")
        self.bound = bound
        self.device: Device = share or device(device_name)
        self.root = Path(warehouse_root)
        self.framework = framework
        figures, self.models = _fitted_models(self.root, device_name)
        if figures and share is None and device_name == LOCAL_CPU:
            self.device = self.device.model_copy(update=figures)  # its measured peak rates
        self._donors: dict[str, tuple[Device, dict] | None] = {}
        # per (op family, dtype) priced: the tier and the measurements behind it (device, framework, version,
        # sources), for the summary to say what priced each family
        self.provenance: dict[str, dict] = {}
        self._past: dict[str, list[int]] = {}  # per family/dtype: ops priced past the measured shapes, and all

    def _pick(self, models: dict, family: str, dtype: str) -> Fitted | None:
        candidates = models.get((family, dtype)) or models.get((family, _DTYPE_TWINS.get(dtype, ""))) or []
        if not candidates:
            same_family = [v for (f, _), v in models.items() if f == family]
            candidates = [c for group in same_family for c in group]  # any dtype: efficiency, not absolute
        if not candidates:
            return None
        order = ((self.framework,) if self.framework else ()) + FRAMEWORK_PREFERENCE
        return min(candidates, key=lambda c: order.index(c[0]) if c[0] in order else len(order))[1]

    def _donor(self, family: str) -> tuple[Device, dict] | None:
        """The nearest device with a fitted model for the family: same class, then vendor, then any."""
        if family in self._donors:
            return self._donors[family]
        found = None
        ranked = []
        for path in sorted((self.root / MODELS_DIR).glob("*.json")):
            name = path.stem
            if name == self.device.id or name not in devices():
                continue
            other = device(name)
            if (other.kind == "cpu") != (self.device.kind == "cpu"):
                continue  # a CPU's kernel efficiency says nothing about an accelerator's, nor the reverse
            idx = _fitted_models(self.root, name)[1]
            if any(f == family for f, _ in idx):
                rank = (
                    other.device_class != self.device.device_class,
                    other.vendor != self.device.vendor,
                    other.kind != self.device.kind,
                    abs(np.log(other.flops("bfloat16") / self.device.flops("bfloat16"))),
                )
                ranked.append((rank, name, other, idx))
        if ranked:
            _, _, other, idx = min(ranked, key=lambda r: r[:2])
            found = (other, idx)
        self._donors[family] = found
        return found

    def _factor(self, fitted: Fitted, rows: pd.DataFrame) -> np.ndarray | float:
        """The ops' multiplier at the priced end of the interval (wider past the fitted shapes)."""
        if self.bound == "point":
            return 1.0
        lower, upper = fitted.interval_factors(rows)
        return lower if self.bound == "lower" else upper

    def _note_past_measured(self, key: str, fitted: Fitted, past: np.ndarray) -> None:
        """Count the priced ops past the measured shapes (over every call) and name the rule that priced them in
        the family's provenance: a replay's summary then says where a constant stood in for a measurement."""
        seen = self._past.setdefault(key, [0, 0])
        seen[0] += int(past.sum())
        seen[1] += len(past)
        if seen[0]:
            self.provenance[key]["past_measured"] = {
                "share_of_priced_shapes": round(seen[0] / seen[1], 4),
                "priced_as": past_measured_rule(fitted),
            }

    def last_wave_weight(self, family: str, dtype: str) -> float | None:
        """The weight a measured-calibrated fit of the family gives prefill attention's last wave
        (fit.attention_schedule); None for other fits and tiers."""
        fitted = self._pick(self.models, family, dtype)
        return fitted.last_wave_weight if fitted is not None else None

    def predict(self, ops: pd.DataFrame) -> pd.DataFrame:
        """latency_us, roofline_us, tier and past_measured (priced by a rule past the measured shapes, not by the
        data) for every op row (kernel_samples columns + op_family, dtype)."""
        terms = roofline(ops, self.device)
        latency = terms["roofline_us"].to_numpy().copy()
        tier = np.full(len(ops), ROOFLINE, dtype=object)
        past = np.zeros(len(ops), dtype=bool)
        for (family, dtype), idx in ops.groupby(["op_family", "dtype"], sort=False).groups.items():
            rows = ops.loc[idx]
            fitted = self._pick(self.models, family, dtype)
            pos = ops.index.get_indexer(idx)
            if fitted is not None:
                pred, past[pos] = fitted.priced(rows, self.device, terms.loc[idx])
                latency[pos] = pred * self._factor(fitted, rows)
                tier[pos] = CALIBRATED
                self.provenance[f"{family}/{dtype}"] = {"tier": CALIBRATED, **fitted.origin}
                self._note_past_measured(f"{family}/{dtype}", fitted, past[pos])
                continue
            donor = self._donor(family)
            if donor is None:
                self.provenance[f"{family}/{dtype}"] = {"tier": ROOFLINE}
                continue
            other, models = donor
            donor_fit = self._pick(models, family, dtype)
            donor_terms = roofline(rows, other)
            pred, past[pos] = donor_fit.priced(rows, other, donor_terms)
            efficiency = pred / donor_terms["roofline_us"].to_numpy()
            efficiency *= self._factor(donor_fit, rows)
            latency[pos] = terms.loc[idx, "roofline_us"].to_numpy() * efficiency
            tier[pos] = TRANSFERRED
            self.provenance[f"{family}/{dtype}"] = {"tier": TRANSFERRED, **donor_fit.origin}
            self._note_past_measured(f"{family}/{dtype}", donor_fit, past[pos])
        return pd.DataFrame(
            {"latency_us": latency, "roofline_us": terms["roofline_us"], "tier": tier, "past_measured": past},
            index=ops.index,
        )
