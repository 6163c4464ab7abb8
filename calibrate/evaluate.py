"""Fidelity: held-out error of the plain roofline, the calibrated model and a Vidur-like random forest.

One row per (device, family, dtype, framework, split, model, subset) with n, median_ape, p90_ape, p99_ape
(absolute percentage errors as fractions). `subset` is "all" test rows or "catalog": the shapes the model
catalog's transformers produce (GEMM (n, k) and attention head layouts at TP 1, 2, 4, 8).
The random forest (scikit-learn, a benchmark-only dependency) is skipped when it is not installed."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pandas as pd

from ..warehouse.store import Warehouse
from .artifacts import beats_roofline, coverage_90, device_samples, shape_block_trial
from .catalog import Device, models
from .fit import CONFIG_DIMS, SIZE_DIMS, Fitted, TooFewSamples, _log_dim, ape, fit_group
from .ops import catalog_gemm_shapes, catalog_head_configs
from .roofline import DECODE, GEMM, PREFILL, roofline
from .splits import SPLITS, split_masks, work_size

log = logging.getLogger(__name__)

RF_MAX_TRAIN = 40000
MAIN_FAMILIES = (GEMM, PREFILL, DECODE, "all_reduce", "vector_search", "elementwise", "norm")
CROSS_FRAMEWORK_TRAIN = "vllm"


def catalog_mask(df: pd.DataFrame, family: str) -> np.ndarray | None:
    """Rows whose shapes the catalog's models run; None where the family has no catalog shapes."""
    if family == GEMM:
        shapes = catalog_gemm_shapes(list(models().values()))
        return np.array([(int(n), int(k)) in shapes for n, k in zip(df["n"], df["k"], strict=True)])
    if family in (PREFILL, DECODE):
        heads = catalog_head_configs(list(models().values()))
        cfg = zip(df["num_heads"], df["num_kv_heads"], df["head_dim"], strict=True)
        return np.array([(int(h), int(k), int(d)) in heads for h, k, d in cfg])
    if family == "all_reduce":  # tensor-parallel all-reduces of activations span the measured sizes
        return np.ones(len(df), dtype=bool)
    return None


def _rf_predict(train: pd.DataFrame, test: pd.DataFrame, family: str, device: Device, seed: int) -> np.ndarray | None:
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError:
        return None
    dims = [d for d in (*SIZE_DIMS.get(family, ()), *CONFIG_DIMS.get(family, ())) if d in train.columns]

    def features(df: pd.DataFrame) -> np.ndarray:
        return np.column_stack([_log_dim(df, d) for d in dims] + [np.log(roofline(df, device)["roofline_us"])])

    if len(train) > RF_MAX_TRAIN:
        train = train.sample(RF_MAX_TRAIN, random_state=seed)
    forest = RandomForestRegressor(n_estimators=60, min_samples_leaf=2, max_features=0.7, n_jobs=2, random_state=seed)
    forest.fit(features(train), np.log(train["latency_us"].to_numpy()))
    return np.exp(forest.predict(features(test)))


def _rows(
    key: dict, split: str, test: pd.DataFrame, preds: dict[str, np.ndarray | None], fitted: Fitted | None = None
) -> list[dict]:
    out = []
    measured = test["latency_us"].to_numpy()
    subsets = {"all": np.ones(len(test), dtype=bool)}
    catalog = catalog_mask(test, key["family"])
    if catalog is not None:
        subsets["catalog"] = catalog
    for model_name, pred in preds.items():
        if pred is None:
            continue
        err = ape(pred, measured)
        for subset, mask in subsets.items():
            if not mask.any():
                continue
            e = err[mask]
            out.append(
                key
                | {
                    "split": split,
                    "model": model_name,
                    "subset": subset,
                    "n": int(mask.sum()),
                    "median_ape": round(float(np.median(e)), 5),
                    "p90_ape": round(float(np.percentile(e, 90)), 5),
                    "p99_ape": round(float(np.percentile(e, 99)), 5),
                    "coverage_90": coverage_90(fitted, pred[mask], measured[mask], test[mask])
                    if model_name == "calibrated" and fitted is not None
                    else None,
                    # measurements that beat their speed of light: the table measured something else than its
                    # columns say (artifacts.faster_than_roofline), and a model that follows the physics misses them
                    "faster_than_roofline": round(float(np.mean(beats_roofline(pred[mask], measured[mask]))), 5)
                    if model_name == "roofline"
                    else None,
                }
            )
    return out


