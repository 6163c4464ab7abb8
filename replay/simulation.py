"""One simulation: pools, links and tiers built from a scenario, its pipelines' stage graphs, its clients'
requests; the event loop run to the end; the invariants checked. Stages reach the rest only through the
methods here (pools by name, links, tiers, done / reject).

Request ids are global and deterministic: each client's requests take a block of ids in client order, so at
equal arrival times the client listed first goes first, serially or on any Dask worker."""

from __future__ import annotations

import logging
from pathlib import Path

from ..calibrate.catalog import device as catalog_device
from ..calibrate.catalog import tiers as catalog_tiers
from .draws import pick, uniform
from .errors import RequestLost, ScenarioError, StageOrderViolated
from .loop import EventLoop
from .pipeline.graph import PipelineGraph
from .pools.build import build_service_pool
from .pools.llm.build import build_llm_pool
from .request import Request
from .resources.link import Link
from .resources.tier import Tier
from .scenario import KV_16_BIT_FRAMEWORKS, Client, Memory, Scenario, check_hash_blocks, rerank_pairs
from .sources import SOURCES, Spec, total_requests

log = logging.getLogger(__name__)


class ClientRun:
    """A client while the simulation runs: its source, its pipeline choice and its block of request ids."""

    def __init__(self, index: int, spec: Client, sim: Simulation):
        self.index, self.spec, self.sim = index, spec, sim
        self.source = SOURCES[spec.source.kind](spec.source, sim.root, sim.scenario.seed + index)
        self.source.field = f"clients.{spec.name}.source"
        self.first_id = 0
        self.next_id = 0
        self.total = 0

    def pipeline(self, spec: Spec, key: int) -> PipelineGraph:
        choice = self.spec.pipeline
        if isinstance(choice, str):
            return self.sim.graphs[choice]
        if choice.by == "input_tokens":
            name = next((r.pipeline for r in choice.rules if spec.prompt <= r.max_input_tokens), choice.default)
        elif choice.by == "field":
            name = choice.present if spec.fields.get(choice.field) else choice.absent
        else:
            name = pick(choice.weights, uniform(self.sim.scenario.seed, key, -1))
        return self.sim.graphs[name]

    def request(self, spec: Spec) -> Request:
        key = spec.key if spec.key >= 0 else self.next_id
        self.next_id += 1
        return Request(
            key,
            self.index,
            self.pipeline(spec, key),
            spec.arrival,
            spec.prompt,
            spec.output,
            spec.session,
            spec.hashes,
            spec.fields,
            spec.seat,
        )


