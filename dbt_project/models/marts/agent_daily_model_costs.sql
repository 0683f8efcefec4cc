-- Per UTC day a run finished, agent kind and version, provider and model: LLM calls, tokens, cost.
select
    r.run_day,
    r.agent_id,
    r.agent_version,
    c.provider,
    c.model,
    sum(c.llm_calls) as llm_calls,
    sum(c.input_tokens) as input_tokens,
    sum(c.output_tokens) as output_tokens,
    sum(c.cost_usd) as cost_usd
from {{ ref('agent_run_costs') }} as c
join {{ ref('run_outcomes') }} as r using (run_id)
group by r.run_day, r.agent_id, r.agent_version, c.provider, c.model
