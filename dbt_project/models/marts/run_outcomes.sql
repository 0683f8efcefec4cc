-- One row per finished run: its outcome, cost, tool errors and feedback (the grain of both marts).
with tools as (
    select run_id, count(*) as tool_calls, count(*) filter (where status = 'error') as tool_errors
    from {{ ref('stg_tool_calls') }}
    group by run_id
),
costs as (
    select run_id, sum(cost_usd) as cost_usd from {{ ref('agent_run_costs') }} group by run_id
),
feedback as (
    -- A run may be rated more than once: its score is the mean, its time to feedback the first rating's;
    -- evaluation judges a decision by the latest rating (a late correction wins).
    select run_id, avg(feedback_score) as feedback_score, min(ts) as first_feedback_at,
           arg_min(feedback_label, ts) as feedback_label, arg_max(feedback_label, ts) as latest_feedback_label,
           count(*) as feedback_events
    from {{ ref('stg_feedback') }}
    group by run_id
)
select
    r.run_id,
    r.agent_id,
    r.agent_version,
    r.tenant,
    r.started_at,
    r.ended_at,
    cast(timezone('UTC', r.ended_at) as date) as run_day,
    r.status as run_status,
    r.status = 'ok' as succeeded,
    r.latency_ms,
    r.steps,
    r.llm_calls,
    r.input_tokens,
    r.output_tokens,
    r.error_count,
    coalesce(t.tool_calls, 0) as tool_calls,
    coalesce(t.tool_errors, 0) as tool_errors,
    coalesce(c.cost_usd, 0) as cost_usd,
    f.feedback_score,
    f.feedback_label,
    f.latest_feedback_label,
    f.feedback_events,
    epoch_ms(f.first_feedback_at) / 1000.0 - epoch_ms(r.ended_at) / 1000.0 as time_to_feedback_s
from {{ ref('stg_agent_runs') }} as r
left join tools as t using (run_id)
left join costs as c using (run_id)
left join feedback as f using (run_id)
