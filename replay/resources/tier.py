"""KV-cache memory tiers (host DRAM, CXL, local NVMe, a remote pool): stores of prefix blocks with a capacity
in bytes and an eviction policy chosen by name. A block is keyed by (model, block hash): equal hashes of one
model are the same KV bytes; the key is one int (the hash plus the model's slot x 2^64, hashes being int64), as
fast a dict key as there is. Occupancy never exceeds capacity (TierOverCapacity)."""

from __future__ import annotations

from collections import OrderedDict

from ..errors import TierOverCapacity


class Eviction:
    """Which block leaves when room is needed; notified of every hit."""

    name = ""

    def hit(self, blocks: OrderedDict, key) -> None:
        pass


class LRU(Eviction):
    """Least recently used first (a hit moves a block to the back)."""

    name = "lru"

    def hit(self, blocks: OrderedDict, key) -> None:
        blocks.move_to_end(key)


class FIFO(Eviction):
    """First written, first evicted (hits do not refresh)."""

    name = "fifo"


EVICTION = {cls.name: cls for cls in (LRU, FIFO)}


class Tier:
    def __init__(self, name: str, capacity_bytes: float, eviction: str = "lru"):
        self.name = name
        self.capacity = float(capacity_bytes)
        self.policy = EVICTION[eviction]()
        self.blocks: OrderedDict[tuple, float] = OrderedDict()  # key -> bytes, oldest first
        self.used = 0.0
        self.block_bytes: float | None = None  # the size every held block has, while they have one
        self.peak = 0.0
        self.hits = self.lookups = self.writes = self.evictions = 0
        self.below: Tier | None = None  # where evicted blocks are demoted (admit: on_evict below)

    def __contains__(self, key) -> bool:
        return key in self.blocks

    def put_many(self, keys: list, nbytes: float) -> list[tuple[int, float]]:
        """Store several blocks of one size, evicting from the front (the policy keeps the next victim there) as
        room is needed; returns every block evicted. The write-back hot path: a full tier evicts about one block per
        block written. When the tier holds blocks of this size only and none of `keys`, whole-byte sizes make the
        evictions a count (the oldest ones, as evicting one by one before each write would): done in bulk."""
        if nbytes > self.capacity:
            return []
        blocks, cap = self.blocks, self.capacity
        uniform = self.block_bytes == nbytes if blocks else self.used == 0.0
        if uniform and float(nbytes).is_integer() and cap < 2**52:
            new = dict.fromkeys(keys, nbytes)
            room = int(cap // nbytes)  # blocks that fit (exact: the sizes and their sums are whole numbers)
            if len(new) == len(keys) <= room and blocks.keys().isdisjoint(new):
                pop = blocks.popitem
                evicted = [pop(last=False) for _ in range(len(blocks) + len(new) - room)]
                blocks.update(new)
                self.block_bytes = nbytes
                self.evictions += len(evicted)
                self.writes += len(new)
                self.used += (len(new) - len(evicted)) * nbytes
                self.peak = max(self.peak, self.used)
                return evicted
        return self._put_each(keys, nbytes)

    def _put_each(self, keys: list, nbytes: float) -> list[tuple[int, float]]:
        """put_many block by block (a key already held is refreshed by an LRU tier)."""
        blocks, refresh, cap = self.blocks, isinstance(self.policy, LRU), self.capacity
        evicted: list = []
        used, writes, evictions = self.used, self.writes, self.evictions
        for k in keys:
            if k in blocks:
                if refresh:
                    blocks.move_to_end(k)
                continue
            while used + nbytes > cap:
                old, size = blocks.popitem(last=False)
                used -= size
                evictions += 1
                evicted.append((old, size))
            blocks[k] = nbytes
            used += nbytes
            writes += 1
        if writes > self.writes:  # one size still, if the blocks had this one or every block held is new
            self.block_bytes = nbytes if self.block_bytes == nbytes or writes - self.writes == len(blocks) else None
        self.used, self.writes, self.evictions = used, writes, evictions
        self.peak = max(self.peak, used)
        if used > cap * (1 + 1e-12):
            raise TierOverCapacity(f"tier {self.name}: {used:.0f} bytes held, capacity {cap:.0f}")
        return evicted

    def prefix(self, keys: list) -> int:
        """How many of `keys`, in order, this tier holds from the first (a hit refreshes each)."""
        n, blocks = 0, self.blocks
        refresh = isinstance(self.policy, LRU)
        for k in keys:
            if k not in blocks:
                break
            if refresh:
                blocks.move_to_end(k)
            n += 1
        self.lookups += len(keys)
        self.hits += n
        return n

    def check(self) -> None:
        """At the end of a run: the bytes held are the blocks' own, and never exceeded the capacity."""
        held = sum(self.blocks.values())
        if self.peak > self.capacity * (1 + 1e-12) or abs(held - self.used) > 1e-6 * max(self.capacity, 1.0):
            raise TierOverCapacity(
                f"tier {self.name}: peak {self.peak:.0f} bytes, capacity {self.capacity:.0f}; "
                f"{self.used:.0f} bytes counted, {held:.0f} held"
            )

    def put(self, key, nbytes: float) -> list[tuple[int, float]]:
        """Store a block, evicting as the policy says; returns the evicted (key, bytes). A block larger than the
        whole tier is not stored."""
        return self.put_many([key], nbytes)
