"""Canonical device ids from the names that sources write (CUDA device names, folder names)."""

from __future__ import annotations

import re

# (pattern on the raw name, canonical id); first match wins.
_RULES: list[tuple[str, str]] = [
    (r"^(h100_sxm|h100|h100_dgx)$|h100.*(hbm3|sxm)", "h100_sxm"),
    (r"h100.*nvl", "h100_nvl"),  # 94 GB, 3.9 TB/s: not the 80 GB PCIe card
    (r"h100.*pcie", "h100_pcie"),
    (r"^(h200_sxm|h200)$|h200", "h200_sxm"),
    (r"^(b200_sxm|b200)$|b200", "b200_sxm"),
    (r"^(a100_sxm|a100|a100_dgx)$|a100-sxm|a100-pg509", "a100_sxm"),
    (r"a100.*pcie", "a100_pcie"),
    (r"l40s", "l40s"),
    (r"mi300x", "mi300x"),
    (r"mi250x", "mi250x"),
    (r"mi250", "mi250"),
]

# AMD devices often report a generic name; the compute-unit count tells them apart.
_AMD_BY_COMPUTE_UNITS = {104: "mi250", 110: "mi250x", 228: "mi300a", 304: "mi300x"}


def canonical_device(raw: str | None, compute_units: int | None = None) -> str:
    name = (raw or "").strip().lower()
    for pattern, canonical in _RULES:
        if re.search(pattern, name):
            return canonical
    if compute_units and ("amd" in name or "radeon" in name) and compute_units in _AMD_BY_COMPUTE_UNITS:
        return _AMD_BY_COMPUTE_UNITS[compute_units]
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "unknown"
