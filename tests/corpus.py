"""A hostile corpus of log lines, each labelled with its kind and whether it is a valid event.

Shared by the parse tests (fast path against the per-line authority) and the ingest tests
(end to end through the log). Valid lines get unique event ids, so that ingesting a corpus
deduplicates nothing. No line holds a newline: the log's unit is the line.

Lines that crash the core today (see the xfail tests and the report) are kept apart in
``POISON``, so that the main corpus stays a regression suite that passes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from agentlake.errors import InvalidEvent
from agentlake.log.events import encode_event, parse_event_line
from agentlake.log.parse import ParsedRun

TS = "2026-11-26T07:00:00Z"
BIG = 5 * 1024 * 1024  # a "huge" line is larger than this
DEEP = 10_000  # nesting levels of a "deeply nested" line


@dataclass(frozen=True)
class Case:
    """One corpus line: what kind of hostility it is, its bytes, and whether the authority accepts it."""

    kind: str
    line: bytes
    valid: bool


class Corpus:
    """Builds lines whose valid events have unique ids ``<prefix>-<n>``."""

    def __init__(self, prefix: str = "h") -> None:
        self.prefix = prefix
        self._n = itertools.count()
        self.cases: list[Case] = []

    def eid(self) -> str:
        return f"{self.prefix}-{next(self._n)}"

    def event(self, **fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "event_id": self.eid(), "run_id": f"{self.prefix}-run", "agent_id": "hostile-agent",
            "type": "llm_call", "ts": TS,
        }
        base.update(fields)
        return base

    def wire(self, **fields: Any) -> bytes:
        """A valid event in the SDK's wire form (what the fast path parses)."""
        return encode_event(self.event(**fields))

    def raw(self, **fields: Any) -> bytes:
        """The event dumped as it is (attributes as an object, unknown fields at top level...)."""
        return orjson.dumps(self.event(**fields))

    def add(self, kind: str, valid: bool, *lines: bytes) -> None:
        for line in lines:
            assert b"\n" not in line, kind
            self.cases.append(Case(kind, line, valid))


def _splice(line: bytes, extra: bytes) -> bytes:
    """Insert raw ``extra`` (``"key":value``) as the object's last member, bytes untouched."""
    assert line.endswith(b"}")
    return line[:-1] + b"," + extra + b"}"


