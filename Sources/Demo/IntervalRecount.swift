import PostgresClient

/// The views of CONTRACT 5.1 recounted from events, independently of the extractor's transform
/// and of the mart's `mart.period_start`: a local period is found by binning the local wall
/// time (`ts AT TIME ZONE z`) and taking the zone's offset at `ts` back off (sub-hours, hours), or
/// as local midnight of the local day, ISO week's Monday or month's 1st converted from the zone
/// (days, weeks, months) — both from PostgreSQL's time-zone database.
///
/// Parameters: `$1` the zones (`text[]`), `$2` the sub-hour minutes; for queues `$3` the SLA
/// (ms), `$4` the queues' own SLAs (``ViewRecount/slaJSON(_:)``), `$5` the short-abandon
/// threshold (ms).
extension ViewRecount {
    static let levels = "unnest(ARRAY['sub_hour', 'hour', 'day', 'week', 'month']) AS level"

    /// The start of `level`'s period containing `at` in zone `z` (columns of the query it is in).
    static func period(_ at: String, zone z: String, level: String) -> String {
        let local = "(\(at) AT TIME ZONE \(z))"
        let offset = "(\(local) - (\(at) AT TIME ZONE 'UTC'))"
        return """
            CASE \(level)
                WHEN 'sub_hour' THEN (date_bin(make_interval(mins => $2), \(local), TIMESTAMP '2000-01-01') - \(offset)) AT TIME ZONE 'UTC'
                WHEN 'hour' THEN (date_trunc('hour', \(local)) - \(offset)) AT TIME ZONE 'UTC'
                WHEN 'day' THEN date_trunc('day', \(local)) AT TIME ZONE \(z)
                WHEN 'week' THEN date_trunc('week', \(local)) AT TIME ZONE \(z)
                WHEN 'month' THEN date_trunc('month', \(local)) AT TIME ZONE \(z)
            END
            """
    }

    /// `report.queue_intervals` recounted: every column, every zone and level.
    public static func queueIntervals(over events: String) -> String {
        """
        WITH \(Self.events(over: events)),
        o AS (
            SELECT offered_at, queue, m.media, resolution, extract(epoch FROM resolved_at - offered_at) * 1000 AS wait, talk
            FROM offers LEFT JOIN media m USING (source, interaction)
        ),
        p AS (
            SELECT z AS time_zone, level, \(period("o.offered_at", zone: "z", level: "level")) AS period_start, o.*
            FROM o CROSS JOIN unnest($1::text[]) z CROSS JOIN \(levels)
        )
        SELECT time_zone, level, period_start, queue, media, count(*) AS offered,
            count(*) FILTER (WHERE resolution = 'interaction.answered') AS answered,
            count(*) FILTER (WHERE resolution = 'interaction.abandoned') AS abandoned,
            count(*) FILTER (WHERE resolution = 'interaction.abandoned' AND wait <= $5) AS abandoned_short,
            count(*) FILTER (WHERE resolution = 'interaction.answered'
                             AND wait <= COALESCE(($4::jsonb ->> queue)::bigint, $3)) AS answered_within_sla,
            round(avg(wait) FILTER (WHERE resolution IS NOT NULL)::numeric)::bigint AS avg_wait_ms,
            max(wait) FILTER (WHERE resolution IS NOT NULL)::bigint AS max_wait_ms,
            round(avg(talk) FILTER (WHERE resolution = 'interaction.answered')::numeric)::bigint AS avg_talk_ms
        FROM p GROUP BY time_zone, level, period_start, queue, media
        """
    }

    /// The agents' state intervals: from one `agent.*` event to the agent's next (CONTRACT 5).
    static let agentIntervals = """
        intervals AS (
            SELECT agent, source, seq, type, reason, ts,
                   lead(ts) OVER (PARTITION BY agent ORDER BY ts, source, seq) AS ended_at
            FROM complete WHERE type LIKE 'agent.%' AND agent IS NOT NULL
        ),
        closed AS (
            SELECT *, extract(epoch FROM ended_at - ts) * 1000 AS ms FROM intervals WHERE ended_at IS NOT NULL
        )
        """

