"""The simulated agent fleet: reproducible, valid where it should be, broken where it should be."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentlake.errors import InvalidEvent
from agentlake.log.events import parse_event_line
from agentlake.log.reader import LogReader
from agentlake.log.writer import LogWriter
from agentlake.sources.demo import AGENT_KINDS, FleetConfig, emit_runs, generate_runs, run_forever
from agentlake.storage.store import ObjectStore

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _split(lines: list[bytes]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Parsed valid events and the raw bad lines."""
    good, bad = [], []
    for line in lines:
        try:
            good.append(parse_event_line(line))
        except InvalidEvent:
            bad.append(line)
    return good, bad


def _runs(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_run[event["run_id"]].append(event)
    return by_run


@pytest.fixture(scope="module")
def batch() -> list[dict[str, Any]]:
    lines = list(generate_runs(FleetConfig(seed=7, feedback_share=0.5), 400, START))
    good, bad = _split(lines)
    assert not bad, "bad_share=0 must give only valid lines"
    return good


@pytest.mark.unit
def test_same_seed_same_bytes_other_seed_other_runs() -> None:
    config = FleetConfig(seed=3, bad_share=0.1)
    first = list(generate_runs(config, 50, START))
    assert first == list(generate_runs(FleetConfig(seed=3, bad_share=0.1), 50, START))
    other, _ = _split(list(generate_runs(FleetConfig(seed=4, bad_share=0.1), 50, START)))
    mine, _ = _split(first)
    assert not {e["event_id"] for e in mine} & {e["event_id"] for e in other}
    assert not {e["run_id"] for e in mine} & {e["run_id"] for e in other}


@pytest.mark.unit
def test_bad_share_adds_only_broken_lines_and_leaves_valid_events_alone() -> None:
    clean = list(generate_runs(FleetConfig(seed=5), 100, START))
    lines = list(generate_runs(FleetConfig(seed=5, bad_share=0.2), 100, START))
    good, bad = _split(lines)
    assert [line for line in lines if line not in bad] == clean  # same valid lines, same order
    assert abs(len(bad) - len(good) * 0.2 / 0.8) <= 0.5 + 1e-9
    assert {b"", b"   ", b"\t"} & set(bad)  # the assortment includes blank lines...
    assert any(b"\xe9" in line for line in bad)  # ...invalid UTF-8...
    assert any(line.startswith(b"{") and not line.endswith(b"}") for line in bad)  # ...truncated JSON


@pytest.mark.unit
def test_bad_lines_are_varied_and_each_fails_parsing() -> None:
    lines = list(generate_runs(FleetConfig(seed=11, bad_share=0.3), 60, START))
    good, bad = _split(lines)
    reasons = set()
    for line in bad:
        with pytest.raises(InvalidEvent) as info:
            parse_event_line(line)
        reasons.add(str(info.value)[:30])
    assert len(reasons) >= 10
    assert len(bad) == round(len(good) * 0.3 / 0.7)


@pytest.mark.unit
def test_fleet_has_three_kinds_several_tenants_and_unique_ids(batch: list[dict[str, Any]]) -> None:
    assert {e["agent_id"] for e in batch} == {kind.name for kind in AGENT_KINDS}
    assert {"support-triage", "research", "coding"} <= {kind.name for kind in AGENT_KINDS}
    assert len({e["tenant"] for e in batch}) >= 4
    assert len({e["event_id"] for e in batch}) == len(batch)
    assert len({e["model"] for e in batch if e["model"]}) >= 4


@pytest.mark.unit
def test_every_run_is_a_tree_from_start_to_finish(batch: list[dict[str, Any]]) -> None:
    runs = _runs(batch)
    assert len(runs) == 400
    statuses: Counter[str] = Counter()
    for events in runs.values():
        body = [e for e in events if e["type"] != "feedback"]
        types = [e["type"] for e in body]
        assert types[0] == "run_started" and types[-1] == "run_finished"
        assert types.count("run_started") == types.count("run_finished") == 1
        assert {"llm_call", "tool_call", "retrieval"} <= set(types)
        assert [e["ts"] for e in body] == sorted(e["ts"] for e in body)
        assert all(e["ts"] <= START for e in events)
        root = body[0]["span_id"]
        spans = {e["span_id"] for e in body}
        assert body[-1]["span_id"] == root and body[0]["parent_span_id"] is None
        assert all(e["parent_span_id"] in spans for e in events if e["span_id"] != root)
        finished = body[-1]
        statuses[finished["status"]] += 1
        assert finished["latency_ms"] == (finished["ts"] - body[0]["ts"]) / timedelta(milliseconds=1)
        if finished["status"] == "ok":
            assert types.count("decision") == 1 and "error" not in types
        else:
            assert finished["error_type"] and "error" in types and "decision" not in types
    assert statuses["ok"] > statuses["error"] > 0


@pytest.mark.unit
def test_step_fields_are_typed_and_in_range(batch: list[dict[str, Any]]) -> None:
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in batch:
        by_type[event["type"]].append(event)
    for call in by_type["llm_call"]:
        assert (
            call["model"] and call["provider"] and call["finish_reason"] in ("stop", "tool_calls", "length")
        )
        for n in (call["input_tokens"], call["output_tokens"]):
            assert isinstance(n, int) and n >= 0
        assert call["latency_ms"] > 0
    tools = by_type["tool_call"]
    assert all(t["tool_name"] and t["tool_call_id"] and t["status"] in ("ok", "error") for t in tools)
    assert all(t["error_type"] for t in tools if t["status"] == "error")
    assert any(t["status"] == "error" for t in tools)
    for retrieval in by_type["retrieval"]:
        assert retrieval["retrieval_source"] and retrieval["documents"]
        assert all(0 <= d["score"] <= 1 for d in retrieval["documents"])
    assert all(d["decision_label"] for d in by_type["decision"])
    assert all(0 <= f["feedback_score"] <= 1 and f["feedback_label"] for f in by_type["feedback"])


@pytest.mark.unit
def test_feedback_comes_last_dated_after_its_run_and_not_after_start() -> None:
    config = FleetConfig(seed=9, feedback_share=0.5, window=timedelta(days=4))
    lines = list(generate_runs(config, 300, START))
    events, _ = _split(lines)
    types = [e["type"] for e in events]
    first_feedback = types.index("feedback")
    assert set(types[first_feedback:]) == {"feedback"}  # it arrives after every run's events
    feedback = events[first_feedback:]
    assert 0.35 < len(feedback) / 300 < 0.65
    assert [f["ts"] for f in feedback] == sorted(f["ts"] for f in feedback)
    ends = {e["run_id"]: e["ts"] for e in events if e["type"] == "run_finished"}
    delays = [f["ts"] - ends[f["run_id"]] for f in feedback]
    assert all(config.min_feedback_delay <= d for d in delays)
    assert all(f["ts"] <= START for f in feedback)
    assert max(delays) > timedelta(days=1) and min(delays) < timedelta(hours=1)  # minutes to days


@pytest.mark.unit
def test_lines_are_realistically_sized() -> None:
    lines = list(generate_runs(FleetConfig(seed=1), 200, START))
    assert 400 <= sum(map(len, lines)) / len(lines) <= 800


@pytest.mark.unit
def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="bad_share"):
        FleetConfig(bad_share=1.0)
    with pytest.raises(ValueError, match="zone"):
        list(generate_runs(FleetConfig(), 1, datetime(2026, 1, 1)))


