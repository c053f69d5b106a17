-- CONTRACT 5.1: interval levels in the contact center's own time zones, agent sessions and
-- not-ready time by reason, per-queue SLAs and short abandons.
--
-- Facts stay in UTC. The extractor keeps three aggregates up to date in each cycle's transaction,
-- moved by the difference between the fact rows it deletes and writes (like agg_queue_hourly):
--   agg_queue_interval  a queue's offers per configured zone and sub-hour period;
--   agg_agent_day       an agent's answers and state time per configured zone and local day;
--   agg_agent_not_ready not-ready intervals per zone, local day and reason.
-- Hours, days, weeks and months are sums of those rows (every zone's offset is a multiple of 15
-- minutes, so a sub-hour period lies in one local hour, day, week and month); the zones come from
-- PostgreSQL's time-zone database through mart.period_start, never from fixed offsets.
-- interval_settings records what the aggregates were built for: when the topology's zones,
-- sub-hour level or short-abandon threshold change, the extractor rebuilds them from the facts.

-- The start of the `level` period that `ts` falls in, in zone `tz`. Sub-hour periods and hours
-- are found by taking the local minutes off (so a half-hour or 45-minute zone has its own
-- boundaries, and the repeated hour of a daylight-saving fall-back is two hours, not one);
-- days, ISO weeks and months start at local midnight (a daylight-saving day lasts 23 or 25 h).
CREATE OR REPLACE FUNCTION mart.period_start(level text, ts timestamptz, tz text, sub_hour_minutes integer)
RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE level
        WHEN 'sub_hour' THEN date_trunc('minute', ts)
            - make_interval(mins => extract(minute FROM ts AT TIME ZONE tz)::integer % sub_hour_minutes)
        WHEN 'hour' THEN date_trunc('minute', ts) - make_interval(mins => extract(minute FROM ts AT TIME ZONE tz)::integer)
        WHEN 'day' THEN date_trunc('day', ts, tz)
        WHEN 'week' THEN date_trunc('week', ts, tz)
        WHEN 'month' THEN date_trunc('month', ts, tz)
    END
$$;

CREATE TABLE mart.interval_settings (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    time_zones       text[]  NOT NULL,
    sub_hour_minutes integer NOT NULL CHECK (sub_hour_minutes IN (15, 30)),
    short_abandon_ms bigint  NOT NULL,
    built_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mart.agg_queue_interval (
    time_zone    text        NOT NULL,
    period_start timestamptz NOT NULL,   -- the sub-hour period's start in that zone
    queue_key    integer     NOT NULL REFERENCES mart.dim_queue,
    media_key    smallint    NOT NULL,   -- 0: the interaction's media is not known
    offered      bigint NOT NULL,
    answered     bigint NOT NULL,
    abandoned    bigint NOT NULL,
    abandoned_short bigint NOT NULL,
    answered_within_sla bigint NOT NULL,
    wait_ms_sum  bigint NOT NULL,
    wait_count   bigint NOT NULL,
    wait_ms_max  bigint,
    talk_ms_sum  bigint NOT NULL,
    talk_count   bigint NOT NULL,
    PRIMARY KEY (time_zone, period_start, queue_key, media_key)
);

CREATE TABLE mart.agg_agent_day (
    time_zone    text    NOT NULL,
    day          date    NOT NULL,       -- the local day
    agent_key    integer NOT NULL REFERENCES mart.dim_agent,
    answered     bigint NOT NULL,
    talk_ms      bigint NOT NULL,
    hold_ms      bigint NOT NULL,
    ready_ms     bigint NOT NULL,
    not_ready_ms bigint NOT NULL,
    logged_in_ms bigint NOT NULL,
    PRIMARY KEY (time_zone, day, agent_key)
);

CREATE TABLE mart.agg_agent_not_ready (
    time_zone    text    NOT NULL,
    day          date    NOT NULL,
    agent_key    integer NOT NULL REFERENCES mart.dim_agent,
    reason       text    NOT NULL,       -- '': none was given (the view says NULL)
    intervals    bigint NOT NULL,
    not_ready_ms bigint NOT NULL,
    PRIMARY KEY (time_zone, day, agent_key, reason)
);

-- A queue interval's longest wait is a maximum, which a delta cannot take back: when the offer
-- that held it changes, the period's maximum is read again from its offers by time (a BRIN index:
-- offers arrive in time order, so it costs the writes next to nothing).
CREATE INDEX fact_queue_offer_offered_brin ON mart.fact_queue_offer USING brin (offered_at);
-- An agent session's answered offers (report.agent_sessions), by agent and time.
CREATE INDEX fact_queue_offer_answered ON mart.fact_queue_offer (agent_key, answered_at)
    WHERE outcome = 'answered';

CREATE VIEW report.queue_intervals AS
SELECT i.time_zone, l.level, l.period_start, q.queue, m.media,
       sum(i.offered)::bigint AS offered, sum(i.answered)::bigint AS answered,
       sum(i.abandoned)::bigint AS abandoned, sum(i.abandoned_short)::bigint AS abandoned_short,
       sum(i.answered_within_sla)::bigint AS answered_within_sla,
       CASE WHEN sum(i.wait_count) > 0 THEN round(sum(i.wait_ms_sum)::numeric / sum(i.wait_count))::bigint END
           AS avg_wait_ms,
       max(i.wait_ms_max) AS max_wait_ms,
       CASE WHEN sum(i.talk_count) > 0 THEN round(sum(i.talk_ms_sum)::numeric / sum(i.talk_count))::bigint END
           AS avg_talk_ms
