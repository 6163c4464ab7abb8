"""Parquet files written from pandas frames, whose bytes depend on the data alone.

pandas' own schema metadata records the pandas version that wrote the file, so a pandas patch release
changed every output's hash (and the committed dvc.lock) without changing one value. Frames are written
through Arrow with that metadata dropped; pandas reads them back with the same dtypes, the index not kept.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` (without its index) to `path` as Parquet, leaving out pandas' version-stamped metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path)
    return Path(path)
