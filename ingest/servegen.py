"""ServeGen workload distributions turned into a concrete, seeded request log.

One client = `chunk-<i>-trace.csv` (no header; 10-minute windows: window_start_s, rate_req_per_s, cv,
arrival distribution (Gamma | Weibull | Exponential | empty), param1, param2) plus `chunk-<i>-dataset.json`
(per 6-hour window, PDFs of input_tokens, output_tokens and reason_ratio stored as dict-literal strings).

Arrivals are a renewal process per window with the window's mean rate and coefficient of variation in the
named family (empty = Poisson); lengths and the reasoning share are drawn from the PDFs of the window the
request falls in. The PDFs are parsed with `ast.literal_eval`, never `eval`."""

from __future__ import annotations

import ast
import hashlib
import math
from functools import cache
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ..warehouse.batch import ROW_COLUMN, IngestError, SourceBatch, build_table
from .text import read_csv

WINDOW_S = 600.0
PDF_FIELDS = ("input_tokens", "output_tokens", "reason_ratio")


def dataset_path(trace: Path) -> Path:
    return trace.with_name(trace.name.replace("-trace.csv", "-dataset.json"))


@cache
def weibull_shape_for_cv(cv: float) -> float:
    """The Weibull shape k whose coefficient of variation is `cv`."""
    from scipy.optimize import brentq  # lazy: scipy is only needed to generate ServeGen arrivals

    def cv_of(k: float) -> float:
        return math.sqrt(max(math.exp(math.lgamma(1 + 2 / k) - 2 * math.lgamma(1 + 1 / k)) - 1, 0.0)) - cv

    return brentq(cv_of, 0.02, 500.0)


def _gaps(rng: np.random.Generator, dist: str, rate: float, cv: float, size: int) -> np.ndarray:
    mean = 1.0 / rate
    if dist == "Gamma" and cv > 0:
        shape = 1.0 / cv**2
        return rng.gamma(shape, mean / shape, size)
    if dist == "Weibull" and cv > 0:
        k = weibull_shape_for_cv(min(max(cv, 0.05), 40.0))
        scale = mean / math.exp(math.lgamma(1 + 1 / k))
        return scale * rng.weibull(k, size)
    return rng.exponential(mean, size)


def window_arrivals(rng: np.random.Generator, start_s: float, rate: float, cv: float, dist: str) -> np.ndarray:
    """Arrival times inside [start_s, start_s + WINDOW_S) of a renewal process with this rate and CV."""
    if not rate > 0:
        return np.empty(0)
    expected = rate * WINDOW_S
    times = np.empty(0)
    t = 0.0
    while True:
        gaps = _gaps(rng, dist, rate, cv, int(expected * 1.5) + 16)
        chunk = t + np.cumsum(gaps)
        inside = chunk[chunk < WINDOW_S]
        times = np.concatenate([times, inside])
        if len(inside) < len(chunk):
            return start_s + times
        t = chunk[-1]


def _parse_pdf(path: Path, window: str, field: str, text) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, probabilities) of one PDF; None for an empty one (a window with no traffic)."""
    where = f"window {window}, {field}"
    try:
        pdf = ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError) as e:
        raise IngestError(path, where, f"PDF is not a literal dict: {e}") from e
    if not isinstance(pdf, dict):
        raise IngestError(path, where, "PDF is not a dict")
    if not pdf:
        return None
    try:
        values = np.array([float(k) for k in pdf], dtype=float)
        probs = np.array([float(v) for v in pdf.values()], dtype=float)
    except (TypeError, ValueError) as e:
        raise IngestError(path, where, f"PDF has non-numeric entries: {e}") from e
    if (probs < 0).any() or not np.isfinite(probs).all() or probs.sum() <= 0:
        raise IngestError(path, where, "PDF probabilities must be finite, >= 0 and not all 0")
    return values, probs / probs.sum()


def _read_trace(path: Path) -> pd.DataFrame:
    df = read_csv(path, header=None)
    if df.shape[1] != 6:
        raise IngestError(path, "line 1", f"expected 6 columns (window, rate, cv, dist, p1, p2), got {df.shape[1]}")
    df.columns = ["window_start_s", "rate", "cv", "dist", "param1", "param2"]
    for col in ("window_start_s", "rate", "cv"):
        bad = pd.to_numeric(df[col], errors="coerce").isna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            raise IngestError(path, f"line {line}", f"{col} is not a number: {df[col].iloc[line - 1]!r}")
    for bad, what in (
        (df["rate"] < 0, "negative rate"),
        (~np.isfinite(df["rate"].astype(float)), "rate is not finite"),
    ):
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            raise IngestError(path, f"line {line}", what)
    return df


def parse_servegen(path: Path, batch: SourceBatch) -> SourceBatch:
    ds_path = dataset_path(path)
    if not ds_path.exists():
        raise IngestError(path, None, f"no dataset file beside it ({ds_path.name})")
    windows = _read_trace(path)
    try:
        dataset = orjson.loads(ds_path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise IngestError(ds_path, None, f"malformed JSON: {e}") from e
    if not isinstance(dataset, dict) or not dataset:
        raise IngestError(ds_path, None, "expected an object of windows")
    pdfs = {}
    for key, fields in dataset.items():
        missing = [f for f in PDF_FIELDS if f not in fields]
        if missing:
            raise IngestError(ds_path, f"window {key}", f"missing PDF(s) {missing}")
        window = {f: _parse_pdf(ds_path, key, f, fields[f]) for f in PDF_FIELDS}
        if all(v is not None for v in window.values()):
            pdfs[float(key)] = window
    if not pdfs:
        raise IngestError(ds_path, None, "no window has all of its PDFs")
    # Requests in a window without PDFs take the nearest window that has them.
    pdf_starts = np.array(sorted(pdfs))

    seed = int(batch.params.get("seed", 0))
    # A stream per client: the seed plus the client file's name, so clients differ and runs repeat.
    client = int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:4], "little")
    rng = np.random.default_rng([seed, client])
    arrivals = []
    for line, w in enumerate(windows.itertuples(), start=1):
        try:
            arrivals.append(window_arrivals(rng, float(w.window_start_s), float(w.rate), float(w.cv), str(w.dist)))
        except (ValueError, MemoryError) as e:  # numpy's refusal of an absurd rate's array, said where it came from
            raise IngestError(path, f"line {line}", f"rate {w.rate} req/s over a {WINDOW_S:g} s window: {e}") from e
    t = np.concatenate(arrivals) if arrivals else np.empty(0)
    n = len(t)
    which = pdf_starts[np.clip(np.searchsorted(pdf_starts, t, side="right") - 1, 0, None)]  # window holding t
    drawn = {f: np.empty(n) for f in PDF_FIELDS}
    for start in np.unique(which):
        mask = which == start
        for f in PDF_FIELDS:
            values, probs = pdfs[start][f]
            drawn[f][mask] = rng.choice(values, size=int(mask.sum()), p=probs)
    model = path.parent.name
    cols = {
        ROW_COLUMN: np.arange(1, n + 1),
        "log_name": [batch.params.get("log_name") or f"servegen/{model}"] * n,
        "request_id": np.arange(n),
        "arrival_s": t,
        "input_tokens": np.round(drawn["input_tokens"]),
        "output_tokens": np.round(drawn["output_tokens"]),
        "reasoning_share": drawn["reason_ratio"],
        "session_id": [path.name.removesuffix("-trace.csv")] * n,
        "model": [model] * n,
    }
    batch.note = {"dataset": ds_path.name, "windows": len(windows), "seed": seed, "generated": n}
    batch.tables["requests"] = build_table("requests", cols, n)
    return batch
