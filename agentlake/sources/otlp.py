"""Import OpenTelemetry traces written by the Collector as OTLP/JSON files into the event log.

The Collector's ``awss3exporter`` (``marshaler: otlp_json``) writes one object per export
batch under keys like ``year=YYYY/month=MM/day=DD/hour=HH/minute=mm/traces_<random>.json``,
optionally ``.json.gz`` or ``.json.zst``. The content is the pdata JSON encoding of an
``ExportTraceServiceRequest``: lowerCamelCase keys, trace and span ids as hex, int64 values
as strings. The Collector's ``file`` exporter writes the same documents one per line; both
shapes are read.

Each span becomes an AgentLake event (two for an agent invocation: ``run_started`` and
``run_finished``), typed by its OpenTelemetry GenAI attributes; every attribute without an
event field of its own is kept under ``attributes``. Event ids derive from the trace and span
ids, so importing the same file twice yields the same ids and ingestion dedups them.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import zstandard

from agentlake.errors import OtlpFormatError
from agentlake.log.events import FIELDS_BY_COLUMN
from agentlake.log.writer import LogWriter

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# File names the directory walk imports; other signals the same exporter writes next to
# traces (logs_*, metrics_*, profiles_*) are skipped rather than reported as failures.
OTLP_SUFFIXES = (".json", ".json.gz", ".json.zst")
_OTHER_SIGNAL_FILE = re.compile(r"(?:logs|metrics|profiles)_")
_OTHER_SIGNAL_KEYS = {"resourceLogs": "logs", "resourceMetrics": "metrics", "resourceProfiles": "profiles"}

RUN_OPERATIONS = frozenset({"invoke_agent", "create_agent"})
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
TOOL_OPERATIONS = frozenset({"execute_tool"})
RETRIEVAL_OPERATIONS = frozenset({"retrieval", "retrieve"})
# Spans without a known operation are typed retrieval only when their name or operation
# says so plainly (a LangChain "VectorStoreRetriever", a "similarity_search").
_RETRIEVAL_WORDS = re.compile(r"retriev|vector[_ .-]?search|similarity[_ .-]?search", re.IGNORECASE)

AGENT_NAME_KEYS = ("gen_ai.agent.name", "gen_ai.agent.id")
AGENT_VERSION_KEY = "gen_ai.agent.version"
TENANT_KEYS = ("tenant", "agentlake.tenant")
DOCUMENT_KEYS = ("gen_ai.retrieval.documents", "agentlake.documents")
UNKNOWN_AGENT = "unknown"

STATUS_CODE_ERROR = 2
_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_SPAN_KIND_NAMES = {f"SPAN_KIND_{name.upper()}": number for number, name in _SPAN_KINDS.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = frozenset("0123456789abcdef")

# The event's JSON key of each typed field, taken from the schema so the two never drift.
_KEY = {column: FIELDS_BY_COLUMN[column].key for column in FIELDS_BY_COLUMN}
# Fields a run_started event leaves out: they describe how the run ended.
_OUTCOME_COLUMNS = ("latency_ms", "status", "error_type", "input_tokens", "output_tokens", "finish_reason")


@dataclass
class OtlpImportReport:
    """What ``import_otlp`` did: files and spans read, events appended, files that failed."""

    files: int = 0
    spans: int = 0
    events: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file was imported."""
        return not self.failures


class _Malformed(ValueError):
    """A problem in the file's content; ``read_otlp_file`` prefixes it with the file name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Span:
    """One span as decoded from OTLP/JSON, with the resource and scope it came under."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    status_code: int
    status_message: str
    trace_state: str
    resource: dict[str, Any]
    scope_name: str
    scope_version: str


# ---------------------------------------------------------------------------- public API


