"""Demo agents that read their context through AgentLake, and the policies that turn it into decisions.

A run of a reading kind (support triage, research) asks for its context as one structured request
(:func:`context_request`): the tenant's recent runs of its kind, their past decisions and the
feedback they got, and the documents the run retrieved, read from ``ext.documents``. A support
triage run also reads its customer from the helpdesk, federated: the customer (``ext.customers``)
and their latest tickets (``ext.tickets``) as loaded through the gate, and, when the helpdesk
database can be read live, the customer's open tickets as the helpdesk holds them *now*
(``tickets_now``, a live part: its exact records and query are kept in the artifact, and replay
says ``source changed`` when the helpdesk moved on). Assembly pins the snapshots and writes the
context artifact; the run's ``decision`` event names it
(``attributes.context_artifact``), so a decision links to exactly what it read.

A **policy** is a pure function of the context's records (:func:`decide`): the same records give
the same label, different records can give another. Each agent version has its own policy, so two
versions rolled out side by side can be compared on the same contexts (counterfactual evaluation
re-runs a policy over an artifact's records). An OpenAI-compatible endpoint may stand in for the
policy (``AGENTLAKE_AGENT_LLM_*``); it is off by default and its reply is used only when it is one
of the kind's labels.

A fresh home, before the first ingest, has empty tables: the context is then empty, and the
artifact is still written (its pins are null), so every decision of a reading kind names one. Only
when assembly itself fails does a run decide without an artifact; its decision event says why
(``attributes.context_error``).
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from agentlake.config import Settings
from agentlake.context.assembly import ContextEngine, ContextError, ContextRequest, assemble
from agentlake.errors import AgentLakeError
from agentlake.log.writer import LogWriter
from agentlake.sources.demo import Choice, corpus_sources
from agentlake.sources.documents import DocumentsLoad, corpus, load_documents, rows_of
from agentlake.sources.helpdesk import INITIAL_CUSTOMERS
from agentlake.tables.external import live_database
from agentlake.tables.lake import Lake

Records = Mapping[str, Sequence[Mapping[str, Any]]]
HISTORY = 20  # how many of the tenant's recent runs, decisions and feedback a context holds
TICKETS = 5  # how many of the customer's latest tickets a support context holds
READING_KINDS = ("support-triage", "research")
# Per kind: the label a run decides when its context says nothing, and the versions of each policy.
_FALLBACK = {"support-triage": "needs_info", "research": "insufficient_evidence"}
_LABELS = {
    "support-triage": ("resolved", "escalate", "refund", "needs_info"),
    "research": ("answered", "insufficient_evidence", "follow_up_needed"),
}
MAJORITY = "majority-of-documents/1"
FEEDBACK_WEIGHTED = "feedback-weighted/1"
POLICIES: dict[tuple[str, str], str] = {
    ("support-triage", "2.3.1"): MAJORITY,
    ("support-triage", "2.4.0"): FEEDBACK_WEIGHTED,
    ("research", "0.9.4"): MAJORITY,
    ("research", "1.0.0"): FEEDBACK_WEIGHTED,
}


class UnknownAgentVersion(ContextError):
    """No policy is known for an agent kind and version: give one of the versions the fleet runs."""


@dataclass(frozen=True)
class Decision:
    """What a policy decided from a context, and why."""

    label: str
    confidence: float
    policy: str


def policy_of(agent_id: str, version: str) -> str:
    """The name of the policy an agent version runs.

    Raises:
        UnknownAgentVersion: the fleet runs no such version.
    """
    try:
        return POLICIES[(agent_id, version)]
    except KeyError:
        known = ", ".join(f"{a}@{v}" for a, v in POLICIES)
        raise UnknownAgentVersion(f"no policy for agent {agent_id}@{version}; the versions are {known}") from None


def customer_of(tenant: str) -> str:
    """The helpdesk customer a tenant of the demo fleet is: a stable hash onto the demo's first customers."""
    n = int.from_bytes(hashlib.sha256(tenant.encode()).digest()[:8], "big") % INITIAL_CUSTOMERS
    return f"c{n:05d}"


def helpdesk_is_live(settings: Settings) -> bool:
    """Whether the helpdesk can be read live (its configured database is a SQLite file that exists)."""
    try:
        live_database(settings, "helpdesk")
    except AgentLakeError:
        return False
    return True


