"""What the warehouse holds: rows per table, device, op family, log."""

from __future__ import annotations

from .store import Warehouse

SECTIONS: dict[str, str] = {
    "tables": """
        SELECT 'sources' AS "table", count(*) AS "rows" FROM sources
        UNION ALL SELECT 'kernel_samples', count(*) FROM kernel_samples
        UNION ALL SELECT 'trace_events', count(*) FROM trace_events
        UNION ALL SELECT 'requests', count(*) FROM requests
        UNION ALL SELECT 'quarantine', count(*) FROM quarantine""",
    "sources by format": """
        SELECT format, count(*) AS files, sum(rows_accepted) AS rows_accepted,
               sum(rows_quarantined) AS rows_quarantined, round(sum(size_bytes) / 1e6, 2) AS mbytes
        FROM sources GROUP BY format ORDER BY format""",
    "kernel samples by device and op family": """
        SELECT device, op_family, count(*) AS samples, count(DISTINCT source_id) AS sources,
               round(median(latency_us), 2) AS median_latency_us
        FROM kernel_samples GROUP BY device, op_family ORDER BY device, op_family""",
    "trace events by device and kind": """
        SELECT device, kind, count(*) AS events, round(sum(dur_us) / 1e3, 3) AS busy_ms
        FROM trace_events GROUP BY device, kind ORDER BY device, kind""",
    "requests by log": """
        SELECT log_name, count(*) AS requests, round(max(arrival_s) - min(arrival_s), 1) AS span_s,
               round(avg(input_tokens), 1) AS mean_input_tokens,
               round(avg(output_tokens), 1) AS mean_output_tokens,
               count(DISTINCT session_id) AS sessions
        FROM requests GROUP BY log_name ORDER BY log_name""",
    "quarantine by reason": """
        SELECT table_name, reason, count(*) AS "rows" FROM quarantine
        GROUP BY table_name, reason ORDER BY table_name, "rows" DESC""",
}


def summarize(warehouse: Warehouse) -> dict[str, tuple[list[str], list[tuple]]]:
    return {title: warehouse.query(sql) for title, sql in SECTIONS.items()}
