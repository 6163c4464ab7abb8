"""How well could any model do on the shape-block split? The measured tables' own interpolation floor.

    python benchmarks/bench_interpolation_floor.py --warehouse DIR [--devices h100_sxm a100_sxm]

The shape-block split holds out interior values of the family's block dims (GEMM n and k, all-reduce message
bytes, decode attention KV length, prefill attention sequence length). For each held-out row this predicts its
latency from the true measurements of the same configuration (every other dim, kernel and dtype equal; repeats
averaged) at the nearest training values below and above in each held-out dim, interpolated in log-log (a GEMM
whose n and k are both held out: over the four corners): an oracle that knows the neighbours exactly and only
has to bridge the gap, as a smooth model must. Where the oracle's error is about the fitted model's, the rest of
a miss is the tables' roughness between measured sizes (protocol switches, kernel tiles, a BLAS heuristic's
kernel choice), not the model's form.

Per (device, family, dtype, framework) group: the held-out rows an oracle can bridge (both neighbours measured),
the oracle's and the calibrated model's (the calibrate command's shape-block fit, scored on the same rows)
median / p90 absolute percentage error, on all of them and on the model catalog's shapes (the targets' subset),
and which values were held out. Written to
benchmarks/results/interpolation_floor.json; the calibration targets are median <= 4% / p90 <= 12% for
GEMM and attention and median <= 5% for all-reduce.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from hermes_sim.calibrate.artifacts import device_samples, shape_block_trial
from hermes_sim.calibrate.catalog import device as catalog_device
from hermes_sim.calibrate.evaluate import catalog_mask
from hermes_sim.calibrate.fit import BLOCK_DIMS, CATEGORICAL, CONFIG_DIMS, SIZE_DIMS, TooFewSamples, ape
from hermes_sim.calibrate.splits import split_masks
from hermes_sim.warehouse.store import Warehouse

RESULTS = Path(__file__).resolve().parent / "results" / "interpolation_floor.json"
FAMILIES = ("gemm", "all_reduce", "attention_decode", "attention_prefill")


def oracle(group: pd.DataFrame, family: str, train: np.ndarray, test: np.ndarray) -> pd.Series:
    """Each test row from the mean training latency of its configuration at the nearest training values below and
    above it in each held-out dim (BLOCK_DIMS: GEMM's n and k, one dim elsewhere), interpolated in log-log
    (multilinearly over the corners when a GEMM row's n and k are both held out); NaN where a corner was not
    measured."""
    dims = [d for d in BLOCK_DIMS[family] if d in group.columns]
    extra = ("batch_size", "cuda_graph", "dtype")
    moving = {"kv_len"} if "seq_len" in dims else set()  # a prefill's KV length is its sequence length
    keys = [
        c
        for c in dict.fromkeys((*SIZE_DIMS[family], *CONFIG_DIMS.get(family, ()), *CATEGORICAL, *extra))
        if c not in dims and c not in moving and c in group.columns
    ]
    frame = group.assign(**{k: group[k].astype(str).fillna("none") for k in keys})  # pandas 3: NaN stays NaN
    means = frame[train].groupby([*keys, *dims])["latency_us"].mean()
    measured = {key if isinstance(key, tuple) else (key,): v for key, v in means.items()}
    # per configuration and held-out dim, the training values measured there (the neighbours to bridge)
    measured_at: dict[tuple, list[set]] = {}
    for key in measured:
        sets = measured_at.setdefault(key[: len(keys)], [set() for _ in dims])
        for j, value in enumerate(key[len(keys) :]):
            sets[j].add(float(value))
    out = pd.Series(np.nan, index=group.index[test])
    for i, row in frame[test].iterrows():
        base = tuple(row[k] for k in keys)
        axes = []
        for j, d in enumerate(dims):
            x, seen = float(row[d]), measured_at.get(base, [set()] * len(dims))[j]
            if x in seen:
                axes.append(((x, 1.0),))
                continue
            below, above = [v for v in seen if v < x], [v for v in seen if v > x]
            if not below or not above:
                break
            x0, x1 = max(below), min(above)
            w = (np.log(x) - np.log(x0)) / (np.log(x1) - np.log(x0))
            axes.append(((x0, 1 - w), (x1, w)))
        else:
            corners = [(base + tuple(v for v, _ in c), math.prod(w for _, w in c)) for c in itertools.product(*axes)]
            if all(key in measured for key, _ in corners):
                out[i] = float(np.exp(sum(np.log(measured[key]) * w for key, w in corners)))
    return out


def pct(e: np.ndarray) -> dict:
    return {"median_ape": round(float(np.median(e)), 4), "p90_ape": round(float(np.quantile(e, 0.9)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", type=Path, required=True)
    ap.add_argument("--devices", nargs="+", default=["h100_sxm", "a100_sxm"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    with Warehouse(args.warehouse, read_only=True) as wh:
        for dev_id in args.devices:
            dev = catalog_device(dev_id)
            for family in FAMILIES:
                df = device_samples(wh, dev_id, family)
                if df.empty:
                    continue
                df["framework"] = df["framework"].fillna("unknown")
                for (dtype, framework), group in df.groupby(["dtype", "framework"], sort=True):
                    if framework == "vidur":
                        continue
                    group = group.reset_index(drop=True)
                    train, test = split_masks(group, family, "shape_block", args.seed)
                    if not test.any():
                        continue
                    floor = oracle(group, family, train, test)
                    bridged = floor.dropna()
                    if bridged.empty:
                        continue
                    try:
                        fitted = shape_block_trial(group, family, dev, args.seed, None, None)
                    except TooFewSamples:
                        continue
                    tested = group.loc[bridged.index]
                    measured = tested["latency_us"].to_numpy()
                    catalog = catalog_mask(tested, family)
                    e_oracle, e_model = ape(bridged.to_numpy(), measured), ape(fitted.predict(tested, dev), measured)
                    rows.append(
                        {
                            "device": dev_id,
                            "family": family,
                            "dtype": dtype,
                            "framework": framework,
                            "held_out": {
                                d: sorted(float(v) for v in set(group.loc[test, d]) - set(group.loc[train, d]))
                                for d in BLOCK_DIMS[family]
                            },
                            "rows": len(bridged),
                            "rows_held_out": int(test.sum()),
                            "oracle": pct(e_oracle),
                            "calibrated": pct(e_model),
                            "catalog_rows": int(catalog.sum()),
                            "catalog_oracle": pct(e_oracle[catalog]) if catalog.any() else None,
                            "catalog_calibrated": pct(e_model[catalog]) if catalog.any() else None,
                        }
                    )
                    r = rows[-1]
                    print(
                        f"{dev_id} {family} {dtype} {framework}: {r['rows']} rows, oracle "
                        f"{r['oracle']['median_ape']:.1%} / {r['oracle']['p90_ape']:.1%}, calibrated "
                        f"{r['calibrated']['median_ape']:.1%} / {r['calibrated']['p90_ape']:.1%}"
                    )
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