def hostile_corpus(prefix: str = "h", *, huge: bool = True) -> list[Case]:
    """Every kind of bad line we could think of, and valid lines at the edges of validity."""
    c = Corpus(prefix)
    full = dict(
        span_id="00f067aa0ba902b7", parent_span_id="53995c3f42cd8ad8", agent_version="1.2.3", tenant="acme",
        **{"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
           "gen_ai.usage.input_tokens": 812, "gen_ai.usage.output_tokens": 64,
           "gen_ai.response.finish_reasons": ["stop"], "latency_ms": 431.5, "status": "ok"},
        attributes={"service.instance.id": "i-1"}, payload={"prompt": "hi", "response": "hello"},
    )

    # --- valid lines at the edges -------------------------------------------------------------
    c.add("valid: wire form, every field", True, c.wire(**full))
    c.add("valid: retrieval with documents", True,
          c.wire(type="retrieval", documents=[{"id": "kb/1", "score": 0.9}, {"id": "kb/2"}], latency_ms=12))
    c.add("valid: empty documents, null optionals", True, c.wire(documents=[], tenant=None, latency_ms=None))
    c.add("valid: column names instead of OTel keys", True,
          c.raw(input_tokens=5, output_tokens=6, model="m", provider="p", tool_name="grep"))
    c.add("valid: unknown fields folded into attributes", True, c.raw(note="café", nested={"a": [1, 2]}))
    c.add("valid: attributes as an object", True, c.raw(attributes={"k": "v", "n": 1}))
    c.add("valid: attributes and payload as text", True, c.wire(attributes="not json at all", payload="plain"))
    c.add("valid: finish reasons as a list, gen_ai.system alias", True,
          c.raw(**{"gen_ai.response.finish_reasons": ["stop", "length"], "gen_ai.system": "anthropic"}))
    c.add("valid: one field under both names, same value", True,
          c.raw(model="gpt-4o", **{"gen_ai.request.model": "gpt-4o"}))
    c.add("valid: zoned timestamps", True,
          c.wire(ts="2026-11-26T09:30:00.123456+02:30"), c.wire(ts="2026-11-26T07:00:00-00:00"),
          c.wire(ts="2026-11-26T07:00:00.5Z"), c.wire(ts="0001-01-01T00:00:00Z"),
          c.wire(ts="9999-12-31T23:59:59.999999Z"), c.wire(ts="2026-11-26T07:00:00+23:59"),
          c.wire(ts="2026-11-26 07:00:00Z"), c.wire(ts="2026-11-26T07:00:00.1234567Z"),
          c.wire(ts="2026-11-26T07:00:00+0200"), c.wire(ts="20261126T070000Z"))
    c.add("valid: numbers at the limits", True,
          c.wire(**{"gen_ai.usage.input_tokens": 2**63 - 1, "gen_ai.usage.output_tokens": -(2**63)}),
          c.wire(latency_ms=1.7976931348623157e308, feedback_score=-0.0),
          _splice(c.wire(), b'"latency_ms":1180591620717411303424'), c.wire(latency_ms=5e-324))
    c.add("valid: ids of exactly 256 characters", True,
          c.wire(run_id="r" * 256, agent_id="😀" * 256, span_id="s" * 256))
    c.add("valid: escapes, surrogate pairs, NUL, zero-width space", True,
          _splice(c.wire(), b'"payload":"\\u00e9\\ud83d\\ude00\\u0000\\t"'),
          c.wire(agent_id="\u200b", tenant="tab\there"))
    c.add("valid: CRLF line ending", True, c.wire() + b"\r")
    c.add("valid: whitespace around the object", True, b"  " + c.wire() + b" \t", b"\t" + c.wire())
    dup_first = c.eid()
    c.add("valid: duplicate keys (the last one wins)", True,
          _splice(c.wire(event_id=dup_first + "-first"), b'"event_id":"' + dup_first.encode() + b'"'),
          _splice(c.wire(latency_ms=1), b'"latency_ms":2.5'))
    c.add("valid: nested 200 levels under an unknown field", True,
          _splice(c.wire(), b'"deep":' + b'{"a":' * 200 + b"1" + b"}" * 200))
    if huge:
        c.add("valid: huge line", True, c.wire(payload="x" * BIG))

    # --- bad lines ----------------------------------------------------------------------------
    good = c.wire(**full)
    c.add("truncated JSON", False, good[:1], good[: len(good) // 2], good[:-1], b'{"event_id":"x"', b"{")
    c.add("JSON that is not an object", False,
          b"null", b"[]", b"[" + c.wire() + b"]", b"42", b"-1.5e3", b'"run_started"', b"true", b"false",
          b'"{}"', b"  null  ")
    c.add("invalid UTF-8", False,
          b"\xff\xfe binary", b"\x80", _splice(c.wire(), b'"note":"caf\xe9 cr\xe8me"'),
          _splice(c.wire(), b'"k\xff":1'), _splice(c.wire(), b'"cesu":"\xed\xa0\x80"'),
          c.wire() + b"\xc3", b'{"event_id":"\xc3')
    for name in ("event_id", "run_id", "agent_id", "type", "ts"):
        event = c.event()
        del event[name]
        c.add("missing required field", False, orjson.dumps(event))
    c.add("required field null", False, c.raw(event_id=None), c.raw(ts=None))
    c.add("empty or blank required id", False,
          c.raw(event_id=""), c.raw(run_id="   "), c.raw(agent_id="\u3000"), c.raw(type="\x1c\x85"))
    c.add("wrong types", False,
          c.raw(event_id=123), c.raw(run_id=12345), c.raw(type=True), c.raw(ts=1767225600),
          c.raw(**{"gen_ai.usage.input_tokens": "812"}), c.raw(**{"gen_ai.usage.input_tokens": 5.0}),
          c.raw(**{"gen_ai.usage.output_tokens": True}), c.raw(latency_ms="fast"), c.raw(latency_ms=False),
          c.raw(documents="doc-1,doc-2"), c.raw(status=True), c.raw(feedback_score=[0.5]),
          c.raw(**{"gen_ai.response.finish_reasons": [1, 2]}), c.raw(**{"gen_ai.request.model": {"n": "x"}}))
    c.add("bad or naive timestamp", False,
          c.raw(ts="yesterday"), c.raw(ts="2026-11-26T07:00:00"), c.raw(ts="2026-11-26"), c.raw(ts=""),
          c.raw(ts="2026-11-26T07:00:00z"), c.raw(ts="２026-11-26T07:00:00Z"), c.raw(ts="2026-11-26T07:00Z junk"),
          c.raw(ts="26/11/2026 07:00"), c.raw(ts=["2026-11-26T07:00:00Z"]))
    c.add("NaN and Infinity", False,
          _splice(c.wire(), b'"latency_ms":NaN'), _splice(c.wire(), b'"latency_ms":Infinity'),
          _splice(c.wire(), b'"feedback_score":-Infinity'), _splice(c.wire(), b'"latency_ms":1e400'),
          _splice(c.wire(type="retrieval"), b'"documents":[{"id":"d","score":NaN}]'),
          _splice(c.wire(type="retrieval"), b'"documents":[{"id":"d","score":1e999}]'))
    if huge:
        no_run = c.event(payload="y" * BIG)
        del no_run["run_id"]
        c.add("huge line", False, orjson.dumps(no_run), b"z" * BIG, b'{"payload":"' + b"w" * BIG)
    c.add("deeply nested", False,
          _splice(c.wire(), b'"payload":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP),
          _splice(c.wire(), b'"attributes":' + b"[" * DEEP + b"]" * DEEP),
          _splice(c.wire(), b'"x":' + b"[" * DEEP),
          b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP)
    c.add("id over 256 characters", False,
          c.raw(event_id="e" * 257), c.raw(run_id="r" * 300), c.raw(agent_id="a" * 5000),
          c.raw(span_id="s" * 257), c.raw(event_id="😀" * 257))
    c.add("CRLF line ending on a bad line", False, b'{"event_id": 1}\r', b"{\r", b"null\r", b"\r\r")
    c.add("blank or whitespace only", False, b"", b" ", b"\t", b"\r", b"  \t\r", b"\x0b\x0c")
    c.add("duplicate keys, the last one bad", False,
          _splice(c.wire(), b'"event_id":5'), _splice(c.wire(), b'"latency_ms":"slow"'),
          _splice(c.wire(), b'"ts":"soon"'))
    c.add("attributes not an object", False,
          c.raw(attributes=["service.instance.id", "x"]), c.raw(attributes=7), c.raw(attributes=True),
          c.raw(attributes="[1, 2]", unknown=1), c.raw(attributes={"k": 1}, k=2))
    c.add("two objects on one line", False,
          c.wire() + c.wire(), c.wire() + b" " + c.wire(), c.wire() + b"\r" + c.wire(), b"{}{}", c.wire() + b"[]")
    c.add("byte order mark", False, b"\xef\xbb\xbf" + c.wire(), b"\xef\xbb\xbf")
    c.add("number too large for int64", False,
          c.raw(**{"gen_ai.usage.input_tokens": 2**63}), c.raw(**{"gen_ai.usage.input_tokens": 2**64 - 1}),
          _splice(c.wire(), b'"gen_ai.usage.output_tokens":100000000000000000000000000000'),
          _splice(c.wire(), b'"gen_ai.usage.input_tokens":-9223372036854775809'))
    c.add("one field under both names, different values", False,
          c.raw(model="gpt-4o-2024-08-06", **{"gen_ai.request.model": "gpt-4o"}),
          c.raw(provider="openai", **{"gen_ai.system": "anthropic"}))
    c.add("malformed documents", False,
          c.raw(documents=[None]), c.raw(documents=[{"id": 5}]), c.raw(documents=[{"score": 1.0}]),
          c.raw(documents={"id": "x"}), c.raw(documents=[{"id": "d", "score": True}]),
          c.raw(documents=[{"id": "d", "score": "0.5"}]), c.raw(documents=["kb/1"]))
    c.add("JSON syntax errors", False,
          c.wire()[:-1] + b",}", b"{'event_id': 'x'}", c.wire()[:-1] + b"/* c */}",
          _splice(c.wire(), b'"latency_ms":01'), _splice(c.wire(), b'"tenant":"a\tb"'),
          _splice(c.wire(), b'"tenant":"\\ud800"'), _splice(c.wire(), b'"tenant":"\\x41"'),
          b"}", b"{}", b'{"":""}', b"{" + b" " * 100 + b"}")
    return c.cases


def kinds(cases: list[Case]) -> set[str]:
    return {case.kind for case in cases if not case.valid}


# Lines that break the core today; each names the bug it shows (see the xfail tests).
# Shape-valid timestamps that are not instants: parse_run raises pyarrow.ArrowInvalid in the fast path.
IMPOSSIBLE_TIMESTAMPS = (
    "2026-13-45T25:61:00Z", "2026-02-30T00:00:00Z", "2026-11-26T24:00:00Z", "2026-12-31T23:59:60Z",
    "2026-11-26T07:00:00+24:00", "2026-11-26T07:00:00+99:99",
)
# Zoned timestamps whose UTC instant lies outside years 1..9999, and year 0: parse_event_line raises
# OverflowError instead of InvalidEvent, and the fast path accepts them.
OUT_OF_RANGE_TIMESTAMPS = ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00", "0000-01-01T00:00:00Z")
# Invalid UTF-8 inside a known string field: Arrow's JSON reader does not validate it.
INVALID_UTF8_FIELDS = ("event_id", "gen_ai.request.model", "span_id", "payload", "attributes")


def invalid_utf8_line(field: str, prefix: str = "utf8") -> bytes:
    """A wire-form event whose ``field`` holds Latin-1 text (invalid UTF-8) as its value."""
    line = Corpus(prefix).wire(**{field: "placeholder"})
    assert line.count(b'"placeholder"') == 1
    return line.replace(b'"placeholder"', b'"caf\xe9"')


def poison_lines(prefix: str = "poison") -> list[bytes]:
    c = Corpus(prefix)
    lines = [c.wire(ts=ts) for ts in IMPOSSIBLE_TIMESTAMPS + OUT_OF_RANGE_TIMESTAMPS]
    return lines + [invalid_utf8_line(name, prefix) for name in INVALID_UTF8_FIELDS]


# --- the authority, line by line --------------------------------------------------------------


def authority(lines: list[bytes], first_offset: int = 0) -> tuple[pa.Table, list[tuple[int, bytes, str]]]:
    """``parse_event_line`` on each line: the rows (in ``parse_run``'s output schema) and the bad lines."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, bytes, str]] = []
    for i, line in enumerate(lines):
        try:
            rows.append({**parse_event_line(line), "line_offset": first_offset + i})
        except InvalidEvent as exc:
            bad.append((first_offset + i, line, exc.reason))
    schema = ParsedRun().table().schema
    return pa.Table.from_pylist(rows, schema=schema), bad


def run_bytes(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


# --- demo data and random mixtures ------------------------------------------------------------


def demo_lines(seed: int, runs: int, start: datetime | None = None) -> list[bytes]:
    from agentlake.sources.demo import FleetConfig, generate_runs

    return list(generate_runs(FleetConfig(seed=seed, feedback_share=0.5), runs, start or datetime(2026, 11, 26, tzinfo=UTC)))


_BAD_VALUES: tuple[tuple[str, Any], ...] = (
    ("event_id", 7), ("event_id", ""), ("run_id", None), ("ts", "2026-11-26T07:00:00"), ("ts", "noon"),
    ("ts", 0), ("gen_ai.usage.input_tokens", 1.5), ("gen_ai.usage.input_tokens", 2**63), ("latency_ms", "1"),
    ("documents", [{"id": None}]), ("attributes", [1]), ("span_id", "s" * 257), ("status", 1),
)
_GOOD_VALUES: tuple[tuple[str, Any], ...] = (
    ("tenant", None), ("latency_ms", 0), ("gen_ai.usage.input_tokens", 0), ("ts", "2026-11-26T07:00:00+05:45"),
    ("payload", {"k": [1, {"x": None}]}), ("decision_label", "é"), ("documents", []), ("feedback_score", 1e-300),
)


def mutate(line: bytes, rng: random.Random) -> bytes:
    """A random structural mutation of a (usually valid) line; the authority decides what it becomes."""
    ops: list[Callable[[], bytes]] = [
        lambda: line[: rng.randrange(0, len(line))],  # truncation
        lambda: line + b"\r",  # CRLF
        lambda: b" " * rng.randrange(1, 3) + line,  # leading whitespace
        lambda: line + line,  # two objects
        lambda: _set(line, *rng.choice(_BAD_VALUES)),
        lambda: _set(line, *rng.choice(_GOOD_VALUES)),
        lambda: _drop(line, rng.choice(("event_id", "run_id", "agent_id", "type", "ts", "span_id", "attributes"))),
        lambda: _splice(line, b'"event_id":' + orjson.dumps(rng.choice(("x", 1, None)))) if line.endswith(b"}") else line,
        lambda: _splice(line, b'"extra_' + str(rng.randrange(3)).encode() + b'":' + orjson.dumps(rng.random()))
        if line.endswith(b"}") else line,
        lambda: rng.choice((b"", b" ", b"null", b"[]", b"{}", b"\xef\xbb\xbf" + line)),
    ]
    return rng.choice(ops)()


def _set(line: bytes, key: str, value: Any) -> bytes:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(obj, dict):
        return line
    obj[key] = value
    return orjson.dumps(obj)


def _drop(line: bytes, key: str) -> bytes:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if isinstance(obj, dict):
        obj.pop(key, None)
        return orjson.dumps(obj)
    return line


def random_mixture(rng: random.Random, demo: list[bytes], corpus: list[Case], poison: list[bytes]) -> list[bytes]:
    """Demo lines with corpus lines, mutations (and poison lines, if given) spliced in at random."""
    start = rng.randrange(len(demo))
    lines = demo[start : start + rng.choice((0, 1, 31, 33, 64, 200, 700))]
    inserts = rng.choice((0, 1, 2, 5, 20, 80))
    for _ in range(inserts):
        roll = rng.random()
        if poison and roll < 0.1:
            new = rng.choice(poison)
        elif roll < 0.55:
            new = rng.choice(corpus).line
        else:
            new = mutate(rng.choice(demo), rng)
        new = new.replace(b"\n", b" ")
        lines.insert(rng.randrange(len(lines) + 1), new)
    return lines or [b"{}"]


def ticking_clock(start: datetime, step: timedelta = timedelta(milliseconds=1)) -> Callable[[], datetime]:
    """A writer clock that starts at ``start`` and moves ``step`` on each call (unique, ordered keys)."""
    counter = itertools.count()
    return lambda: start + step * next(counter)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
