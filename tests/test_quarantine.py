"""Quarantine rows re-read from the log: the exact bytes of each line, named by its segment and offset."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlake.log.reader import LogReader
from agentlake.log.writer import LogWriter
from agentlake.storage.store import ObjectStore
from agentlake.tables.quarantine import Verdict, quarantine_lines


@pytest.mark.integration
def test_re_read_lines_are_quarantined_byte_for_byte_in_line_order_with_their_last_verdict(tmp_path: Path) -> None:
    store = ObjectStore.local(tmp_path / "store")
    lines = [b'{"event_id": "e0"}', b'{"event_id": "\xc3\xa9 e1" }', b"not json \xff", b'{"event_id": "e3"}']
    with LogWriter(store, "q", background_flush=False) as writer:
        for line in lines:
            writer.append_line(line)
        seg = writer.flush()
    assert seg is not None
    named = [
        (seg.key, 2, Verdict("parse", "not valid JSON")),
        (seg.key, 1, Verdict("schema", "first guess", "e1")),
        (seg.key, 1, Verdict("conflict", "the verdict that stays", "e1")),
    ]
    rows = quarantine_lines(LogReader(store), {seg.key: seg}, named, run_id="run-7")
    got = [r.to_pylist()[0] for r in rows]
    assert [(r["line_offset"], r["line"], r["rule"], r["reason"], r["event_id"]) for r in got] == [
        (1, lines[1], "conflict", "the verdict that stays", "e1"),
        (2, lines[2], "parse", "not valid JSON", None),
    ]
    assert all(r["segment_key"] == seg.key and r["producer"] == seg.producer and seg.producer.startswith("q") and r["ingest_run_id"] == "run-7" for r in got)
    assert [r["seq"] for r in got] == [seg.first_seq + 1, seg.first_seq + 2]
    assert quarantine_lines(LogReader(store), {seg.key: seg}, [], run_id="run-7") == []
