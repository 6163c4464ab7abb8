"""Calibrated models as JSON artifacts with provenance, and fitting every group of one device.

<warehouse>/models/<device>.json holds one entry per (op family, dtype, framework): the form, coefficients
with 95% confidence intervals, fit statistics, the held-out (shape-block) error, and the sources (ids and
hashes) the fit read. Groups that could not be fitted are listed with the reason."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from packaging.version import InvalidVersion, Version

from .. import __version__
from ..warehouse.parquet import write_parquet
from ..warehouse.store import Warehouse, ingest_time
from .catalog import LOCAL_CPU, Device
from .catalog import device as catalog_device
from .fit import Fitted, Form, TooFewSamples, ape, fit_group
from .roofline import roofline
from .splits import split_masks
from .surface import ResidualSurface

log = logging.getLogger(__name__)

MODELS_DIR = "models"
GROUP_KEYS = ("op_family", "dtype", "framework")


def models_path(warehouse_root: Path, device: str) -> Path:
    return Path(warehouse_root) / MODELS_DIR / f"{device}.json"


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of a file, None when it is absent: what in-process caches of derived data key on."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def residuals_path(warehouse_root: Path, device: str) -> Path:
    """The models' measured residual surfaces (surface.py), one row per measured grid point: too many numbers
    for the JSON beside it, which keeps each surface's grid and cells."""
    return Path(warehouse_root) / MODELS_DIR / f"{device}.residuals.parquet"


def _model_key(entry: dict) -> str:
    return f"{entry['family']}/{entry['dtype']}/{entry['framework']}"


def _version_key(v: str | None):
    try:
        return (1, Version(str(v)))
    except InvalidVersion:
        return (0, str(v))


def profile_samples(wh: Warehouse, family: str | None = None) -> pd.DataFrame:
    """Kernel samples of this machine from `hermes-sim profile cpu` traces in the warehouse."""
    from .profile_cpu import OPS, TRACE_NAME

    _, found = wh.query(
        "SELECT source_id, sha256 FROM sources WHERE format = 'kineto' "
        "AND json_extract_string(note, '$.trace_name') = ?",
        [TRACE_NAME],
    )
    if not found:
        return pd.DataFrame()
    ids = [sid for sid, _ in found]
    rows = wh.arrow(  # a filtered scan keeps the tables' order (a join would not): a fit sees rows in one order
        "SELECT source_id, name, input_dims, dur_us AS latency_us FROM trace_events "
        f"WHERE kind = 'cpu_op' AND source_id IN ({', '.join('?' * len(ids))})",
        ids,
    ).to_pandas()
    rows.insert(1, "sha256", rows["source_id"].map(dict(found)))
    rows["op_family"] = rows["name"].map(OPS)
    rows = rows[rows["op_family"].notna() & (rows["latency_us"] > 0)].copy()
    dims = rows["input_dims"]
    first = dims.map(lambda d: d[0])
    rows["m"] = first.map(lambda d: d[0])
    rows["k"] = np.where(rows["op_family"] == "elementwise", np.nan, first.map(lambda d: d[-1]))
    second = dims.map(lambda d: d[1])
    rows["n"] = np.where(
        rows["op_family"] == "gemm",
        second.map(lambda d: d[-1]),
        np.where(rows["op_family"] == "vector_search", second.map(lambda d: d[0]), 1),
    )
    faiss = rows["name"].str.startswith("faiss::")
    extra = dims.map(lambda d: [list(x) for x in d[2:]] if len(d) >= 5 else None)
    rows["top_k"] = extra.map(lambda e: e[0][0] if e is not None else np.nan)
    rows["search_width"] = extra.map(lambda e: e[1][0] if e is not None else np.nan)
    rows["num_lists"] = extra.map(lambda e: e[1][1] if e is not None else np.nan)
    rows["threads"] = extra.map(lambda e: e[2][0] if e is not None else np.nan)
    source = np.where(faiss, "faiss-" + rows["name"].str.removeprefix("faiss::search_"), "numpy")
    rows = rows.assign(
        device=LOCAL_CPU,
        dtype="float32",
        framework=np.where(faiss, "faiss", "hermes-profile"),
        framework_version=None,
        kernel_source=source,
    )
    if family:
        rows = rows[rows["op_family"] == family]
    return rows.drop(columns=["input_dims", "name"]).reset_index(drop=True)