def context_request(agent_id: str, tenant: str, doc_ids: Sequence[str], *, live: bool = False) -> ContextRequest:
    """The context a run of ``agent_id`` for ``tenant`` reads, with the documents it retrieved.

    A support triage run also reads its customer and their latest tickets from ``ext``, and with
    ``live`` the customer's open tickets from the helpdesk itself.
    """
    mine = [["agent_id", "=", agent_id], ["tenant", "=", tenant]]
    parts: list[dict[str, Any]] = [
        {"name": "recent_runs", "table": "facts.agent_runs", "where": mine,
         "columns": ["run_id", "agent_version", "status", "error_count", "ended_at"],
         "order_by": ["ended_at desc"], "limit": HISTORY},
        {"name": "past_decisions", "table": "facts.decisions", "where": mine,
         "columns": ["run_id", "agent_version", "decision_label", "ts"], "order_by": ["ts desc"], "limit": HISTORY},
        {"name": "feedback", "table": "facts.feedback", "where": mine,
         "columns": ["run_id", "feedback_score", "feedback_label", "ts"], "order_by": ["ts desc"],
         "limit": HISTORY},
        {"name": "documents", "table": "ext.documents", "where": [["doc_id", "in", sorted(set(doc_ids))]],
         "columns": ["doc_id", "title", "body", "content_hash"]},
    ]
    if agent_id == "support-triage":
        customer = [["customer_id", "=", customer_of(tenant)]]
        ticket_columns = ["ticket_id", "subject", "status", "priority", "updated_at"]
        parts += [
            {"name": "customer", "table": "ext.customers", "where": customer,
             "columns": ["customer_id", "name", "plan", "updated_at"]},
            {"name": "tickets", "table": "ext.tickets", "where": customer, "columns": ticket_columns,
             "order_by": ["updated_at desc", "ticket_id"], "limit": TICKETS},
        ]
        if live:
            parts.append({"name": "tickets_now", "live": "helpdesk", "table": "tickets", "columns": ticket_columns,
                          "where": [*customer, ["status", "in", ["open", "pending"]], ["is_deleted", "=", 0]],
                          "order_by": ["updated_at desc", "ticket_id"], "limit": TICKETS})
    return ContextRequest.from_spec({"sources": parts})


def open_urgent(records: Records) -> bool:
    """Whether the customer has an urgent ticket open: as the helpdesk holds it now when the context read it
    live, else as last loaded into ``ext.tickets``."""
    tickets = records.get("tickets_now") if "tickets_now" in records else records.get("tickets", ())
    return any(t.get("priority") == "urgent" and t.get("status") in ("open", "pending") for t in tickets or ())


def topic(body: str) -> str | None:
    """The ``topic:`` line of a document's body, if it has one."""
    for line in body.splitlines():
        if line.startswith("topic: "):
            return line.removeprefix("topic: ").strip()
    return None


def decide(agent_id: str, version: str, records: Records) -> Decision:
    """The decision of ``agent_id@version`` over a context's records: a pure function of them.

    ``majority-of-documents``: the topic most of the retrieved documents are about. ``feedback-weighted``:
    each topic's votes plus how well that label did with this tenant (its past decisions' feedback),
    and, for support triage, an escalation when the tenant's recent runs keep failing and another when
    the customer has an urgent ticket open (:func:`open_urgent`).

    Raises:
        UnknownAgentVersion: the fleet runs no such version.
    """
    policy = policy_of(agent_id, version)
    labels = _LABELS[agent_id]
    votes: Counter[str] = Counter()
    for doc in records.get("documents", ()):
        found = topic(str(doc.get("body") or ""))
        if found in labels:
            votes[found] += 1
    if not votes:
        return Decision(_FALLBACK[agent_id], 0.5, policy)
    scores: dict[str, float] = {label: float(votes[label]) for label in labels}
    if policy == FEEDBACK_WEIGHTED:
        label_of = {str(d["run_id"]): str(d["decision_label"]) for d in records.get("past_decisions", ())
                    if d.get("decision_label")}
        outcome: dict[str, list[float]] = defaultdict(list)
        for fb in records.get("feedback", ()):
            label = label_of.get(str(fb["run_id"]))
            if label is not None and fb.get("feedback_score") is not None:
                outcome[label].append(float(fb["feedback_score"]))
        for label, got in outcome.items():
            if label in scores:
                scores[label] += 2.0 * (sum(got) / len(got) - 0.5) * min(len(got), 3)
        runs = list(records.get("recent_runs", ()))
        failing = sum(1 for r in runs if r.get("status") == "error" or (r.get("error_count") or 0) > 0)
        if agent_id == "support-triage" and len(runs) >= 5 and failing / len(runs) >= 0.3:
            scores["escalate"] += 2.0
        if agent_id == "support-triage" and open_urgent(records):
            scores["escalate"] += 1.0
    # Ties go to the kind's first label in the stable policy, to the last in the newer one (it leans to caution).
    order = -1 if policy == MAJORITY else 1
    best = max(labels, key=lambda label: (scores[label], order * labels.index(label)))
    total = sum(max(0.0, s) for s in scores.values()) or 1.0
    return Decision(best, round(min(0.99, max(0.5, max(0.0, scores[best]) / total)), 2), policy)


