"""Trace files as the OpenTelemetry Collector writes them, made from spans of the real Python SDK.

``simulate_agent_run`` records an agent run with the SDK; ``collector_json`` encodes the spans
with the SDK's own OTLP encoder and turns the protobuf JSON mapping into the Collector's pdata
JSON (the only difference: trace and span ids in hex, not base64); ``write_export`` stores a
document under the ``awss3exporter`` key layout, plain, gzip or zstd.
"""

from __future__ import annotations

import base64
import gzip
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import zstandard
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

RUN_START = datetime(2026, 11, 26, 7, 15, tzinfo=UTC)
RUN_START_NS = int(RUN_START.timestamp()) * 1_000_000_000
MS = 1_000_000

DOCUMENTS_JSON = '[{"id": "kb/orders.md", "score": 0.91}, {"id": "kb/refunds.md", "score": 0.42}]'


@dataclass(frozen=True)
class AgentRun:
    """The finished SDK spans of one simulated run, and their ids in hex by role."""

    spans: tuple[ReadableSpan, ...]
    trace_id: str
    gateway_trace_id: str
    span_ids: dict[str, str]


def simulate_agent_run() -> AgentRun:
    """Record a support agent answering one request, with the real OpenTelemetry SDK.

    Trace 1 (service ``support-bot``, tenant ``acme``): an ``invoke_agent`` span whose children
    are a ``chat`` call asking for a tool, a ``retrieval``, an ``execute_tool`` that times out
    (status ERROR, an exception event; under it a plain HTTP client span without GenAI
    attributes), and a final ``chat``. Trace 2 (service ``gateway``): one HTTP server span.
    Every span has explicit start and end times, so latencies are exact.
    """
    exporter = InMemorySpanExporter()
    agent_provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": "support-bot",
                "service.version": "1.4.2",
                "deployment.environment.name": "test",
                "tenant": "acme",
            }
        )
    )
    gateway_provider = TracerProvider(
        resource=Resource.create({"service.name": "gateway", "service.version": "9.9.0"})
    )
    for provider in (agent_provider, gateway_provider):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = agent_provider.get_tracer("support_bot.agent", "0.3.0")

    def at(ms: int) -> int:
        return RUN_START_NS + ms * MS

    root = tracer.start_span(
        "invoke_agent support-agent",
        kind=SpanKind.INTERNAL,
        start_time=at(0),
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support-agent",
            "gen_ai.agent.id": "agent-42",
            "gen_ai.agent.version": "2.0.1",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1836,
            "gen_ai.usage.output_tokens": 192,
            "app.session.id": "sess-9",
        },
    )
    in_root = trace.set_span_in_context(root)

    chat = tracer.start_span(
        "chat gpt-4o",
        context=in_root,
        kind=SpanKind.CLIENT,
        start_time=at(100),
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.request.temperature": 0.2,
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.response.id": "chatcmpl-123",
            "gen_ai.usage.input_tokens": 812,
            "gen_ai.usage.output_tokens": 64,
            "gen_ai.response.finish_reasons": ["tool_calls"],
            "server.address": "api.openai.com",
            "server.port": 443,
            "app.prompt.template": "triage-v3",
        },
    )
    chat.end(end_time=at(1350))

    retrieval = tracer.start_span(
        "retrieval kb-main",
        context=in_root,
        kind=SpanKind.CLIENT,
        start_time=at(1400),
        attributes={
            "gen_ai.operation.name": "retrieval",
            "gen_ai.data_source.id": "kb-main",
            "gen_ai.retrieval.documents": DOCUMENTS_JSON,
            "app.retrieval.top_k": 2,
        },
    )
    retrieval.end(end_time=at(1650))

    tool = tracer.start_span(
        "execute_tool lookup_order",
        context=in_root,
        kind=SpanKind.INTERNAL,
        start_time=at(1700),
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "lookup_order",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.type": "function",
        },
    )
    http = tracer.start_span(
        "GET /orders/{id}",
        context=trace.set_span_in_context(tool),
        kind=SpanKind.CLIENT,
        start_time=at(1710),
        attributes={"http.request.method": "GET", "url.full": "https://orders.internal/orders/77"},
    )
    http.end(end_time=at(4690))
    tool.record_exception(TimeoutError("order service did not answer in 3s"), timestamp=at(4695))
    tool.set_status(Status(StatusCode.ERROR, "order service timed out"))
    tool.end(end_time=at(4700))

    answer = tracer.start_span(
        "chat gpt-4o",
        context=in_root,
        kind=SpanKind.CLIENT,
        start_time=at(4750),
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1024,
            "gen_ai.usage.output_tokens": 128,
            "gen_ai.response.finish_reasons": ["stop"],
        },
    )
    answer.add_event(
        "gen_ai.content.completion", {"gen_ai.completion": "Your order ships tomorrow."}, at(4980)
    )
    answer.end(end_time=at(4990))
    root.end(end_time=at(5000))

    gateway = gateway_provider.get_tracer("gateway.http").start_span(
        "POST /v1/agent",
        kind=SpanKind.SERVER,
        start_time=at(-10),
        attributes={"http.request.method": "POST", "http.route": "/v1/agent"},
    )
    gateway.end(end_time=at(5010))

    for provider in (agent_provider, gateway_provider):
        provider.shutdown()
    spans = tuple(exporter.get_finished_spans())
    named = {
        "root": root,
        "chat": chat,
        "retrieval": retrieval,
        "tool": tool,
        "http": http,
        "answer": answer,
        "gateway": gateway,
    }
    span_ids = {role: format(span.get_span_context().span_id, "016x") for role, span in named.items()}
    return AgentRun(
        spans=spans,
        trace_id=format(root.get_span_context().trace_id, "032x"),
        gateway_trace_id=format(gateway.get_span_context().trace_id, "032x"),
        span_ids=span_ids,
    )


def collector_json(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, Any]:
    """The ExportTraceServiceRequest of ``spans`` as the Collector's otlp_json marshaler writes it."""
    message = encode_spans(list(spans))
    document = MessageToDict(message, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _ids_to_hex(span)
                for link in span.get("links", []):
                    _ids_to_hex(link)
    return document


def _ids_to_hex(obj: dict[str, Any]) -> None:
    # Protobuf's JSON mapping writes bytes as base64; pdata writes trace and span ids as hex.
    for key in ("traceId", "spanId", "parentSpanId"):
        if obj.get(key):
            obj[key] = base64.b64decode(obj[key]).hex()


def object_key(when: datetime, suffix: str) -> str:
    """An ``awss3exporter`` object key (default ``s3_partition_format``, no prefix)."""
    return f"{when:year=%Y/month=%m/day=%d/hour=%H/minute=%M}/traces_{secrets.randbelow(10**9)}{suffix}"


def encode_export(documents: list[dict[str, Any]], compression: str | None = None) -> bytes:
    """The bytes of an export: one compact JSON document, or one per line; optionally compressed."""
    data = b"\n".join(orjson.dumps(doc) for doc in documents)
    if len(documents) > 1:
        data += b"\n"  # the file exporter ends every document with a newline
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    assert compression is None, compression
    return data


def write_export(
    root: Path,
    documents: list[dict[str, Any]],
    *,
    compression: str | None = None,
    when: datetime = RUN_START,
) -> Path:
    """Store an export under ``root`` at an awss3exporter key; returns the file's path."""
    suffix = {None: ".json", "gzip": ".json.gz", "zstd": ".json.zst"}[compression]
    path = root / object_key(when, suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_export(documents, compression))
    return path
