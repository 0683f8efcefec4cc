"""Evaluating a day of decisions: correctness against feedback, cost, latency, tool errors, replay.

A day is the arrival day of the decisions (the Dagster partition of the facts). The evaluation
resolves the current snapshot of every table it reads, pins them (as context assembly does, so
the inputs stay readable), reads exactly those snapshots, and replays the context artifact each
decision names (:mod:`agentlake.context.replay`). Feedback of any later day counts: a late fact
changes the day's accuracy the next time the day is evaluated, and evaluating the day a late fact
arrived names the earlier days it judges (``late_feedback_days``), so those are evaluated again.

Its output replaces the day's rows of ``eval.decisions`` and ``eval.daily`` in one commit per
table (:func:`agentlake.eval.tables.replace_day`); every row carries the pins, the artifact
keys, the agent version and :data:`EVALUATOR_VERSION`. The earlier result of a day stays readable
at its snapshot: :func:`read_daily` with ``as_of`` answers "how good was version X as of T".
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan

from agentlake.context.assembly import ContextEngine
from agentlake.context.pins import pin_snapshots, retention_ms
from agentlake.context.query import resolve
from agentlake.context.replay import REPRODUCIBLE, TAMPERED, ReplayReport, replay_artifact
from agentlake.errors import AgentLakeError
from agentlake.eval.tables import EVAL_DAILY, EVAL_DECISIONS, day_start, replace_day
from agentlake.tables.files import one_of
from agentlake.tables.lake import Lake
from agentlake.tables.schemas import TABLES_BY_NAME, ensure_tables

EVALUATOR_VERSION = "agentlake-eval/1"
READS = ("facts.decisions", "facts.feedback", "facts.llm_calls", "facts.tool_calls", "facts.agent_runs", "raw.events")


class EvalError(AgentLakeError):
    """An evaluation could not be done as asked; the message says why and what to do."""


@functools.cache
def price_table() -> dict[str, dict[str, float]]:
    """USD per million tokens by model (``agentlake/eval/prices.json``; ``_default`` for any other model)."""
    data = json.loads(resources.files("agentlake.eval").joinpath("prices.json").read_text())
    return {model: price for model, price in data.items() if model != "_about"}


def cost_usd(tokens: dict[str, dict[str, int]]) -> float:
    """The price of ``{model: {"input": n, "output": n}}`` tokens."""
    prices = price_table()
    total = 0.0
    for model, used in tokens.items():
        price = prices.get(model, prices["_default"])
        total += used.get("input", 0) * price["input"] / 1e6 + used.get("output", 0) * price["output"] / 1e6
    return round(total, 8)


@dataclass
class VersionFigures:
    """The day's figures of one agent version."""

    agent_id: str
    agent_version: str
    decisions: int
    judged: int
    decision_accuracy: float | None
    artifacts_replayed: int
    reproducible_rate: float | None
    cost_per_decision: float
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    tool_error_rate: float | None


@dataclass
class DayEvaluation:
    """What evaluating a day found and wrote."""

    day: str
    pins: dict[str, int | None]
    versions: list[VersionFigures] = field(default_factory=list)
    not_reproducible: list[dict[str, Any]] = field(default_factory=list)
    late_feedback_days: list[str] = field(default_factory=list)
    decisions: int = 0
    artifacts_replayed: int = 0
    reproducible: int = 0
    judged: int = 0
    correct: int = 0
    decisions_snapshot_id: int | None = None
    daily_snapshot_id: int | None = None
    evaluator_version: str = EVALUATOR_VERSION
    seconds: float = 0.0

    @property
    def reproducible_rate(self) -> float | None:
        return self.reproducible / self.artifacts_replayed if self.artifacts_replayed else None

    @property
    def decision_accuracy(self) -> float | None:
        return self.correct / self.judged if self.judged else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day, "decisions": self.decisions, "artifacts_replayed": self.artifacts_replayed,
            "reproducible_rate": self.reproducible_rate, "decision_accuracy": self.decision_accuracy,
            "judged": self.judged, "versions": [asdict(v) for v in self.versions],
            "not_reproducible": self.not_reproducible, "late_feedback_days": self.late_feedback_days, "pins": {k: v for k, v in self.pins.items()},
            "decisions_snapshot_id": self.decisions_snapshot_id, "daily_snapshot_id": self.daily_snapshot_id,
            "evaluator_version": self.evaluator_version, "seconds": round(self.seconds, 3),
        }

    def text(self) -> str:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        def ms(x: float | None) -> str:
            return "-" if x is None else f"{x:.0f}"

        lines = [f"day {self.day}: {self.decisions} decisions, {self.artifacts_replayed} artifacts replayed, "
                 f"reproducible_rate {pct(self.reproducible_rate)}, decision_accuracy {pct(self.decision_accuracy)} "
                 f"({self.judged} judged) in {self.seconds:.2f}s"]
        for v in self.versions:
            lines.append(f"  {v.agent_id}@{v.agent_version}: decisions {v.decisions}, decision_accuracy "
                         f"{pct(v.decision_accuracy)} ({v.judged} judged), artifacts_replayed {v.artifacts_replayed}, "
                         f"reproducible_rate {pct(v.reproducible_rate)}, cost_per_decision ${v.cost_per_decision:.5f}, "
                         f"latency p50/p90/p99 {ms(v.latency_p50_ms)}/{ms(v.latency_p90_ms)}/"
                         f"{ms(v.latency_p99_ms)} ms, tool_error_rate {pct(v.tool_error_rate)}")
        if self.late_feedback_days:
            lines.append(f"  feedback for decisions of {', '.join(self.late_feedback_days)} arrived this day")
        for item in self.not_reproducible:
            lines.append(f"  not reproducible: {item['artifact_key']} (run {item['run_id']}): {item['verdict']}")
        return "\n".join(lines)