class Simulation:
    def __init__(self, scenario: Scenario, warehouse_root: Path, skip_ahead: bool = True, audit: bool = False):
        self.scenario, self.root = scenario, Path(warehouse_root)
        self.loop = EventLoop()
        self.loop.on_arrival = self._arrive
        self.assumptions: dict[str, dict] = {}
        self._seq_ids = 0
        self.pools: dict = {}
        max_seqs = self._service_batch_sizes()
        used = set(scenario.used_pools())
        self.unused_pools = [p.name for p in scenario.pools if p.name not in used]
        for name in self.unused_pools:
            log.info("pool %s is not used by any pipeline a client sends to: left out (no cost, no energy)", name)
        for spec in (p for p in scenario.pools if p.name in used):
            if spec.kind == "llm":
                pool = build_llm_pool(spec, self.root, self.loop, scenario.router, skip_ahead, scenario.price_at)
                pool.audit = audit
                if pool.step_overhead.source.startswith("default"):
                    o = pool.step_overhead
                    self.assume(f"pools.{spec.name}.step_overhead_us", o.iteration_us, o.source)
                reserve = spec.memory.activation_reserve_bytes
                if reserve == Memory.model_fields["activation_reserve_bytes"].default:
                    self.assume(
                        f"pools.{spec.name}.memory.activation_reserve_bytes",
                        reserve,
                        "default estimate of the activation and CUDA-graph memory a serving framework keeps out of "
                        "its KV cache per GPU (vLLM measures it with a profiling pass at start-up); with "
                        "gpu_memory_utilization it sets kv_tokens_per_replica: set it from your deployment's log",
                    )
                kept_16_bit = spec.framework in KV_16_BIT_FRAMEWORKS and spec.kv_dtype != spec.dtype
                if spec.kv_cache_dtype is None and kept_16_bit:
                    self.assume(
                        f"pools.{spec.name}.kv_cache_dtype",
                        spec.kv_dtype,
                        f"{spec.framework}'s default (--kv-cache-dtype auto) keeps KV in 16 bits under {spec.dtype} "
                        "weights, half the KV room of an 8-bit cache: set kv_cache_dtype if the deployment quantizes "
                        "its KV",
                    )
            else:
                batch = max_seqs.get(spec.name, spec.max_batch)
                pool = build_service_pool(spec, self.root, self.loop, batch, scenario.price_at)
            self.pools[spec.name] = pool
        models: dict[str, int] = {}
        for pool in self.pools.values():  # tier keys: a block hash (int64) offset by its model's slot
            if pool.kind == "llm":
                pool.kv_key_base = models.setdefault(pool.model_id, len(models)) << 64
        self.link_specs = {x.name: x for x in scenario.links}
        self.tier_specs = {t.name: self._tier_figures(t) for t in scenario.tiers}
        self.links: dict[tuple, Link] = {}
        self.tiers: dict[tuple, Tier] = {}
        self.graphs = {name: PipelineGraph(name, scenario.pipelines[name], self) for name in scenario.used_pipelines()}
        self.clients = [ClientRun(i, c, self) for i, c in enumerate(scenario.clients)]
        self.requests: list[Request] = []
        self.finished = 0
        self.keep_transfers = False  # every link transfer logged (outputs: transfers.parquet, Perfetto)

    # ---- building ------------------------------------------------------------------------------------
    def _service_batch_sizes(self) -> dict[str, int]:
        """Per service pool, the most sequences a batch may hold: max_batch, or a bigger single job."""
        out: dict[str, int] = {}
        for spec in self.scenario.pools:
            if spec.kind == "service":
                out[spec.name] = spec.max_batch
        for pipe in self.scenario.pipelines.values():
            for s in pipe.stages:
                if s.type == "rerank":
                    out[s.pool] = max(out.get(s.pool, 1), rerank_pairs(pipe, s) * 4)
        return out

    def _tier_figures(self, t):
        """A tier spec with every figure filled in (catalog values unless overridden), sources named."""
        base = catalog_tiers()[t.like] if t.like else None
        figures = {
            k: getattr(t, k) if getattr(t, k) is not None else getattr(base, k)
            for k in ("bandwidth", "latency_s", "capacity_bytes")
        }
        t = t.model_copy(update=figures)
        t._source = base.source if base is not None else "scenario"  # type: ignore[attr-defined]
        return t

    def _link_figures(self, name: str) -> tuple[float, float, str]:
        spec = self.link_specs[name]
        bw, lat, source = spec.bandwidth, spec.latency_s, "scenario"
        if spec.like:
            dev, _, which = spec.like.partition(".")
            link = catalog_device(dev).interconnects[which]
            bw = bw if bw is not None else link.bandwidth
            lat = lat if lat is not None else link.latency_s
            source = f"{dev} {which} ({catalog_device(dev).sources.get('interconnect', '')})"
        return bw, lat, source

    # ---- what stages use --------------------------------------------------------------------------------
    def next_seq_id(self) -> int:
        self._seq_ids += 1
        return self._seq_ids

    def assume(self, key: str, value, why: str) -> None:
        """Record a stand-in for a measurement; the summary lists each under `assumptions`."""
        self.assumptions.setdefault(key, {"value": value, "why": why})

    def uniform(self, run: Request, salt: int) -> float:
        return uniform(self.scenario.seed, run.id, salt)

    def llm_pool_for(self, run: Request, name: str):
        """The LLM pool a stage names, or the one its route stage chose for this request."""
        return self.pools[run.route.get(name, name)]

    def link(self, name: str, pool, replica: int) -> Link:
        spec = self.link_specs[name]
        key = (name,) if spec.scope == "shared" else (name, pool.name, replica)
        if key not in self.links:
            bw, lat, _ = self._link_figures(name)
            lanes = 1 if spec.scope == "shared" else getattr(pool, "devices_per_replica", 1)
            label = name if spec.scope == "shared" else f"{name}[{pool.name}/{replica}]"
            self.links[key] = Link(label, bw * lanes, lat, self.loop, log=[] if self.keep_transfers else None)
        return self.links[key]

    def tier_spec(self, name: str):
        return self.tier_specs[name]

    def tier(self, name: str, pool, replica: int) -> Tier:
        spec = self.tier_specs[name]
        key = (name,) if spec.scope == "pool" else (name, pool.name, replica)
        if key not in self.tiers:
            label = name if spec.scope == "pool" else f"{name}[{pool.name}/{replica}]"
            self.tiers[key] = Tier(label, spec.capacity_bytes, spec.eviction)
        return self.tiers[key]

    def tier_link(self, name: str, direction: str, pool, replica: int) -> Link:
        """A tier's read or write channel (links are full duplex: reads and writes do not share bandwidth)."""
        spec = self.tier_specs[name]
        key = (name, direction) if spec.link_scope == "shared" else (name, direction, pool.name, replica)
        if key not in self.links:
            lanes = 1 if spec.link_scope == "shared" else pool.devices_per_replica
            label = f"{name}.{direction}" + ("" if spec.link_scope == "shared" else f"[{pool.name}/{replica}]")
            self.links[key] = Link(
                label, spec.bandwidth * lanes, spec.latency_s, self.loop, log=[] if self.keep_transfers else None
            )
        return self.links[key]

    def context_hashes(self, run: Request, pool) -> tuple:
        """Block hashes of a request's growing context (multi-round reasoning): the log's where it has them,
        then ids of this request's own blocks, so a later round's prefill can reuse an earlier round's KV."""
        ht = pool.hash_tokens
        need = -(-(run.context + run.output) // ht)
        if len(run.hashes) >= need:
            return run.hashes
        own = tuple(-(run.id * 1_000_003 + i + 1) for i in range(len(run.hashes), need))
        run.hashes = run.hashes + own
        return run.hashes

    # ---- stage transitions ---------------------------------------------------------------------------
    def _arrive(self, run: Request, now: float) -> None:
        graph = run.graph
        for i in graph.roots:  # no dependencies to check
            run.ready[i] = now
            graph.stages[i].start(run, now)

    def _start(self, run: Request, i: int, now: float) -> None:
        for d in run.graph.deps[i]:
            if run.end[d] is None or run.end[d] > now + 1e-12:
                raise StageOrderViolated(
                    f"request {run.id}: stage {run.graph.stages[i].name} starts at {now} s before "
                    f"{run.graph.stages[d].name} ended ({run.end[d]})"
                )
        run.ready[i] = now
        run.graph.stages[i].start(run, now)

    def _start_later(self, arg, now: float) -> None:
        run, i = arg
        if run.reason is None:
            self._start(run, i, now)

    def done(self, run: Request, stage, now: float) -> None:
        """A stage ended for this request: start every successor whose dependencies have all ended (at this
        instant, through the loop, never from inside the pool that reported), or finish the request."""
        if run.reason is not None:
            return  # rejected on another branch; this one's work is moot
        i = stage.index
        run.end[i] = now
        if run.start[i] is None:
            run.start[i] = run.ready[i]
        run.left -= 1
        if run.left == 0:
            self._finish(run, now)
            return
        for j in run.graph.succ[i]:
            run.waiting[j] -= 1
            if run.waiting[j] == 0:
                self.loop.call_at(now, self._start_later, (run, j))

    def reject(self, run: Request, stage, reason: str, now: float) -> None:
        if run.reason is not None:
            return
        where = run.pools[stage.index] or stage.name
        run.reason = f"{stage.name} on {where}: {reason}"
        for name in run.reserved:  # routed ahead, never submitted
            self.pools[name].replicas[run.routed[name]].reserved -= 1
        run.reserved = ()
        self._finish(run, now)

    def _finish(self, run: Request, now: float) -> None:
        run.completion = now
        self.finished += 1
        if run.reason is None:
            for hook in run.hooks:
                hook(run, now)
        client = self.clients[run.client]
        nxt = client.source.follow_up(run.seat, now)
        if nxt is not None:
            self._admit(client, nxt)

    def _admit(self, client: ClientRun, spec: Spec) -> Request:
        run = client.request(spec)
        self.requests.append(run)
        self.loop.arrive(spec.arrival, run.id, run)
        return run

    # ---- running ------------------------------------------------------------------------------------
    def run(self, on_progress=None, initial: list[list[Spec]] | None = None) -> None:
        """Serve every client's requests (its source's, or `initial`'s) to the end; on_progress(finished, total)
        now and then. Prepares first unless prepare() already ran."""
        if not self.requests:
            self.prepare(initial)
        total = self.total
        self.loop.run(None if on_progress is None else lambda: on_progress(self.finished, total))
        self.check()

    def prepare(self, initial: list[list[Spec]] | None = None) -> None:
        """Create every client's initial requests and queue their arrivals."""
        offset, total = 0, 0
        for c, client in enumerate(self.clients):
            if initial is None:
                specs = client.source.initial()
                check_hash_blocks(self.scenario, client.spec, client.source.hash_block_tokens)
            else:
                specs = initial[c]
            client.first_id = client.next_id = offset
            client.total = total_requests(client.spec.source, len(specs))
            offset += client.total
            total += client.total
            missing: dict[PipelineGraph, int] = {}
            for spec in specs:
                run = client.request(spec)
                if run.graph.logged_share and "reasoning_share" not in spec.fields:
                    missing[run.graph] = missing.get(run.graph, 0) + 1
                self.requests.append(run)
                self.loop.arrivals.append((spec.arrival, 0, run.id, 0, run))
            if missing:
                graph, n = next(iter(missing.items()))
                raise ScenarioError(
                    f"pipelines.{graph.name}.stages.{graph.logged_share}.share",
                    f"share: log, but {n} of client {client.spec.name}'s {len(specs)} requests have no reasoning "
                    "share in their log (ServeGen's reason_ratio): set a number",
                )
        if not self.requests:
            raise ScenarioError("clients", "no requests to replay")
        self.total = total

    def check(self) -> None:
        lost = [r.id for r in self.requests if r.completion is None]
        if lost:
            raise RequestLost(f"{len(lost)} request(s) neither completed nor rejected, e.g. {lost[:5]}")
        for pool in self.pools.values():
            if pool.kind == "llm":
                stuck = sum(len(r.waiting) + len(r.running) + len(r.incoming) + len(r.handoff) for r in pool.replicas)
                if stuck:
                    raise RequestLost(f"pool {pool.name}: {stuck} sequence(s) still queued or running at the end")
            elif pool.queue:
                raise RequestLost(f"pool {pool.name}: {len(pool.queue)} job(s) still queued at the end")
        for link in self.links.values():
            link.check()
        for tier in self.tiers.values():
            tier.check()