@pytest.mark.unit
def test_emit_runs_writes_every_line_and_counts_them(tmp_path: Path) -> None:
    store = ObjectStore.local(tmp_path)
    config = FleetConfig(seed=2, bad_share=0.05)
    with LogWriter(store, "demo", background_flush=False) as writer:
        report = emit_runs(writer, config, 80, START)
    reader = LogReader(store)
    written = [line for seg in reader.list_all() for line in reader.read_lines(seg.key)]
    assert written == list(generate_runs(config, 80, START))
    good, bad = _split(written)
    assert (report.runs, report.events, report.bad_lines) == (80, len(good), len(bad))
    assert report.feedback == sum(e["type"] == "feedback" for e in good) > 0
    assert report.failed_runs == sum(e["type"] == "run_finished" and e["status"] == "error" for e in good)


@pytest.mark.unit
def test_run_forever_emits_in_real_time_and_stops_promptly(tmp_path: Path) -> None:
    store = ObjectStore.local(tmp_path)
    stop = threading.Event()
    result = []
    writer = LogWriter(store, "live", max_segment_age_s=0.5)
    config = FleetConfig(seed=1, bad_share=0.02, feedback_share=0.5)
    before = datetime.now(UTC)
    # Runs take seconds: at speed 30, 1.5 s real time is 45 s of fleet time, and at time_scale
    # 1e5 a 2-minute feedback delay passes in 1.2 ms, so runs finish and feedback shows up.
    thread = threading.Thread(
        target=lambda: result.append(run_forever(writer, config, 8.0, stop, 1e5, speed=30.0))
    )
    thread.start()
    time.sleep(1.5)
    stopped = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - stopped < 1.0
    writer.close()
    report = result[0]

    reader = LogReader(store)
    written = [line for seg in reader.list_all() for line in reader.read_lines(seg.key)]
    good, bad = _split(written)
    assert report.runs > 100 and report.feedback > 0 and report.bad_lines > 0 and report.feedback_pending > 0
    assert (report.events, report.bad_lines) == (len(good), len(bad))
    assert report.feedback == sum(e["type"] == "feedback" for e in good)
    runs = _runs(good)
    assert len(runs) == report.runs  # runs in flight at stop were completed, not dropped
    for events in runs.values():
        types = [e["type"] for e in events]
        assert types[0] == "run_started" and "run_finished" in types
    # Stamped with the wall clock, not a fixed start.
    assert all(before - timedelta(seconds=1) <= e["ts"] <= before + timedelta(minutes=10) for e in good)
    finished = {e["run_id"]: e["ts"] for e in good if e["type"] == "run_finished"}
    assert all(e["ts"] > finished[e["run_id"]] for e in good if e["type"] == "feedback")