def _score(
    train: pd.DataFrame,
    test: pd.DataFrame,
    key: dict,
    split: str,
    device: Device,
    seed: int,
    rf: bool,
    plots: dict | None = None,
    fit=None,
):
    """Rows scoring a fit on `train` against `test`; `fit()`, when given, returns that fit already made."""
    if len(test) == 0:
        return []
    family = key["family"]
    try:
        fitted = fit() if fit is not None else fit_group(train, family, device, seed)
    except TooFewSamples as e:
        log.info("%s %s: %s", split, key, e)
        return []
    terms = roofline(test, device)
    preds = {
        "roofline": terms["roofline_us"].to_numpy(),
        "calibrated": fitted.predict(test, device, terms),
        "random_forest": _rf_predict(train, test, family, device, seed) if rf else None,
    }
    if plots is not None and split == "shape_block" and family not in plots:
        plots[family] = (test["latency_us"].to_numpy(), preds["calibrated"], preds["roofline"], work_size(test, family))
    return _rows(key, split, test, preds, fitted)


def evaluate_device(
    wh: Warehouse,
    device: Device,
    splits: tuple[str, ...] = SPLITS,
    family: str | None = None,
    seed: int = 0,
    random_forest: bool = True,
    plots: dict | None = None,
    on_family=None,
    samples: pd.DataFrame | None = None,
    trials: dict | None = None,
) -> list[dict]:
    """Evaluation rows for the device; `plots`, when given, collects shape_block predictions per family;
    on_family(done, total, name) reports progress; `samples` and `trials` are fit_device's, when it ran."""
    df = device_samples(wh, device.id, family) if samples is None else samples
    if df.empty:
        return []
    df["framework"] = df["framework"].fillna("unknown")
    families = [family] if family else [f for f in MAIN_FAMILIES if f in set(df["op_family"].unique())]
    rows: list[dict] = []
    for done, fam in enumerate(families):
        if on_family is not None:
            on_family(done, len(families), fam)
        fam_df = df[df["op_family"] == fam]
        for (dtype, framework), group in fam_df.groupby(["dtype", "framework"], sort=True):
            if framework == "vidur" and (fam_df["framework"] != "vidur").any():
                continue  # Vidur samples are the cross_source test set, where another source measured the family
            group = group.reset_index(drop=True)
            key = {"device": device.id, "family": fam, "dtype": dtype, "framework": framework}
            for split in splits:
                if split in ("random", "shape_block", "extrapolation"):
                    train, test = split_masks(group, fam, split, seed)
                    fit = None
                    if split == "shape_block" and trials is not None:
                        fit = partial(shape_block_trial, group, fam, device, seed, trials, (fam, dtype, framework))
                    rows += _score(group[train], group[test], key, split, device, seed, random_forest, plots, fit)
        if "cross_framework" in splits:
            for dtype, by_dtype in fam_df.groupby("dtype", sort=True):
                train = by_dtype[by_dtype["framework"] == CROSS_FRAMEWORK_TRAIN]
                test = by_dtype[~by_dtype["framework"].isin([CROSS_FRAMEWORK_TRAIN, "vidur", "nccl"])]
                if len(train) and len(test):
                    key = {
                        "device": device.id,
                        "family": fam,
                        "dtype": dtype,
                        "framework": "+".join(sorted(test["framework"].unique())),
                    }
                    rows += _score(train, test, key, "cross_framework", device, seed, random_forest)
        if "cross_source" in splits and fam == GEMM:
            train = fam_df[(fam_df["framework"] == CROSS_FRAMEWORK_TRAIN) & (fam_df["dtype"] == "bfloat16")]
            test = fam_df[fam_df["framework"] == "vidur"].assign(dtype="bfloat16")  # fp16 = bf16 rates
            if len(train) and len(test):
                key = {"device": device.id, "family": fam, "dtype": "float16", "framework": "vidur"}
                rows += _score(train, test, key, "cross_source", device, seed, random_forest)
    return rows
