"""Deployment-search speed: the 64-point space benchmarks/spaces/azure_conv_devices.yaml over the whole Azure
2023 conversation log (benchmarks/scenarios/search_azure.yaml) on 2 local Dask workers, from an empty cache; and
the same space by successive halving (how many whole-log replays it needs, and whether its frontier is the
grid's).

    python benchmarks/bench_search.py [--warehouse DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from _common import update_headline

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", type=Path, default=Path(os.environ.get("HERMES_WAREHOUSE", ".hermes")))
    args = ap.parse_args()
    os.chdir(REPO)
    from hermes_sim.replay.parallel import dask_client
    from hermes_sim.replay.scenario import load
    from hermes_sim.replay.search import CACHE_DIR, frontiers, load_space, run_search

    scenario = load(REPO / "benchmarks/scenarios/search_azure.yaml")
    space = load_space(REPO / "benchmarks/spaces/azure_conv_devices.yaml")
    halving = space.model_copy(update={"strategy": "halving"})
    out = {}
    with dask_client(2) as client:
        for name, sp in (("grid", space), ("halving", halving)):
            shutil.rmtree(args.warehouse / CACHE_DIR, ignore_errors=True)
            search, table, seconds = run_search(scenario, sp, args.warehouse, client, progress=False)
            out[name] = {
                "points": len(search.points),
                "replays": search.replays,
                "whole_log_replays": round(search.replayed_share, 2),
                "seconds": round(seconds, 1),
                "points_per_s": round(len(search.points) / seconds, 3),
                "frontier": sorted(
                    (
                        r["pools.llm.device"],
                        r["pools.llm.replicas"],
                        r["pools.llm.batching.max_batched_tokens"],
                        r["pools.llm.batching.max_num_seqs"],
                    )
                    for r in frontiers(table)["tokens_per_dollar_vs_ttft_p99"]
                ),
            }
    out["halving_frontier_within_grid"] = set(map(tuple, out["halving"]["frontier"])) <= set(
        map(tuple, out["grid"]["frontier"])
    )
    (REPO / "benchmarks/results/search.json").write_text(json.dumps(out, indent=1) + "\n")
    update_headline(
        {
            "search_64_points_s": out["grid"]["seconds"],
            "search_points_per_s": out["grid"]["points_per_s"],
            "search_halving_whole_log_replays": out["halving"]["whole_log_replays"],
        }
    )
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
