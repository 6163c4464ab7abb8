"""Reading text sources with errors that name the file and the exact position."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..warehouse.batch import IngestError, utf8_error


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """pandas.read_csv, with empty, malformed and non-UTF-8 files reported as IngestErrors (the first bad
    byte by its byte offset and line in the whole file, not in pandas' read buffer)."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as e:
        raise IngestError(path, "line 1", "empty file") from e
    except pd.errors.ParserError as e:
        raise IngestError(path, None, f"malformed CSV: {e}") from e
    except UnicodeDecodeError as e:
        at = utf8_error(path)
        where = f"line {at[1]}, byte offset {at[0]}" if at else None
        raise IngestError(
            path, where, f"not UTF-8 text ({at[2] if at else e.reason}; is this the right --format?)"
        ) from e