def spans_to_events(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Map one decoded ``ExportTraceServiceRequest`` (pdata JSON) to AgentLake events.

    Returns:
        Event dicts accepted by ``agentlake.log.events.normalize_event``, in span order.

    Raises:
        OtlpFormatError: the document is not an OTLP trace export.
    """
    try:
        spans = _document_spans(document, "")
    except _Malformed as exc:
        raise OtlpFormatError(f"OTLP document: {exc.reason}") from None
    return _events(spans)


def read_otlp_file(
    source: str | os.PathLike[str] | bytes, *, name: str | None = None
) -> list[dict[str, Any]]:
    """Read one OTLP/JSON trace file (plain, gzip or zstd; one document or one per line).

    Args:
        source: a path, or the file's bytes.
        name: what to call the file in error messages (default: the path, or ``<bytes>``).

    Returns:
        The file's events, as ``spans_to_events`` returns them.

    Raises:
        OtlpFormatError: the file cannot be read, decompressed or parsed as a trace export;
            the message names the file and what is wrong.
    """
    return _read(source, name)[1]


def find_otlp_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files ``import_otlp`` reads: given files as they are, directories walked recursively.

    A directory contributes its ``*.json``, ``*.json.gz`` and ``*.json.zst`` files, except hidden
    ones and the ``logs_*`` / ``metrics_*`` / ``profiles_*`` files an exporter writes beside traces.
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*")):
            relative = candidate.relative_to(path)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if (
                candidate.is_file()
                and candidate.name.endswith(OTLP_SUFFIXES)
                and not _OTHER_SIGNAL_FILE.match(candidate.name)
            ):
                found.append(candidate)
    return found


def import_otlp(paths: Iterable[str | os.PathLike[str]], writer: LogWriter) -> OtlpImportReport:
    """Import OTLP/JSON trace files into the event log through ``writer``.

    A file is converted whole before any of its events is appended, so a malformed file adds
    nothing; it is recorded in ``failures`` and the other files are still imported.

    Args:
        paths: files, or directories walked as ``find_otlp_files`` does.
        writer: the log writer; the caller flushes or closes it.

    Returns:
        The counts and the ``(file, reason)`` of each file that failed.
    """
    report = OtlpImportReport()
    for path in find_otlp_files(paths):
        try:
            spans, events = _load(path, None)
        except _Malformed as exc:
            report.failures.append((path, exc.reason))
            continue
        for event in events:
            writer.append(event)
        report.files += 1
        report.spans += spans
        report.events += len(events)
    return report


# ---------------------------------------------------------------------------- reading files


def _read(source: str | os.PathLike[str] | bytes, name: str | None) -> tuple[int, list[dict[str, Any]]]:
    """``_load`` with its failures as OtlpFormatError naming the file."""
    label = name or ("<bytes>" if isinstance(source, bytes | bytearray | memoryview) else os.fspath(source))
    try:
        return _load(source, name)
    except _Malformed as exc:
        raise OtlpFormatError(f"{label}: {exc.reason}") from None


def _load(source: str | os.PathLike[str] | bytes, name: str | None) -> tuple[int, list[dict[str, Any]]]:
    """Read, decompress, parse and map one file: ``(span count, events)``.

    Raises:
        _Malformed: with the reason, not the file name.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        file_name = name or ""
    else:
        file_name = os.fspath(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise _Malformed(f"cannot read the file: {exc.strerror or exc}") from None
    text = _decompress(data, file_name)
    spans: list[_Span] = []
    for where, document in _documents(text):
        spans.extend(_document_spans(document, where))
    return len(spans), _events(spans)


def _decompress(data: bytes, file_name: str) -> bytes:
    """Decompress by magic bytes; the name's suffix only decides what a mismatch means."""
    if data.startswith(GZIP_MAGIC):
        return _gunzip(data)
    if data.startswith(ZSTD_MAGIC):
        return _unzstd(data)
    suffix = ".gz" if file_name.endswith(".gz") else ".zst" if file_name.endswith(".zst") else None
    if suffix is None or data.lstrip()[:1] in (b"{", b"["):
        # A .gz object fetched over HTTP may arrive already decoded: stored with
        # Content-Encoding: gzip, it is inflated transparently by many clients.
        return data
    method = "gzip" if suffix == ".gz" else "zstd"
    raise _Malformed(
        f"the name ends in {suffix} but the content is not {method}-compressed "
        f"(first bytes {data[:4].hex() or 'none: the file is empty'})"
    )


# What one OTLP file may inflate to. The Collector writes one export batch per object (megabytes);
# a file that inflates past this is a compressed bomb, refused before it is held in memory.
MAX_INFLATED_BYTES = 64 * 1024 * 1024
_FEED_BYTES = 4096  # compressed bytes fed at a time: at most a few MiB of output between checks


def _too_large() -> _Malformed:
    return _Malformed(f"it inflates to more than {MAX_INFLATED_BYTES} bytes (a compressed bomb, or not one "
                      "export batch); it is refused before it is held in memory")


def _gunzip(data: bytes) -> bytes:
    out: list[bytes] = []
    size = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:  # every member of a multi-member file
            while piece := stream.read(1024 * 1024):
                size += len(piece)
                if size > MAX_INFLATED_BYTES:
                    raise _too_large()
                out.append(piece)
    except EOFError:
        raise _Malformed("the gzip stream is truncated (it ends before its end marker)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise _Malformed(f"corrupt gzip data: {exc}") from None
    return b"".join(out)


def _unzstd(data: bytes) -> bytes:
    out: list[bytes] = []
    size = 0
    view = memoryview(data)
    position = 0
    try:
        # One decompressobj per frame: a file may hold several concatenated frames, and a
        # streamed frame has no content size, which rules out ZstdDecompressor.decompress.
        # Input goes in small pieces, so a bomb is stopped a few MiB past the bound, not in memory.
        while position < len(data):
            frame = zstandard.ZstdDecompressor().decompressobj()
            while not frame.eof and position < len(data):
                fed = view[position:position + _FEED_BYTES]
                piece = frame.decompress(fed)
                position += len(fed)
                size += len(piece)
                if size > MAX_INFLATED_BYTES:
                    raise _too_large()
                out.append(piece)
            if not frame.eof:
                raise _Malformed("the zstd stream is truncated (its last frame is incomplete)")
            position -= len(frame.unused_data)
    except zstandard.ZstdError as exc:
        raise _Malformed(f"corrupt zstd data: {exc}") from None
    return b"".join(out)


def _documents(text: bytes) -> list[tuple[str, Any]]:
    """Parse the file as one JSON document, or as one document per line: ``(where, document)``."""
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    body = text.strip()
    if not body:
        raise _Malformed("the file is empty")
    try:
        return [("", orjson.loads(body))]
    except orjson.JSONDecodeError as exc:
        whole_error = exc
    lines = body.split(b"\n")
    if len(lines) > 1 and _is_json(lines[0]):
        documents = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                documents.append((f"line {number}: ", orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise _Malformed(f"line {number} is not valid JSON: {_json_error(exc)}") from None
        return documents
    raise _Malformed(f"not valid JSON: {_json_error(whole_error, lines=True)}")


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _json_error(exc: orjson.JSONDecodeError, *, lines: bool = False) -> str:
    where = f"line {exc.lineno}, column {exc.colno}" if lines else f"column {exc.colno}"
    hint = " (the file looks truncated)" if exc.msg.startswith("unexpected end of data") else ""
    return f"{exc.msg} at {where}{hint}"


# ---------------------------------------------------------------------------- decoding OTLP


def _document_spans(document: Any, where: str) -> list[_Span]:
    """Validate one ExportTraceServiceRequest and decode its spans."""
    if not isinstance(document, Mapping):
        raise _Malformed(f"{where}expected a JSON object with 'resourceSpans', got {_kind(document)}")
    if "resourceSpans" not in document:
        for key, signal in _OTHER_SIGNAL_KEYS.items():
            if key in document:
                raise _Malformed(f"{where}this is an OTLP {signal} export ('{key}'), not a trace export")
        if document:
            keys = ", ".join(repr(k) for k in list(document)[:5])
            raise _Malformed(f"{where}not an OTLP trace export: no 'resourceSpans' key (found {keys})")
        return []  # {} is a valid, empty ExportTraceServiceRequest
    spans: list[_Span] = []
    for i, resource_spans in enumerate(_list(document, "resourceSpans", where)):
        path = f"{where}resourceSpans[{i}]"
        _require_object(resource_spans, path)
        resource_obj = _object(resource_spans, "resource", path)
        resource = _attributes(resource_obj.get("attributes"), f"{path}.resource.attributes")
        for j, scope_spans in enumerate(_list(resource_spans, "scopeSpans", path)):
            scope_path = f"{path}.scopeSpans[{j}]"
            _require_object(scope_spans, scope_path)
            scope = _object(scope_spans, "scope", scope_path)
            scope_name = _string(scope.get("name"), f"{scope_path}.scope.name")
            scope_version = _string(scope.get("version"), f"{scope_path}.scope.version")
            for k, span in enumerate(_list(scope_spans, "spans", scope_path)):
                spans.append(_span(span, f"{scope_path}.spans[{k}]", resource, scope_name, scope_version))
    return spans


def _span(obj: Any, path: str, resource: dict[str, Any], scope_name: str, scope_version: str) -> _Span:
    _require_object(obj, path)
    trace_id = _hex_id(obj.get("traceId"), 16, f"{path}.traceId")
    span_id = _hex_id(obj.get("spanId"), 8, f"{path}.spanId")
    if trace_id is None or span_id is None:
        missing = "traceId" if trace_id is None else "spanId"
        raise _Malformed(f"{path}: a span needs a non-zero {missing}")
    start_ns = _int64(obj.get("startTimeUnixNano"), f"{path}.startTimeUnixNano")
    end_ns = _int64(obj.get("endTimeUnixNano"), f"{path}.endTimeUnixNano")
    if not start_ns or not end_ns:
        # OTLP requires both; pdata leaves zero values out, so 0 and missing look the same.
        missing = "startTimeUnixNano" if not start_ns else "endTimeUnixNano"
        raise _Malformed(f"{path}: the span has no {missing} (OTLP requires a non-zero start and end time)")
    if start_ns < 0 or end_ns < 0:
        raise _Malformed(f"{path}: span times must be positive nanoseconds since 1970")
    status = _object(obj, "status", path)
    events = []
    for i, event in enumerate(_list(obj, "events", path)):
        event_path = f"{path}.events[{i}]"
        _require_object(event, event_path)
        time_ns = _int64(event.get("timeUnixNano"), f"{event_path}.timeUnixNano")
        events.append(
            {
                "name": _string(event.get("name"), f"{event_path}.name"),
                "time": _iso(time_ns) if time_ns > 0 else None,
                "attributes": _attributes(event.get("attributes"), f"{event_path}.attributes"),
            }
        )
    links = []
    for i, link in enumerate(_list(obj, "links", path)):
        link_path = f"{path}.links[{i}]"
        _require_object(link, link_path)
        links.append(
            {
                "trace_id": _hex_id(link.get("traceId"), 16, f"{link_path}.traceId"),
                "span_id": _hex_id(link.get("spanId"), 8, f"{link_path}.spanId"),
                "attributes": _attributes(link.get("attributes"), f"{link_path}.attributes"),
            }
        )
    return _Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_hex_id(obj.get("parentSpanId"), 8, f"{path}.parentSpanId"),
        name=_string(obj.get("name"), f"{path}.name"),
        kind=_enum(obj.get("kind"), _SPAN_KIND_NAMES, f"{path}.kind"),
        start_ns=start_ns,
        end_ns=end_ns,
        attributes=_attributes(obj.get("attributes"), f"{path}.attributes"),
        events=events,
        links=links,
        status_code=_enum(status.get("code"), _STATUS_CODES, f"{path}.status.code"),
        status_message=_string(status.get("message"), f"{path}.status.message"),
        trace_state=_string(obj.get("traceState"), f"{path}.traceState"),
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
    )


def _require_object(value: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise _Malformed(f"{path}: expected a JSON object, got {_kind(value)}")


def _object(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    """A message-valued field; absent or null is the empty message (proto3 JSON)."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Malformed(f"{path}.{key}: expected a JSON object, got {_kind(value)}")
    return value


def _list(parent: Mapping[str, Any], key: str, path: str) -> list[Any]:
    """A repeated field; absent or null is the empty list (proto3 JSON)."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed(f"{path}.{key}: expected a JSON array, got {_kind(value)}")
    return value


def _string(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Malformed(f"{path}: expected a string, got {_kind(value)}")
    return value


def _int64(value: Any, path: str) -> int:
    """A 64-bit integer field: pdata writes a decimal string; a JSON number is accepted too."""
    if value is None:
        return 0
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value, 10)
        except ValueError:
            number = None
    # Times are fixed64 (unsigned), intValue is int64: accept the union of both ranges.
    if number is not None and -(2**63) <= number < 2**64:
        return number
    raise _Malformed(f"{path}: expected an integer (a decimal string or a number), got {_short(value)}")


def _enum(value: Any, names: Mapping[str, int], path: str) -> int:
    """An enum field: an integer (what pdata writes), or its name as protobuf JSON allows."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in names:
        return names[value]
    raise _Malformed(f"{path}: expected an enum integer, got {_short(value)}")


def _hex_id(value: Any, size: int, path: str) -> str | None:
    """A trace or span id as lowercase hex; None when absent, empty or all zeros.

    pdata JSON writes hex. Standard protobuf JSON writes base64 instead; the lengths differ
    (32 hex digits vs 24 base64 characters for a trace id), so both are read unambiguously.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{path}: expected a hex string, got {_kind(value)}")
    text = value.lower()
    if len(text) == 2 * size and _HEX.issuperset(text):
        hex_id = text
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raw = b""
        if len(raw) != size:
            raise _Malformed(f"{path}: expected {2 * size} hex digits ({size} bytes), got {_short(value)}")
        hex_id = raw.hex()
    return None if hex_id.strip("0") == "" else hex_id


def _attributes(items: Any, path: str) -> dict[str, Any]:
    """A KeyValue list as a dict of plain JSON values."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise _Malformed(f"{path}: expected a JSON array of {{key, value}}, got {_kind(items)}")
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise _Malformed(f"{path}[{i}]: expected an object with a string 'key'")
        out[item["key"]] = _any_value(item.get("value"), f"{path}[{i}].value")
    return out


def _any_value(value: Any, path: str) -> Any:
    """An OTLP AnyValue as a plain JSON value (kvlist -> dict, array -> list, bytes -> base64)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Malformed(
            f'{path}: expected an AnyValue object like {{"stringValue": ...}}, got {_kind(value)}'
        )
    if "stringValue" in value:
        return _string(value["stringValue"], f"{path}.stringValue")
    if "boolValue" in value:
        if not isinstance(value["boolValue"], bool):
            raise _Malformed(f"{path}.boolValue: expected true or false, got {_short(value['boolValue'])}")
        return value["boolValue"]
    if "intValue" in value:
        return _int64(value["intValue"], f"{path}.intValue")
    if "doubleValue" in value:
        return _double(value["doubleValue"], f"{path}.doubleValue")
    if "arrayValue" in value:
        array = _object(value, "arrayValue", path)
        return [
            _any_value(v, f"{path}.arrayValue.values[{i}]")
            for i, v in enumerate(_list(array, "values", path))
        ]
    if "kvlistValue" in value:
        kvlist = _object(value, "kvlistValue", path)
        return _attributes(kvlist.get("values"), f"{path}.kvlistValue.values")
    if "bytesValue" in value:
        return _string(value["bytesValue"], f"{path}.bytesValue")
    return None  # an empty AnyValue


def _double(value: Any, path: str) -> float | str:
    """A double; non-finite values stay as their protobuf JSON names, which JSON can carry."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _Malformed(f"{path}: expected a number, got {_short(value)}") from None
    else:
        raise _Malformed(f"{path}: expected a number, got {_kind(value)}")
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


# ---------------------------------------------------------------------------- spans -> events


def _events(spans: list[_Span]) -> list[dict[str, Any]]:
    index = {(span.trace_id, span.span_id): span for span in spans}
    events: list[dict[str, Any]] = []
    for span in spans:
        events.extend(_span_events(span, index))
    return events


def _span_events(span: _Span, index: Mapping[tuple[str, str], _Span]) -> list[dict[str, Any]]:
    attrs = dict(span.attributes)
    used: set[str] = set()

    def take_string(*keys: str) -> str | None:
        for key in keys:
            value = attrs.get(key)
            if isinstance(value, str) and value:
                used.add(key)
                return value
        return None

    operation = take_string(_KEY["operation"])
    event_type = _event_type(operation, span.name, attrs)
    typed: dict[str, Any] = {
        "operation": operation,
        "provider": take_string(_KEY["provider"], "gen_ai.system"),
        "model": take_string(_KEY["model"], "gen_ai.response.model"),
        "tool_name": take_string(_KEY["tool_name"]),
        "tool_call_id": take_string(_KEY["tool_call_id"]),
        "retrieval_source": take_string(_KEY["retrieval_source"]),
    }
    for column in ("input_tokens", "output_tokens"):
        tokens = _as_int(attrs.get(_KEY[column]))
        if tokens is not None:
            typed[column] = tokens
            used.add(_KEY[column])
    finish = _finish_reason(attrs.get(_KEY["finish_reason"]))
    if finish is not None:
        typed["finish_reason"] = finish
        used.add(_KEY["finish_reason"])
    for key in DOCUMENT_KEYS:
        documents = _retrieval_documents(attrs.get(key))
        if documents is not None:
            typed["documents"] = documents
            used.add(key)
            break
    failed = span.status_code == STATUS_CODE_ERROR
    typed["status"] = "error" if failed else "ok"
    error_type = take_string(_KEY["error_type"])
    if error_type is None and failed:
        # error.type is the GenAI convention; an exception event or the status message is
        # the next best description, and "_OTHER" is the convention's own fallback.
        error_type = _exception_type(span) or span.status_message or "_OTHER"
    typed["error_type"] = error_type
    if span.end_ns >= span.start_ns:
        typed["latency_ms"] = (span.end_ns - span.start_ns) / 1e6

    # Values found on the span itself leave its attributes; inherited ones stay where they are.
    agent_id, own = _inherited(span, index, AGENT_NAME_KEYS)
    used.update(own)
    if agent_id is None:
        agent_id = _resource_string(span, "service.name") or UNKNOWN_AGENT
    agent_version, own = _inherited(span, index, (AGENT_VERSION_KEY,))
    used.update(own)
    if agent_version is None:
        agent_version = _resource_string(span, "service.version")
    tenant, own = _inherited(span, index, TENANT_KEYS)
    used.update(own)
    if tenant is None:
        tenant = _resource_string(span, *TENANT_KEYS)

    attributes = {key: value for key, value in attrs.items() if key not in used}
    attributes["otel.span_name"] = span.name
    attributes["otel.kind"] = _SPAN_KINDS.get(span.kind, str(span.kind))
    attributes["otel.scope.name"] = span.scope_name
    if span.scope_version:
        attributes["otel.scope.version"] = span.scope_version
    attributes["otel.resource"] = span.resource
    if span.trace_state:
        attributes["otel.trace_state"] = span.trace_state
    if span.links:
        attributes["otel.links"] = span.links
    # What happened during the span belongs to the event at its end.
    outcome = dict(attributes)
    if span.events:
        outcome["otel.events"] = span.events
    if span.status_message:
        outcome["otel.status_message"] = span.status_message

    common: dict[str, Any] = {"run_id": span.trace_id, "agent_id": agent_id, "span_id": span.span_id}
    if span.parent_span_id:
        common["parent_span_id"] = span.parent_span_id
    if agent_version:
        common["agent_version"] = agent_version
    if tenant:
        common["tenant"] = tenant
    base_id = f"otel-{span.trace_id}-{span.span_id}"
    if event_type == "run":
        started = {column: value for column, value in typed.items() if column not in _OUTCOME_COLUMNS}
        return [
            _event(f"{base_id}-start", "run_started", span.start_ns, common, started, attributes),
            _event(f"{base_id}-end", "run_finished", span.end_ns, common, typed, outcome),
        ]
    return [_event(base_id, event_type, span.start_ns, common, typed, outcome)]


def _event(
    event_id: str,
    event_type: str,
    ts_ns: int,
    common: Mapping[str, Any],
    typed: Mapping[str, Any],
    attributes: dict[str, Any],
) -> dict[str, Any]:
    """One event dict: envelope, typed fields under their OpenTelemetry keys, then attributes."""
    event: dict[str, Any] = {"event_id": event_id, "type": event_type, "ts": _iso(ts_ns), **common}
    event.update({_KEY[column]: value for column, value in typed.items() if value is not None})
    event["attributes"] = attributes
    return event


def _event_type(operation: str | None, span_name: str, attrs: Mapping[str, Any]) -> str:
    """The AgentLake event type of a span ("run" stands for the run_started/run_finished pair)."""
    if operation in RUN_OPERATIONS:
        return "run"
    if operation in LLM_OPERATIONS:
        return "llm_call"
    if operation in TOOL_OPERATIONS:
        return "tool_call"
    if operation in RETRIEVAL_OPERATIONS:
        return "retrieval"
    hint = operation if operation is not None else span_name
    if _RETRIEVAL_WORDS.search(hint) or (operation is None and any(k in attrs for k in DOCUMENT_KEYS)):
        return "retrieval"
    return "span"


def _inherited(
    span: _Span, index: Mapping[tuple[str, str], _Span], keys: tuple[str, ...]
) -> tuple[str | None, tuple[str, ...]]:
    """The first non-empty string under ``keys`` on the span or its nearest ancestor.

    Returns:
        The value (None if no span has one) and the key it was read under when that was
        the span itself (else an empty tuple).
    """
    seen: set[str] = set()
    current: _Span | None = span
    while current is not None and current.span_id not in seen:  # a malformed parent cycle ends here
        seen.add(current.span_id)
        for key in keys:
            value = current.attributes.get(key)
            if isinstance(value, str) and value.strip():
                return value, ((key,) if current is span else ())
        parent = current.parent_span_id
        current = index.get((current.trace_id, parent)) if parent else None
    return None, ()


def _resource_string(span: _Span, *keys: str) -> str | None:
    for key in keys:
        value = span.resource.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _exception_type(span: _Span) -> str | None:
    for event in reversed(span.events):
        if event["name"] == "exception":
            value = event["attributes"].get("exception.type")
            if isinstance(value, str) and value:
                return value
    return None


def _as_int(value: Any) -> int | None:
    """A token count as an int, or None when the value is not a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _finish_reason(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return None


def _retrieval_documents(value: Any) -> list[dict[str, Any]] | None:
    """``[{id, score}]`` from a JSON string or a decoded array of kvlists; None if unusable."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(value, list):
        return None
    documents = []
    for item in value:
        if not isinstance(item, Mapping):
            return None
        doc_id = item.get("id")
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            return None
        score = item.get("score")
        if isinstance(score, str):
            try:
                score = float(score)
            except ValueError:
                return None
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            return None
        if score is not None and not math.isfinite(score):
            return None
        documents.append({"id": doc_id, "score": None if score is None else float(score)})
    return documents


def _iso(ns: int) -> str:
    """Nanoseconds since 1970 as ISO 8601 UTC with a 'Z' (microsecond precision, as stored)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = _EPOCH + timedelta(seconds=seconds, microseconds=rest // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
