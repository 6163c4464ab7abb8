"""`hermes-sim replay`: one scenario, a sweep of its variants, or a log partitioned over replicas (Dask)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from ..warehouse.store import default_location
from .cli import app
from .common import (
    SchedulerOpt,
    SerialOpt,
    WarehouseOpt,
    WorkersOpt,
    check_format,
    dask_unless_serial,
    errors,
    out,
    print_table,
    write_json,
)

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a scenario field: dotted.path=value (repeatable; YAML values)."),
]


def load_scenario(config: Path, sets: list[str] | None, log_path: str | None):
    from ..replay.scenario import load

    scenario = load(config, sets or ())
    if log_path:
        if len(scenario.clients) != 1:
            raise ValueError(f"--log sets the one client's log; {config} has {len(scenario.clients)} clients")
        scenario.source.kind, scenario.source.log = "log", log_path
    return scenario


@app.command("replay")
def replay(
    config: Annotated[Path, typer.Argument(help="Scenario YAML.", exists=True, dir_okay=False)],
    log_path: Annotated[
        str | None, typer.Option("--log", help="Request-log file (ingested on the fly) or a log name in the warehouse.")
    ] = None,
    sets: SetOpt = None,
    sweep: Annotated[
        Path | None,
        typer.Option(help="Sweep YAML: `parameters:` maps --set paths to lists of values; every point a Dask task."),
    ] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    partition: Annotated[
        bool, typer.Option(help="Split a round-robin log across replicas as Dask tasks (same result as serial).")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write requests / timeline Parquet, summary JSON, plots, trace here.", file_okay=False
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Summary as text or json on stdout.")] = "text",
    metrics: Annotated[Path | None, typer.Option(help="Write the headline figures here (a DVC metrics file).")] = None,
    interval: Annotated[
        bool,
        typer.Option(
            help="Also replay with every calibrated op at the lower and upper end of its 90% prediction interval; "
            "the summary's `interval_90` gives each headline figure's [lower, upper]."
        ),
    ] = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Simulate serving request logs (or synthetic / closed-loop sources) through a scenario's pools and
    pipelines."""
    from ..replay.run import simulate

    check_format(fmt)
    root = warehouse or default_location()
    with errors(config):
        scenario = load_scenario(config, sets, log_path)
        if sweep:
            from ..replay.parallel import dask_client, run_sweep, sweep_points
            from ..warehouse.parquet import write_parquet

            points = sweep_points(scenario, sweep)
            with dask_client(workers, scheduler) as client:
                table = run_sweep(points, root, client)
            if out_dir:
                out_dir.mkdir(parents=True, exist_ok=True)
                write_parquet(table, out_dir / "sweep.parquet")
            if fmt == "json":
                write_json(table.to_dict(orient="records"))
            else:
                print_table(None, list(table.columns), list(table.itertuples(index=False)))
            return
        if partition:
            from ..replay.parallel import dask_client, simulate_partitioned

            with dask_client(workers, scheduler) as client:
                result = simulate_partitioned(scenario, root, client)
        else:
            result = simulate(scenario, root, progress=True, transfers=out_dir is not None)
        if interval:
            from ..replay.interval import interval_90

            result["summary"]["interval_90"] = interval_90(scenario, root, simulate)
    if out_dir:
        from ..replay.outputs import write

        write(result, out_dir)
    s = result["summary"]
    if metrics is not None:
        from ..replay.outputs.jsonout import dumps
        from ..replay.outputs.tables import headline

        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(dumps(headline(s)) + "\n")
    if fmt == "json":
        write_json(s)
        return
    print_summary(s)


