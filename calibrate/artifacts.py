"""Calibrated models as JSON artifacts with provenance, and fitting every group of one device.

<warehouse>/models/<device>.json holds one entry per (op family, dtype, framework): the form, coefficients
with 95% confidence intervals, fit statistics, the held-out (shape-block) error, and the sources (ids and
hashes) the fit read. Groups that could not be fitted are listed with the reason."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from packaging.version import InvalidVersion, Version

from .. import __version__
from ..warehouse.store import Warehouse
from .catalog import Device
from .fit import Fitted, Form, TooFewSamples, ape, fit_group
from .splits import split_masks

log = logging.getLogger(__name__)

MODELS_DIR = "models"
GROUP_KEYS = ("op_family", "dtype", "framework")


def models_path(warehouse_root: Path, device: str) -> Path:
    return Path(warehouse_root) / MODELS_DIR / f"{device}.json"


def _version_key(v: str | None):
    try:
        return (1, Version(str(v)))
    except InvalidVersion:
        return (0, str(v))


def device_samples(wh: Warehouse, device: str, family: str | None = None) -> pd.DataFrame:
    """The device's kernel samples, newest measured version of each (family, framework) only: versions
    measure the same shapes again, and mixing them would count one shape several times."""
    where, params = "device = ?", [device]
    if family:
        where += " AND op_family = ?"
        params.append(family)
    versions = wh.query(
        f"SELECT DISTINCT op_family, framework, framework_version FROM kernel_samples WHERE {where}", params
    )[1]
    newest: dict[tuple, str | None] = {}
    for fam, fw, ver in versions:
        if (fam, fw) not in newest or _version_key(ver) > _version_key(newest[(fam, fw)]):
            newest[(fam, fw)] = ver
    frames = []
    for (fam, fw), ver in sorted(newest.items(), key=str):
        frames.append(
            wh.arrow(
                "SELECT k.*, s.sha256 FROM kernel_samples k JOIN sources s USING (source_id) "
                "WHERE k.device = ? AND k.op_family = ? AND k.framework IS NOT DISTINCT FROM ? "
                "AND k.framework_version IS NOT DISTINCT FROM ?",
                [device, fam, fw, ver],
            ).to_pandas()
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _entry(key: tuple, group: pd.DataFrame, fitted: Fitted, holdout: dict) -> dict:
    family, dtype, framework = key
    sources = group.drop_duplicates("source_id")[["source_id", "sha256"]].to_dict("records")
    return {
        "family": family,
        "dtype": dtype,
        "framework": framework,
        "framework_version": group["framework_version"].iloc[0],
        "n": fitted.n,
        "form": asdict(fitted.form),
        "coefficients": fitted.coef.tolist(),
        "conf_int_95": fitted.conf_int.tolist(),
        "r2": round(fitted.r2, 6),
        "cv_mean_ape_by_degree": fitted.cv,
        "holdout": holdout,
        "sources": sources,
    }


def fit_device(wh: Warehouse, device: Device, family: str | None = None, seed: int = 0) -> dict:
    """Fit every (family, dtype, framework) group of a device; score each on a shape-block hold-out."""
    df = device_samples(wh, device.id, family)
    doc = {
        "device": device.id,
        "tool_version": __version__,
        "fitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "models": [],
        "skipped": [],
    }
    if df.empty:
        return doc
    df["framework"] = df["framework"].fillna("unknown")
    for key, group in df.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        group = group.reset_index(drop=True)
        try:
            train, test = split_masks(group, key[0], "shape_block", seed)
            holdout = {}
            if train.sum() and test.sum():
                trial = fit_group(group[train], key[0], device, seed)
                err = ape(trial.predict(group[test], device), group.loc[test, "latency_us"].to_numpy())
                holdout = {
                    "split": "shape_block",
                    "n": int(test.sum()),
                    "median_ape": round(float(np.median(err)), 5),
                    "p90_ape": round(float(np.percentile(err, 90)), 5),
                }
            fitted = fit_group(group, key[0], device, seed)
        except TooFewSamples as e:
            log.warning("%s %s %s: %s; predictions fall back to the next tier", *key, e)
            doc["skipped"].append(dict(zip(GROUP_KEYS, key, strict=True)) | {"n": len(group), "reason": str(e)})
            continue
        doc["models"].append(_entry(key, group, fitted, holdout))
    return doc


def save(doc: dict, warehouse_root: Path) -> Path:
    path = models_path(warehouse_root, doc["device"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)
    return path


def load(warehouse_root: Path, device: str) -> dict | None:
    path = models_path(warehouse_root, device)
    return json.loads(path.read_text()) if path.exists() else None


def fitted_from_entry(entry: dict) -> Fitted:
    return Fitted(
        form=Form(**entry["form"]),
        coef=np.asarray(entry["coefficients"]),
        conf_int=np.asarray(entry["conf_int_95"]),
        r2=entry["r2"],
        n=entry["n"],
        cv=entry.get("cv_mean_ape_by_degree", {}),
    )
