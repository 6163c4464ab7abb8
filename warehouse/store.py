"""The warehouse: an embedded DuckDB catalog plus Parquet files that its views read.

Layout under the warehouse directory:
    catalog.duckdb                                   sources, quarantine, parts (+ views over the Parquet)
    catalog/{sources,quarantine,parts}.parquet       the same catalog as Parquet, rewritten by every commit
    tables/<table>/source=<id>/device=<dev>/part-0.parquet
    staging/                                         files being written by an ingest not yet committed

The Parquet catalog makes the warehouse reproducible byte for byte (DuckDB's file carries a random identifier):
DVC versions `catalog/` and `tables/`, and a warehouse whose catalog.duckdb is missing is rebuilt from them.

A commit writes every Parquet file to staging first, then in one DuckDB transaction records the sources,
quarantined rows and parts and moves the files into place. Views list only committed parts, so a failure at
any point leaves the warehouse as it was (stray files of an interrupted commit are swept on the next open).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import __version__
from .batch import HIDDEN_COLUMNS, SourceBatch
from .schema import CATALOG_DDL, DATA_TABLES

log = logging.getLogger(__name__)

ENV_VAR = "HERMES_WAREHOUSE"
DEFAULT_DIR = ".hermes"
CATALOG_FILE = "catalog.duckdb"
SNAPSHOT_DIR = "catalog"
SNAPSHOT_TABLES = {"sources": "source_id", "quarantine": "source_id, table_name, row_number", "parts": "relpath"}
READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def default_location() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _slug(value: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value or "unknown")


def ingest_time() -> dt.datetime:
    """Now (UTC), or $SOURCE_DATE_EPOCH when set: reproducible builds' convention, which makes a pipeline's
    outputs byte-identical run to run (DVC stages set it)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC).replace(tzinfo=None)
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse's write lock."""


@dataclass
class CommitReport:
    committed: list[SourceBatch]
    skipped: list[tuple[SourceBatch, str]]  # (batch, source_id it duplicates)


