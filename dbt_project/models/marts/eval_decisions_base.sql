-- One row per decision with its run's outcome, feedback, cost, latency and tool errors: what the
-- evaluation assets score, at the same snapshots (tests hold the two equal decision by decision; the
-- evaluation reads the pinned facts itself so that a re-evaluation replays). A decision of a run that
-- has not finished yet has no outcome (nulls).
select
    d.event_id as decision_id,
    d.run_id,
    d.agent_id,
    d.agent_version,
    d.tenant,
    d.ts as decided_at,
    d.decision_label,
    d.attributes as decision_attributes,
    json_extract_string(d.attributes, '$.context_artifact') as artifact_key,
    r.run_day,
    r.run_status,
    r.succeeded,
    r.ended_at as run_ended_at,
    r.latency_ms as run_latency_ms,
    r.steps,
    r.tool_calls,
    r.tool_errors,
    r.error_count,
    r.cost_usd,
    r.feedback_score,
    r.feedback_label,
    r.latest_feedback_label,
    r.latest_feedback_label = 'helpful' as correct,
    r.time_to_feedback_s
from {{ ref('stg_decisions') }} as d
left join {{ ref('run_outcomes') }} as r using (run_id)
