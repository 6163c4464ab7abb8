"""Shared by the benchmark scripts."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def peak_rss(cmd: list[str]) -> tuple[float, int, str]:
    """Run a command; (wall seconds, peak RSS bytes sampled every 5 ms, stdout). Exits on failure."""
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.005)
    out, err = child.communicate()
    if child.returncode:
        sys.exit(f"{cmd} failed: {err}")
    return time.perf_counter() - t0, peak, out
