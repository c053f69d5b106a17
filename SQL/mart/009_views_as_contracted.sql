-- The views exactly as CONTRACT 5 says them.
--
-- 1. An offer whose interaction's `created` event is not in the mart has no media: its
--    queue_hourly row has media NULL (media_key 0 in the aggregate, which has no dimension row),
--    never a guessed one. The aggregate is recounted from the offers, which always kept NULL.
-- 2. `report.completeness.complete_through` is the time through which a source's events are in
--    the reports: the lower of its availability and the mart's completeness T. The availability
--    itself moves to its own column (the extractor's memory between cycles).

ALTER TABLE mart.agg_queue_hourly DROP CONSTRAINT IF EXISTS agg_queue_hourly_media_key_fkey;

TRUNCATE mart.agg_queue_hourly;
INSERT INTO mart.agg_queue_hourly (hour, queue_key, media_key, offered, answered, abandoned, answered_within_sla,
    wait_ms_sum, wait_count, talk_ms_sum, talk_count)
SELECT f.hour, f.queue_key, COALESCE(f.media_key, 0), count(*),
    count(*) FILTER (WHERE f.outcome = 'answered'), count(*) FILTER (WHERE f.outcome = 'abandoned'),
    count(*) FILTER (WHERE f.within_sla), COALESCE(sum(f.wait_ms), 0), count(f.wait_ms),
    COALESCE(sum(f.talk_ms) FILTER (WHERE f.outcome = 'answered'), 0), count(*) FILTER (WHERE f.outcome = 'answered')
FROM mart.fact_queue_offer f
GROUP BY f.hour, f.queue_key, COALESCE(f.media_key, 0);

CREATE OR REPLACE VIEW report.queue_hourly AS
SELECT h.hour, q.queue, m.media, h.offered, h.answered, h.abandoned, h.answered_within_sla,
       CASE WHEN h.wait_count > 0 THEN round(h.wait_ms_sum::numeric / h.wait_count)::bigint END AS avg_wait_ms,
       CASE WHEN h.talk_count > 0 THEN round(h.talk_ms_sum::numeric / h.talk_count)::bigint END AS avg_talk_ms
FROM mart.agg_queue_hourly h
JOIN mart.dim_queue q ON q.queue_key = h.queue_key
LEFT JOIN mart.dim_media m ON m.media_key = h.media_key;

ALTER TABLE control.source_state ADD COLUMN available_through timestamptz;
UPDATE control.source_state SET available_through = complete_through;
UPDATE control.source_state s SET complete_through = LEAST(s.complete_through, e.complete_through)
FROM control.extractor e WHERE e.complete_through IS NOT NULL
  AND e.site = (SELECT reporting_site FROM control.deployment);
