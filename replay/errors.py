"""The engine's invariants as named errors: each is raised where it would break (never an `assert`, which
`python -O` strips), and each has a test that injects its bug (tests/test_invariants.py).

1. ClockWentBack: simulated time never goes back.
2. KVBlocksNotConserved: on every LLM replica, at every iteration boundary, free + held by prefilling and
   decoding sequences + held for a KV hand-off + held by the prefix cache = total.
3. StageOrderViolated: a stage never starts before every stage it depends on has ended.
4. LinkBytesNotConserved: a link delivers every byte it was given, no more, and never faster than its
   bandwidth (delivered <= bandwidth x busy time).
5. TierOverCapacity: a memory tier never holds more bytes than its capacity (at every write, and at the end
   of a run from its peak), and the bytes it counts are its blocks' own.
6. RequestLost: every request ends completed, or rejected with its reason, in every pool it visited.
(Per-request checks that are properties of the outputs, TTFT >= queueing + its own prefill iterations and
every iteration no faster than the roofline of its batch, are tested on the results.)"""

from __future__ import annotations


class EngineInvariantError(RuntimeError):
    """A simulation broke one of the invariants above: a bug in the engine, never bad input."""


class ClockWentBack(EngineInvariantError):
    pass


class KVBlocksNotConserved(EngineInvariantError):
    pass


class StageOrderViolated(EngineInvariantError):
    pass


class LinkBytesNotConserved(EngineInvariantError):
    pass


class TierOverCapacity(EngineInvariantError):
    pass


class RequestLost(EngineInvariantError):
    pass


class ScenarioError(ValueError):
    """A scenario that cannot run, found before anything runs: names the file, the field and the known names."""

    def __init__(self, field: str, message: str, path: str | None = None):
        self.field, self.message, self.path = field, message, path
        super().__init__(f"{path + ': ' if path else ''}{field}: {message}")

    def at(self, path: str) -> ScenarioError:
        return ScenarioError(self.field, self.message, path)
