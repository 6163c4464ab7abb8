"""`kv_transfer`: the prompt's KV moves from the prefill replica to the decode pool over a named link, sharing
it with every transfer in flight; the prefill replica frees the KV when the last byte has arrived."""

from __future__ import annotations

from .stage import Stage


class KVTransferStage(Stage):
    type = "kv_transfer"

    def start(self, run, now: float) -> None:
        pool, seq = run.handoff
        nbytes = run.context * pool.kv_bytes_per_token
        link = self.sim.link(self.spec.link, pool, seq.replica)
        run.pools[self.index] = link.name
        self.begin(run, now)
        self.stat(run, "bytes", nbytes)
        link.send(nbytes, now, self._arrived, run)

    def _arrived(self, run, now: float) -> None:
        pool, seq = run.handoff
        run.handoff = None
        pool.release(seq, now)
        self.sim.done(run, self, now)