def arrival_bounds(day: str, before: int, after: int | None) -> BooleanExpression:
    start = day_start(day) - timedelta(days=before)
    lower = GreaterThanOrEqual("arrival", start.isoformat())  # type: ignore[call-arg, arg-type, misc]
    if after is None:
        return lower
    end = day_start(day) + timedelta(days=after + 1)
    return And(lower, LessThan("arrival", end.isoformat()))  # type: ignore[call-arg, arg-type, misc]


def read_pinned(lake: Lake, name: str, pins: dict[str, int | None], row_filter: BooleanExpression,
          columns: tuple[str, ...]) -> pl.DataFrame:
    """Rows of ``name`` at its pinned snapshot (an empty frame with the columns when it has none)."""
    schema = pa.schema([TABLES_BY_NAME[name].arrow_schema().field(c) for c in columns])
    snapshot_id = pins.get(name)
    data = schema.empty_table() if snapshot_id is None else lake.table(name).scan(
        row_filter=row_filter, selected_fields=columns, snapshot_id=snapshot_id).to_arrow()
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


def artifact_of(attributes: str | None) -> str | None:
    try:
        value = orjson.loads(attributes or "{}").get("context_artifact")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return str(value) if value else None


def evaluate_day(lake: Lake, day: str, *, run_id: str = "eval-cli", engine: ContextEngine | None = None,
                 now: datetime | None = None) -> DayEvaluation:
    """Evaluate the decisions that arrived on ``day``; replace the day's rows of ``eval.decisions`` and ``eval.daily``.

    Raises:
        StageAborted: commits kept conflicting with other writers; run it again.
    """
    started = time.perf_counter()
    evaluated_at = now or datetime.now(UTC)
    pins, _ = resolve(lake, list(READS))
    pin_snapshots(lake, pins, created_ms=int(evaluated_at.timestamp() * 1000),
                  retention=retention_ms(lake.settings.pin_retention_days))
    report = DayEvaluation(day, pins)
    decisions = read_pinned(lake, "facts.decisions", pins, arrival_bounds(day, 0, 0),
                      ("event_id", "run_id", "agent_id", "agent_version", "tenant", "decision_label", "attributes"))
    runs = set(decisions.get_column("run_id").to_list())
    near = arrival_bounds(day, 1, 1)  # a run's calls arrive with its decision, or the day before or after it
    feedback = read_pinned(lake, "facts.feedback", pins, arrival_bounds(day, 0, None),
                     ("run_id", "ts", "feedback_score", "feedback_label")).filter(pl.col("run_id").is_in(runs))
    calls = read_pinned(lake, "facts.llm_calls", pins, near, ("run_id", "model", "input_tokens", "output_tokens")
                  ).filter(pl.col("run_id").is_in(runs))
    tools = read_pinned(lake, "facts.tool_calls", pins, near, ("run_id", "status")).filter(pl.col("run_id").is_in(runs))
    latency = read_pinned(lake, "facts.agent_runs", pins, near, ("run_id", "latency_ms")).filter(pl.col("run_id").is_in(runs))

    latest = {r["run_id"]: r for r in feedback.sort("ts").to_dicts()}  # the latest feedback of each run wins
    tokens: dict[str, dict[str, dict[str, int]]] = {}
    for r in calls.to_dicts():
        used = tokens.setdefault(r["run_id"], {}).setdefault(r["model"] or "?", {"input": 0, "output": 0})
        used["input"] += r["input_tokens"] or 0
        used["output"] += r["output_tokens"] or 0
    tool_counts: dict[str, list[int]] = {}
    for r in tools.to_dicts():
        counts = tool_counts.setdefault(r["run_id"], [0, 0])
        counts[0] += 1
        counts[1] += r["status"] == "error"
    latencies = {r["run_id"]: r["latency_ms"] for r in latency.to_dicts()}

    rows = decisions.to_dicts()
    keys = {r["event_id"]: artifact_of(r["attributes"]) for r in rows}
    replays = _replay_all(lake, [k for k in keys.values() if k], pins, engine, arrival_bounds(day, 1, None))
    pins_json = orjson.dumps({k: str(v) if v is not None else None for k, v in pins.items()}).decode()
    common = {"pins": pins_json, "evaluator_version": EVALUATOR_VERSION, "evaluated_at": evaluated_at,
              "eval_run_id": run_id, "day": day_start(day)}
    out: list[dict[str, Any]] = []
    for r in rows:
        fb = latest.get(r["run_id"])
        key = keys[r["event_id"]]
        replayed = replays.get(key) if key else None
        spent = tokens.get(r["run_id"], {})
        calls_, errors = tool_counts.get(r["run_id"], [0, 0])
        out.append({
            **common, "decision_event_id": r["event_id"], "run_id": r["run_id"], "agent_id": r["agent_id"],
            "agent_version": r["agent_version"], "tenant": r["tenant"], "decision_label": r["decision_label"],
            "feedback_label": fb["feedback_label"] if fb else None,
            "feedback_score": fb["feedback_score"] if fb else None,
            "correct": None if fb is None else int(fb["feedback_label"] == "helpful"),
            "cost_usd": cost_usd(spent), "tokens": orjson.dumps(spent, option=orjson.OPT_SORT_KEYS).decode(),
            "latency_ms": latencies.get(r["run_id"]), "tool_calls": calls_, "tool_errors": errors,
            "artifact_key": key, "replay_status": replayed.status if replayed else None,
            "records_hash": replayed.expected_hash if replayed else None,
        })
        if replayed is not None and replayed.status != REPRODUCIBLE:
            report.not_reproducible.append({"artifact_key": key, "run_id": r["run_id"], "verdict": replayed.status,
                                            "problems": replayed.problems[:3]})
    report.late_feedback_days = _late_feedback_days(lake, day, pins)
    report.decisions = len(out)
    report.artifacts_replayed = sum(1 for o in out if o["replay_status"] is not None)
    report.reproducible = sum(1 for o in out if o["replay_status"] == REPRODUCIBLE)
    report.judged = sum(1 for o in out if o["correct"] is not None)
    report.correct = sum(1 for o in out if o["correct"] == 1)
    report.versions = _figures(out)
    daily = [{**common, **asdict(v), "artifact_keys": orjson.dumps(sorted(
        o["artifact_key"] for o in out if o["artifact_key"] and (o["agent_id"], o["agent_version"]) ==
        (v.agent_id, v.agent_version))).decode()} for v in report.versions]
    properties = {"agentlake.run-id": run_id, "agentlake.partition": day, "agentlake.evaluator": EVALUATOR_VERSION,
                  "agentlake.decisions": str(len(out))}
    report.decisions_snapshot_id = replace_day(
        lake, EVAL_DECISIONS, day, pa.Table.from_pylist(out, schema=EVAL_DECISIONS.arrow_schema()), properties)
    report.daily_snapshot_id = replace_day(
        lake, EVAL_DAILY, day, pa.Table.from_pylist(daily, schema=EVAL_DAILY.arrow_schema()), properties)
    report.seconds = time.perf_counter() - started
    return report