def measured_local_cpu(wh: Warehouse, base: Device) -> Device:
    """This machine with its peak rates measured by `hermes-sim profile cpu` (the fastest GEMM's flop rate,
    the fastest copy's read + write bandwidth) instead of the per-core estimate; the catalog's otherwise."""
    rows = profile_samples(wh)
    if rows.empty:
        return base
    gemm = rows[rows.op_family == "gemm"]
    copy = rows[rows.op_family == "elementwise"]
    update: dict = {"sources": dict(base.sources)}
    if len(gemm):
        peak = float((2 * gemm.m * gemm.n * gemm.k / (gemm.latency_us * 1e-6)).max())
        update["peak_flops"] = {"float32": peak, "bfloat16": peak, "float64": peak / 2}
        update["sources"]["compute"] = f"measured by hermes-sim profile cpu: fastest GEMM, {peak / 1e9:.1f} GFLOP/s"
    if len(copy):
        bw = float((2 * 4 * copy.m / (copy.latency_us * 1e-6)).max())  # float32 copies read and write each element
        update["memory_bandwidth"] = bw
        update["sources"]["memory"] = f"measured by hermes-sim profile cpu: fastest array copy, {bw / 1e9:.1f} GB/s"
    return base.model_copy(update=update)


# A table whose fastest measurement is this many times the fastest of another framework's table of the same op
# family and dtype on the device did not time the kernel at small shapes: it timed a host path around it (Python
# dispatch and an eager activation-quantization launch outside a CUDA graph), which a served step, captured in a
# graph, does not pay. AIConfigurator's H100 vLLM 0.24.0 block-FP8 GEMM table: 55 us at its fastest (FlashInfer,
# 15 x 64 x 768; its CUTLASS kernel 151 us at 32 x 32 x 32), where SGLang 0.5.14's is 3.4 us and vLLM 0.19.0's 6.0
# us; priced from it, a vLLM decode step of Qwen3-32B in block FP8 took 3.5x SGLang's. The next-largest ratio in
# the ../shared tables is 6.1 (vLLM 0.14.0, block FP8).
HOST_BOUND_FLOOR_RATIO = 10.0


def choose_tables(floors: list[tuple]) -> tuple[list[tuple], list[dict]]:
    """Of the device's tables, given as (family, framework, dtype, version, fastest latency us) rows: the (family,
    framework, dtype, version) a fit reads, and the newer ones set aside. For each (family, framework, dtype), its
    newest measured version whose floor is not host-bound (HOST_BOUND_FLOOR_RATIO times another framework's
    fastest of the same family and dtype), the newest version when every one is; older versions measure the same
    shapes again, and mixing them would count one shape several times."""
    by_group: dict[tuple, list[tuple]] = {}
    for fam, fw, dtype, ver, floor in floors:
        by_group.setdefault((fam, fw, dtype), []).append((ver, floor))
    chosen, set_aside = [], []
    for (fam, fw, dtype), versions in sorted(by_group.items(), key=str):
        reference = min(
            (
                f
                for (o_fam, o_fw, o_dtype), vs in by_group.items()
                if (o_fam, o_dtype) == (fam, dtype) and o_fw != fw
                for _, f in vs
            ),
            default=None,
        )
        versions.sort(key=lambda vf: _version_key(vf[0]), reverse=True)
        kept = next((v for v, f in versions if reference is None or f <= HOST_BOUND_FLOOR_RATIO * reference), None)
        if kept is None:  # no version measured the kernel: the newest is still the best there is
            kept = versions[0][0]
        for ver, floor in versions:
            if _version_key(ver) <= _version_key(kept):
                break
            set_aside.append(
                {
                    "op_family": fam,
                    "framework": fw,
                    "dtype": dtype,
                    "framework_version": ver,
                    "floor_us": round(floor, 3),
                    "other_frameworks_floor_us": round(reference, 3),
                    "used_instead": kept,
                }
            )
        chosen.append((fam, fw, dtype, kept))
    return chosen, set_aside


def _tables(wh: Warehouse, device: str, family: str | None) -> tuple[list[tuple], list[dict]]:
    """choose_tables over the device's tables in the warehouse."""
    where, params = "device = ?", [device]
    if family:
        where += " AND op_family = ?"
        params.append(family)
    return choose_tables(
        wh.query(
            f"SELECT op_family, framework, dtype, framework_version, min(latency_us) FROM kernel_samples WHERE {where} "
            "GROUP BY ALL",
            params,
        )[1]
    )


