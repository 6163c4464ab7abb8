"""Warehouse guarantees: idempotent re-ingest, all-or-nothing commits, durable catalog, clean reopen."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from conftest import SAMPLES, copy_sample, counts, files_under
from hermes_sim.ingest.runner import ingest
from hermes_sim.warehouse.batch import IngestError
from hermes_sim.warehouse.store import Warehouse

AZURE = SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
MOONCAKE = SAMPLES / "requests/mooncake/conversation_trace.jsonl"


def test_reingest_same_file_is_a_noop(wh: Warehouse):
    first = ingest(wh, [AZURE], progress=False)
    before = counts(wh)
    ingested_at = wh.query("SELECT ingested_at FROM sources")[1]
    second = ingest(wh, [AZURE], progress=False)
    assert len(first.committed) == 1 and second.committed == []
    assert second.already == [(str(AZURE), first.committed[0].source_id)]
    assert counts(wh) == before
    assert wh.query("SELECT ingested_at FROM sources")[1] == ingested_at


def test_same_content_at_another_path_is_a_noop(wh: Warehouse, tmp_path: Path):
    ingest(wh, [AZURE], progress=False)
    copy = tmp_path / "renamed.csv"
    shutil.copy(AZURE, copy)
    assert ingest(wh, [copy], progress=False).committed == []
    assert counts(wh)["requests"] == 3000


def test_folder_reingest_is_a_noop(sample_warehouse: Path, tmp_path: Path):
    target = tmp_path / "wh"
    shutil.copytree(sample_warehouse, target)
    with Warehouse(target) as w:
        before = counts(w)
        report = ingest(w, [SAMPLES], progress=False)
        assert report.committed == [] and len(report.already) == before["sources"]
        assert counts(w) == before


def test_failed_ingest_leaves_the_warehouse_as_it_was(wh: Warehouse, tmp_path: Path):
    ingest(wh, [AZURE], progress=False)
    before, files_before = counts(wh), files_under(wh.root)
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 5\n')  # a mooncake line cut short
    with pytest.raises(IngestError, match=r"broken\.jsonl: not a recognised format"):
        ingest(wh, [MOONCAKE, bad], progress=False)  # the good file must not land either
    assert counts(wh) == before and files_under(wh.root) == files_before
    # and the warehouse still works: the good file can be ingested now
    assert len(ingest(wh, [MOONCAKE], progress=False).committed) == 1


def test_failure_during_commit_rolls_back_catalog_and_files(wh: Warehouse, monkeypatch):
    ingest(wh, [AZURE], progress=False)
    before, files_before = counts(wh), files_under(wh.root)
    real_replace = __import__("os").replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # after one file has moved into place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr("hermes_sim.warehouse.store.os.replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        ingest(wh, [SAMPLES / "hardware/aiconfigurator/systems/data/a100_sxm/comm"], progress=False)
    assert counts(wh) == before and files_under(wh.root) == files_before
    assert not (wh.root / "staging").exists() or not any((wh.root / "staging").iterdir())


def test_reopen_sweeps_files_of_an_interrupted_commit(tmp_path: Path):
    root = tmp_path / "wh"
    with Warehouse(root) as w:
        ingest(w, [AZURE], progress=False)
        before = counts(w)
    stray = root / "tables/requests/source=deadbeef/part-0.parquet"
    stray.parent.mkdir(parents=True)
    shutil.copy(next((root / "tables/requests").rglob("*.parquet")), stray)
    with Warehouse(root) as w:
        assert not stray.exists()
        assert counts(w) == before


def test_warehouse_survives_moving_its_directory(tmp_path: Path):
    with Warehouse(tmp_path / "a") as w:
        ingest(w, [AZURE], progress=False)
    shutil.move(tmp_path / "a", tmp_path / "b")
    with Warehouse(tmp_path / "b", read_only=True) as w:
        assert counts(w)["requests"] == 3000


def test_partitions_by_source_and_device(sample_warehouse: Path):
    parts = files_under(sample_warehouse)
    assert any("/device=h100_sxm/" in p for p in parts) and any("/device=a100_sxm/" in p for p in parts)
    tables = {p for p in parts if p.startswith("tables/")}
    assert all("/source=" in p for p in tables)
    assert parts - tables == {"catalog/sources.parquet", "catalog/quarantine.parquet", "catalog/parts.parquet"}


def test_read_only_open_of_a_missing_warehouse_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no warehouse at"):
        Warehouse(tmp_path / "nowhere", read_only=True)


def test_sources_record_provenance(sample_warehouse: Path):
    with Warehouse(sample_warehouse, read_only=True) as w:
        rows = w.query("SELECT path, sha256, format, rows_accepted, tool_version FROM sources")[1]
    assert len({r[1] for r in rows}) == len(rows)  # one row per distinct content
    assert all(len(r[1]) == 64 and r[4] for r in rows)
    by_path = {Path(r[0]).name: r for r in rows}
    assert by_path["AzureLLMInferenceTrace_conv.csv"][2:4] == ("azure", 3000)


def test_ingest_of_a_single_nested_sample_folder(wh: Warehouse, tmp_path: Path):
    folder = copy_sample("requests/servegen", tmp_path)
    report = ingest(wh, [folder], progress=False)
    assert [b.format for b in report.committed] == ["servegen"]
    assert report.skipped and all(p.name in ("LICENSE", "chunk-10-dataset.json") for p, _ in report.skipped)


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    root = tmp_path / "wh"
    with Warehouse(root) as w:
        ingest(w, [SAMPLES / "requests/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"], progress=False)
    return root


WRITES = [
    "COPY (SELECT 1 AS a) TO '{part}'",
    "COPY requests TO '{root}/out.csv'",
    "ATTACH '{root}/catalog.duckdb' AS rw (READ_WRITE); INSERT INTO rw.sources SELECT * FROM rw.sources",
    "ATTACH '{root}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "SET enable_external_access = true",
    "DELETE FROM quarantine",
    "SELECT 1; DROP VIEW requests",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('{root}/catalog.duckdb')",
    "SELECT * FROM read_parquet('{root}/../*.parquet')",
]


@pytest.mark.parametrize("sql", WRITES)
def test_user_sql_cannot_write_or_read_outside_the_warehouse(committed: Path, sql: str):
    part = next((committed / "tables" / "requests").rglob("part-0.parquet"))
    before = part.read_bytes(), sorted(p.name for p in committed.rglob("*"))
    with Warehouse(committed, read_only=True) as w, pytest.raises((PermissionError, duckdb.Error)):
        w.user_query(sql.format(part=part, root=committed))
    assert part.read_bytes() == before[0] and sorted(p.name for p in committed.rglob("*")) == before[1]
    with Warehouse(committed, read_only=True) as w:
        assert w.user_query("SELECT count(*) FROM requests")[1] == [(3000,)]


def test_user_sql_reads_the_tables(committed: Path):
    with Warehouse(committed, read_only=True) as w:
        cols, rows = w.user_query("WITH r AS (SELECT * FROM requests) SELECT count(*) AS n FROM r")
        assert (cols, rows) == (["n"], [(3000,)])
        assert w.user_query("DESCRIBE requests")[1]
        assert w.user_query("EXPLAIN SELECT * FROM kernel_samples")[1]
