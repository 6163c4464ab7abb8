"""`kv_retrieval`: before prefill, the prompt's reusable prefix blocks (the log's block hashes) are looked up
beyond what the target replica's HBM prefix cache holds, tier by tier in the order listed: each block comes from
the first tier holding the run of blocks so far; the first block no tier holds ends the reusable prefix. Hits
are fetched over each tier's read link (concurrently, sharing each link with every transfer in flight); the
misses are prefilled. When the request completes, its newly computed blocks are written to the tiers that admit
writes (over their write links; blocks a tier evicts land in the next tier that admits evictions).

Per request: blocks found in HBM, fetched per tier, recomputed, and the fetch time (`<stage>_service_ms`).
The replica is chosen here (the pool's router), and the prefill runs there."""

from __future__ import annotations

from ..pools.llm.engine import Req
from .stage import Stage


class KVRetrievalStage(Stage):
    type = "kv_retrieval"

    def start(self, run, now: float) -> None:
        sim = self.sim
        pool = sim.llm_pool_for(run, self.spec.pool)
        self.begin(run, now)
        run.pools[self.index] = pool.name
        replica = run.routed.get(pool.name)
        if replica is None:
            replica = run.routed[pool.name] = pool.reserve(
                Req(-1, now, run.context, 1, run.session, run.client, run.hashes)
            )
            run.reserved = (run.reserved or ()) + (pool.name,)
        rep = pool.replicas[replica]
        ht = pool.hash_tokens
        full = min(len(run.hashes), max(run.context - 1, 0) // ht)  # whole blocks of the prompt, last token excluded
        hbm = min(rep.prefix.cached_prefix(run.hashes[:full]) if rep.prefix is not None else 0, full)
        base = pool.kv_key_base  # 0 for the first model: its keys are the hashes themselves
        keys = run.hashes[hbm:full] if not base else tuple(base + h for h in run.hashes[hbm:full])
        found, pending = 0, []
        for name in self.spec.tiers:
            n = sim.tier(name, pool, replica).prefix(keys[found:])
            self.stat(run, f"{name}_blocks", n)
            if n:
                pending.append((name, n))
            found += n
        self.stat(run, "hbm_blocks", hbm)
        self.stat(run, "recomputed_blocks", full - hbm - found)
        run.fetch[pool.name] = (hbm * ht, (hbm + found) * ht)
        run.hooks.append(lambda r, t: self._write_back(r, pool, replica, keys[found:], t))
        if not pending:
            sim.done(run, self, now)
            return
        state = {"left": len(pending)}
        for name, n in pending:
            link = sim.tier_link(name, "read", pool, replica)
            link.send(n * pool.kv_block_bytes_at(ht), now, self._fetched, (run, state))

    def _fetched(self, arg, now: float) -> None:
        run, state = arg
        state["left"] -= 1
        if state["left"] == 0:
            self.sim.done(run, self, now)

    def _write_back(self, run, pool, replica: int, keys: list, now: float) -> None:
        if not keys:
            return
        nbytes = pool.kv_block_bytes_at(pool.hash_tokens)
        for name in self.spec.tiers:
            if self.sim.tier_spec(name).admit != "write":
                continue
            link = self.sim.tier_link(name, "write", pool, replica)
            link.send(len(keys) * nbytes, now, self._written, (name, pool, replica, keys, nbytes))

    def _written(self, arg, now: float) -> None:
        name, pool, replica, keys, nbytes = arg
        evicted = self.sim.tier(name, pool, replica).put_many(keys, nbytes)
        below = self._below(name)
        if evicted and below is not None:
            link = self.sim.tier_link(below, "write", pool, replica)
            link.send(sum(b for _, b in evicted), now, self._demoted, (below, pool, replica, evicted))

    def _demoted(self, arg, now: float) -> None:
        name, pool, replica, evicted = arg
        self.sim.tier(name, pool, replica).put_many([k for k, _ in evicted], evicted[0][1])

    def _below(self, name: str) -> str | None:
        names = self.spec.tiers
        for other in names[names.index(name) + 1 :]:
            if self.sim.tier_spec(other).admit == "on_evict":
                return other
        return None