# --- agents that read their context from the lake ---------------------------------------------


def _fleet_lake(tmp_path: Path) -> Any:
    from agentlake.config import Settings
    from agentlake.tables.lake import Lake

    return Lake(Settings.from_env({"AGENTLAKE_HOME": str(tmp_path / "home")}))


def _docs(topic: str, n: int) -> list[dict[str, Any]]:
    return [{"doc_id": f"kb-articles/{i:06d}", "body": f"# doc\n\ntopic: {topic}\n"} for i in range(n)]


@pytest.mark.unit
def test_a_policy_is_a_function_of_the_context_and_the_two_versions_differ() -> None:
    from agentlake.sources.agents import decide

    refunds = {"documents": _docs("refund", 3) + _docs("resolved", 2)}
    resolved = {"documents": _docs("resolved", 4)}
    assert decide("support-triage", "2.3.1", refunds) == decide("support-triage", "2.3.1", dict(refunds))
    assert decide("support-triage", "2.3.1", refunds).label == "refund"
    assert decide("support-triage", "2.3.1", resolved).label == "resolved"  # other context, other decision
    # Refunds went badly for this tenant: the feedback-weighted version learns from it, the stable one cannot.
    history = {**refunds,
               "past_decisions": [{"run_id": f"r{i}", "decision_label": "refund"} for i in range(3)],
               "feedback": [{"run_id": f"r{i}", "feedback_score": 0.05} for i in range(3)]}
    assert decide("support-triage", "2.3.1", history).label == "refund"
    assert decide("support-triage", "2.4.0", history).label == "resolved"
    assert decide("research", "0.9.4", {}).label == "insufficient_evidence"  # an empty context is a context


@pytest.mark.unit
def test_an_urgent_open_ticket_tips_the_newer_support_policy_to_escalate_and_the_live_status_wins_over_the_loaded(
) -> None:
    from agentlake.sources.agents import decide

    urgent = {"ticket_id": "t000007", "status": "open", "priority": "urgent"}
    context = {"documents": _docs("resolved", 2) + _docs("escalate", 1), "tickets": [urgent]}
    assert decide("support-triage", "2.4.0", context).label == "escalate"
    assert decide("support-triage", "2.3.1", context).label == "resolved", "the stable policy ignores tickets"
    assert decide("support-triage", "2.4.0", {**context, "tickets": [{**urgent, "priority": "low"}]}).label \
        == "resolved"
    # Read live, the helpdesk says the ticket was solved since it was loaded: the live status decides.
    solved_now = {**context, "tickets_now": []}
    assert decide("support-triage", "2.4.0", solved_now).label == "resolved"
    assert decide("support-triage", "2.4.0", {**context, "tickets": [], "tickets_now": [urgent]}).label == "escalate"


@pytest.mark.unit
def test_every_tenant_of_the_demo_fleet_is_a_customer_of_the_demo_helpdesk() -> None:
    from agentlake.sources import helpdesk
    from agentlake.sources.agents import customer_of
    from agentlake.sources.demo import TENANTS

    customers = {customer_of(t) for t in TENANTS}
    assert all(c.startswith("c") and int(c[1:]) < helpdesk.INITIAL_CUSTOMERS for c in customers)
    assert len(customers) > 1 and customer_of("acme") == customer_of("acme")