class Warehouse:
    def __init__(self, root: Path | str | None = None, read_only: bool = False):
        self.root = Path(root) if root is not None else default_location()
        self.read_only = read_only
        self._locked = False  # user queries lock the connection's configuration for good
        catalog = self.root / CATALOG_FILE
        if not catalog.exists() and (self.root / SNAPSHOT_DIR / "sources.parquet").exists():
            self._restore_catalog(catalog)
        if read_only and not catalog.exists():
            raise FileNotFoundError(
                f"no warehouse at {self.root} (run `hermes-sim ingest` first, or pass --warehouse / ${ENV_VAR})"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(catalog), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise
            pid = re.search(r"PID (\d+)", str(e))
            holder = f"process {pid.group(1)}" if pid else "another process"
            raise WarehouseBusy(
                f"the warehouse at {self.root} is busy: {holder} holds it (an ingest committing, or a command "
                "holding it open); try again when it has finished"
            ) from None
        if not read_only:
            self.con.execute(CATALOG_DDL)
            self._sweep_uncommitted()
        self._create_views(temporary=read_only)

    def close(self) -> None:
        self.con.close()

    @staticmethod
    def clear_data(root: Path) -> None:
        """Remove the catalog and tables (not models, reports or caches): a fresh ingest follows."""
        root = Path(root)
        if (root / CATALOG_FILE).exists():
            try:  # fails, busy, while another process holds it
                duckdb.connect(str(root / CATALOG_FILE)).close()
            except duckdb.IOException as e:
                raise WarehouseBusy(f"the warehouse at {root} is busy: {e}") from None
        (root / CATALOG_FILE).unlink(missing_ok=True)
        for name in (SNAPSHOT_DIR, "tables", "staging"):
            shutil.rmtree(root / name, ignore_errors=True)

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reading -------------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        cur = self.con.execute(sql, params or [])
        columns = [d[0] for d in cur.description] if cur.description else []
        return columns, cur.fetchall()

    def user_query(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Run a user's SQL with no way to change anything: only SELECT / EXPLAIN statements, on a read-only
        catalog, with file access limited to the committed Parquet parts and the configuration locked (so no
        COPY ... TO, ATTACH, INSTALL / LOAD, CREATE, SET, or file readers outside the warehouse)."""
        if not self.read_only:
            raise PermissionError("user queries run on a warehouse opened read-only")
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as e:
            raise ValueError(f"SQL does not parse: {e}") from e
        if not statements:
            raise ValueError("empty SQL query")
        for st in statements:
            if st.type not in READ_STATEMENTS:
                kind = str(st.type).rsplit(".", 1)[-1]
                raise PermissionError(
                    f"`warehouse sql` is read-only: {kind} statements are refused ({st.query.strip()[:80]!r}); "
                    "only SELECT, WITH ... SELECT, DESCRIBE / SHOW / SUMMARIZE and EXPLAIN run"
                )
        self._lock_down()
        columns: list[str] = []
        rows: list[tuple] = []
        for st in statements:
            cur = self.con.execute(st)
            columns = [d[0] for d in cur.description] if cur.description else []
            rows = cur.fetchall()
        return columns, rows

    def _lock_down(self) -> None:
        if self._locked:
            return
        self._locked = True
        files = [
            str((self.root / rel).resolve()) for (rel,) in self.con.execute("SELECT relpath FROM parts").fetchall()
        ]
        self.con.execute("SET allowed_directories = []")
        self.con.execute("SET allowed_paths = ?", [files])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def arrow(self, sql: str, params: list | None = None) -> pa.Table:
        return self.con.sql(sql, params=params or None).to_arrow_table()

    def has_source(self, source_id: str) -> bool:
        return bool(self.con.execute("SELECT 1 FROM sources WHERE source_id = ?", [source_id]).fetchall())

    # ---- views ---------------------------------------------------------------------------------
    def _create_views(self, temporary: bool) -> None:
        kind = "TEMP VIEW" if temporary else "VIEW"
        for name, schema in DATA_TABLES.items():
            files = [
                str((self.root / rel).resolve())
                for (rel,) in self.con.execute(
                    "SELECT relpath FROM parts WHERE table_name = ? ORDER BY relpath", [name]
                ).fetchall()
            ]
            missing = next((f for f in files if not os.path.exists(f)), None)
            if missing:
                raise FileNotFoundError(
                    f"warehouse {self.root} is missing committed file {missing}: restore it (`dvc pull` or "
                    "`dvc checkout`), or rebuild with `hermes-sim ingest --fresh`"
                )
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                body = f"SELECT * FROM read_parquet([{listing}])"
            else:
                cols = ", ".join(f'CAST(NULL AS {_duck_type(f.type)}) AS "{f.name}"' for f in schema)
                body = f"SELECT {cols} WHERE false"
            self.con.execute(f"CREATE OR REPLACE {kind} {name} AS {body}")

    # ---- writing -------------------------------------------------------------------------------
    def commit(self, batches: list[SourceBatch]) -> CommitReport:
        """Commit every batch, or none of them."""
        if self.read_only:
            raise PermissionError("warehouse opened read-only")
        fresh: list[SourceBatch] = []
        skipped: list[tuple[SourceBatch, str]] = []
        seen: set[str] = set()
        for b in batches:
            if self.has_source(b.source_id) or b.source_id in seen:
                skipped.append((b, b.source_id))
            else:
                seen.add(b.source_id)
                fresh.append(b)
        if not fresh:
            return CommitReport([], skipped)

        staging = self.root / "staging" / uuid.uuid4().hex
        moved: list[Path] = []
        now = ingest_time()
        try:
            parts = [p for b in fresh for p in self._stage(b, staging)]
            self.con.execute("BEGIN TRANSACTION")
            for b in fresh:
                self.con.execute(
                    "INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        b.source_id,
                        b.path,
                        b.sha256,
                        b.format,
                        json.dumps(b.params, sort_keys=True),
                        b.rows_accepted,
                        len(b.quarantine),
                        b.size_bytes,
                        json.dumps(b.note, sort_keys=True) if b.note else None,
                        now,
                        __version__,
                    ],
                )
                if b.quarantine:
                    self.con.executemany(
                        "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?)",
                        [[b.source_id, b.path, q.table_name, q.row_number, q.reason, q.record] for q in b.quarantine],
                    )
            if parts:
                self.con.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?)", [p[:5] for p in parts])
            for *_, staged in parts:
                target = self.root / staged.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
                moved.append(target)
            self._create_views(temporary=False)
            self.con.execute("COMMIT")
            self._snapshot()
        except BaseException:
            # DDL and DML are transactional in DuckDB: the views come back with the rows. (Fails harmlessly
            # when the error came before BEGIN.)
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            for path in moved:
                path.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return CommitReport(fresh, skipped)

    def _snapshot(self) -> None:
        """Write the catalog tables as Parquet (sorted, so equal catalogs give equal bytes), atomically each."""
        out = self.root / SNAPSHOT_DIR
        out.mkdir(exist_ok=True)
        for name, order in SNAPSHOT_TABLES.items():
            table = self.con.sql(f"SELECT * FROM {name} ORDER BY {order}").to_arrow_table()
            tmp = out / f".{name}.parquet.tmp"
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, out / f"{name}.parquet")

    def _restore_catalog(self, catalog: Path) -> None:
        """Rebuild catalog.duckdb from the Parquet catalog (a clone pulled from DVC)."""
        log.info("rebuilding %s from %s/", catalog, SNAPSHOT_DIR)
        tmp = catalog.with_suffix(".rebuilding")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            con.execute(CATALOG_DDL)
            for name in SNAPSHOT_TABLES:
                path = self.root / SNAPSHOT_DIR / f"{name}.parquet"
                if path.exists():
                    con.execute(f"INSERT INTO {name} SELECT * FROM read_parquet(?)", [str(path)])
            con.close()
            os.replace(tmp, catalog)
        finally:
            tmp.unlink(missing_ok=True)
        with Warehouse(self.root) as wh:  # views over the restored parts
            wh._create_views(temporary=False)

    def _stage(self, batch: SourceBatch, staging: Path) -> list[tuple]:
        """Write a batch's tables to staging, one file per (table, device). Returns parts rows."""
        parts = []
        for name, table in batch.tables.items():
            if table.num_rows == 0:
                continue
            table = table.drop_columns([c for c in HIDDEN_COLUMNS if c in table.column_names])
            sid = pa.array([batch.source_id] * table.num_rows, pa.string())
            table = table.set_column(table.schema.get_field_index("source_id"), "source_id", sid)
            table = table.cast(DATA_TABLES[name])
            devices = (
                sorted(d for d in pc.unique(table["device"]).to_pylist()) if "device" in table.column_names else [None]
            )
            for device in devices:
                piece = table if device is None else table.filter(pc.equal(table["device"], device))
                rel = Path("tables") / name / f"source={batch.source_id}"
                if device is not None:
                    rel = rel / f"device={_slug(device)}"
                rel = rel / "part-0.parquet"
                staged = staging / rel
                staged.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(piece, staged, compression="zstd")
                parts.append((name, batch.source_id, device, rel.as_posix(), piece.num_rows, staged))
        return parts

    def _sweep_uncommitted(self) -> None:
        """Remove files an interrupted commit left behind: anything under tables/ not in `parts`."""
        shutil.rmtree(self.root / "staging", ignore_errors=True)
        tables = self.root / "tables"
        if not tables.exists():
            return
        known = {rel for (rel,) in self.con.execute("SELECT relpath FROM parts").fetchall()}
        for f in tables.rglob("*.parquet"):
            if f.relative_to(self.root).as_posix() not in known:
                log.warning("removing uncommitted file %s", f)
                f.unlink()


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    return {
        pa.string(): "VARCHAR",
        pa.int64(): "BIGINT",
        pa.float64(): "DOUBLE",
    }[t]
