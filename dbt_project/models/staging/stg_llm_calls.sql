-- facts.llm_calls at the pinned snapshot; staging renames nothing and keeps every column.
select * from {{ source('facts', 'llm_calls') }}
