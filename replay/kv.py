"""Paged KV cache: fixed-size blocks handed to sequences; the total is conserved."""

from __future__ import annotations

from ..calibrate.catalog import DTYPE_BYTES, Device, ModelConfig
from .config import Pool


def kv_blocks(pool: Pool, device: Device, model: ModelConfig) -> int:
    """Blocks that fit in one replica: device memory x utilization, minus weights and activations, per GPU."""
    dtype_b = DTYPE_BYTES.get(pool.dtype, 2)
    kv_b = DTYPE_BYTES.get(pool.kv_cache_dtype or pool.dtype, 2)
    gpus = pool.tp * pool.pp
    weights_per_gpu = model.weight_bytes(dtype_b) / gpus
    free = device.memory_bytes * pool.memory.gpu_memory_utilization - weights_per_gpu
    free -= pool.memory.activation_reserve_bytes
    # each GPU holds its share of KV heads (replicated when there are fewer KV heads than TP ranks)
    kv_heads_per_gpu = max(model.kv_heads // pool.tp, 1)
    per_token = 2 * (model.layers / pool.pp) * kv_heads_per_gpu * model.head_dim * kv_b
    blocks = int(free // (per_token * pool.memory.block_tokens))
    if blocks <= 0:
        raise ValueError(
            f"{model.id} at TP={pool.tp} PP={pool.pp} does not fit on {device.id}: "
            f"{weights_per_gpu / 2**30:.1f} GiB of weights per GPU"
        )
    return blocks


class BlockManager:
    def __init__(self, total: int, block_tokens: int):
        self.total = total
        self.free = total
        self.block_tokens = block_tokens

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_tokens)

    def can_grow(self, held: int, tokens: int) -> bool:
        return self.blocks_for(tokens) - held <= self.free

    def grow(self, held: int, tokens: int) -> int:
        """Blocks now held by a sequence of `tokens` tokens (allocating the difference)."""
        need = self.blocks_for(tokens) - held
        if need > self.free:
            raise MemoryError("out of KV blocks")
        self.free -= max(need, 0)
        return held + max(need, 0)

    def release(self, held: int) -> None:
        self.free += held
        assert self.free <= self.total, "KV blocks released twice"