def records_of(tables: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A context's records as plain rows, by part (from Arrow tables, or ``None`` for a part not readable)."""
    return {name: (table.to_pylist() if table is not None else []) for name, table in tables.items()}


@dataclass(frozen=True)
class LlmEndpoint:
    """An OpenAI-compatible chat endpoint that stands in for the policy (``AGENTLAKE_AGENT_LLM_*``)."""

    base_url: str
    model: str
    api_key: SecretStr | None = None
    timeout_s: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmEndpoint | None:
        if not settings.agent_llm_base_url:
            return None
        return cls(settings.agent_llm_base_url.rstrip("/"), settings.agent_llm_model, settings.agent_llm_api_key)

    def choose(self, agent_id: str, records: Records) -> tuple[str | None, str]:
        """The label the model picks, or None with the reason when its reply is not one of the labels."""
        labels = _LABELS[agent_id]
        titles = [str(d.get("title")) for d in records.get("documents", ())]
        prompt = (f"You are the {agent_id} agent. Retrieved documents: {titles}. Past decisions: "
                  f"{[d.get('decision_label') for d in records.get('past_decisions', ())]}. Answer with exactly one "
                  f"of: {', '.join(labels)}.")
        body = json.dumps({"model": self.model, "temperature": 0,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions", body, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - configured URL
                reply = json.loads(response.read())
            text = str(reply["choices"][0]["message"]["content"]).strip().strip(".").lower()
        except (urllib.error.URLError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
            return None, f"the endpoint {self.base_url} gave no usable reply ({type(exc).__name__})"
        return (text, "") if text in labels else (None, f"the model answered {text[:40]!r}, not a label")


class LakeAgents:
    """The reading kinds of the demo fleet: one context engine per process, one artifact per run.

    Opening it publishes the demo corpus into ``ext.documents`` if the table lacks any of it.
    Not thread-safe (one DuckDB connection): use one per thread.
    """

    def __init__(self, lake: Lake, *, log: LogWriter | None = None, llm: LlmEndpoint | None = None) -> None:
        self.lake = lake
        self.log = log
        self.llm = llm
        self.documents: DocumentsLoad = load_documents(lake, rows_of(corpus(corpus_sources())))
        self.engine = ContextEngine(lake)
        self.assembled = 0
        self.without_context = 0

    def reads(self, agent_id: str) -> bool:
        return agent_id in READING_KINDS

    def choose(self, *, run_id: str, agent_id: str, version: str, tenant: str, doc_ids: list[str]) -> Choice:
        """Assemble the run's context, keep it as an artifact, and decide from its records."""
        request = context_request(agent_id, tenant, doc_ids, live=helpdesk_is_live(self.lake.settings))
        attributes: dict[str, Any] = {}
        try:
            result = assemble(self.lake, request, run_id=run_id, agent_id=agent_id, engine=self.engine, log=self.log)
        except ContextError as exc:
            records: dict[str, list[dict[str, Any]]] = {}
            self.without_context += 1
            attributes["context_error"] = f"no context artifact: {str(exc).splitlines()[0][:300]}"
        else:
            self.assembled += 1
            records = result.to_dicts()
            attributes.update(context_artifact=result.artifact.key, records_hash=result.manifest["records_hash"],
                              context_records=result.manifest["record_count"])
        decision = decide(agent_id, version, records)
        attributes["policy"] = decision.policy
        if self.llm is not None:
            label, why = self.llm.choose(agent_id, records)
            if label is not None:
                decision = Decision(label, decision.confidence, f"llm:{self.llm.model}")
                attributes["policy"] = decision.policy
            else:
                attributes["llm_fallback"] = why
        return Choice(decision.label, decision.confidence, attributes)

    def close(self) -> None:
        self.engine.close()
