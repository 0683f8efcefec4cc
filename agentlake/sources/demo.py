"""A simulated fleet of AI agents writing realistic, reproducible event streams.

Three agent kinds (support triage, research, coding) serve several tenants. A run is one
trace: ``run_started``, steps (``llm_call``, ``tool_call``, ``retrieval``), a ``decision`` and
``run_finished``, linked into a tree by ``span_id``/``parent_span_id``; some runs fail with an
``error`` event. A share of runs gets ``feedback`` minutes to days after it ended: a late
fact. On request, a share of the lines is malformed on purpose, to exercise quarantine.

Every draw comes from ``random.Random`` seeded by ``FleetConfig.seed``: the same seed, start
time and parameters give byte-identical output. Each run has a hidden **need** (the label a
perfect agent would decide); the documents it retrieves lean towards that need (they are ids of
the demo corpus, :mod:`agentlake.sources.documents`), and its feedback is good when the decision
met the need. Without a :class:`Decider` a run decides its need. With one (the lake-reading
agents of :mod:`agentlake.sources.agents`), the kinds it reads for decide from their context, so
the output also depends on what the lake holds: only runs without a decider are a function of the
seed alone.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from agentlake.log.events import encode_event
from agentlake.sources.documents import DOCS_PER_SOURCE, corpus, doc_id, topic_of, write_corpus


@dataclass(frozen=True)
class AgentKind:
    """One kind of agent: what it calls, how long it works, how it decides and how it fails."""

    name: str
    weight: float  # share of the fleet's runs, relative to the other kinds
    versions: tuple[str, ...]  # the first is the stable release, the others are rolling out
    models: tuple[tuple[str, str], ...]  # (gen_ai.provider.name, gen_ai.request.model)
    tools: tuple[str, ...]
    tool_errors: tuple[str, ...]
    sources: tuple[str, ...]
    decisions: tuple[tuple[str, float], ...]  # (decision_label, weight)
    steps: tuple[int, int]  # fewest (at least 2) and most steps of a run
    system_tokens: int  # size of the system prompt, the floor of every call's input
    tool_error_rate: float
    failure_rate: float
    errors: tuple[str, ...]  # error.type of a failed run
    requests: tuple[str, ...]  # what users ask; {n} and {d} are filled with numbers
    answers: tuple[str, ...]


SUPPORT = AgentKind(
    name="support-triage",
    weight=0.5,
    versions=("2.3.1", "2.4.0"),
    models=(("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku")),
    tools=("lookup_customer", "get_order_status", "issue_refund", "create_ticket", "escalate_to_human"),
    tool_errors=("timeout", "http_503", "not_found"),
    sources=("kb-articles", "past-tickets"),
    decisions=(("resolved", 0.5), ("escalate", 0.2), ("refund", 0.15), ("needs_info", 0.15)),
    steps=(2, 5),
    system_tokens=900,
    tool_error_rate=0.04,
    failure_rate=0.03,
    errors=("rate_limit_exceeded", "tool_timeout", "guardrail_blocked"),
    requests=(
        "Order #{n} still hasn't arrived after {d} days. Where is it?",
        "I was charged twice for invoice INV-{n}, please refund one of the payments.",
        "How do I reset two-factor authentication? I lost my phone (account {n}).",
        "The mobile app crashes when I open Settings since update {d}.{n}.",
        "Can I change the shipping address on order #{n}? It has not shipped yet.",
    ),
    answers=(
        "Your order is with the carrier and should arrive within 2 business days; here is the tracking link.",
        "I found the duplicate charge and started a refund; it shows on your statement in 3-5 days.",
        "I have sent a recovery link to the email on file; it expires in 30 minutes.",
        "I have opened a ticket with our mobile team and will update you as soon as a fix ships.",
    ),
)

RESEARCH = AgentKind(
    name="research",
    weight=0.25,
    versions=("0.9.4", "1.0.0"),
    models=(("anthropic", "claude-sonnet-4"), ("openai", "gpt-4.1"), ("gcp.gemini", "gemini-2.5-pro")),
    tools=("web_search", "fetch_url", "read_pdf", "extract_table", "cite_source"),
    tool_errors=("timeout", "http_429", "paywalled", "parse_error"),
    sources=("web-index", "arxiv", "internal-wiki"),
    decisions=(("answered", 0.6), ("insufficient_evidence", 0.25), ("follow_up_needed", 0.15)),
    steps=(4, 10),
    system_tokens=1600,
    tool_error_rate=0.08,
    failure_rate=0.06,
    errors=("context_length_exceeded", "rate_limit_exceeded", "budget_exhausted"),
    requests=(
        "Summarise work since 20{d} on retrieval-augmented generation over long documents.",
        "Compare open-weight language models under {d}B parameters on code benchmarks.",
        "What evidence is there that carbon pricing cut industrial emissions (report {n})?",
        "Find primary sources for the claim that battery prices fell {d}% last year.",
    ),
    answers=(
        "Three lines of work stand out; the strongest evidence comes from two controlled studies, cited below.",
        "The sources disagree: the survey reports a large effect, the replication a small one; see the table.",
        "I could not find a primary source for the figure; the earliest mention is a press release.",
    ),
)

CODING = AgentKind(
    name="coding",
    weight=0.25,
    versions=("1.12.0", "1.13.0-rc1"),
    models=(("anthropic", "claude-sonnet-4"), ("openai", "o3-mini")),
    tools=("read_file", "grep", "edit_file", "run_tests", "git_diff"),
    tool_errors=("test_failure", "timeout", "permission_denied", "merge_conflict"),
    sources=("repo-index", "api-docs"),
    decisions=(("patch_ready", 0.55), ("tests_failing", 0.2), ("needs_review", 0.2), ("abandoned", 0.05)),
    steps=(5, 14),
    system_tokens=2400,
    tool_error_rate=0.1,
    failure_rate=0.08,
    errors=("context_length_exceeded", "sandbox_crashed", "rate_limit_exceeded"),
    requests=(
        "Fix the flaky test test_retry_backoff in services/billing (issue #{n}).",
        "Add pagination to /v1/orders, keeping the response schema backward compatible (ticket {n}).",
        "Upgrade pydantic to v2 in the ingestion service and fix the {d} type errors.",
        "The nightly export runs out of memory for large tenants; stream it instead (issue #{n}).",
    ),
    answers=(
        "The patch changes 3 files; all tests pass locally and the diff is ready for review.",
        "I fixed the root cause in the retry helper and added a regression test.",
        "Two tests still fail for reasons unrelated to the change; details are in the summary.",
    ),
)

AGENT_KINDS: tuple[AgentKind, ...] = (SUPPORT, RESEARCH, CODING)
TENANTS: tuple[str, ...] = ("acme", "globex", "initech", "umbrella", "hooli", "stark")

_THOUGHTS = (
    "Plan: gather the facts first, then act; confirm before changing anything.",
    "The last observation contradicts the first one; check the source again.",
    "Enough context now; draft the answer and verify it against the evidence.",
    "The tool result is incomplete; narrow the query and try once more.",
)
_COMMENTS = {
    "helpful": ("", "thanks", "exactly right"),
    "partially_helpful": ("", "took too long", "close, but it missed a detail"),
    "not_helpful": ("", "wrong answer", "did not solve my problem"),
}
_FEEDBACK_SOURCES = ("end_user", "reviewer", "csat_survey")
_CHANNELS = ("web", "api", "slack", "email")
_REQUIRED = ("event_id", "run_id", "agent_id", "type", "ts")


@dataclass(frozen=True)
class FleetConfig:
    """What the simulated fleet does.

    Args:
        seed: the seed of every random draw; same seed, same output.
        bad_share: share of all written lines that are malformed, in [0, 1).
        feedback_share: share of runs that get a ``feedback`` event, in [0, 1].
        min_feedback_delay / max_feedback_delay: bounds of the time from a run's end to its
            feedback; delays are log-uniform in between (mostly minutes to hours, some days).
        window: batch mode: the span of time before ``start`` over which runs start.
        kinds / tenants: the agent kinds and tenants of the fleet.
    """

    seed: int = 0
    bad_share: float = 0.0
    feedback_share: float = 0.3
    min_feedback_delay: timedelta = timedelta(minutes=2)
    max_feedback_delay: timedelta = timedelta(days=3)
    window: timedelta = timedelta(hours=6)
    kinds: tuple[AgentKind, ...] = AGENT_KINDS
    tenants: tuple[str, ...] = TENANTS

    def __post_init__(self) -> None:
        if not 0.0 <= self.bad_share < 1.0:
            raise ValueError(f"bad_share must be in [0, 1), got {self.bad_share}")
        if not 0.0 <= self.feedback_share <= 1.0:
            raise ValueError(f"feedback_share must be in [0, 1], got {self.feedback_share}")
        if not timedelta(0) < self.min_feedback_delay <= self.max_feedback_delay:
            raise ValueError("feedback delays must satisfy 0 < min_feedback_delay <= max_feedback_delay")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if not self.kinds or not self.tenants:
            raise ValueError("the fleet needs at least one agent kind and one tenant")
        if any(kind.steps[0] < 2 or kind.steps[0] > kind.steps[1] for kind in self.kinds):
            raise ValueError("an agent kind's steps must be (fewest, most) with 2 <= fewest <= most")


@dataclass
class DemoReport:
    """What a generator wrote.

    ``events`` counts valid event lines, feedback included; ``bad_lines`` the malformed ones.
    ``feedback_pending`` (continuous mode) counts feedback not yet due when stopped: never written.
    """

    runs: int = 0
    failed_runs: int = 0
    events: int = 0
    feedback: int = 0
    bad_lines: int = 0
    feedback_pending: int = 0


@dataclass(frozen=True)
class Choice:
    """A decider's decision for one run: its label, confidence and the decision event's extra attributes."""

    label: str
    confidence: float
    attributes: dict[str, Any]


class Decider(Protocol):
    """Decides the runs of some kinds from their context (``agentlake.sources.agents.LakeAgents``)."""

    def reads(self, agent_id: str) -> bool: ...

    def choose(self, *, run_id: str, agent_id: str, version: str, tenant: str, doc_ids: list[str]) -> Choice: ...


class LineSink(Protocol):
    """Where lines go: ``agentlake.log.writer.LogWriter`` or anything with its ``append_line``."""

    def append_line(self, line: bytes) -> int: ...


# --- one run ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """A planned run, not yet placed in time: its events carry offsets, not timestamps."""

    events: list[tuple[int, dict[str, Any]]]  # (ms after the run started, event with ts unset)
    failed: bool
    feedback: dict[str, Any] | None  # the feedback event with ts unset, if the run gets one
    feedback_u: float  # where the feedback delay falls between its bounds, 0..1
    slot_u: float  # where the run starts inside its slot (batch mode), 0..1

    @property
    def duration_ms(self) -> int:
        return self.events[-1][0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _span_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"  # an OpenTelemetry span id: 8 bytes, hex


class _Trace:
    """Builds one run's events in order, advancing the run's clock by each step's latency."""

    def __init__(self, rng: random.Random, kind: AgentKind, tenant: str, run_id: str) -> None:
        self.rng = rng
        self.kind = kind
        self.tenant = tenant
        self.run_id = run_id
        self.version = (
            kind.versions[0] if rng.random() < 0.8 else rng.choice(kind.versions[1:] or kind.versions)
        )
        self.instance = f"{kind.name}-{rng.randrange(1, 9)}"
        self.root = _span_id(rng)
        self.now_ms = 0
        self.events: list[tuple[int, dict[str, Any]]] = []

    def event(
        self,
        type_: str,
        fields: dict[str, Any],
        *,
        span: str | None = None,
        parent: str | None = None,
        attributes: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new event of this run (not yet recorded); ``ts`` is filled when the run is placed."""
        event: dict[str, Any] = {
            "event_id": _uuid(self.rng),
            "run_id": self.run_id,
            "agent_id": self.kind.name,
            "type": type_,
            "ts": None,
            "span_id": span or _span_id(self.rng),
        }
        if parent is not None:
            event["parent_span_id"] = parent
        event["agent_version"] = self.version
        event["tenant"] = self.tenant
        event.update(fields)
        event["attributes"] = {"service.instance.id": self.instance, **(attributes or {})}
        if payload is not None:
            event["payload"] = payload
        return event

    def record(self, event: dict[str, Any], after_ms: float) -> None:
        """Record ``event`` as happening ``after_ms`` (at least 1 ms) after the previous one."""
        if self.events:
            self.now_ms += max(1, int(after_ms))
        self.events.append((self.now_ms, event))


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([name for name, _ in weighted], weights=[w for _, w in weighted])[0]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(n=rng.randint(10_000, 99_999), d=rng.randint(2, 30))


def _llm_call(
    t: _Trace, provider: str, model: str, context: int, output: int, finish: str, prompt: str, response: str
) -> None:
    rng = t.rng
    # Latency: time to first token, then a per-token rate that depends on the load.
    latency = round(rng.uniform(250, 1200) + output * rng.uniform(8, 25), 1)
    event = t.event(
        "llm_call",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": context,
            "gen_ai.usage.output_tokens": output,
            "gen_ai.response.finish_reasons": [finish],
            "latency_ms": latency,
            "status": "ok",
        },
        parent=t.root,
        attributes={
            "gen_ai.request.temperature": rng.choice((0.0, 0.2, 0.7)),
            "gen_ai.request.max_tokens": 4096,
            "gen_ai.response.id": f"resp_{rng.getrandbits(80):020x}",
        },
        payload={"prompt": prompt[:120], "response": response[:160]},
    )
    t.record(event, latency)


def corpus_sources(kinds: tuple[AgentKind, ...] = AGENT_KINDS) -> dict[str, tuple[str, ...]]:
    """Each retrieval source of the fleet and the decision labels of the kind reading it (the corpus' topics)."""
    return {source: tuple(label for label, _ in kind.decisions) for kind in kinds for source in kind.sources}


def write_demo_documents(folder: Path) -> int:
    """Write the demo corpus into ``folder`` as markdown files (those not there yet): what the ``documents`` source
    loads. Returns how many files were written."""
    return write_corpus(folder, corpus(corpus_sources()))


def _document(rng: random.Random, source: str, labels: tuple[str, ...], need: str) -> str:
    """A document of ``source``: most often one about the run's need, else any."""
    index = rng.randrange(DOCS_PER_SOURCE)
    if rng.random() < 0.6:
        on_topic = [i for i in range(DOCS_PER_SOURCE) if topic_of(labels, i) == need]
        index = on_topic[index % len(on_topic)]
    return doc_id(source, index)


def _plan_run(rng: random.Random, config: FleetConfig, decider: Decider | None = None) -> _Run:
    """Draw one complete run of a random agent kind, timed relative to its start."""
    kind = rng.choices(config.kinds, weights=[k.weight for k in config.kinds])[0]
    # A few large tenants, a long tail of small ones.
    tenant = rng.choices(config.tenants, weights=[1 / (i + 1) for i in range(len(config.tenants))])[0]
    provider, model = rng.choice(kind.models)
    t = _Trace(rng, kind, tenant, _uuid(rng))
    request = _fill(rng, rng.choice(kind.requests))
    steps = rng.randint(*kind.steps)
    need = _pick(rng, kind.decisions)
    labels = tuple(label for label, _ in kind.decisions)
    retrieved: list[str] = []
    # Every run retrieves context, then calls a tool; a failing run fails only after both,
    # so that every run has a retrieval, an llm_call and a tool_call.
    actions = ["retrieval", "tool"] + rng.choices(
        ("tool", "retrieval", "think"), weights=(0.6, 0.2, 0.2), k=steps - 2
    )
    fail_at = rng.randint(2, steps) if rng.random() < kind.failure_rate else None

    started = t.event(
        "run_started",
        {"gen_ai.operation.name": "invoke_agent"},
        span=t.root,
        attributes={"channel": rng.choice(_CHANNELS), "user.id": f"u-{rng.randrange(100_000):05d}"},
        payload={"input": request},
    )
    t.record(started, 0)
    context = kind.system_tokens + len(request) // 4
    tool_errors = 0
    for step, action in enumerate(actions):
        if step == fail_at:
            break
        if action == "retrieval":
            source = rng.choice(kind.sources)
            scores = sorted((round(rng.betavariate(5, 2), 3) for _ in range(rng.randint(3, 8))), reverse=True)
            docs = [{"id": _document(rng, source, labels, need), "score": s} for s in scores]
            retrieved += [str(d["id"]) for d in docs]
            latency = round(rng.lognormvariate(math.log(120), 0.5), 1)
            event = t.event(
                "retrieval",
                {"gen_ai.data_source.id": source, "documents": docs, "latency_ms": latency, "status": "ok"},
                parent=t.root,
                attributes={"top_k": len(docs), "query_tokens": rng.randint(8, 60)},
            )
            t.record(event, latency + rng.uniform(5, 40))
            context += 150 * len(docs)
        elif action == "think":
            output = rng.randint(60, 400)
            _llm_call(t, provider, model, context, output, "stop", request, rng.choice(_THOUGHTS))
            context += output
        else:
            tool = rng.choice(kind.tools)
            output = rng.randint(20, 160)
            call_id = f"call_{rng.getrandbits(96):024x}"
            _llm_call(t, provider, model, context, output, "tool_calls", request, f"-> {tool}({call_id})")
            llm_span = t.events[-1][1]["span_id"]
            failed = rng.random() < kind.tool_error_rate
            latency = round(rng.lognormvariate(math.log(300), 0.8), 1)
            status: dict[str, Any] = {"status": "ok"}
            if failed:
                status = {"status": "error", "error.type": rng.choice(kind.tool_errors)}
            event = t.event(
                "tool_call",
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.id": call_id,
                    "latency_ms": latency,
                    **status,
                },
                parent=llm_span,
                attributes={"gen_ai.tool.type": "function"},
                payload={
                    "arguments": {"ref": str(rng.randint(10_000, 99_999))},
                    "result": f"{tool} failed" if failed else f"{tool} returned {rng.randint(1, 40)} items",
                },
            )
            t.record(event, latency + rng.uniform(5, 40))
            tool_errors += failed
            context += output + rng.randint(50, 900)

    label = need
    if fail_at is not None:
        error_type = rng.choice(kind.errors)
        error = t.event(
            "error",
            {"status": "error", "error.type": error_type},
            parent=t.root,
            attributes={"step": fail_at, "retryable": error_type == "rate_limit_exceeded"},
            payload={"message": f"{error_type} at step {fail_at} of {steps}; the run was aborted"},
        )
        t.record(error, rng.uniform(5, 200))
        end_fields: dict[str, Any] = {"status": "error", "error.type": error_type}
    else:
        finish = "length" if rng.random() < 0.03 else "stop"
        output = rng.randint(150, 900)
        _llm_call(t, provider, model, context, output, finish, request, rng.choice(kind.answers))
        label, confidence = need, round(rng.uniform(0.5, 0.99), 2)
        attributes: dict[str, Any] = {"confidence": confidence, "steps": steps}
        if decider is not None and decider.reads(kind.name):
            choice = decider.choose(run_id=t.run_id, agent_id=kind.name, version=t.version, tenant=tenant,
                                    doc_ids=retrieved)
            label = choice.label
            attributes.update(choice.attributes, confidence=choice.confidence)
        decision = t.event("decision", {"decision_label": label}, parent=t.root, attributes=attributes)
        t.record(decision, rng.uniform(2, 30))
        end_fields = {"status": "ok"}
    finished = t.event(
        "run_finished",
        {"gen_ai.operation.name": "invoke_agent", **end_fields, "latency_ms": 0.0},
        span=t.root,
        attributes={"steps": steps, "tool_errors": tool_errors},
    )
    t.record(finished, rng.uniform(1, 20))
    finished["latency_ms"] = float(t.now_ms)

    feedback = None
    if rng.random() < config.feedback_share:
        # Users like runs that met their need, less so when tools failed along the way.
        met = fail_at is None and label == need
        mean = (0.8 if met else 0.25 if fail_at is None else 0.2) - 0.1 * tool_errors
        score = round(min(1.0, max(0.0, rng.gauss(mean, 0.18))), 2)
        label = "helpful" if score >= 0.7 else "partially_helpful" if score >= 0.4 else "not_helpful"
        feedback = t.event(
            "feedback",
            {"feedback_score": score, "feedback_label": label},
            parent=t.root,
            attributes={"feedback.source": rng.choice(_FEEDBACK_SOURCES)},
            payload={"comment": rng.choice(_COMMENTS[label])},
        )
    return _Run(t.events, fail_at is not None, feedback, rng.random(), rng.random())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dump(event: dict[str, Any], ts: datetime) -> bytes:
    event["ts"] = _iso(ts)
    return encode_event(event)


def _feedback_delay_ms(config: FleetConfig, u: float, cap_ms: float) -> float:
    """The delay at position ``u`` of a log-uniform draw between the bounds, the upper one capped."""
    low = config.min_feedback_delay / timedelta(milliseconds=1)
    high = max(low, min(config.max_feedback_delay / timedelta(milliseconds=1), cap_ms))
    return low * (high / low) ** u


# --- malformed lines --------------------------------------------------------------------------


class _BadLines:
    """Interleaves malformed lines so that they make up ``bad_share`` of all lines.

    After the n-th valid line, the bad lines written so far are brought up to
    round(n * bad_share / (1 - bad_share)); their own random stream leaves the valid
    events unchanged whatever ``bad_share`` is.
    """

    def __init__(self, config: FleetConfig) -> None:
        self.rng = random.Random(f"agentlake-demo/{config.seed}/bad")
        self.ratio = config.bad_share / (1.0 - config.bad_share)
        self.valid = 0
        self.bad = 0

    def after(self, event: dict[str, Any]) -> Iterator[bytes]:
        """Bad lines due after the valid ``event``, each derived from a copy of it."""
        self.valid += 1
        while self.bad < math.floor(self.valid * self.ratio + 0.5):
            self.bad += 1
            yield self.line(dict(event))

    def line(self, event: dict[str, Any]) -> bytes:
        """One line that ``parse_event_line`` rejects, broken in one of a dozen ways."""
        rng = self.rng
        event["event_id"] = _uuid(rng)  # never collides with a valid event's id
        flaw = rng.randrange(12)
        if flaw == 0:  # truncated: the producer died mid-write
            line = orjson.dumps(event)
            return line[: rng.randint(1, len(line) - 1)]
        if flaw == 1:  # a required field is missing
            del event[rng.choice(_REQUIRED)]
        elif flaw == 2:  # a field of the wrong type
            name, value = rng.choice(
                (
                    ("gen_ai.usage.input_tokens", "812"),
                    ("latency_ms", "fast"),
                    ("run_id", 12345),
                    ("documents", "doc-1,doc-2"),
                    ("status", True),
                    ("feedback_score", [0.5]),
                )
            )
            event[name] = value
        elif flaw == 3:  # an unreadable timestamp
            naive = str(event["ts"]).removesuffix("Z")
            event["ts"] = rng.choice(("yesterday", "2026-13-45T25:61:00Z", naive, 1767225600, ""))
        elif flaw == 4:  # JSON, but not an object
            return rng.choice(
                (b"[]", b'"run_started"', b"42", b"null", b"true", b"[" + orjson.dumps(event) + b"]")
            )
        elif flaw == 5:  # not UTF-8: a Latin-1 producer
            return orjson.dumps(event)[:-1] + b',"note":"caf\xe9 cr\xe8me"}'
        elif flaw == 6:  # blank or whitespace only
            return rng.choice((b"", b"   ", b"\t"))
        elif flaw == 7:  # an empty required id
            event[rng.choice(("run_id", "agent_id", "event_id"))] = rng.choice(("", "   "))
        elif flaw == 8:  # attributes that are not an object
            event["attributes"] = ["service.instance.id", "x"]
        elif flaw == 9:  # one field under both its names, with different values
            event["gen_ai.request.model"] = "gpt-4o"
            event["model"] = "gpt-4o-2024-08-06"
        elif flaw == 10:  # NaN is not JSON
            return orjson.dumps(event)[:-1] + b',"latency_ms":NaN}'
        else:  # an id too long to be one
            event["event_id"] = "x" * 300
        return orjson.dumps(event)


# --- batch mode -------------------------------------------------------------------------------


def _batch(
    config: FleetConfig, runs: int, start: datetime, report: DemoReport, decider: Decider | None = None
) -> Iterator[bytes]:
    if runs < 0:
        raise ValueError(f"runs must be >= 0, got {runs}")
    if start.tzinfo is None:
        raise ValueError("start must carry a time zone, e.g. datetime.now(UTC)")
    start = start.astimezone(UTC)
    master = random.Random(f"agentlake-demo/{config.seed}/runs")
    bad = _BadLines(config)
    window_ms = config.window / timedelta(milliseconds=1)
    min_delay_ms = config.min_feedback_delay / timedelta(milliseconds=1)
    late: list[tuple[float, int, dict[str, Any]]] = []  # (feedback ms after start, run, event)

    def emit(event: dict[str, Any], at_ms: float, feedback: bool = False) -> Iterator[bytes]:
        yield _dump(event, start + timedelta(milliseconds=at_ms))
        report.events += 1
        report.feedback += feedback
        for line in bad.after(event):
            report.bad_lines += 1
            yield line

    for i in range(runs):
        run = _plan_run(random.Random(master.getrandbits(64)), config, decider)
        # Run i starts in the i-th of `runs` equal slots of the window, moved earlier if
        # needed so that it ends at least min_feedback_delay before `start`.
        begin = -window_ms + (i + run.slot_u) * window_ms / runs
        begin = math.floor(min(begin, -(run.duration_ms + min_delay_ms)))
        report.runs += 1
        report.failed_runs += run.failed
        for offset, event in run.events:
            yield from emit(event, begin + offset)
        if run.feedback is not None:
            end = begin + run.duration_ms
            delay = _feedback_delay_ms(config, run.feedback_u, cap_ms=-end)
            heapq.heappush(late, (end + max(1.0, math.floor(delay)), i, run.feedback))
    # Feedback arrives later: after every run, in order of its own event time.
    while late:
        at_ms, _, event = heapq.heappop(late)
        yield from emit(event, at_ms, feedback=True)


def generate_runs(config: FleetConfig, runs: int, start: datetime) -> Iterator[bytes]:
    """The NDJSON lines (bytes, without newline) of ``runs`` runs that happened before ``start``.

    Runs start in equal slots of ``config.window`` before ``start``, each at a random point of
    its slot, moved earlier if needed so that it ends at least ``min_feedback_delay`` before
    ``start``. Each run's events come together, in time order, runs in slot order. Feedback
    comes after all runs, ordered by its event time: run end + a log-uniform delay between
    ``min_feedback_delay`` and ``min(max_feedback_delay, start - run end)``, so that nothing is
    dated after ``start``; set ``window`` to days for feedback days late. Malformed lines are
    interleaved so they make up ``bad_share`` of all lines.

    Args:
        config: the fleet; its seed makes the output reproducible.
        runs: how many runs.
        start: a zone-aware time, typically now: the end of the window.
    """
    yield from _batch(config, runs, start, DemoReport())


def emit_runs(
    writer: LineSink, config: FleetConfig, runs: int, start: datetime, *, decider: Decider | None = None
) -> DemoReport:
    """Append the lines of ``generate_runs`` to ``writer``; the caller flushes or closes it.

    Args:
        decider: decides the runs of the kinds it reads from their context (runs are then planned
            one after the other, each reading the lake as it is then).

    Returns:
        The counts of runs, failed runs, valid events (feedback included), feedback and bad lines.
    """
    report = DemoReport()
    for line in _batch(config, runs, start, report, decider):
        writer.append_line(line)
    return report


# --- continuous mode --------------------------------------------------------------------------


def run_forever(
    writer: LineSink,
    config: FleetConfig,
    rate_runs_per_s: float,
    stop: threading.Event | None = None,
    time_scale: float = 1440.0,
    *,
    speed: float = 1.0,
    decider: Decider | None = None,
) -> DemoReport:
    """Run the fleet in real time until ``stop`` is set, then return what was written.

    Runs start as a Poisson process of ``rate_runs_per_s``; each event is appended when its
    time comes, stamped with that time, so concurrent runs interleave as in production (a
    run takes seconds to minutes). Feedback waits in a queue until run end + delay /
    ``time_scale`` (1440: a day-late feedback arrives a minute later). When ``stop`` is set,
    the runs in flight are finished at once (their last events dated up to a few minutes
    ahead) and feedback not yet due is dropped, counted in ``feedback_pending``. Returns
    within about 0.2 s of ``stop``.

    Args:
        writer: where lines go; the caller flushes or closes it.
        config: the fleet; ``window`` is unused here.
        rate_runs_per_s: mean number of runs started per (simulated) second.
        stop: set it to stop; None runs until the process ends.
        time_scale: how much faster than the runs' clock feedback delays pass.
        speed: how much faster than real time the simulated clock runs; timestamps follow
            it, so above 1 they run ahead of the wall clock (for fast demos and tests).
        decider: decides the runs of the kinds it reads from their context, when each run starts.
    """
    if rate_runs_per_s <= 0 or time_scale <= 0 or speed <= 0:
        raise ValueError("rate_runs_per_s, time_scale and speed must be positive")
    stop = stop or threading.Event()
    master = random.Random(f"agentlake-demo/{config.seed}/runs")
    arrivals = random.Random(f"agentlake-demo/{config.seed}/arrivals")
    bad = _BadLines(config)
    report = DemoReport()
    order = itertools.count()
    queue: list[tuple[int, int, bool, dict[str, Any]]] = []  # (due ms, order, is feedback, event)
    wall0, mono0 = datetime.now(UTC), time.monotonic()
    next_run_ms = 0.0

    def emit(due_ms: int, is_feedback: bool, event: dict[str, Any]) -> None:
        writer.append_line(_dump(event, wall0 + timedelta(milliseconds=due_ms)))
        report.events += 1
        report.feedback += is_feedback
        for line in bad.after(event):
            writer.append_line(line)
            report.bad_lines += 1

    while not stop.is_set():
        now_ms = (time.monotonic() - mono0) * 1000 * speed
        while next_run_ms <= now_ms and not stop.is_set():
            run = _plan_run(random.Random(master.getrandbits(64)), config, decider)
            begin = int(next_run_ms)
            for offset, event in run.events:
                heapq.heappush(queue, (begin + offset, next(order), False, event))
            if run.feedback is not None:
                delay = _feedback_delay_ms(config, run.feedback_u, math.inf) / time_scale
                due = begin + run.duration_ms + max(1, int(delay))
                heapq.heappush(queue, (due, next(order), True, run.feedback))
            report.runs += 1
            report.failed_runs += run.failed
            next_run_ms += arrivals.expovariate(rate_runs_per_s) * 1000
        while queue and queue[0][0] <= now_ms and not stop.is_set():
            due, _, is_feedback, event = heapq.heappop(queue)
            emit(due, is_feedback, event)
        wake_ms = min([next_run_ms] + ([queue[0][0]] if queue else []))
        real_wait_s = (wake_ms / speed / 1000) - (time.monotonic() - mono0)
        stop.wait(min(0.2, max(0.0, real_wait_s)))
    # Stopped: complete the runs in flight, so none is left without its run_finished.
    while queue:
        due, _, is_feedback, event = heapq.heappop(queue)
        if is_feedback:
            report.feedback_pending += 1
        else:
            emit(due, is_feedback, event)
    return report
