"""Strict JSON: NaN and infinities become null (Python's json writes bare NaN, which no JSON parser reads)."""

from __future__ import annotations

import json
import math

import numpy as np


def clean(value):
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, indent: int | None = 1) -> str:
    return json.dumps(clean(value), indent=indent, allow_nan=False, default=str)
