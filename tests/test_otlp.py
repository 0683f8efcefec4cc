"""OTLP/JSON trace import: real SDK spans, written the way the Collector writes them, become events."""

from __future__ import annotations

import copy
import gzip
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from agentlake.errors import OtlpFormatError
from agentlake.log.events import normalize_event, parse_event_line
from agentlake.log.reader import LogReader
from agentlake.log.writer import LogWriter
from agentlake.sources.otlp import (
    OtlpImportReport,
    find_otlp_files,
    import_otlp,
    read_otlp_file,
    spans_to_events,
)
from agentlake.storage.store import ObjectStore
from tests.otlp_collector import (
    DOCUMENTS_JSON,
    AgentRun,
    collector_json,
    encode_export,
    simulate_agent_run,
    write_export,
)

AWSS3_KEY = re.compile(
    r"year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/minute=\d{2}/traces_\d+\.json(\.gz|\.zst)?"
)


@pytest.fixture(scope="module")
def run() -> AgentRun:
    return simulate_agent_run()


@pytest.fixture(scope="module")
def document(run: AgentRun) -> dict[str, Any]:
    return collector_json(run.spans)


@pytest.fixture()
def events(document: dict[str, Any]) -> list[dict[str, Any]]:
    return spans_to_events(copy.deepcopy(document))


def of_span(events: list[dict[str, Any]], span_id: str) -> list[dict[str, Any]]:
    return [event for event in events if event["span_id"] == span_id]


def one(events: list[dict[str, Any]], span_id: str) -> dict[str, Any]:
    found = of_span(events, span_id)
    assert len(found) == 1, found
    return found[0]


def new_writer(root: Path) -> LogWriter:
    return LogWriter(ObjectStore.local(root), producer="otlptest", background_flush=False)


def logged_rows(root: Path) -> list[dict[str, Any]]:
    """The events in the log as ingestion will see them (one row per line)."""
    reader = LogReader(ObjectStore.local(root))
    return [parse_event_line(line) for seg in reader.list_all() for line in reader.read_lines(seg.key)]


# ---------------------------------------------------------------------------- mapping


@pytest.mark.unit
def test_each_span_becomes_the_event_of_its_genai_operation(
    run: AgentRun, events: list[dict[str, Any]]
) -> None:
    ids = run.span_ids
    assert [e["type"] for e in of_span(events, ids["root"])] == ["run_started", "run_finished"]
    assert one(events, ids["chat"])["type"] == "llm_call"
    assert one(events, ids["answer"])["type"] == "llm_call"
    assert one(events, ids["retrieval"])["type"] == "retrieval"
    assert one(events, ids["tool"])["type"] == "tool_call"
    # Spans without gen_ai.operation.name are kept as plain spans, never dropped.
    assert one(events, ids["http"])["type"] == "span"
    assert one(events, ids["gateway"])["type"] == "span"
    assert len(events) == len(run.spans) + 1


@pytest.mark.unit
def test_llm_call_carries_typed_genai_fields(run: AgentRun, events: list[dict[str, Any]]) -> None:
    chat = one(events, run.span_ids["chat"])
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "openai"
    assert chat["gen_ai.request.model"] == "gpt-4o"
    assert chat["gen_ai.usage.input_tokens"] == 812 and type(chat["gen_ai.usage.input_tokens"]) is int
    assert chat["gen_ai.usage.output_tokens"] == 64 and type(chat["gen_ai.usage.output_tokens"]) is int
    assert chat["gen_ai.response.finish_reasons"] == "tool_calls"
    assert chat["ts"] == "2026-11-26T07:15:00.100000Z"
    assert chat["latency_ms"] == 1250.0
    assert chat["status"] == "ok" and "error.type" not in chat
    answer = one(events, run.span_ids["answer"])
    assert (answer["gen_ai.usage.input_tokens"], answer["gen_ai.usage.output_tokens"]) == (1024, 128)
    assert answer["latency_ms"] == 240.0
    assert answer["attributes"]["otel.events"] == [
        {
            "name": "gen_ai.content.completion",
            "time": "2026-11-26T07:15:04.980000Z",
            "attributes": {"gen_ai.completion": "Your order ships tomorrow."},
        }
    ]


