"""Counterfactual comparison: a candidate version decides on the exact contexts a baseline decided on.

For each decision of the baseline version on a day, the artifact it names is loaded (every file
checked against its hash) and its records, not today's data, go to the candidate's policy
(:func:`agentlake.sources.agents.decide`). A pair is on the same context when the records both
decided on hash to the records hash the artifact recorded. The pairs replace that day's rows of
``eval.comparisons`` for this pair of versions, in one commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from agentlake.context.assembly import (
    ArtifactNotFound,
    ArtifactTampered,
    combined_hash,
    load_artifact,
    records_hash,
)
from agentlake.context.query import resolve
from agentlake.eval.evaluate import EVALUATOR_VERSION, EvalError, arrival_bounds, artifact_of, read_pinned
from agentlake.eval.tables import EVAL_COMPARISONS, day_start, replace_day
from agentlake.sources.agents import POLICIES, decide, records_of
from agentlake.tables.lake import Lake

READS = ("facts.decisions", "facts.feedback")


def agent_of(version: str) -> tuple[str, str]:
    """``(agent_id, version)`` of ``VERSION`` or ``AGENT@VERSION``.

    Raises:
        EvalError: no reading agent runs that version, or more than one does.
    """
    agent, _, bare = version.rpartition("@")
    found = [(a, v) for a, v in POLICIES if v == bare and (not agent or a == agent)]
    if len(found) != 1:
        known = ", ".join(f"{a}@{v}" for a, v in POLICIES)
        raise EvalError(f"{version!r} names {'no' if not found else 'more than one'} agent version; give one of {known}")
    return found[0]


@dataclass
class Comparison:
    """The pairs of a comparison and their summary."""

    baseline: str
    candidate: str
    day: str
    pairs: list[dict[str, Any]] = field(default_factory=list)
    snapshot_id: int | None = None
    seconds: float = 0.0

    @property
    def same_context(self) -> bool:
        return bool(self.pairs) and all(p["same_context"] for p in self.pairs)

    @property
    def differing(self) -> list[dict[str, Any]]:
        return [p for p in self.pairs if p["differs"]]

    def as_dict(self) -> dict[str, Any]:
        judged = [p for p in self.pairs if p["baseline_correct"] is not None]
        return {
            "baseline": self.baseline, "candidate": self.candidate, "day": self.day, "pairs": len(self.pairs),
            "same_context": self.same_context, "differing": len(self.differing),
            "agreement": round(1 - len(self.differing) / len(self.pairs), 4) if self.pairs else None,
            "baseline_accuracy_on_judged": round(sum(p["baseline_correct"] for p in judged) / len(judged), 4)
            if judged else None,
            "snapshot_id": self.snapshot_id, "seconds": round(self.seconds, 3),
            "differences": [{k: p[k] for k in ("run_id", "artifact_key", "records_hash", "baseline_label",
                                               "candidate_label", "same_context", "baseline_correct")}
                            for p in self.differing],
        }

    def text(self) -> str:
        head = (f"{self.baseline} vs {self.candidate} on {self.day}: {len(self.pairs)} pairs, same_context "
                f"{str(self.same_context).lower()}, {len(self.differing)} differ")
        lines = [head] + [f"  {p['run_id']}: {p['baseline_label']} -> {p['candidate_label']} ({p['artifact_key']})"
                          for p in self.differing]
        return "\n".join(lines)


def compare(lake: Lake, baseline: str, candidate: str, day: str, *, run_id: str = "eval-cli",
            now: datetime | None = None) -> Comparison:
    """Re-decide the baseline's pinned contexts of ``day`` with the candidate's policy, pair by pair.

    Raises:
        EvalError: the versions are unknown or of different agents.
    """
    started = time.perf_counter()
    base_agent, base_version = agent_of(baseline)
    cand_agent, cand_version = agent_of(candidate)
    if base_agent != cand_agent:
        raise EvalError(f"{base_agent}@{base_version} and {cand_agent}@{cand_version} are different agents; compare "
                        "two versions of the same agent")
    pins, _ = resolve(lake, list(READS))
    decisions = read_pinned(lake, "facts.decisions", pins, arrival_bounds(day, 0, 0),
                      ("run_id", "agent_id", "agent_version", "decision_label", "attributes"))
    feedback = read_pinned(lake, "facts.feedback", pins, arrival_bounds(day, 0, None), ("run_id", "ts", "feedback_label"))
    latest = {r["run_id"]: r["feedback_label"] for r in feedback.sort("ts").to_dicts()}
    report = Comparison(f"{base_agent}@{base_version}", f"{cand_agent}@{cand_version}", day)
    evaluated_at = now or datetime.now(UTC)
    common = {"day": day_start(day), "baseline": report.baseline, "candidate": report.candidate,
              "pins": orjson.dumps({k: str(v) if v is not None else None for k, v in pins.items()}).decode(),
              "evaluator_version": EVALUATOR_VERSION, "evaluated_at": evaluated_at, "eval_run_id": run_id}
    for r in sorted(decisions.to_dicts(), key=lambda r: r["run_id"]):
        key = artifact_of(r["attributes"])
        if r["agent_id"] != base_agent or r["agent_version"] != base_version or key is None:
            continue
        try:
            artifact = load_artifact(lake.store, key)
        except (ArtifactNotFound, ArtifactTampered):
            artifact = None
        expected = artifact.manifest["records_hash"] if artifact else ""
        tables = artifact.records if artifact else {}
        readable = artifact is not None and not artifact.problems and all(t is not None for t in tables.values())
        seen = combined_hash({n: records_hash(t) for n, t in tables.items() if t is not None}) if readable else None
        label = decide(cand_agent, cand_version, records_of(tables)).label if readable else None
        feedback_label = latest.get(r["run_id"])
        report.pairs.append({
            **common, "run_id": r["run_id"], "artifact_key": key, "records_hash": expected,
            "same_context": int(seen == expected), "baseline_label": r["decision_label"], "candidate_label": label,
            "differs": int(label != r["decision_label"]),
            "baseline_correct": None if feedback_label is None else int(feedback_label == "helpful"),
        })
    rows = pa.Table.from_pylist(report.pairs, schema=EVAL_COMPARISONS.arrow_schema())
    properties = {"agentlake.run-id": run_id, "agentlake.partition": day, "agentlake.evaluator": EVALUATOR_VERSION,
                  "agentlake.comparison": f"{report.baseline} vs {report.candidate}"}
    report.snapshot_id = replace_day(lake, EVAL_COMPARISONS, day, rows, properties,
                                     also={"baseline": report.baseline, "candidate": report.candidate})
    for pair in report.pairs:
        pair["same_context"] = bool(pair["same_context"])
        pair["differs"] = bool(pair["differs"])
    report.seconds = time.perf_counter() - started
    return report
