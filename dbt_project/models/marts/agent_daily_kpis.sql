-- Per UTC day a run finished, agent kind and version: runs, success rate, cost, tool error rate,
-- feedback score and time to feedback. Cost by model and provider is agent_daily_model_costs.
select
    run_day,
    agent_id,
    agent_version,
    count(*) as runs,
    avg(case when succeeded then 1.0 else 0.0 end) as success_rate,
    sum(cost_usd) as cost_usd,
    sum(tool_calls) as tool_calls,
    sum(tool_errors) as tool_errors,
    sum(tool_errors) / nullif(sum(tool_calls), 0) as tool_error_rate,
    count(feedback_score) as runs_with_feedback,
    avg(feedback_score) as feedback_score,
    median(time_to_feedback_s) as median_time_to_feedback_s
from {{ ref('run_outcomes') }}
group by run_day, agent_id, agent_version
