-- Feedback scores are in [min_feedback_score, 1] (the var defaults to 0, the scale's floor).
select event_id, feedback_score
from {{ ref('stg_feedback') }}
where feedback_score < {{ var('min_feedback_score') }} or feedback_score > 1
