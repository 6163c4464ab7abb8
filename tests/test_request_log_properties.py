"""Property-based tests of the request-log parsers: rows are conserved and values round-trip."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
from hermes_sim.ingest.request_logs import parse_azure, parse_mooncake
from hermes_sim.warehouse.batch import SourceBatch
from hermes_sim.warehouse.validation import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tokens = st.integers(min_value=0, max_value=200_000)
gaps_us = st.integers(min_value=0, max_value=10_000_000)


def _parse(parser, path: Path, fmt: str) -> SourceBatch:
    batch = parser(path, SourceBatch(str(path), "x", fmt, path.stat().st_size))
    validate("requests", [batch])
    return batch


@SETTINGS
@given(st.lists(st.tuples(gaps_us, tokens, tokens), min_size=1, max_size=60))
def test_azure_valid_logs_round_trip(rows):
    start = dt.datetime(2024, 5, 10, 0, 0, 0)
    t, lines, expect = start, ["TIMESTAMP,ContextTokens,GeneratedTokens"], []
    for gap, inp, out in rows:
        t += dt.timedelta(microseconds=gap)
        lines.append(f"{t:%Y-%m-%d %H:%M:%S.%f}0,{inp},{out}")
        expect.append(((t - start).total_seconds(), inp, out))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.csv"
        path.write_text("\n".join(lines) + "\n")
        batch = _parse(parse_azure, path, "azure")
    assert batch.quarantine == []
    got = batch.tables["requests"].select(["arrival_s", "input_tokens", "output_tokens"]).to_pylist()
    assert [(r["input_tokens"], r["output_tokens"]) for r in got] == [(e[1], e[2]) for e in expect]
    first = expect[0][0]  # arrivals are relative to the log's first request
    assert np.allclose([r["arrival_s"] for r in got], [e[0] - first for e in expect], atol=1e-6)


cell = st.one_of(tokens.map(str), st.sampled_from(["", "-3", "1.5", "abc", "NaN", "1e3"]))


@SETTINGS
@given(st.lists(st.tuples(gaps_us, cell, cell, st.booleans()), min_size=1, max_size=60))
def test_azure_every_row_is_accepted_or_quarantined(rows):
    start = dt.datetime(2023, 11, 16, 18, 0, 0)
    t, lines = start, ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for gap, inp, out, backwards in rows:
        t += dt.timedelta(microseconds=gap) * (-1 if backwards else 1)
        lines.append(f"{t:%Y-%m-%d %H:%M:%S.%f}0,{inp},{out}")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.csv"
        path.write_text("\n".join(lines) + "\n")
        batch = _parse(parse_azure, path, "azure")
    table = batch.tables["requests"]
    assert table.num_rows + len(batch.quarantine) == len(rows)
    accepted_lines = set(table["_row"].to_pylist())
    quarantined_lines = {q.row_number for q in batch.quarantine}
    assert accepted_lines.isdisjoint(quarantined_lines)
    assert accepted_lines | quarantined_lines == set(range(2, len(rows) + 2))
    assert all(q.reason for q in batch.quarantine)
    df = table.to_pandas()
    assert (df.input_tokens >= 0).all() and (df.output_tokens >= 0).all()


@SETTINGS
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "gap_ms": st.integers(0, 100_000),
                "input_length": tokens,
                "output_length": tokens,
                "hash_ids": st.lists(st.integers(0, 10**9), max_size=20),
            }
        ),
        min_size=1,
        max_size=50,
    )
)
def test_mooncake_round_trip(records):
    ts, lines = 0, []
    for r in records:
        ts += r["gap_ms"]
        lines.append(json.dumps({"timestamp": ts, **{k: v for k, v in r.items() if k != "gap_ms"}}))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.jsonl"
        path.write_text("\n".join(lines) + "\n")
        batch = _parse(parse_mooncake, path, "mooncake")
    assert batch.quarantine == []
    got = batch.tables["requests"].to_pylist()
    assert [g["prefix_block_hashes"] for g in got] == [r["hash_ids"] for r in records]
    assert [g["input_tokens"] for g in got] == [r["input_length"] for r in records]
    assert got[0]["arrival_s"] == 0.0
    assert all(b["arrival_s"] >= a["arrival_s"] for a, b in itertools.pairwise(got))