# AIConfigurator's TensorRT-LLM GEMM collector loads FP8 per-tensor weights without an input scale
# (collector/trtllm/collect_gemm.py, _build_weights), so TRT-LLM's FP8 linear (FP8QDQLinearMethod.apply) takes its
# dynamic branch: quantize_e4m3_per_tensor first finds the activation's amax (a zeroed buffer, then a reduction
# reading the activation) and only then quantizes. A served FP8 checkpoint carries a calibrated input scale and only
# quantizes (static_quantize_e4m3_per_tensor). AIConfigurator measures the difference itself, as compute_scale
# (collector/trtllm/collect_computescale.py: dynamic - static); ../shared holds no such table, so it is priced from
# the device: DYNAMIC_SCALE_OPS more GPU operations at the device's launch floor (its fastest measured GEMM) and one
# more read of the m x k 16-bit activation from HBM. Such a table is fitted as the served op: measured less that.
# On H100 (launch floor 2.4 us) that is 4.9 us at small m; the TRT-LLM FP8 tables run 7-8 us over vLLM's and
# SGLang's FP8 GEMMs of the same shapes up to 200 us kernels, where TRT-LLM's bf16 GEMMs run level with theirs.
DYNAMIC_SCALE_TABLES = (("gemm", "trtllm", "fp8"),)
DYNAMIC_SCALE_OPS = 2  # the amax buffer's memset and the reduction kernel


def dynamic_scale_us(df: pd.DataFrame, device: Device, launch_floor_us: float) -> np.ndarray:
    """What computing an FP8 GEMM's input scale on the fly costs over a static scale, per row (m x k activation)."""
    activation_bytes = 2.0 * df["m"].to_numpy(dtype=float) * df["k"].to_numpy(dtype=float)
    return DYNAMIC_SCALE_OPS * launch_floor_us + activation_bytes / device.memory_bandwidth * 1e6


def served_latency(df: pd.DataFrame, device: Device) -> tuple[np.ndarray, list[dict]]:
    """The samples' latencies as a served step pays them: a table whose collector computed the FP8 input scale on
    the fly (DYNAMIC_SCALE_TABLES) less that computation, never under the launch floor; and what was taken off,
    per table."""
    latency = df["latency_us"].to_numpy(dtype=float).copy()
    gemm = df["op_family"].to_numpy() == "gemm"
    if not gemm.any():
        return latency, []
    floor = float(latency[gemm].min())
    notes = []
    for fam, fw, dtype in DYNAMIC_SCALE_TABLES:
        rows = (
            (df["op_family"] == fam).to_numpy() & (df["framework"] == fw).to_numpy() & (df["dtype"] == dtype).to_numpy()
        )
        if not rows.any():
            continue
        extra = dynamic_scale_us(df[rows], device, floor)
        latency[rows] = np.maximum(latency[rows] - extra, floor)
        notes.append(
            {
                "op_family": fam,
                "framework": fw,
                "dtype": dtype,
                "less": "the dynamic FP8 input-scale computation its collector timed (artifacts.DYNAMIC_SCALE_TABLES)",
                "launch_floor_us": round(floor, 3),
                "less_us": [round(float(extra.min()), 3), round(float(extra.max()), 3)],
            }
        )
    return latency, notes


def device_samples(wh: Warehouse, device: str, family: str | None = None) -> pd.DataFrame:
    """The device's kernel samples, one measured version of each (family, framework, dtype) (_tables), priced as a
    served step pays them (served_latency; the measured value kept as measured_latency_us). The newer tables set
    aside are listed in the frame's attrs["set_aside"], the served corrections in attrs["served"]. The local CPU's
    samples come from its profile traces."""
    if device == LOCAL_CPU:
        return profile_samples(wh, family)
    chosen, set_aside = _tables(wh, device, family)
    frames = [
        wh.arrow(  # a filtered scan keeps the tables' order; a join's order varies run to run with its threads, and
            # a least-squares fit's last bits with the order of its rows
            "SELECT * FROM kernel_samples WHERE device = ? AND op_family = ? AND framework IS NOT DISTINCT FROM ? "
            "AND dtype IS NOT DISTINCT FROM ? AND framework_version IS NOT DISTINCT FROM ?",
            [device, fam, fw, dtype, ver],
        ).to_pandas()
        for fam, fw, dtype, ver in chosen
    ]
    if not frames:
        out = pd.DataFrame()
        out.attrs.update(set_aside=set_aside, served=[])
        return out
    out = pd.concat(frames, ignore_index=True)
    sha = dict(wh.query("SELECT source_id, sha256 FROM sources")[1])
    out["sha256"] = out["source_id"].map(sha)
    out["measured_latency_us"] = out["latency_us"]
    out["latency_us"], served = served_latency(out, catalog_device(device))
    out.attrs.update(set_aside=set_aside, served=served)
    return out


