-- raw.events at the pinned snapshot; staging renames nothing and keeps every column.
select * from {{ source('raw', 'events') }}