@pytest.mark.integration
def test_a_support_run_pins_its_customer_and_tickets_and_reads_their_status_live(tmp_path: Path) -> None:
    from agentlake.context.assembly import load_artifact
    from agentlake.context.replay import REPRODUCIBLE, SOURCE_CHANGED, replay
    from agentlake.sources import helpdesk
    from agentlake.sources.agents import TICKETS, LakeAgents, customer_of, decide, records_of
    from tests.helpdesk_rows import publish_helpdesk, set_ticket

    lake = _fleet_lake(tmp_path)
    with LogWriter(lake.store, "demo", background_flush=False) as writer:
        agents = LakeAgents(lake, log=writer)
        before = agents.choose(run_id="s-0", agent_id="support-triage", version="2.4.0", tenant="acme", doc_ids=[])
        assert "context_artifact" in before.attributes, before.attributes  # no helpdesk yet: still an artifact
        assert "tickets_now" not in load_artifact(lake.store, before.attributes["context_artifact"]).records

        db = helpdesk.create(lake.settings.sources_home / "helpdesk.db", seed=3).path
        customer = customer_of("acme")
        set_ticket(db, "t000000", customer_id=customer, status="open", priority="urgent")
        publish_helpdesk(lake, db, "load-1")
        choice = agents.choose(run_id="s-1", agent_id="support-triage", version="2.4.0", tenant="acme",
                               doc_ids=["kb-articles/000000"])
        agents.close()
    artifact = load_artifact(lake.store, choice.attributes["context_artifact"])
    pins = artifact.manifest["pins"]
    for table in ("ext.customers", "ext.tickets"):
        assert pins[table] == lake.table(table).current_snapshot().snapshot_id  # type: ignore[union-attr]
    assert artifact.records["customer"].column("customer_id").to_pylist() == [customer]
    tickets = artifact.records["tickets"].to_pylist()
    assert 1 <= len(tickets) <= TICKETS and "t000000" in [t["ticket_id"] for t in tickets]
    now = artifact.records["tickets_now"].to_pylist()
    assert now and all(t["status"] in ("open", "pending") for t in now)
    assert "live" in artifact.manifest["parts"]["tickets_now"] and "tickets_now" not in pins
    assert decide("support-triage", "2.4.0", records_of(artifact.records)).label == choice.label

    (same,) = replay(lake, choice.attributes["context_artifact"])
    assert same.status == REPRODUCIBLE and [p.status for p in same.live] == [REPRODUCIBLE], same.text()
    set_ticket(db, "t000000", status="solved")  # the helpdesk moves on after the decision
    (later,) = replay(lake, choice.attributes["context_artifact"])
    assert later.status == REPRODUCIBLE, "the pinned parts still reproduce: " + later.text()
    (live,) = later.live
    assert live.status == SOURCE_CHANGED and live.diff is not None and "t000000" in live.diff.removed_keys


@pytest.mark.integration
def test_reading_agents_name_their_artifact_in_every_decision_from_a_fresh_home_on(tmp_path: Path) -> None:
    from agentlake.context.assembly import load_artifact
    from agentlake.pipeline.flow import ingest_pending_then_facts
    from agentlake.sources.agents import READING_KINDS, LakeAgents

    lake = _fleet_lake(tmp_path)
    config = FleetConfig(seed=9, feedback_share=0.5)
    decisions: list[dict[str, Any]] = []
    for round_ in range(2):  # a fresh home (empty tables), then a lake that holds the first round
        with LogWriter(lake.store, "demo", background_flush=False) as writer:
            agents = LakeAgents(lake, log=writer)
            emit_runs(writer, config if round_ == 0 else FleetConfig(seed=10), 12, datetime.now(UTC), decider=agents)
            agents.close()
        written = [parse_event_line(line) for seg in lake.log.list_all() for line in lake.log.read_lines(seg.key)]
        for event in written:
            event["attributes"] = orjson.loads(event["attributes"] or "{}")
        decisions = [e for e in written if e["type"] == "decision"]
        ingest_pending_then_facts(lake)
    assembled = {e["attributes"]["artifact_key"]: e for e in written if e["type"] == "context_assembled"}
    reading = [d for d in decisions if d["agent_id"] in READING_KINDS]
    assert reading and all(d["attributes"].get("context_artifact") in assembled for d in reading)
    assert not any("context_artifact" in d["attributes"] for d in decisions if d["agent_id"] not in READING_KINDS)
    first = load_artifact(lake.store, reading[0]["attributes"]["context_artifact"])
    assert first.manifest["pins"]["facts.decisions"] is None  # the fresh home: empty, but still an artifact
    later = [load_artifact(lake.store, d["attributes"]["context_artifact"]) for d in reading[-8:]]
    assert all(a.manifest["run_id"] == d["run_id"] for a, d in zip(later, reading[-8:], strict=True))
    assert all(a.manifest["pins"]["facts.decisions"] is not None for a in later)
    assert any(a.records["past_decisions"].num_rows > 0 for a in later)  # the second round read the first
    assert all(a.records["documents"].num_rows > 0 for a in later)  # from ext.documents, published through the gate