    /// `report.agent_intervals` recounted (day, week, month); rows with nothing to count left out.
    public static func agentIntervals(over events: String) -> String {
        """
        WITH \(Self.events(over: events)),
        \(agentIntervals),
        u AS (
            SELECT resolved_at AS at, agent, 1 AS answered, talk, hold, 0 AS ready, 0 AS not_ready, 0 AS logged_in
            FROM offers WHERE resolution = 'interaction.answered' AND agent IS NOT NULL
            UNION ALL
            SELECT ts, agent, 0, 0, 0, CASE WHEN type = 'agent.ready' THEN ms ELSE 0 END,
                   CASE WHEN type = 'agent.not_ready' THEN ms ELSE 0 END,
                   CASE WHEN type <> 'agent.logout' THEN ms ELSE 0 END
            FROM closed
        ),
        p AS (
            SELECT z AS time_zone, level, \(period("u.at", zone: "z", level: "level")) AS period_start, u.*
            FROM u CROSS JOIN unnest($1::text[]) z CROSS JOIN unnest(ARRAY['day', 'week', 'month']) AS level
        )
        SELECT time_zone, level, period_start, agent, sum(answered)::bigint AS answered, sum(talk)::bigint AS talk_ms,
               sum(hold)::bigint AS hold_ms, sum(ready)::bigint AS ready_ms, sum(not_ready)::bigint AS not_ready_ms,
               sum(logged_in)::bigint AS logged_in_ms
        FROM p GROUP BY time_zone, level, period_start, agent
        HAVING (sum(answered), sum(talk), sum(hold), sum(ready), sum(not_ready), sum(logged_in)) <> (0, 0, 0, 0, 0, 0)
        """
    }

    /// `report.agent_not_ready` recounted: closed not-ready intervals by local day of their start.
    public static func agentNotReady(over events: String) -> String {
        """
        WITH \(Self.events(over: events)),
        \(agentIntervals)
        SELECT z AS time_zone, (ts AT TIME ZONE z)::date AS day, agent, NULLIF(reason, '') AS reason,
               count(*) AS intervals, sum(ms)::bigint AS not_ready_ms
        FROM closed CROSS JOIN unnest($1::text[]) z WHERE type = 'agent.not_ready'
        GROUP BY 1, 2, 3, 4
        """
    }

    /// `report.agent_sessions` recounted (`$1`: the mart's T, to which an open session counts):
    /// a session from each `agent.login` to the agent's next logout or login.
    public static func agentSessions(over events: String) -> String {
        """
        WITH \(Self.events(over: events)),
        \(agentIntervals),
        marks AS (
            SELECT agent, source, ts, type, lead(ts) OVER w AS next_ts
            FROM intervals WHERE type IN ('agent.login', 'agent.logout')
            WINDOW w AS (PARTITION BY agent ORDER BY ts, source, seq)
        ),
        sessions AS (
            SELECT m.agent, m.source, m.ts AS login_at, m.next_ts AS logout_at FROM marks m WHERE m.type = 'agent.login'
        )
        SELECT s.agent, s.source, s.login_at, s.logout_at,
               (extract(epoch FROM COALESCE(s.logout_at, $1::timestamptz) - s.login_at) * 1000)::bigint AS logged_in_ms,
               COALESCE((SELECT sum(c.ms) FROM closed c WHERE c.agent = s.agent AND c.type = 'agent.ready'
                         AND c.ts >= s.login_at AND (s.logout_at IS NULL OR c.ts < s.logout_at)), 0)::bigint AS ready_ms,
               COALESCE((SELECT sum(c.ms) FROM closed c WHERE c.agent = s.agent AND c.type = 'agent.not_ready'
                         AND c.ts >= s.login_at AND (s.logout_at IS NULL OR c.ts < s.logout_at)), 0)::bigint AS not_ready_ms,
               (SELECT count(*) FROM offers o WHERE o.agent = s.agent AND o.resolution = 'interaction.answered'
                AND o.resolved_at >= s.login_at AND (s.logout_at IS NULL OR o.resolved_at < s.logout_at)) AS answered
        FROM sessions s
        """
    }
}
