"""The `hermes-sim` console command (pyproject's script entry point); tests call `cli.app` in-process instead.

A command runs in a short-lived process, so two garbage-collection costs buy nothing there:
- importing the CLI builds a few hundred thousand long-lived objects (pandas, pyarrow, duckdb, pydantic models),
  and collections meanwhile only rescan them (about 40 ms of a 0.6 s start-up): the collector waits until the
  imports are done;
- at exit the interpreter's last collection walks everything a command left in memory (0.3-0.4 s after the
  Mooncake KV-tier replay): freezing it first leaves it to the OS, which takes the memory back either way.
  Outputs are written and closed by then."""

from __future__ import annotations

import gc

gc.disable()
try:
    from .cli import app
finally:
    gc.enable()


def main() -> None:
    try:
        app()
    finally:
        gc.freeze()
