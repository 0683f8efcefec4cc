"""The agent event: its envelope, typed fields and validation.

An event is one JSON object per log line. Required: ``event_id`` (the dedup key),
``run_id`` (one agent run, one trace), ``agent_id``, ``type`` and ``ts`` (ISO 8601 with a
zone, normalised to UTC). Optional typed fields follow the OpenTelemetry GenAI semantic
conventions where one exists; an event may name them by their OpenTelemetry key
(``gen_ai.usage.input_tokens``) or by their column name (``input_tokens``). Unknown fields
are kept in ``attributes``, never dropped.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from agentlake.errors import InvalidEvent

EVENT_TYPES = (
    "run_started",
    "llm_call",
    "tool_call",
    "retrieval",
    "decision",
    "feedback",
    "run_finished",
    "error",
    "context_assembled",
    "span",
)

INT64_MAX = 2**63 - 1
MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class Field:
    """One typed event field: its column name, JSON key and Arrow type."""

    column: str
    key: str
    kind: str  # "string" | "int" | "float" | "timestamp" | "documents" | "json"
    required: bool = False
    doc: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.kind]


DOCUMENT_TYPE = pa.struct([pa.field("id", pa.string(), nullable=False), pa.field("score", pa.float64())])

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "documents": pa.list_(pa.field("element", DOCUMENT_TYPE, nullable=False)),
    "json": pa.string(),
}

FIELDS: tuple[Field, ...] = (
    Field("event_id", "event_id", "string", True, "unique, producer-assigned; the dedup key"),
    Field("run_id", "run_id", "string", True, "one agent run (one trace)"),
    Field("agent_id", "agent_id", "string", True, "which agent"),
    Field("type", "type", "string", True, "run_started, llm_call, tool_call, retrieval, decision, ..."),
    Field("ts", "ts", "timestamp", True, "event time, UTC"),
    Field("span_id", "span_id", "string"),
    Field("parent_span_id", "parent_span_id", "string"),
    Field("agent_version", "agent_version", "string"),
    Field("tenant", "tenant", "string"),
    Field("operation", "gen_ai.operation.name", "string", doc="chat, execute_tool, invoke_agent, ..."),
    Field("provider", "gen_ai.provider.name", "string", doc="model provider"),
    Field("model", "gen_ai.request.model", "string"),
    Field("input_tokens", "gen_ai.usage.input_tokens", "int"),
    Field("output_tokens", "gen_ai.usage.output_tokens", "int"),
    Field("finish_reason", "gen_ai.response.finish_reasons", "string", doc="comma-joined if several"),
    Field("tool_name", "gen_ai.tool.name", "string"),
    Field("tool_call_id", "gen_ai.tool.call.id", "string"),
    Field("latency_ms", "latency_ms", "float"),
    Field("status", "status", "string", doc="ok or error"),
    Field("error_type", "error.type", "string"),
    Field("retrieval_source", "gen_ai.data_source.id", "string"),
    Field("documents", "documents", "documents", doc="retrieved documents: [{id, score}]"),
    Field("decision_label", "decision_label", "string"),
    Field("feedback_score", "feedback_score", "float"),
    Field("feedback_label", "feedback_label", "string"),
    Field("attributes", "attributes", "json", doc="every field without a column of its own, as JSON"),
    Field("payload", "payload", "json", doc="free-form content, as JSON"),
)

FIELDS_BY_COLUMN: dict[str, Field] = {f.column: f for f in FIELDS}
# Both the OpenTelemetry key and the column name are accepted on input.
_FIELD_BY_NAME: dict[str, Field] = {**{f.key: f for f in FIELDS}, **{f.column: f for f in FIELDS}}
# Older GenAI conventions named the provider gen_ai.system.
_FIELD_BY_NAME["gen_ai.system"] = FIELDS_BY_COLUMN["provider"]

EVENT_ARROW_SCHEMA = pa.schema([pa.field(f.column, f.arrow_type, nullable=not f.required) for f in FIELDS])


def parse_ts(value: Any, name: str = "ts") -> datetime:
    """Parse an ISO 8601 timestamp that carries a zone and return it in UTC.

    Raises:
        InvalidEvent: not a string, not ISO 8601, or without a zone.
    """
    if not isinstance(value, str):
        raise InvalidEvent(f"field '{name}' must be an ISO 8601 string with a zone, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(
            f"field '{name}' is not an ISO 8601 timestamp: {value[:64]!r} (example: 2026-11-26T07:15:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"field '{name}' has no time zone: {value[:64]!r}; add 'Z' or an offset like +02:00")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(f"field '{name}' is outside the years 1-9999 in UTC: {value[:64]!r}") from None


def normalize_event(obj: Any) -> dict[str, Any]:
    """Validate one decoded event and return it as a row keyed by column name.

    Returns:
        A dict with every column of ``EVENT_ARROW_SCHEMA``; absent optional fields are None,
        ``attributes`` and ``payload`` are JSON text.

    Raises:
        InvalidEvent: with a reason naming the field and the problem.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {_kind(obj)}")
    row: dict[str, Any] = dict.fromkeys(FIELDS_BY_COLUMN)
    extra: dict[str, Any] = {}
    for name, value in obj.items():
        field = _FIELD_BY_NAME.get(name)
        if field is None:
            extra[name] = value
            continue
        if field.column in ("attributes", "payload"):
            continue
        converted = _convert(field, name, value)
        if converted is None:
            continue
        previous = row[field.column]
        if previous is not None and previous != converted:
            raise InvalidEvent(
                f"field '{field.column}' is given twice with different values (as '{field.key}' and "
                f"'{field.column}'); keep one"
            )
        row[field.column] = converted
    for field in FIELDS:
        if field.required and row[field.column] is None:
            raise InvalidEvent(f"required field '{field.key}' is missing or null")
    row["attributes"] = _attributes_text(obj.get("attributes"), extra)
    payload = obj.get("payload")
    row["payload"] = None if payload is None else payload if isinstance(payload, str) else _dumps(payload)
    return row


