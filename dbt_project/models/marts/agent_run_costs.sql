-- Per run and model: LLM calls, tokens and their cost at the list prices of the model_prices seed.
-- A model missing from the seed costs null, and the test model_prices_cover_every_model names it.
select
    c.run_id,
    c.provider,
    c.model,
    count(*) as llm_calls,
    coalesce(sum(c.input_tokens), 0) as input_tokens,
    coalesce(sum(c.output_tokens), 0) as output_tokens,
    sum(coalesce(c.input_tokens, 0) * p.input_usd_per_mtok
        + coalesce(c.output_tokens, 0) * p.output_usd_per_mtok) / 1e6 as cost_usd
from {{ ref('stg_llm_calls') }} as c
left join {{ ref('model_prices') }} as p
    on p.provider = c.provider and p.model = c.model
group by c.run_id, c.provider, c.model