@pytest.mark.unit
def test_failed_tool_call_has_error_status_and_type(run: AgentRun, events: list[dict[str, Any]]) -> None:
    tool = one(events, run.span_ids["tool"])
    assert tool["gen_ai.tool.name"] == "lookup_order"
    assert tool["gen_ai.tool.call.id"] == "call_1"
    assert tool["status"] == "error"
    # No error.type attribute on the span: the recorded exception names the error class.
    assert tool["error.type"] == "TimeoutError"
    assert tool["latency_ms"] == 3000.0
    assert tool["attributes"]["otel.status_message"] == "order service timed out"
    (exception,) = tool["attributes"]["otel.events"]
    assert exception["name"] == "exception"
    assert exception["time"] == "2026-11-26T07:15:04.695000Z"
    assert exception["attributes"]["exception.message"] == "order service did not answer in 3s"


@pytest.mark.unit
def test_retrieval_has_source_and_documents(run: AgentRun, events: list[dict[str, Any]]) -> None:
    retrieval = one(events, run.span_ids["retrieval"])
    assert retrieval["gen_ai.data_source.id"] == "kb-main"
    assert retrieval["documents"] == [
        {"id": "kb/orders.md", "score": 0.91},
        {"id": "kb/refunds.md", "score": 0.42},
    ]
    assert "gen_ai.retrieval.documents" not in retrieval["attributes"]
    assert retrieval["attributes"]["app.retrieval.top_k"] == 2


