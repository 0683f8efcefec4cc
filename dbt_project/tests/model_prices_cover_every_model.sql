-- Every model the agents called has a price in the model_prices seed (else its cost would be unknown).
select distinct provider, model from {{ ref('agent_run_costs') }} where cost_usd is null