def _late_feedback_days(lake: Lake, day: str, pins: dict[str, int | None]) -> list[str]:
    """The earlier arrival days of the decisions whose feedback arrived on ``day`` (their figures changed)."""
    rated = read_pinned(lake, "facts.feedback", pins, arrival_bounds(day, 0, 0), ("run_id",))
    runs = set(rated.get_column("run_id").to_list())
    if not runs:
        return []
    earlier = And(one_of("run_id", runs), LessThan("arrival", day_start(day).isoformat()))  # type: ignore[call-arg, arg-type, misc]
    decided = read_pinned(lake, "facts.decisions", pins, earlier, ("arrival",))
    return sorted({a.date().isoformat() for a in decided.get_column("arrival").to_list()})


def _replay_all(lake: Lake, keys: list[str], pins: dict[str, int | None], engine: ContextEngine | None,
                since: BooleanExpression) -> dict[str, ReplayReport]:
    """Replay each artifact at its pins, and hold each against the ``context_assembled`` events of the log."""
    owned = engine is None
    engine = engine or ContextEngine(lake)
    try:
        reports = {key: replay_artifact(lake, key, engine=engine) for key in dict.fromkeys(keys)}
    finally:
        if owned:
            engine.close()
    named: dict[str, set[str]] = {}
    if pins.get("raw.events") is not None and reports:
        events = lake.table("raw.events").scan(
            row_filter=And(one_of("type", ["context_assembled"]), since), selected_fields=("run_id", "attributes"),
            snapshot_id=pins["raw.events"]).to_arrow()
        for run, attributes in zip(events.column("run_id").to_pylist(), events.column("attributes").to_pylist(),
                                   strict=True):
            key = (orjson.loads(attributes or "{}") or {}).get("artifact_key")
            if key:
                named.setdefault(str(run), set()).add(str(key))
    for key, report in reports.items():
        if report.status == TAMPERED or report.run_id == "?":
            continue
        report.log_verified = key in named.get(report.run_id, set())
        if not report.log_verified:
            report.status = TAMPERED
            report.problems.append(f"no context_assembled event of run {report.run_id!r} in raw.events names {key}")
    return reports


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _figures(rows: list[dict[str, Any]]) -> list[VersionFigures]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["agent_id"], r["agent_version"] or "?"), []).append(r)
    out = []
    for (agent, version), group in sorted(groups.items()):
        judged = [r["correct"] for r in group if r["correct"] is not None]
        replayed = [r["replay_status"] for r in group if r["replay_status"] is not None]
        latencies = [r["latency_ms"] for r in group if r["latency_ms"] is not None]
        calls = sum(r["tool_calls"] for r in group)
        out.append(VersionFigures(
            agent_id=agent, agent_version=version, decisions=len(group), judged=len(judged),
            decision_accuracy=round(sum(judged) / len(judged), 4) if judged else None,
            artifacts_replayed=len(replayed),
            reproducible_rate=round(replayed.count(REPRODUCIBLE) / len(replayed), 4) if replayed else None,
            cost_per_decision=round(sum(r["cost_usd"] for r in group) / len(group), 6),
            latency_p50_ms=_percentile(latencies, 0.5), latency_p90_ms=_percentile(latencies, 0.9),
            latency_p99_ms=_percentile(latencies, 0.99),
            tool_error_rate=round(sum(r["tool_errors"] for r in group) / calls, 4) if calls else None,
        ))
    return out


def read_daily(lake: Lake, day: str, *, as_of: datetime | None = None) -> list[dict[str, Any]]:
    """The ``eval.daily`` rows of ``day`` as the table held them at ``as_of`` (default: now).

    Raises:
        EvalError: the table held nothing at that time.
    """
    table = ensure_tables(lake.catalog, [EVAL_DAILY])[EVAL_DAILY.name]
    if as_of is None:
        snapshot = table.current_snapshot()
    else:
        snapshot = table.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
    if snapshot is None:
        when = "yet" if as_of is None else f"at {as_of.isoformat()}"
        raise EvalError(f"eval.daily held no evaluation {when}; run `agentlake eval run --day {day}` first")
    start = day_start(day)
    rows = table.scan(snapshot_id=snapshot.snapshot_id, row_filter=And(
        GreaterThanOrEqual("day", start.isoformat()),  # type: ignore[call-arg, arg-type, misc]
        LessThan("day", (start + timedelta(days=1)).isoformat()),  # type: ignore[call-arg, arg-type, misc]
    )).to_arrow().to_pylist()
    return sorted(rows, key=lambda r: (r["agent_id"], r["agent_version"]))