# A line too long to hold stands in a run as this mark, its length and its first bytes. The mark
# holds a token drawn for this process, so a line in the log cannot pass itself off as one.
_OVERSIZED_MARK = b"\x00agentlake-oversized-line-" + secrets.token_hex(8).encode() + b":"
OVERSIZED_HEAD_BYTES = 1024


def oversized_line(length: int, head: bytes) -> bytes:
    """What stands in for a line of ``length`` bytes too long to hold (see :meth:`LogReader.iter_chunks`)."""
    return _OVERSIZED_MARK + str(length).encode() + b":" + head[:OVERSIZED_HEAD_BYTES].replace(b"\n", b" ")


def parse_event_line(line: bytes) -> dict[str, Any]:
    """Decode and validate one NDJSON line.

    Raises:
        InvalidEvent: the line is blank, not UTF-8, not JSON, or not a valid event.
    """
    if line.startswith(_OVERSIZED_MARK):
        length = line[len(_OVERSIZED_MARK):].split(b":", 1)[0].decode()
        raise InvalidEvent(f"line of {length} bytes is longer than the longest line the log reads "
                           "(AGENTLAKE_MAX_LINE_BYTES); its first bytes are kept here, all of it stays in the segment")
    if not line.strip():
        raise InvalidEvent("blank line: an event is one JSON object per line")
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {_short(str(exc))}") from None
    return normalize_event(decoded)


def _attributes_text(attributes: Any, extra: dict[str, Any]) -> str | None:
    """``attributes`` as JSON text: an object is serialised; text (the SDK's wire form) is kept as is,
    unless unknown top-level fields must be merged into it."""
    if attributes is not None and not isinstance(attributes, dict | str):
        raise InvalidEvent(f"field 'attributes' must be a JSON object, got {_kind(attributes)}")
    if not extra:
        if attributes is None or isinstance(attributes, str):
            return attributes
        return _dumps(attributes) if attributes else None
    decoded: Any = attributes
    if isinstance(attributes, str):
        try:
            decoded = orjson.loads(attributes)
        except orjson.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):
            raise InvalidEvent("field 'attributes' is text that does not hold a JSON object")
    merged: dict[str, Any] = dict(decoded or {})
    for name, value in extra.items():
        if name in merged and merged[name] != value:
            raise InvalidEvent(f"field '{name}' appears both at top level and in 'attributes' with different values")
        merged[name] = value
    return _dumps(merged)