def or_none(value):
    """A null from pandas (NaN, NA) as None: NaN is not JSON, and NaN != NaN breaks equal summaries."""
    return None if pd.isna(value) else value


def _entry(key: tuple, group: pd.DataFrame, fitted: Fitted, holdout: dict, device: Device) -> dict:
    family, dtype, framework = key
    sources = group.drop_duplicates("source_id")[["source_id", "sha256"]].to_dict("records")
    return {
        "family": family,
        "dtype": or_none(dtype),
        "framework": or_none(framework),
        "framework_version": or_none(group["framework_version"].iloc[0]),
        "n": fitted.n,
        "form": asdict(fitted.form),
        "coefficients": fitted.coef.tolist(),
        "conf_int_95": fitted.conf_int.tolist(),
        "r2": round(fitted.r2, 6),
        "cv_mean_ape_by_degree": fitted.cv,
        # log(measured / predicted) bounding 90% of the chosen form's grouped-CV residuals
        "interval_90_log": list(fitted.log_interval_90) if fitted.log_interval_90 else None,
        # ... and how much wider, each side, per e-fold of size past the fitted shapes (fit.extrapolation_growth)
        "interval_90_growth_log": fitted.log_interval_growth,
        "surface": asdict(fitted.surface) if fitted.surface is not None else None,
        "holdout": holdout,
        "sources": sources,
        "faster_than_roofline": faster_than_roofline(group, device, key),
    }


FASTER_THAN_ROOFLINE = 1.05  # a measurement this much faster than its roofline is flagged (timer noise: below)


def beats_roofline(roofline_us: np.ndarray, latency_us: np.ndarray) -> np.ndarray:
    """Which measurements run more than FASTER_THAN_ROOFLINE times faster than their speed of light."""
    return roofline_us > FASTER_THAN_ROOFLINE * latency_us


def faster_than_roofline(group: pd.DataFrame, device: Device, key: tuple) -> dict | None:
    """Measurements faster than their speed of light: the table measured something else than its columns say
    (A100 TRT-LLM decode attention runs up to 1.7x faster than its KV can stream from HBM: the collector's
    sequences appear to share KV blocks that stay in L2), or the roofline misses what the op moves. Logged and
    recorded in the artifact; the rows are kept (the fit follows the data it was given)."""
    roof, measured = roofline(group, device)["roofline_us"].to_numpy(), group["latency_us"].to_numpy()
    ratio, fast = roof / measured, beats_roofline(roof, measured)
    if not fast.any():
        return None
    out = {"rows": int(fast.sum()), "share": round(float(fast.mean()), 4), "max_ratio": round(float(ratio.max()), 3)}
    log.warning(
        "%s: %d of %d measurements (%.1f%%) are faster than their roofline on %s, up to %.2fx: the table or the "
        "roofline is wrong there",
        "/".join(map(str, key)),
        out["rows"],
        len(group),
        100 * out["share"],
        device.id,
        out["max_ratio"],
    )
    return out