FROM mart.agg_queue_interval i
CROSS JOIN LATERAL (VALUES
    ('sub_hour', i.period_start),
    ('hour', mart.period_start('hour', i.period_start, i.time_zone, 60)),
    ('day', mart.period_start('day', i.period_start, i.time_zone, 60)),
    ('week', mart.period_start('week', i.period_start, i.time_zone, 60)),
    ('month', mart.period_start('month', i.period_start, i.time_zone, 60))) l(level, period_start)
JOIN mart.dim_queue q ON q.queue_key = i.queue_key
LEFT JOIN mart.dim_media m ON m.media_key = i.media_key
GROUP BY i.time_zone, l.level, l.period_start, q.queue, m.media;

CREATE VIEW report.agent_intervals AS
SELECT a.time_zone, l.level, l.period_start, d.agent,
       sum(a.answered)::bigint AS answered, sum(a.talk_ms)::bigint AS talk_ms, sum(a.hold_ms)::bigint AS hold_ms,
       sum(a.ready_ms)::bigint AS ready_ms, sum(a.not_ready_ms)::bigint AS not_ready_ms,
       sum(a.logged_in_ms)::bigint AS logged_in_ms
FROM mart.agg_agent_day a
CROSS JOIN LATERAL (VALUES
    ('day', a.day::timestamp AT TIME ZONE a.time_zone),
    ('week', date_trunc('week', a.day::timestamp) AT TIME ZONE a.time_zone),
    ('month', date_trunc('month', a.day::timestamp) AT TIME ZONE a.time_zone)) l(level, period_start)
JOIN mart.dim_agent d ON d.agent_key = a.agent_key
GROUP BY a.time_zone, l.level, l.period_start, d.agent;

CREATE VIEW report.agent_not_ready AS
SELECT n.time_zone, n.day, d.agent, NULLIF(n.reason, '') AS reason, n.intervals, n.not_ready_ms
FROM mart.agg_agent_not_ready n JOIN mart.dim_agent d ON d.agent_key = n.agent_key;

-- A login session runs from an agent's `agent.login` to its `agent.logout` (or to its next
-- login, which ends it); the state intervals started in it count in it. Open: logged in to the
-- mart's T, which is how far the facts are complete.
CREATE VIEW report.agent_sessions AS
WITH numbered AS (
    SELECT s.*, count(*) FILTER (WHERE s.state = 'agent.login')
               OVER (PARTITION BY s.agent_key ORDER BY s.started_at, s.source, s.seq) AS session
    FROM mart.fact_agent_state s
), marked AS (
    SELECT n.*, count(*) FILTER (WHERE n.state = 'agent.logout')
               OVER (PARTITION BY n.agent_key, n.session ORDER BY n.started_at, n.source, n.seq
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS logouts_before
    FROM numbered n WHERE n.session > 0
), sessions AS (
    SELECT agent_key, session,
           (array_agg(source ORDER BY started_at, source, seq))[1] AS source,
           min(started_at) AS login_at,
           min(started_at) FILTER (WHERE state = 'agent.logout') AS logout_at,
           COALESCE(sum(extract(epoch FROM ended_at - started_at) * 1000) FILTER (WHERE state = 'agent.ready'), 0)
               AS ready_ms,
           COALESCE(sum(extract(epoch FROM ended_at - started_at) * 1000) FILTER (WHERE state = 'agent.not_ready'), 0)
               AS not_ready_ms
    FROM marked WHERE logouts_before = 0
    GROUP BY agent_key, session
), ended AS (
    SELECT s.*, COALESCE(s.logout_at, lead(s.login_at) OVER (PARTITION BY s.agent_key ORDER BY s.session)) AS end_at
    FROM sessions s
)
SELECT d.agent, e.source, e.login_at, e.end_at AS logout_at,
       (extract(epoch FROM COALESCE(e.end_at, GREATEST(t.complete_through, e.login_at)) - e.login_at) * 1000)::bigint
           AS logged_in_ms,
       e.ready_ms::bigint AS ready_ms, e.not_ready_ms::bigint AS not_ready_ms,
       (SELECT count(*) FROM mart.fact_queue_offer o
        WHERE o.agent_key = e.agent_key AND o.outcome = 'answered' AND o.answered_at >= e.login_at
          AND (e.end_at IS NULL OR o.answered_at < e.end_at)) AS answered
FROM ended e
JOIN mart.dim_agent d ON d.agent_key = e.agent_key
CROSS JOIN (SELECT max(complete_through) AS complete_through FROM control.extractor) t;

GRANT SELECT ON report.queue_intervals, report.agent_intervals, report.agent_not_ready, report.agent_sessions
    TO bcpipe_reporting;
GRANT SELECT, INSERT, UPDATE, DELETE ON mart.interval_settings, mart.agg_queue_interval, mart.agg_agent_day,
    mart.agg_agent_not_ready TO bcpipe_extractor;
GRANT SELECT, INSERT, TRUNCATE ON mart.interval_settings, mart.agg_queue_interval, mart.agg_agent_day,
    mart.agg_agent_not_ready TO bcpipe_coordinator;
GRANT SELECT ON report.queue_intervals, report.agent_intervals, report.agent_not_ready, report.agent_sessions
    TO bcpipe_coordinator;
ALTER PUBLICATION bcpipe_mart ADD TABLE mart.interval_settings, mart.agg_queue_interval, mart.agg_agent_day,
    mart.agg_agent_not_ready;