def _convert(field: Field, name: str, value: Any) -> Any:
    if value is None:
        return None
    kind = field.kind
    if kind == "string":
        if field.column == "finish_reason" and isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise InvalidEvent(f"field '{name}' must be a string or a list of strings")
            return ",".join(value)
        if not isinstance(value, str):
            raise InvalidEvent(f"field '{name}' must be a string, got {_kind(value)}")
        if field.required and not value.strip():
            raise InvalidEvent(f"required field '{name}' is empty")
        if field.column in ("event_id", "run_id", "agent_id", "span_id") and len(value) > MAX_ID_LENGTH:
            raise InvalidEvent(f"field '{name}' is {len(value)} characters long; ids are at most {MAX_ID_LENGTH}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEvent(f"field '{name}' must be an integer, got {_kind(value)}")
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise InvalidEvent(f"field '{name}' does not fit in 64 bits")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidEvent(f"field '{name}' must be a number, got {_kind(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise InvalidEvent(f"field '{name}' must be a finite number")
        return number
    if kind == "timestamp":
        return parse_ts(value, name)
    if kind == "documents":
        return _documents(name, value)
    raise AssertionError(f"unhandled field kind {kind}")


def _documents(name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidEvent(f"field '{name}' must be a list of {{id, score}} objects, got {_kind(value)}")
    docs = []
    for i, doc in enumerate(value):
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            raise InvalidEvent(f"field '{name}[{i}]' must be an object with a string 'id'")
        score = doc.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise InvalidEvent(f"field '{name}[{i}].score' must be a number")
        if score is not None and not math.isfinite(float(score)):
            raise InvalidEvent(f"field '{name}[{i}].score' must be a finite number")
        docs.append({"id": doc["id"], "score": None if score is None else float(score)})
    return docs


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Serialise an event as the SDK writes it to the log: one NDJSON line, without the newline.

    The wire form carries ``attributes`` and ``payload`` as JSON text and unknown fields folded
    into ``attributes``, so that ingestion can parse whole segments with an explicit Arrow schema
    (its fast path). It means the same event: :func:`normalize_event` gives the same row for both.
    Nothing is validated here; a bad event is written as it is and quarantined by ingestion.
    """
    # The common case, kept cheap (this runs once per event in every producer): only known keys,
    # a string time, and at most attributes/payload to turn into text.
    if event.keys() <= _WIRE_KEYS and type(event.get("ts")) is str and type(event.get(_FINISH)) is not list:
        attributes, payload = event.get("attributes"), event.get("payload")
        if (attributes is None or type(attributes) is str) and (payload is None or type(payload) is str):
            return _exact(orjson.dumps(event))
        wire = dict(event)
        if type(attributes) is dict:
            if attributes:
                wire["attributes"] = orjson.dumps(attributes, option=orjson.OPT_SORT_KEYS).decode()
            else:
                del wire["attributes"]
        if payload is not None and type(payload) is not str:
            wire["payload"] = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
        if type(wire.get("attributes")) is not dict:
            return _exact(orjson.dumps(wire))
    return _exact(_encode_general(event))


def _exact(line: bytes) -> bytes:
    # orjson's bytes keep the buffer it grew (about 8 KiB for a 600-byte line); a producer buffers
    # thousands of lines until a segment is sealed, so keep a copy of exactly the line's size.
    return bytes(memoryview(line))


_WIRE_KEYS = frozenset(f.key for f in FIELDS)
_FINISH = "gen_ai.response.finish_reasons"


def _encode_general(event: Mapping[str, Any]) -> bytes:
    wire: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in event.items():
        field = _FIELD_BY_NAME.get(name)
        if field is None:
            extra[name] = value
        elif name == "ts" and isinstance(value, datetime) and value.tzinfo is not None:
            wire[name] = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        elif field.column == "finish_reason" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            wire[field.key] = ",".join(value)
        else:
            wire[name] = value
    attributes = wire.get("attributes")
    if extra and (attributes is None or isinstance(attributes, dict)):
        merged = dict(attributes or {})
        if all(merged.get(k, v) == v for k, v in extra.items()):
            merged.update(extra)
            wire["attributes"] = merged
            extra = {}
    wire.update(extra)
    if isinstance(wire.get("attributes"), dict):
        wire["attributes"] = _dumps(wire["attributes"]) if wire["attributes"] else None
        if wire["attributes"] is None:
            del wire["attributes"]
    payload = wire.get("payload")
    if payload is not None and not isinstance(payload, str):
        wire["payload"] = _dumps(payload)
    return orjson.dumps(wire)