def fit_device(
    wh: Warehouse,
    device: Device,
    family: str | None = None,
    seed: int = 0,
    on_group=None,
    samples: pd.DataFrame | None = None,
    trials: dict | None = None,
) -> dict:
    """Fit every (family, dtype, framework) group of a device; score each on a shape-block hold-out.
    on_group(done, total, name) reports progress; `samples` are the device's samples if already read;
    `trials`, when given, collects each group's shape-block fit (or its TooFewSamples) for the scoring to reuse."""
    df = device_samples(wh, device.id, family) if samples is None else samples
    doc = {
        "device": device.id,
        "device_figures": {
            "peak_flops": device.peak_flops,
            "memory_bandwidth": device.memory_bandwidth,
            "sources": device.sources,
        },
        "tool_version": __version__,
        "fitted_at": ingest_time().isoformat(timespec="seconds"),  # $SOURCE_DATE_EPOCH when reproducing
        "models": [],
        "skipped": [],
        # newer tables not fitted: their floor timed a host path, not the kernel (HOST_BOUND_FLOOR_RATIO)
        "set_aside": df.attrs.get("set_aside", []),
        # tables fitted as the served op, not as their collector timed it (served_latency)
        "served": df.attrs.get("served", []),
    }
    for t in doc["set_aside"]:
        log.warning(
            "%s/%s/%s %s: fastest measurement %.1f us, %.0fx another framework's %.1f us: host-bound, not a kernel "
            "time; fitted on %s instead",
            t["op_family"],
            t["dtype"],
            t["framework"],
            t["framework_version"],
            t["floor_us"],
            t["floor_us"] / t["other_frameworks_floor_us"],
            t["other_frameworks_floor_us"],
            t["used_instead"],
        )
    if df.empty:
        return doc
    df["framework"] = df["framework"].fillna("unknown")
    groups = df.groupby(list(GROUP_KEYS), sort=True, dropna=False)
    for done, (key, group) in enumerate(groups):
        if on_group is not None:
            on_group(done, groups.ngroups, "/".join(map(str, key)))
        group = group.reset_index(drop=True)
        try:
            fitted = fit_group(group, key[0], device, seed)
        except TooFewSamples as e:
            log.warning("%s %s %s: %s; predictions fall back to the next tier", *key, e)
            doc["skipped"].append(dict(zip(GROUP_KEYS, key, strict=True)) | {"n": len(group), "reason": str(e)})
            continue
        doc["models"].append(_entry(key, group, fitted, _holdout(group, key[0], device, seed, trials, key), device))
    return doc


def shape_block_trial(group: pd.DataFrame, family: str, device: Device, seed: int, trials: dict | None, key):
    """The group's fit on the training side of its shape-block split (TooFewSamples raised when it has none),
    fitted once: calibrate's hold-out and its scoring share it."""
    if trials is not None and key in trials:
        trial = trials[key]
    else:
        train, _ = split_masks(group, family, "shape_block", seed)
        try:
            trial = fit_group(group[train], family, device, seed)
        except TooFewSamples as e:
            trial = e
        if trials is not None:
            trials[key] = trial
    if isinstance(trial, TooFewSamples):
        raise trial
    return trial


def _holdout(group: pd.DataFrame, family: str, device: Device, seed: int, trials: dict | None, key) -> dict:
    """The model's error on a shape-block hold-out (fitted without those shapes); empty if too small."""
    train, test = split_masks(group, family, "shape_block", seed)
    if not train.sum() or not test.sum():
        return {}
    try:
        trial = shape_block_trial(group, family, device, seed, trials, key)
    except TooFewSamples as e:
        return {"split": "shape_block", "note": str(e)}
    pred, measured = trial.predict(group[test], device), group.loc[test, "latency_us"].to_numpy()
    err = ape(pred, measured)
    return {
        "split": "shape_block",
        "n": int(test.sum()),
        "median_ape": round(float(np.median(err)), 5),
        "p90_ape": round(float(np.percentile(err, 90)), 5),
        "coverage_90": coverage_90(trial, pred, measured, group[test]),
    }


def coverage_90(
    fitted: Fitted, pred: np.ndarray, measured: np.ndarray, ops: pd.DataFrame | None = None
) -> float | None:
    """The share of held-out measurements inside the fit's nominal 90% interval (None without one); given the
    rows (ops), the interval widens past the fitted shapes as a prediction's does."""
    if fitted.log_interval_90 is None or not len(measured):
        return None
    lo, hi = fitted.interval_factors(ops)
    return round(float(np.mean((measured >= pred * lo) & (measured <= pred * hi))), 5)


SIGNIFICANT = 12  # artifact floats: the last bits of a fit vary with the BLAS, not with the data


