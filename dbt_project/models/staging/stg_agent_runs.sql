-- facts.agent_runs at the pinned snapshot; staging renames nothing and keeps every column.
select * from {{ source('facts', 'agent_runs') }}