def print_summary(s: dict) -> None:
    """A replay's summary as text: the headline figures, where the time goes per stage, each pool's device,
    load and the tiers that priced it, rejections and every assumption standing in for a measurement."""
    out.print(f"\n## Replay: {s['scenario']}\n")
    out.print(
        f"{s['completed']} completed, {s['rejected']} rejected over {s['simulated_span_s']} s simulated; "
        f"TTFT p50 / p99 {s['ttft_ms'].get('p50')} / {s['ttft_ms'].get('p99')} ms; TPOT p50 / p99 "
        f"{s['tpot_ms'].get('p50')} / {s['tpot_ms'].get('p99')} ms; {s['throughput_output_tokens_per_s']} output "
        f"tokens/s; goodput {s['goodput_req_per_s']} req/s; energy {s['energy_j']} J; cost {s['cost_usd']} USD"
    )
    if "interval_90" in s:
        shown = ", ".join(f"{k} [{lo}, {hi}]" for k, (lo, hi) in s["interval_90"].items())
        out.print(f"90% interval (every calibrated op at its interval's lower / upper end): {shown}")
    for reason, n in s["rejected_by_reason"].items():
        out.print(f"rejected {n}: {reason}")
    if s.get("stages"):
        rows = [
            (
                name,
                st["count"],
                st["queue_ms"].get("p50"),
                st["queue_ms"].get("p99"),
                st["service_ms"].get("p50"),
                st["service_ms"].get("p99"),
            )
            for name, st in s["stages"].items()
        ]
        print_table(
            "where the time goes, per stage (ms)",
            ["stage", "requests", "queue p50", "queue p99", "service p50", "service p99"],
            rows,
        )
    pools = [
        (
            name,
            p["kind"],
            p["device"],
            p["model"],
            p["devices"],
            p["utilization"],
            p["mean_batch_size"],
            ", ".join(f"{k}: {v}" for k, v in p["cost_tiers"].items()),
        )
        for name, p in s["pools"].items()
    ]
    print_table(
        "pools", ["pool", "kind", "device", "model", "devices", "utilization", "mean batch", "cost tiers"], pools
    )
    for key, a in s["assumptions"].items():
        out.print(f"assumed {key} = {a['value']}: {a['why']}")


@app.command("search")
def search(
    config: Annotated[Path, typer.Argument(help="Scenario YAML.", exists=True, dir_okay=False)],
    space_path: Annotated[
        Path,
        typer.Option(
            "--space",
            exists=True,
            dir_okay=False,
            help="Space YAML: parameters (--set paths to value lists), constraints, strategy.",
        ),
    ],
    sets: SetOpt = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    serial: SerialOpt = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="points.parquet, search.json, pareto.png.", file_okay=False)
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Result as text or json on stdout.")] = "text",
    warehouse: WarehouseOpt = None,
) -> None:
    """Search deployments: every point a full replay (Dask tasks, cached by content); the Pareto frontiers and
    the best point that meets the constraints."""
    import tempfile

    from ..replay.search import load_space, run_search, write

    check_format(fmt)
    root = warehouse or default_location()
    with errors(config):
        scenario = load_scenario(config, sets, None)
        space = load_space(space_path)
        with dask_unless_serial(workers, scheduler, serial) as client:
            found, table, seconds = run_search(scenario, space, root, client, where=str(space_path))
        with tempfile.TemporaryDirectory() as tmp:
            report = write(found, table, out_dir or Path(tmp), seconds)
    if fmt == "json":
        write_json(report)
        return
    out.print(
        f"{report['points']} points ({space.strategy}), {report['replays']} replays "
        f"({report['replays_whole_log_equivalent']} whole-log equivalents), {report['cached']} from the cache, "
        f"in {report['seconds']} s ({report['points_per_second']} points/s)"
    )
    b = report["best"]
    if b["found"]:
        f = b["figures"]
        out.print(
            f"best within the constraints: {b['point']}: {f['tokens_per_dollar']} tokens/$, TTFT p99 "
            f"{f['ttft_p99_ms']} ms, TPOT p99 {f['tpot_p99_ms']} ms, {f['devices']} devices, "
            f"${f['cost_per_hour_usd']}/h"
        )
    else:
        out.print("no point meets the constraints; nearest:")
        params = list(space.parameters)
        print_table(
            None,
            [*params, "excess", "ttft_p99_ms", "tpot_p99_ms", "devices", "cost_per_hour_usd"],
            [
                tuple(
                    n.get(k) for k in [*params, "excess", "ttft_p99_ms", "tpot_p99_ms", "devices", "cost_per_hour_usd"]
                )
                for n in b["nearest"]
            ],
        )
    front = report["frontiers"]["tokens_per_dollar_vs_ttft_p99"]
    params = list(space.parameters)
    print_table(
        "Pareto frontier: tokens per dollar vs p99 TTFT",
        [*params, "tokens_per_dollar", "ttft_p99_ms"],
        [tuple(r.get(k) for k in [*params, "tokens_per_dollar", "ttft_p99_ms"]) for r in front],
    )


