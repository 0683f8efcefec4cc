"""The demo helpdesk's rows published into ``ext`` through the sources' gate, for tests that need them fast.

The dlt extract is left out (it takes seconds per load; tests/test_sources.py covers it): the rows are
read from the SQLite database and handed to the same gated publish a load ends in.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa

from agentlake.sources.external import HELPDESK, publish_load
from agentlake.tables.lake import Lake


def publish_helpdesk(lake: Lake, db: Path, run_id: str) -> None:
    """Publish every table of the helpdesk database at ``db`` into ``ext``, one gated commit per table."""
    for spec in HELPDESK.tables:
        with sqlite3.connect(db) as con:
            cursor = con.execute(f"SELECT * FROM {spec.resource}")  # noqa: S608 - a declared table name
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        con.close()
        arrow = pa.Table.from_pylist(rows).cast(pa.schema(
            [pa.field(f.name, pa.timestamp("us") if f.name.endswith("_at") else f.type) for f in
             pa.Table.from_pylist(rows).schema])) if rows else pa.table({})
        publish_load(lake.catalog, spec, arrow, source="helpdesk", load_id=f"{run_id}-{spec.resource}",
                     run_id=run_id, max_load_rows=lake.settings.sources_max_load_rows, store=lake.store)


def set_ticket(db: Path, ticket_id: str, **fields: str) -> None:
    """Change a ticket in the helpdesk database as the helpdesk would (its ``updated_at`` moves to the demo's now)."""
    with sqlite3.connect(db) as con:
        (now,) = con.execute("SELECT now FROM demo_clock").fetchone()
        assignments = ", ".join(f"{k} = ?" for k in fields)
        con.execute(f"UPDATE tickets SET {assignments}, updated_at = ? WHERE ticket_id = ?",  # noqa: S608
                    (*fields.values(), now, ticket_id))
    con.close()