@pytest.mark.unit
def test_agent_span_brackets_the_run(run: AgentRun, events: list[dict[str, Any]]) -> None:
    started, finished = of_span(events, run.span_ids["root"])
    assert started["ts"] == "2026-11-26T07:15:00.000000Z"
    assert finished["ts"] == "2026-11-26T07:15:05.000000Z"
    assert started["event_id"] != finished["event_id"]
    # How the run ended belongs to run_finished only.
    for key in ("status", "latency_ms", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        assert key not in started
    assert finished["status"] == "ok"
    assert finished["latency_ms"] == 5000.0
    assert (finished["gen_ai.usage.input_tokens"], finished["gen_ai.usage.output_tokens"]) == (1836, 192)
    for event in (started, finished):
        assert event["agent_id"] == "support-agent"
        assert event["agent_version"] == "2.0.1"
        assert event["gen_ai.operation.name"] == "invoke_agent"
        assert event["gen_ai.request.model"] == "gpt-4o"


@pytest.mark.unit
def test_run_id_is_the_trace_and_parents_link_spans(run: AgentRun, events: list[dict[str, Any]]) -> None:
    ids = run.span_ids
    for span in run.spans:
        assert span.context is not None
        trace_hex = format(span.context.trace_id, "032x")
        span_hex = format(span.context.span_id, "016x")
        for event in of_span(events, span_hex):
            assert event["run_id"] == trace_hex
            if span.parent is None:
                assert "parent_span_id" not in event
            else:
                assert event["parent_span_id"] == format(span.parent.span_id, "016x")
            assert event["event_id"].startswith(f"otel-{trace_hex}-{span_hex}")
    main = [e for e in events if e["run_id"] == run.trace_id]
    assert {e["parent_span_id"] for e in main if "parent_span_id" in e} == {ids["root"], ids["tool"]}
    assert one(events, ids["http"])["parent_span_id"] == ids["tool"]
    assert {e["run_id"] for e in events} == {run.trace_id, run.gateway_trace_id}
    assert len({e["event_id"] for e in events}) == len(events)


@pytest.mark.unit
def test_agent_is_inherited_from_ancestors_else_the_service(
    run: AgentRun, events: list[dict[str, Any]]
) -> None:
    for event in events:
        if event["run_id"] == run.trace_id:
            # The HTTP span two levels under invoke_agent still belongs to support-agent.
            assert (event["agent_id"], event["agent_version"], event["tenant"]) == (
                "support-agent",
                "2.0.1",
                "acme",
            )
    gateway = one(events, run.span_ids["gateway"])
    assert (gateway["agent_id"], gateway["agent_version"]) == ("gateway", "9.9.0")
    assert "tenant" not in gateway


@pytest.mark.unit
def test_unmapped_attributes_and_otel_context_are_kept(run: AgentRun, events: list[dict[str, Any]]) -> None:
    chat = one(events, run.span_ids["chat"])["attributes"]
    assert chat["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert chat["gen_ai.request.temperature"] == 0.2
    assert chat["server.address"] == "api.openai.com" and chat["server.port"] == 443
    assert chat["app.prompt.template"] == "triage-v3"
    assert chat["otel.span_name"] == "chat gpt-4o"
    assert chat["otel.kind"] == "client"
    assert chat["otel.scope.name"] == "support_bot.agent"
    assert chat["otel.resource"]["service.name"] == "support-bot"
    assert chat["otel.resource"]["deployment.environment.name"] == "test"
    # Mapped attributes live in their typed fields, not twice.
    assert "gen_ai.usage.input_tokens" not in chat and "gen_ai.request.model" not in chat
    root = of_span(events, run.span_ids["root"])[0]["attributes"]
    assert root["app.session.id"] == "sess-9"
    assert root["gen_ai.agent.id"] == "agent-42"  # the id is kept: the name became agent_id
    http = one(events, run.span_ids["http"])["attributes"]
    assert http["url.full"] == "https://orders.internal/orders/77"


@pytest.mark.unit
def test_every_event_passes_normalize_event(run: AgentRun, events: list[dict[str, Any]]) -> None:
    rows = [normalize_event(event) for event in events]
    chat = next(row for row in rows if row["span_id"] == run.span_ids["chat"])
    assert chat["input_tokens"] == 812 and chat["output_tokens"] == 64
    assert chat["model"] == "gpt-4o" and chat["provider"] == "openai" and chat["operation"] == "chat"
    assert chat["ts"] == datetime(2026, 11, 26, 7, 15, 0, 100000, tzinfo=UTC)
    assert orjson.loads(chat["attributes"])["server.address"] == "api.openai.com"
    tool = next(row for row in rows if row["span_id"] == run.span_ids["tool"])
    assert (tool["status"], tool["error_type"], tool["tool_name"]) == (
        "error",
        "TimeoutError",
        "lookup_order",
    )
    retrieval = next(row for row in rows if row["span_id"] == run.span_ids["retrieval"])
    assert retrieval["retrieval_source"] == "kb-main"
    assert retrieval["documents"][0] == {"id": "kb/orders.md", "score": 0.91}


@pytest.mark.unit
def test_hand_written_pdata_variants() -> None:
    """Numbers for int64, uppercase hex, enum names, kvlist documents, older keys, no service name."""
    trace_id, span_id = "0AF7651916CD43DD8448EB211C80319C", "B7AD6B7169203331"
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "agentlake.tenant", "value": {"stringValue": "t1"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "hand"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "parentSpanId": "",
                                "name": "vector_search faq",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": 1_700_000_000_000_000_000,
                                "endTimeUnixNano": "1700000000002500000",
                                "attributes": [
                                    {"key": "gen_ai.system", "value": {"stringValue": "weaviate"}},
                                    {"key": "error.type", "value": {"stringValue": "RateLimited"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 7}},
                                    {
                                        "key": "agentlake.documents",
                                        "value": {
                                            "arrayValue": {
                                                "values": [
                                                    {
                                                        "kvlistValue": {
                                                            "values": [
                                                                {
                                                                    "key": "id",
                                                                    "value": {"stringValue": "faq-1"},
                                                                },
                                                                {
                                                                    "key": "score",
                                                                    "value": {"doubleValue": 0.5},
                                                                },
                                                            ]
                                                        }
                                                    },
                                                    {
                                                        "kvlistValue": {
                                                            "values": [
                                                                {"key": "id", "value": {"intValue": "42"}}
                                                            ]
                                                        }
                                                    },
                                                ]
                                            }
                                        },
                                    },
                                    {
                                        "key": "nested",
                                        "value": {"kvlistValue": {"values": [{"key": "a", "value": {}}]}},
                                    },
                                    {"key": "blob", "value": {"bytesValue": "AAE="}},
                                    {"key": "ratio", "value": {"doubleValue": "NaN"}},
                                ],
                                "status": {"code": "STATUS_CODE_ERROR"},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    (event,) = spans_to_events(document)
    assert event["event_id"] == f"otel-{trace_id.lower()}-{span_id.lower()}"
    assert event["run_id"] == trace_id.lower() and "parent_span_id" not in event
    assert event["type"] == "retrieval"  # no operation, but the span name says so
    assert event["agent_id"] == "unknown" and event["tenant"] == "t1"
    assert event["gen_ai.provider.name"] == "weaviate"
    assert event["status"] == "error" and event["error.type"] == "RateLimited"
    assert event["gen_ai.usage.input_tokens"] == 7
    assert event["latency_ms"] == 2.5
    assert event["ts"] == "2023-11-14T22:13:20.000000Z"
    assert event["documents"] == [{"id": "faq-1", "score": 0.5}, {"id": "42", "score": None}]
    assert event["attributes"]["nested"] == {"a": None}
    assert event["attributes"]["blob"] == "AAE="
    assert event["attributes"]["ratio"] == "NaN"
    assert event["attributes"]["otel.kind"] == "client"
    normalize_event(event)


def _single_span(
    attributes: dict[str, str], status: dict[str, Any], events: list[dict[str, Any]]
) -> dict[str, Any]:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "step",
        "kind": 1,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000001000000",
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
        "events": events,
        "status": status,
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}
    return {
        "resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "s"}, "spans": [span]}]}]
    }


EXCEPTION_EVENT = {
    "timeUnixNano": "1700000000000500000",
    "name": "exception",
    "attributes": [{"key": "exception.type", "value": {"stringValue": "KeyError"}}],
}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("attributes", "status", "events", "expected"),
    [
        (
            {"error.type": "RateLimited"},
            {"code": 2, "message": "429"},
            [EXCEPTION_EVENT],
            ("error", "RateLimited"),
        ),
        ({}, {"code": 2, "message": "429"}, [EXCEPTION_EVENT], ("error", "KeyError")),
        ({}, {"code": 2, "message": "quota exceeded"}, [], ("error", "quota exceeded")),
        ({}, {"code": 2}, [], ("error", "_OTHER")),
        ({}, {"code": 1}, [EXCEPTION_EVENT], ("ok", None)),
        ({}, {}, [], ("ok", None)),
    ],
)
def test_status_and_error_type(
    attributes: dict[str, str],
    status: dict[str, Any],
    events: list[dict[str, Any]],
    expected: tuple[str, str | None],
) -> None:
    (event,) = spans_to_events(_single_span(attributes, status, events))
    assert (event["status"], event.get("error.type")) == expected
    assert event["agent_id"] == "svc" and event["type"] == "span" and event["latency_ms"] == 1.0
    normalize_event(event)


# ---------------------------------------------------------------------------- files


@pytest.mark.integration
@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_reads_collector_objects_plain_and_compressed(
    tmp_path: Path, document: dict[str, Any], compression: str | None
) -> None:
    path = write_export(tmp_path, [document], compression=compression)
    assert AWSS3_KEY.fullmatch(path.relative_to(tmp_path).as_posix())
    assert path.relative_to(tmp_path).parts[:5] == ("year=2026", "month=11", "day=26", "hour=07", "minute=15")
    assert read_otlp_file(path) == spans_to_events(document)
    assert read_otlp_file(path.read_bytes()) == spans_to_events(document)


@pytest.mark.integration
def test_compression_is_detected_by_magic_bytes_as_well_as_suffix(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    expected = spans_to_events(document)
    gz_named_json = tmp_path / "traces_1.json"
    gz_named_json.write_bytes(encode_export([document], "gzip"))
    zst_named_gz = tmp_path / "traces_2.json.gz"
    zst_named_gz.write_bytes(encode_export([document], "zstd"))
    # Stored with Content-Encoding: gzip, an object may be fetched already inflated.
    plain_named_gz = tmp_path / "traces_3.json.gz"
    plain_named_gz.write_bytes(encode_export([document]))
    for path in (gz_named_json, zst_named_gz, plain_named_gz):
        assert read_otlp_file(path) == expected, path
    # Several gzip members or zstd frames in one object are read to the end.
    two_members = tmp_path / "traces_4.json.gz"
    data = encode_export([document, document])
    two_members.write_bytes(gzip.compress(data[:100]) + gzip.compress(data[100:]))
    two_frames = tmp_path / "traces_5.json.zst"
    zstd = zstandard.ZstdCompressor()
    two_frames.write_bytes(zstd.compress(data[:100]) + zstd.compress(data[100:]))
    assert read_otlp_file(two_members) == read_otlp_file(two_frames) == expected + expected


@pytest.mark.integration
def test_reimport_gives_the_same_event_ids(tmp_path: Path, document: dict[str, Any]) -> None:
    plain = write_export(tmp_path, [document])
    zst = write_export(tmp_path, [document], compression="zstd")
    first, again, other_file = read_otlp_file(plain), read_otlp_file(plain), read_otlp_file(zst)
    assert (
        [e["event_id"] for e in first]
        == [e["event_id"] for e in again]
        == [e["event_id"] for e in other_file]
    )
    assert first == again == other_file


@pytest.mark.integration
def test_one_document_per_line_as_the_file_exporter_writes(
    tmp_path: Path, run: AgentRun, document: dict[str, Any]
) -> None:
    # The agent span in one document, its descendants in the next: ancestry spans documents.
    root_only = copy.deepcopy(document)
    rest = copy.deepcopy(document)
    for doc, keep_root in ((root_only, True), (rest, False)):
        for resource_spans in doc["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                scope_spans["spans"] = [
                    s for s in scope_spans["spans"] if (s["spanId"] == run.span_ids["root"]) == keep_root
                ]
    path = tmp_path / "otelcol-file-exporter.json"
    path.write_bytes(encode_export([root_only, rest]))
    assert path.read_bytes().count(b"\n") == 2
    events = read_otlp_file(path)
    by_id = {e["event_id"]: e for e in spans_to_events(document)}
    assert {e["event_id"]: e for e in events} == by_id
    assert one(events, run.span_ids["http"])["agent_id"] == "support-agent"


def _truncated_gzip(document: dict[str, Any]) -> bytes:
    data = encode_export([document], "gzip")
    return data[: len(data) // 2]


def _truncated_zstd(document: dict[str, Any]) -> bytes:
    data = encode_export([document], "zstd")
    return data[: len(data) // 2]


def _bad_trace_id(document: dict[str, Any]) -> bytes:
    broken = copy.deepcopy(document)
    broken["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["traceId"] = "not-a-trace-id"
    return encode_export([broken])


def _no_start_time(document: dict[str, Any]) -> bytes:
    broken = copy.deepcopy(document)
    del broken["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"]
    return encode_export([broken])


def _bad_second_line(document: dict[str, Any]) -> bytes:
    return encode_export([document]) + b"\n" + encode_export([document])[:-7] + b"\n"


MALFORMED = [
    (
        "truncated.json",
        lambda d: encode_export([d])[:-40],
        "not valid JSON: unexpected end of data at line 1",
    ),
    ("truncated.json", lambda d: encode_export([d])[:-40], "(the file looks truncated)"),
    ("empty.json", lambda d: b"", "the file is empty"),
    ("logs.json", lambda d: b'{"resourceLogs": []}', "OTLP logs export"),
    ("array.json", lambda d: b"[1, 2, 3]", "expected a JSON object with 'resourceSpans', got an array"),
    ("other.json", lambda d: b'{"hello": "world"}', "no 'resourceSpans' key (found 'hello')"),
    ("bad-id.json", _bad_trace_id, "resourceSpans[0].scopeSpans[0].spans[1].traceId: expected 32 hex digits"),
    ("no-start.json", _no_start_time, "spans[0]: the span has no startTimeUnixNano"),
    (
        "spans.json",
        lambda d: b'{"resourceSpans": [{"scopeSpans": {"spans": []}}]}',
        "scopeSpans: expected a JSON array",
    ),
    ("lines.json", _bad_second_line, "line 2 is not valid JSON: unexpected end of data at column"),
    (
        "fake.json.gz",
        lambda d: b"\x00\x01garbage",
        "the name ends in .gz but the content is not gzip-compressed",
    ),
    (
        "fake.json.zst",
        lambda d: b"\x00\x01garbage",
        "the name ends in .zst but the content is not zstd-compressed",
    ),
    ("cut.json.gz", _truncated_gzip, "the gzip stream is truncated"),
    ("cut.json.zst", _truncated_zstd, "the zstd stream is truncated"),
]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "make", "reason"), MALFORMED, ids=[f"{m[0]}:{m[2][:24]}" for m in MALFORMED]
)
def test_malformed_input_raises_a_clear_otlp_format_error(
    document: dict[str, Any], name: str, make: Any, reason: str
) -> None:
    with pytest.raises(OtlpFormatError) as caught:
        read_otlp_file(make(document), name=name)
    message = str(caught.value)
    assert message.startswith(f"{name}: "), message
    assert reason in message, message


@pytest.mark.unit
def test_spans_to_events_rejects_a_document_that_is_not_a_trace_export() -> None:
    with pytest.raises(OtlpFormatError, match="OTLP metrics export"):
        spans_to_events({"resourceMetrics": []})
    with pytest.raises(OtlpFormatError, match=r"resourceSpans\[0\]: expected a JSON object, got a string"):
        spans_to_events({"resourceSpans": ["x"]})
    assert spans_to_events({}) == []  # the empty ExportTraceServiceRequest


@pytest.mark.integration
def test_missing_file_is_an_otlp_format_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "traces_0.json"
    with pytest.raises(OtlpFormatError, match=re.escape(f"{missing}: cannot read the file")):
        read_otlp_file(missing)


# ---------------------------------------------------------------------------- import into the log


@pytest.mark.integration
def test_import_appends_through_a_real_log_writer_and_reads_back(
    tmp_path: Path, run: AgentRun, document: dict[str, Any]
) -> None:
    exports = tmp_path / "bucket" / "otel"
    plain = write_export(exports, [document])
    gz = write_export(exports, [document], compression="gzip")
    store_root = tmp_path / "store"
    with new_writer(store_root) as writer:
        report = import_otlp([exports], writer)
    assert report == OtlpImportReport(files=2, spans=2 * len(run.spans), events=2 * (len(run.spans) + 1))
    assert report.ok

    reader = LogReader(ObjectStore.local(store_root))
    segments = reader.list_all()
    assert segments
    lines = [line for seg in segments for line in reader.read_lines(seg.key)]
    assert len(lines) == report.events
    expected = read_otlp_file(plain) + read_otlp_file(gz)
    # The SDK's wire form carries attributes as JSON text: the same event, row for row.
    rows = [parse_event_line(line) for line in lines]
    assert rows == [normalize_event(event) for event in expected]
    assert {row["run_id"] for row in rows} == {run.trace_id, run.gateway_trace_id}
    tool = next(row for row in rows if row["span_id"] == run.span_ids["tool"])
    assert (tool["type"], tool["status"], tool["error_type"]) == ("tool_call", "error", "TimeoutError")
    # The same spans twice: same ids, so ingestion's dedup keeps one copy of each.
    assert len({row["event_id"] for row in rows}) == report.events // 2


@pytest.mark.integration
def test_a_bad_file_is_reported_and_the_others_still_import(tmp_path: Path, document: dict[str, Any]) -> None:
    exports = tmp_path / "exports"
    good = write_export(exports, [document])
    good_zst = write_export(exports, [document], compression="zstd")
    truncated = write_export(exports, [document], compression="gzip")
    truncated.write_bytes(truncated.read_bytes()[:200])
    not_traces = write_export(exports, [document])
    not_traces.write_bytes(b'{"resourceLogs": [{"scopeLogs": []}]}')
    # Beside traces the exporter may write other signals; those and non-JSON files are skipped.
    minute = good.parent
    (minute / "logs_123.json").write_bytes(b'{"resourceLogs": []}')
    (minute / "metrics_123.json.gz").write_bytes(gzip.compress(b'{"resourceMetrics": []}'))
    (minute / "README.txt").write_text("not an export")
    (exports / ".staging").mkdir()
    (exports / ".staging" / "traces_9.json").write_bytes(b"{")
    assert find_otlp_files([exports]) == sorted([good, good_zst, truncated, not_traces])

    store_root = tmp_path / "store"
    with new_writer(store_root) as writer:
        report = import_otlp([exports], writer)
    assert report.files == 2
    assert report.events == 2 * len(spans_to_events(document))
    failures = dict(report.failures)
    assert set(failures) == {truncated, not_traces}
    assert "gzip stream is truncated" in failures[truncated]
    assert "OTLP logs export" in failures[not_traces]
    assert not report.ok
    # Nothing of a failed file reaches the log: exactly the good files' events are there.
    assert logged_rows(store_root) == [normalize_event(e) for e in read_otlp_file(good) + read_otlp_file(good_zst)]


@pytest.mark.integration
def test_import_of_a_missing_path_is_a_failure_not_a_crash(tmp_path: Path, document: dict[str, Any]) -> None:
    good = write_export(tmp_path / "exports", [document])
    missing = tmp_path / "nowhere" / "traces_1.json"
    with new_writer(tmp_path / "store") as writer:
        report = import_otlp([missing, good], writer)
    assert report.files == 1
    assert report.failures == [(missing, "cannot read the file: No such file or directory")]


@pytest.mark.unit
def test_documents_fixture_is_what_the_sdk_recorded(run: AgentRun, document: dict[str, Any]) -> None:
    """The encoded document is the collector's pdata shape: hex ids, int64 as strings, int enums."""
    spans = [s for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert len(spans) == len(run.spans)
    for span in spans:
        assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"]) and re.fullmatch(
            r"[0-9a-f]{16}", span["spanId"]
        )
        assert isinstance(span["startTimeUnixNano"], str) and isinstance(span["kind"], int)
    tool = next(s for s in spans if s["spanId"] == run.span_ids["tool"])
    assert tool["status"] == {"code": 2, "message": "order service timed out"}
    retrieval = next(s for s in spans if s["spanId"] == run.span_ids["retrieval"])
    assert {"key": "gen_ai.retrieval.documents", "value": {"stringValue": DOCUMENTS_JSON}} in retrieval[
        "attributes"
    ]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["gz", "zst"])
def test_a_compressed_bomb_is_refused_before_it_is_held_in_memory(tmp_path: Path, method: str) -> None:
    import gzip

    import zstandard


    body = b" " * (600 * 1024 * 1024)  # 600 MiB of blanks: a few hundred kB compressed
    data = gzip.compress(body, compresslevel=1) if method == "gz" else zstandard.ZstdCompressor(level=3).compress(body)
    del body
    path = tmp_path / f"traces_bomb.json.{method}"
    path.write_bytes(data)
    assert path.stat().st_size < 3_000_000  # gzip's ratio tops out near 1000:1, zstd's far higher
    from tests.platform import run_with_peak

    message, peak_mb = run_with_peak("import sys; from agentlake.sources import otlp\n"
                                     "try:\n    otlp.read_otlp_file(sys.argv[1])\nexcept Exception as exc:\n"
                                     "    print(exc)", str(path))
    assert "inflates to more than" in message
    assert peak_mb < 500, f"peak {peak_mb} MB: the 600 MiB the bomb inflates to were held"
