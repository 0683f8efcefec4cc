"""Log lines to event rows: a vectorised fast path for clean lines, a per-line path for the rest.

The per-line path (:func:`agentlake.log.events.parse_event_line`) is the authority: it decides what
is valid and gives the reason when not. The fast path parses whole runs of lines with Arrow's
JSON reader against an explicit schema of the SDK's wire form, then checks in bulk what the
authority would check; any line it cannot vouch for goes to the per-line path. So both paths
give the same rows, and a segment with bad lines still keeps every good line.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from agentlake.errors import InvalidEvent
from agentlake.log.events import EVENT_ARROW_SCHEMA, FIELDS, MAX_ID_LENGTH, parse_event_line

# The wire form's JSON keys with the Arrow types the reader should produce.
_WIRE_TYPES = {"timestamp": pa.string(), "json": pa.string()}
WIRE_SCHEMA = pa.schema([pa.field(f.key, _WIRE_TYPES.get(f.kind, f.arrow_type)) for f in FIELDS])
_PARSE = pj.ParseOptions(explicit_schema=WIRE_SCHEMA, unexpected_field_behavior="error")
_ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
# The instants Python's datetime can hold in UTC: the authority rejects the others.
_TS_MIN = pa.scalar(datetime(1, 1, 1, tzinfo=UTC), pa.timestamp("us", tz="UTC"))
_TS_MAX = pa.scalar(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), pa.timestamp("us", tz="UTC"))
_ROW_HINT = re.compile(r"in row (\d+)")
_REQUIRED = [f for f in FIELDS if f.required and f.kind == "string"]
_ID_COLUMNS = ("event_id", "run_id", "agent_id", "span_id")
_FLOATS = [f.column for f in FIELDS if f.kind == "float"]
# Below this many lines a failing run is parsed line by line rather than split further.
_MIN_SPLIT = 32
_PIECE = 512


@dataclass
class ParsedRun:
    """The outcome for a run of lines: valid rows (event columns + ``line_offset``) and bad lines."""

    rows: list[pa.Table] = field(default_factory=list)
    bad: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line offset, line, reason)
    fast_lines: int = 0
    slow_lines: int = 0

    def table(self) -> pa.Table:
        schema = EVENT_ARROW_SCHEMA.append(pa.field("line_offset", pa.int64(), nullable=False))
        if not self.rows:
            return schema.empty_table()
        table = pa.concat_tables([t.select(schema.names).cast(schema) for t in self.rows])
        return table.sort_by("line_offset")


def parse_run(run: bytes, first_offset: int = 0) -> ParsedRun:
    """Parse a run of newline-terminated lines whose first line has offset ``first_offset``."""
    out = ParsedRun()
    data = np.frombuffer(run, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)  # each line ends at a newline
    if len(ends) == 0 or ends[-1] != len(run) - 1:
        raise ValueError("a run must end with a newline")
    starts = np.concatenate(([0], ends[:-1] + 1))
    # Only lines that look like one JSON object go to Arrow's reader (a bare `null` line crashes
    # pyarrow 26's reader): the others, blank lines among them, go straight to the per-line path.
    last = data[np.maximum(ends - 1, 0)]
    before_last = data[np.maximum(ends - 2, 0)]
    closes = (last == ord("}")) | ((last == ord("\r")) & (before_last == ord("}")))
    objectish = (data[starts] == ord("{")) & closes & (ends - starts >= 2)
    lines = _Lines(run, starts, ends, np.arange(len(ends)), first_offset)
    if not objectish.all():
        for i in np.flatnonzero(~objectish):
            _slow(lines, int(i), int(i) + 1, out)
        keep = np.ones(len(data), dtype=bool)
        for i in np.flatnonzero(~objectish):
            keep[starts[i] : ends[i] + 1] = False
        kept = data[keep].tobytes()
        lengths = (ends - starts + 1)[objectish]
        new_ends = np.cumsum(lengths) - 1
        lines = _Lines(kept, new_ends - lengths + 1, new_ends, np.flatnonzero(objectish), first_offset)
    todo: list[tuple[int, int, bool]] = [(0, len(lines.ends), True)]  # ranges still to parse
    while todo:
        lo, hi, threads = todo.pop()
        if hi <= lo:
            continue
        if hi - lo <= _MIN_SPLIT:
            _slow(lines, lo, hi, out)
            continue
        chunk = lines.data[lines.starts[lo] : lines.ends[hi - 1] + 1]
        try:
            table = pj.read_json(
                io.BytesIO(chunk),
                read_options=pj.ReadOptions(use_threads=threads, block_size=_block_size(len(chunk), threads)),
                parse_options=_PARSE,
            )
            # Arrow's reader does not check UTF-8 inside strings; the authority rejects such lines.
            table.validate(full=True)
            if table.num_rows == hi - lo:
                rows, ok = _to_rows(table)  # an impossible instant (month 13, ...) fails the cast here
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            hint = _ROW_HINT.search(str(exc)) if not threads else None
            if hint is not None and 0 <= int(hint.group(1)) < hi - lo:
                # Parsed as one block, the reader names the bad row: keep the lines around it fast.
                bad = lo + int(hint.group(1))
                _slow(lines, bad, bad + 1, out)
                todo += [(bad + 1, hi, False), (lo, bad, False)]
            elif threads:
                # Again in single-block pieces: a bad line costs a re-parse of its piece only,
                # and a single block's error names the bad row.
                todo += [(i, min(i + _PIECE, hi), False) for i in range(lo, hi, _PIECE)]
            else:
                mid = (lo + hi) // 2
                todo += [(mid, hi, False), (lo, mid, False)]
            continue
        if table.num_rows != hi - lo:  # e.g. two objects on one line: let the authority decide
            mid = (lo + hi) // 2
            todo += [(mid, hi, False), (lo, mid, False)]
            continue
        rows = rows.append_column("line_offset", pa.array(lines.offsets(lo, hi)))
        if ok is None:
            out.rows.append(rows)
            out.fast_lines += hi - lo
            continue
        out.rows.append(rows.filter(pa.array(ok)))
        out.fast_lines += int(ok.sum())
        for i in np.flatnonzero(~ok):
            _slow(lines, lo + int(i), lo + int(i) + 1, out)
    return out


@dataclass
class _Lines:
    """Lines in a buffer: where each starts and ends, and its offset in the segment."""

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    index: np.ndarray  # position of each line in the original run
    first_offset: int

    def offsets(self, lo: int, hi: int) -> np.ndarray:
        return (self.index[lo:hi] + self.first_offset).astype(np.int64)

    def line(self, i: int) -> bytes:
        return self.data[self.starts[i] : self.ends[i]]


def _block_size(size: int, threads: bool) -> int:
    if threads:
        return max(1 << 20, min(8 << 20, size // 2 + 1))
    return size + 1


def _to_rows(table: pa.Table) -> tuple[pa.Table, np.ndarray | None]:
    """Wire columns to event columns, and which rows the fast path can vouch for (None: all)."""
    checks: list[pa.Array] = []
    for f in _REQUIRED:
        col = table.column(f.key)
        checks.append(pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), False))
    for name in _ID_COLUMNS:
        col = table.column(name)
        checks.append(pc.fill_null(pc.less_equal(pc.utf8_length(col), MAX_ID_LENGTH), True))
    ts_text = table.column("ts")
    ts_ok = pc.fill_null(pc.match_substring_regex(ts_text, _ISO_UTC), False)
    ts_ok = pc.and_(ts_ok, pc.invert(pc.fill_null(pc.starts_with(ts_text, "0000"), False)))  # no year 0
    checks.append(ts_ok)
    for name in _FLOATS:
        col = table.column(name)
        checks.append(pc.fill_null(pc.is_finite(col), True))
    docs = table.column("documents")
    if docs.null_count < len(docs):
        checks.append(_documents_ok(docs))
    ok = checks[0]
    for check in checks[1:]:
        ok = pc.and_(ok, check)
    # Cast the zoned timestamps; rows that failed the shape check get a placeholder, dropped later.
    placeholder = pc.if_else(ts_ok, ts_text, pa.scalar("1970-01-01T00:00:00Z"))
    ts = pc.cast(placeholder, pa.timestamp("us", tz="UTC"))
    in_range = pc.and_(pc.greater_equal(ts, _TS_MIN), pc.less_equal(ts, _TS_MAX))
    ok = pc.and_(ok, in_range)
    all_ok = pc.all(ok).as_py()
    columns = []
    for f in FIELDS:
        if f.column == "ts":
            columns.append(ts)
        else:
            columns.append(table.column(f.key).cast(f.arrow_type))
    rows = pa.Table.from_arrays(columns, schema=_nullable(EVENT_ARROW_SCHEMA))
    return rows, None if all_ok else np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_nullable(True) for f in schema])


def _documents_ok(docs: pa.ChunkedArray) -> pa.ChunkedArray:
    """Every document has an id and a finite score (or none)."""
    results = []
    for chunk in docs.chunks:
        flat = pc.list_flatten(chunk)
        parents = pc.list_parent_indices(chunk)
        ids_ok = pc.is_valid(pc.struct_field(flat, "id"))
        score = pc.struct_field(flat, "score")
        score_ok = pc.fill_null(pc.is_finite(score), True)
        bad_parent = np.zeros(len(chunk), dtype=bool)
        bad = ~np.asarray(pc.and_(ids_ok, score_ok).to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            bad_parent[np.asarray(parents.to_numpy())[bad]] = True
        results.append(pa.array(~bad_parent))
    return pa.chunked_array(results, type=pa.bool_())


def _slow(lines: _Lines, lo: int, hi: int, out: ParsedRun) -> None:
    rows = []
    offsets = []
    for i in range(lo, hi):
        line = lines.line(i)
        offset = int(lines.index[i]) + lines.first_offset
        try:
            rows.append(parse_event_line(line))
            offsets.append(offset)
        except InvalidEvent as exc:
            out.bad.append((offset, line, exc.reason))
    out.slow_lines += hi - lo
    if rows:
        table = pa.Table.from_pylist(rows, schema=_nullable(EVENT_ARROW_SCHEMA))
        out.rows.append(table.append_column("line_offset", pa.array(offsets, pa.int64())))