def rounded(value):
    """Floats to SIGNIFICANT digits, recursively, so artifacts are byte-identical run to run."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.{SIGNIFICANT}g}") if np.isfinite(value) else float(value)
    return value


def save(doc: dict, warehouse_root: Path) -> Path:
    """The JSON artifact, and its surfaces' points as Parquet (written first: a JSON never names missing points)."""
    path = models_path(warehouse_root, doc["device"])
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, entries = [], []
    for entry in doc["models"]:
        surface = entry.get("surface")
        if surface:
            points = np.asarray(surface["points"], dtype=np.int64).reshape(-1, 2)
            frames.append(
                pd.DataFrame(
                    {
                        "model": _model_key(entry),
                        "cell": points[:, 0].astype(np.int32),
                        "grid_index": points[:, 1],
                        "residual_log": np.asarray(surface["values"], dtype=float),
                    }
                )
            )
            entry = entry | {"surface": {k: v for k, v in surface.items() if k not in ("points", "values")}}
        entries.append(entry)
    table = residuals_path(warehouse_root, doc["device"])
    if frames:
        tmp = table.with_suffix(".tmp")
        write_parquet(pd.concat(frames, ignore_index=True), tmp)
        tmp.replace(table)
    else:
        table.unlink(missing_ok=True)
    tmp = path.with_suffix(".tmp")
    plain = json.loads(json.dumps(doc | {"models": entries}, default=str))
    tmp.write_text(json.dumps(rounded(plain), indent=1, allow_nan=False))
    tmp.replace(path)
    return path


def load(warehouse_root: Path, device: str) -> dict | None:
    """The JSON artifact with each surface's points and values (arrays) read back from its Parquet table."""
    path = models_path(warehouse_root, device)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}): recalibrate with "
            f"`hermes-sim calibrate --device {device}`"
        ) from None
    with_surface = [e for e in doc.get("models", []) if e.get("surface")]
    if with_surface:
        table = residuals_path(warehouse_root, device)
        if not table.exists():
            raise FileNotFoundError(f"{path} names residual surfaces but {table} is missing: recalibrate {device}")
        try:
            rows_of, points, values = _surface_points(table)
        except (pa.ArrowInvalid, KeyError) as e:
            raise ValueError(
                f"{table}: not a readable residual table ({e}): recalibrate with `hermes-sim calibrate --device "
                f"{device}`"
            ) from None
        for entry in with_surface:
            rows = rows_of.get(_model_key(entry), np.empty(0, dtype=np.int64))
            entry["surface"]["points"] = points[rows]
            entry["surface"]["values"] = values[rows]
    return doc


def _surface_points(table: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The residual table: per model key the numbers of its rows, then every row's [cell, grid index] and
    residual. The model column is read as a dictionary and grouped by its codes: decoding and grouping its
    strings would cost a replay about 0.1 s."""
    t = pq.read_table(table, read_dictionary=["model"])
    model = t.column("model").combine_chunks()
    codes, names = model.indices.to_numpy(), model.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")  # a model's rows in file order (written contiguously)
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    rows_of = {name: order[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}
    cell, grid_index = (t.column(c).to_numpy().astype(np.int64) for c in ("cell", "grid_index"))
    return rows_of, np.column_stack([cell, grid_index]), t.column("residual_log").to_numpy().astype(float)


def fitted_from_entry(entry: dict, where: str = "the artifact") -> Fitted:
    """A fitted model read back; a form with fields this version does not know (an artifact written by a newer
    hermes-sim) is a clear error, not a TypeError."""
    unknown = sorted(set(entry["form"]) - {f.name for f in fields(Form)})
    if unknown:
        raise ValueError(
            f"{where}: the {entry.get('family')} model ({entry.get('dtype')}, {entry.get('framework')}) has form "
            f"fields this hermes-sim does not know ({', '.join(unknown)}): it was written by a newer version; "
            "recalibrate with this one (`hermes-sim calibrate --device D`) or upgrade"
        )
    return Fitted(
        form=Form(**entry["form"]),
        coef=np.asarray(entry["coefficients"]),
        conf_int=np.asarray(entry["conf_int_95"]),
        r2=entry["r2"],
        n=entry["n"],
        cv=entry.get("cv_mean_ape_by_degree", {}),
        log_interval_90=tuple(entry["interval_90_log"]) if entry.get("interval_90_log") else None,
        log_interval_growth=entry.get("interval_90_growth_log"),
        surface=ResidualSurface(**entry["surface"]) if entry.get("surface") else None,
    )
