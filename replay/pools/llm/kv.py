"""Paged KV cache: fixed-size blocks handed to sequences; the total is conserved."""

from __future__ import annotations

from collections import OrderedDict

from ....calibrate.catalog import DTYPE_BYTES, Device, ModelConfig
from ...errors import KVBlocksNotConserved, ScenarioError
from ...scenario import LLMPoolSpec


def kv_block_bytes(pool: LLMPoolSpec, model: ModelConfig) -> float:
    """Bytes of one KV block on one GPU of the replica. Each GPU holds its share of the KV heads (replicated
    when there are fewer KV heads than TP ranks) for its pipeline stage's layers."""
    kv_b = DTYPE_BYTES.get(pool.kv_dtype, 2)
    kv_heads_per_gpu = max(model.kv_heads // pool.tp, 1)
    return 2 * (model.layers / pool.pp) * kv_heads_per_gpu * model.head_dim * kv_b * pool.memory.block_tokens


def kv_blocks(pool: LLMPoolSpec, device: Device, model: ModelConfig) -> int:
    """Blocks that fit in one replica: device memory x utilization, minus weights and activations, per GPU."""
    dtype_b = DTYPE_BYTES.get(pool.dtype, 2)
    gpus = pool.tp * pool.pp
    weights_per_gpu = model.weight_bytes(dtype_b) / gpus
    free = device.memory_bytes * pool.memory.gpu_memory_utilization - weights_per_gpu
    free -= pool.memory.activation_reserve_bytes
    blocks = int(free // kv_block_bytes(pool, model))
    if blocks <= 0:
        raise ScenarioError(
            f"pools.{pool.name}",
            f"{model.id} at TP={pool.tp} PP={pool.pp} does not fit on {device.id}: "
            f"{weights_per_gpu / 2**30:.1f} GiB of weights per {'GPU' if device.kind == 'gpu' else 'device'} of "
            f"{device.memory_bytes / 2**30:.0f} GiB "
            f"(x gpu_memory_utilization {pool.memory.gpu_memory_utilization}, minus "
            f"{pool.memory.activation_reserve_bytes / 2**30:.1f} GiB of activations)",
        )
    return blocks


def kv_bytes_per_token(pool: LLMPoolSpec, model: ModelConfig) -> float:
    """KV bytes of one token over the whole replica (every layer, every KV head): what a transfer moves."""
    kv_b = DTYPE_BYTES.get(pool.kv_dtype, 2)
    return 2 * model.layers * model.kv_heads * model.head_dim * kv_b


class BlockManager:
    def __init__(self, total: int, block_tokens: int):
        self.total = total
        self.free = total
        self.block_tokens = block_tokens
        self.cache: PrefixCache | None = None  # whose unpinned blocks are reclaimed when free ones fall short

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_tokens)

    def _make_room(self, need: int) -> None:
        """Evict unpinned prefix-cache entries to free `need` blocks, only if that suffices (as an allocator
        counting cached blocks as free does): a request that cannot be served evicts nothing."""
        if need > self.free and self.cache is not None and need <= self.free + self.cache.unpinned:
            self.cache.evict(need - self.free)

    def can_grow(self, held: int, tokens: int) -> bool:
        """Whether a sequence holding `held` blocks can grow to `tokens`. Makes room first: unpinned prefix
        cache entries are evicted when free blocks fall short, as an allocation would."""
        need = self.blocks_for(tokens) - held
        self._make_room(need)
        return need <= self.free

    def ensure(self, blocks: int) -> bool:
        """Whether `blocks` more can be taken, evicting unpinned prefix-cache entries if that makes room."""
        self._make_room(blocks)
        return blocks <= self.free

    def take(self, blocks: int) -> None:
        if blocks > self.free:
            raise MemoryError("out of KV blocks")
        self.free -= blocks

    def try_grow(self, held: int, tokens: int) -> int:
        """Blocks held after growing a sequence to `tokens` tokens, or -1 (nothing taken) if they do not fit."""
        need = -(-tokens // self.block_tokens) - held
        if need > self.free:
            self._make_room(need)
            if need > self.free:
                return -1
        if need > 0:
            self.free -= need
            return held + need
        return held

    def release(self, held: int) -> None:
        self.free += held
        if self.free > self.total:
            raise KVBlocksNotConserved(f"KV blocks released twice: {self.free} free of {self.total}")


class SwapSpace:
    """Host memory a replica swaps preempted sequences' KV into (vLLM's swap_space), and the host link that
    carries it: every GPU of the replica copies its own share of each block in parallel."""

    def __init__(self, capacity_blocks: int, block_bytes: float, link_bandwidth: float, link_latency_s: float):
        self.capacity, self.used = capacity_blocks, 0
        self.block_bytes, self.bandwidth, self.latency_s = block_bytes, link_bandwidth, link_latency_s
        self.swapped_blocks = 0  # moved either way, over the run

    def reserve(self, blocks: int) -> bool:
        if self.used + blocks > self.capacity:
            return False
        self.used += blocks
        return True

    def release(self, blocks: int) -> None:
        self.used -= blocks

    def transfer_us(self, blocks: int) -> float:
        self.swapped_blocks += blocks
        return (self.latency_s + blocks * self.block_bytes / self.bandwidth) * 1e6


class PrefixCache:
    """Prompt prefix blocks kept after their request finishes, keyed by the log's block hashes (equal hash =
    shareable KV). Entries in use by running requests are pinned; the rest wait in a free queue in the order they
    were last released or touched (vLLM's free-block queue) and are evicted from its head when the pool needs
    blocks: O(1) per block. Cached blocks count toward the replica's KV total."""

    def __init__(self, kv: BlockManager, hash_tokens: int):
        self.kv = kv
        self.hash_tokens = hash_tokens
        self.blocks_per_hash = kv.blocks_for(hash_tokens)
        self.entries: dict[int, int] = {}  # hash -> pins
        self.free: OrderedDict[int, None] = OrderedDict()  # unpinned entries, next victim first
        self.held = 0  # blocks of all entries
        self.unpinned = 0  # blocks of entries no running request uses (evictable)
        self.hit_tokens = 0
        self.lookup_tokens = 0
        kv.cache = self

    def match(self, hashes: tuple[int, ...], prompt: int) -> int:
        """Pin the longest cached prefix of `hashes`; return how many hash blocks it covers."""
        n = self.cached_prefix(hashes)
        entries = self.entries
        for h in hashes[:n]:
            if entries[h] == 0:
                self.unpinned -= self.blocks_per_hash
                del self.free[h]
            entries[h] += 1
        self.lookup_tokens += prompt
        self.hit_tokens += min(n * self.hash_tokens, prompt)
        return n

    def cached_prefix(self, hashes: tuple[int, ...]) -> int:
        """How many leading hash blocks are cached (no pinning: a router's look)."""
        n = 0
        entries = self.entries
        for h in hashes:
            if h not in entries:
                break
            n += 1
        return n

    def unpin(self, hashes: tuple[int, ...]) -> None:
        entries = self.entries
        for h in hashes:
            entries[h] -= 1
            if entries[h] == 0:
                self.unpinned += self.blocks_per_hash
                self.free[h] = None

    def insert(self, hashes: tuple[int, ...]) -> None:
        """Keep these full prompt blocks (their request is done) if room can be made."""
        entries, free = self.entries, self.free
        new = [h for h in dict.fromkeys(hashes) if h not in entries]
        need = len(new) * self.blocks_per_hash
        if new and self.kv.free >= need:  # room without evicting: all at once (the common case)
            self.kv.free -= need
            self.held += need
            self.unpinned += need
            for h in hashes:
                pins = entries.get(h)
                if pins is None:
                    entries[h] = 0
                    free[h] = None
                elif not pins:
                    free.move_to_end(h)
            return
        for h in hashes:
            if h in entries:
                if entries[h] == 0:
                    free.move_to_end(h)
                continue
            if not self.kv.ensure(self.blocks_per_hash):
                return
            self.kv.take(self.blocks_per_hash)
            self.held += self.blocks_per_hash
            self.unpinned += self.blocks_per_hash
            entries[h] = 0
            free[h] = None

    def evict(self, wanted: int) -> None:
        freed, bph = 0, self.blocks_per_hash
        while freed < wanted and self.free:
            h, _ = self.free.popitem(last=False)
            del self.entries[h]
            freed += bph
        self.held -= freed
        self.unpinned -= freed
        self.kv.free += freed

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0