@app.command("estimate")
def estimate_cmd(
    device: Annotated[str, typer.Option("--device", "-d", help="Device id (see `hermes-sim devices`).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model id (see `hermes-sim models`).")],
    batch: Annotated[int, typer.Option(help="Requests in the static batch.", min=1)],
    input_tokens: Annotated[int, typer.Option(help="Prompt tokens per request.", min=1)],
    output_tokens: Annotated[int, typer.Option(help="Output tokens per request.", min=1)],
    tp: Annotated[int, typer.Option(help="Tensor parallelism.", min=1)] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline parallelism.", min=1)] = 1,
    ep: Annotated[int, typer.Option(help="MoE: expert parallelism inside the TP group.", min=1)] = 1,
    dtype: Annotated[str, typer.Option(help="Weights / activations dtype.")] = "bfloat16",
    framework: Annotated[
        str | None, typer.Option(help="Serving framework whose models and overhead price it: sglang, trtllm or vllm.")
    ] = None,
    prefill_chunk_tokens: Annotated[
        int | None,
        typer.Option(help="Prefill each prompt this many tokens per iteration (llama.cpp's prompt batch).", min=1),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    warehouse: WarehouseOpt = None,
) -> None:
    """The cost of one static batch: prefill of the B prompts as one batch (or chunk by chunk), the mean decode
    iteration over the O steps (KV growing from I to I+O), end to end; with the tiers that priced them and the
    step overhead."""
    from ..replay.estimate import estimate

    check_format(fmt)
    with errors():
        est = estimate(
            device,
            model,
            batch,
            input_tokens,
            output_tokens,
            warehouse or default_location(),
            tp,
            pp,
            dtype,
            framework,
            ep,
            prefill_chunk_tokens,
        )
    if fmt == "json":
        write_json(est)
        return
    out.print(
        f"{model} on {tp * pp}x {device} (TP {tp}, PP {pp}, {dtype}, KV cache {est['kv_cache_dtype']}), batch "
        f"{batch} x {input_tokens} in / {output_tokens} out: prefill {est['prefill_ms']} ms "
        f"({est['prefill_iterations']} iteration(s) of {est['prefill_chunk_tokens']} tokens a prompt), decode step "
        f"{est['decode_step_ms']} ms, end to end {est['e2e_ms']} ms"
    )
    out.print(f"priced from: {', '.join(f'{k} {v} ops' for k, v in est['cost_tiers'].items())}")
    for family, past in est["past_measured"].items():
        out.print(
            f"past the measured shapes: {family}, {past['ops']} of {past['of']} ops, priced as {past['priced_as']}"
        )
    per_hop, n_hops = est["broadcast_overhead_us"], int(math.log2(tp))  # the driver's tree over the TP workers
    hops = f" (the TP broadcast's {n_hops} hops of {per_hop} us included)" if per_hop and n_hops else ""
    eager = est["eager_layer_us"]
    floor = f", the prefill at least {eager} us per layer (launched outside a CUDA graph)" if eager else ""
    out.print(
        f"step overhead {est['step_overhead_us']} us per iteration{hops} + {est['sequence_overhead_us']} us per "
        f"sequence{floor}: {est['step_overhead_source']}"
    )
    if not est["kv_fits"]:
        out.print(
            f"warning: the batch needs {est['kv_blocks_needed']} KV blocks, a replica has "
            f"{est['kv_blocks_per_replica']}: a server would not run it as one batch"
        )
