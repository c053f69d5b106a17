import EventModel
import Foundation
import PostgresClient
import Topology

/// How a cycle moves the interval aggregates of CONTRACT 5.1 (pure): per UTC quarter hour, what
/// the offers and state intervals it deletes and writes add or take away.
///
/// A UTC quarter hour lies inside one sub-hour period (15 or 30 minutes), hour, day, week and
/// month of every zone (their offsets are multiples of 15 minutes), so the quarter is the finest
/// key the deltas need; which local period it falls in is PostgreSQL's to say, in
/// ``IntervalAggregates``, for every configured zone.
struct IntervalDeltas: Sendable, Equatable {
    struct QueueKey: Hashable, Sendable {
        var quarter: Int64
        var queueKey: Int64
        var mediaKey: Int64
    }

    struct Queue: Sendable, Equatable {
        var offered: Int64 = 0
        var answered: Int64 = 0
        var abandoned: Int64 = 0
        var abandonedShort: Int64 = 0
        var withinSLA: Int64 = 0
        var waitSum: Int64 = 0
        var waitCount: Int64 = 0
        var talkSum: Int64 = 0
        var talkCount: Int64 = 0
        /// The longest wait of the offers added, and of those taken away: a maximum cannot be
        /// moved by a difference, so a period whose longest wait was taken away is read again.
        var addedMaxWait: Int64?
        var removedMaxWait: Int64?
    }

    struct AgentKey: Hashable, Sendable {
        var quarter: Int64
        var agentKey: Int64
    }

    struct Agent: Sendable, Equatable {
        var answered: Int64 = 0
        var talkMs: Int64 = 0
        var holdMs: Int64 = 0
        var readyMs: Int64 = 0
        var notReadyMs: Int64 = 0
        var loggedInMs: Int64 = 0
    }

    struct NotReadyKey: Hashable, Sendable {
        var quarter: Int64
        var agentKey: Int64
        /// "" when the event gave none.
        var reason: String
    }

    struct NotReady: Sendable, Equatable {
        var intervals: Int64 = 0
        var ms: Int64 = 0
    }

    var queues: [QueueKey: Queue] = [:]
    var agents: [AgentKey: Agent] = [:]
    var notReady: [NotReadyKey: NotReady] = [:]

    static let quarterMs: Int64 = 900_000

    /// The UTC quarter hour `ms` falls in.
    static func quarter(_ ms: Int64) -> Int64 {
        let r = ms % quarterMs
        return ms - (r < 0 ? r + quarterMs : r)
    }

    mutating func add(_ o: OfferRow, sign: Int64) {
        let answered = o.outcome == .answered
        let key = QueueKey(quarter: Self.quarter(o.offeredAt), queueKey: o.queueKey, mediaKey: o.mediaKey)
        var q = queues[key, default: Queue()]
        q.offered += sign
        q.answered += answered ? sign : 0
        q.abandoned += o.outcome == .abandoned ? sign : 0
        q.abandonedShort += o.abandonedShort ? sign : 0
        q.withinSLA += o.withinSLA ? sign : 0
        if let wait = o.waitMs {
            q.waitSum += sign * wait
            q.waitCount += sign
            if sign > 0 {
                q.addedMaxWait = max(q.addedMaxWait ?? wait, wait)
            } else {
                q.removedMaxWait = max(q.removedMaxWait ?? wait, wait)
            }
        }
        if answered {
            q.talkSum += sign * (o.talkMs ?? 0)
            q.talkCount += sign
        }
        queues[key] = q
        if answered, let agent = o.agentKey, let at = o.answeredAt {
            let k = AgentKey(quarter: Self.quarter(at), agentKey: agent)
            agents[k, default: Agent()].answered += sign
            agents[k]!.talkMs += sign * (o.talkMs ?? 0)
            agents[k]!.holdMs += sign * o.holdMs
        }
    }

    /// A state interval counts, once it has ended, in the period it started in: ready and
    /// not-ready time, logged-in time (every state but logged out), not-ready by reason.
    mutating func add(_ s: StateRow, sign: Int64) {
        guard let d = s.durationMs else { return }
        let k = AgentKey(quarter: Self.quarter(s.startedAt), agentKey: s.agentKey)
        switch s.state {
        case .agentReady: agents[k, default: Agent()].readyMs += sign * d
        case .agentNotReady:
            agents[k, default: Agent()].notReadyMs += sign * d
            let r = NotReadyKey(quarter: k.quarter, agentKey: s.agentKey, reason: s.reason ?? "")
            notReady[r, default: NotReady()].intervals += sign
            notReady[r]!.ms += sign * d
        default: break
        }
        if s.state != .agentLogout { agents[k, default: Agent()].loggedInMs += sign * d }
    }
}

/// The interval aggregates in the mart (`agg_queue_interval`, `agg_agent_day`,
/// `agg_agent_not_ready`): built for the topology's zones and levels, and moved by each cycle's
/// ``IntervalDeltas``. The one owner of their SQL.
public struct IntervalAggregates: Sendable {
    let reporting: Topology.ReportingSettings

    var shortAbandonMs: Int64 { Int64(reporting.shortAbandonSeconds) * 1000 }

    /// A topology whose zones PostgreSQL does not know.
    struct UnknownZones: Error, CustomStringConvertible {
        var zones: [String]
        var description: String {
            "reporting.time_zones: PostgreSQL's time-zone database has no zone \(zones.joined(separator: ", ")) (see pg_timezone_names); fix the topology file"
        }
    }

    /// The zones of `zones` that PostgreSQL's time-zone database at `mart` does not know.
    public static func unknownZones(_ zones: [String], at mart: PostgresConnection) async throws -> [String] {
        try await mart.query(SQL.unknownZones, [PostgresArray.text(zones)]).map { $0[0] ?? "" }
    }

    /// Makes the aggregates match the topology's zones, sub-hour level and short-abandon
    /// threshold: when they were built for others (or never), they are rebuilt from the facts,
    /// in the caller's transaction.
    func ensure(_ c: isolated PostgresConnection) async throws {
        let zones = PostgresArray.text(reporting.timeZones)
        if let row = try await c.query(SQL.settings).first,
            row[0] == reporting.timeZones.joined(separator: ","),
            try row.decode(1, as: Int.self) == reporting.subHourMinutes,
            try row.decode(2, as: Int64.self) == shortAbandonMs
        {
            return
        }
        let unknown = try await Self.unknownZones(reporting.timeZones, at: c)
        guard unknown.isEmpty else { throw UnknownZones(zones: unknown) }
        try c.execute(SQL.clear)
        let binds: [any PostgresBindable] = [zones, reporting.subHourMinutes, shortAbandonMs]
        try await c.query(SQL.rebuildQueues, binds)
        try await c.query(SQL.rebuildAgents, [zones])
        try await c.query(SQL.rebuildNotReady, [zones])
        try await c.query(SQL.saveSettings, binds)
    }

    /// Moves the aggregates by `d`, after the cycle's facts are written.
    func apply(_ c: isolated PostgresConnection, _ d: IntervalDeltas, copy: (String, [[String?]]) throws -> Void)
        async throws
    {
        let zones = PostgresArray.text(reporting.timeZones)
        func ts(_ ms: Int64) -> String { Timestamp(millisecondsSinceEpoch: ms).rfc3339 }
        let queues = d.queues.filter { $0.value != IntervalDeltas.Queue() }
        if !queues.isEmpty {
            try copy(
                SQL.copyQueueDelta,
                queues.map { k, q in
                    [ts(k.quarter), String(k.queueKey), String(k.mediaKey)]
                        + [
                            q.offered, q.answered, q.abandoned, q.abandonedShort, q.withinSLA, q.waitSum, q.waitCount,
                            q.talkSum, q.talkCount,
                        ].map(String.init) + [q.addedMaxWait.map(String.init), q.removedMaxWait.map(String.init)]
                })
            let binds: [any PostgresBindable] = [zones, reporting.subHourMinutes]
            try await c.query(SQL.findLostMaxima, binds)
            try await c.query(SQL.applyQueues, binds)
            try await c.query(SQL.rereadMaxima, [reporting.subHourMinutes])
            try await c.query(SQL.deleteEmptyQueues, binds)
        }
        let agents = d.agents.filter { $0.value != IntervalDeltas.Agent() }
        if !agents.isEmpty {
            try copy(
                SQL.copyAgentDelta,
                agents.map { k, a in
                    [ts(k.quarter), String(k.agentKey)]
                        + [a.answered, a.talkMs, a.holdMs, a.readyMs, a.notReadyMs, a.loggedInMs].map(String.init)
                })
            try await c.query(SQL.applyAgents, [zones])
            try await c.query(SQL.deleteEmptyAgents, [zones])
        }
        let notReady = d.notReady.filter { $0.value != IntervalDeltas.NotReady() }
        if !notReady.isEmpty {
            try copy(
                SQL.copyNotReadyDelta,
                notReady.map { k, n in [ts(k.quarter), String(k.agentKey), k.reason, String(n.intervals), String(n.ms)]
                }
            )
            try await c.query(SQL.applyNotReady, [zones])
            try await c.query(SQL.deleteEmptyNotReady, [zones])
        }
    }
}

extension IntervalAggregates {
    /// The statements of the interval aggregates (`$1` the zones, `$2` the sub-hour minutes, `$3`
    /// the short-abandon threshold in ms); periods are `mart.period_start`'s (SQL/mart/013).
    enum SQL {
        static let temporaryTables = """
            CREATE TEMP TABLE IF NOT EXISTS queue_delta (quarter timestamptz, queue_key int, media_key smallint,
                offered bigint, answered bigint, abandoned bigint, abandoned_short bigint, within_sla bigint,
                wait_sum bigint, wait_count bigint, talk_sum bigint, talk_count bigint, added_max bigint,
                removed_max bigint) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS lost_max (time_zone text, period_start timestamptz, queue_key int,
                media_key smallint) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS agent_delta (quarter timestamptz, agent_key int, answered bigint,
                talk_ms bigint, hold_ms bigint, ready_ms bigint, not_ready_ms bigint, logged_in_ms bigint)
                ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS not_ready_delta (quarter timestamptz, agent_key int, reason text,
                intervals bigint, ms bigint) ON COMMIT DELETE ROWS
            """
        static let settings =
            "SELECT array_to_string(time_zones, ','), sub_hour_minutes, short_abandon_ms FROM mart.interval_settings"
        static let unknownZones = """
            SELECT z FROM unnest($1::text[]) z WHERE NOT EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = z)
            """
        static let clear = """
            DELETE FROM mart.agg_queue_interval; DELETE FROM mart.agg_agent_day; DELETE FROM mart.agg_agent_not_ready
            """
        static let rebuildQueues = """
            INSERT INTO mart.agg_queue_interval (time_zone, period_start, queue_key, media_key, offered, answered,
                abandoned, abandoned_short, answered_within_sla, wait_ms_sum, wait_count, wait_ms_max, talk_ms_sum,
                talk_count)
            SELECT z, mart.period_start('sub_hour', f.offered_at, z, $2), f.queue_key, COALESCE(f.media_key, 0), count(*),
                count(*) FILTER (WHERE f.outcome = 'answered'), count(*) FILTER (WHERE f.outcome = 'abandoned'),
                count(*) FILTER (WHERE f.outcome = 'abandoned' AND f.wait_ms <= $3), count(*) FILTER (WHERE f.within_sla),
                COALESCE(sum(f.wait_ms), 0), count(f.wait_ms), max(f.wait_ms),
                COALESCE(sum(f.talk_ms) FILTER (WHERE f.outcome = 'answered'), 0),
                count(*) FILTER (WHERE f.outcome = 'answered')
            FROM mart.fact_queue_offer f CROSS JOIN unnest($1::text[]) z
            GROUP BY 1, 2, 3, 4
            """
        /// Answers on the local day of the answer; state intervals on the local day they started.
        static let rebuildAgents = """
            INSERT INTO mart.agg_agent_day (time_zone, day, agent_key, answered, talk_ms, hold_ms, ready_ms,
                not_ready_ms, logged_in_ms)
            SELECT z, day, agent_key, sum(answered), sum(talk_ms), sum(hold_ms), sum(ready_ms), sum(not_ready_ms),
                sum(logged_in_ms)
            FROM (
                SELECT (f.answered_at AT TIME ZONE z)::date AS day, f.agent_key, z, 1 AS answered,
                    COALESCE(f.talk_ms, 0) AS talk_ms, f.hold_ms, 0 AS ready_ms, 0 AS not_ready_ms, 0 AS logged_in_ms
                FROM mart.fact_queue_offer f CROSS JOIN unnest($1::text[]) z
                WHERE f.outcome = 'answered' AND f.agent_key IS NOT NULL AND f.answered_at IS NOT NULL
                UNION ALL
                SELECT (s.started_at AT TIME ZONE z)::date, s.agent_key, z, 0, 0, 0,
                    CASE WHEN s.state = 'agent.ready' THEN d ELSE 0 END,
                    CASE WHEN s.state = 'agent.not_ready' THEN d ELSE 0 END,
                    CASE WHEN s.state <> 'agent.logout' THEN d ELSE 0 END
                FROM (SELECT *, (extract(epoch FROM ended_at - started_at) * 1000)::bigint AS d
                      FROM mart.fact_agent_state WHERE ended_at IS NOT NULL) s CROSS JOIN unnest($1::text[]) z
            ) x
            GROUP BY z, day, agent_key
            HAVING (sum(answered), sum(talk_ms), sum(hold_ms), sum(ready_ms), sum(not_ready_ms), sum(logged_in_ms))
                <> (0, 0, 0, 0, 0, 0)
            """
        static let rebuildNotReady = """
            INSERT INTO mart.agg_agent_not_ready (time_zone, day, agent_key, reason, intervals, not_ready_ms)
            SELECT z, (s.started_at AT TIME ZONE z)::date, s.agent_key, COALESCE(s.reason, ''), count(*),
                sum((extract(epoch FROM s.ended_at - s.started_at) * 1000)::bigint)
            FROM mart.fact_agent_state s CROSS JOIN unnest($1::text[]) z
            WHERE s.state = 'agent.not_ready' AND s.ended_at IS NOT NULL
            GROUP BY 1, 2, 3, 4
            """
        static let saveSettings = """
            INSERT INTO mart.interval_settings (time_zones, sub_hour_minutes, short_abandon_ms) VALUES ($1, $2, $3)
            ON CONFLICT (id) DO UPDATE SET time_zones = EXCLUDED.time_zones,
                sub_hour_minutes = EXCLUDED.sub_hour_minutes, short_abandon_ms = EXCLUDED.short_abandon_ms,
                built_at = now()
            """
        static let copyQueueDelta = "COPY queue_delta FROM STDIN"
        /// The deltas by zone and sub-hour period.
        static let queuePeriods = """
            SELECT z AS time_zone, mart.period_start('sub_hour', d.quarter, z, $2) AS period_start, d.queue_key,
                d.media_key, sum(offered) AS offered, sum(answered) AS answered, sum(abandoned) AS abandoned,
                sum(abandoned_short) AS abandoned_short, sum(within_sla) AS within_sla, sum(wait_sum) AS wait_sum,
                sum(wait_count) AS wait_count, sum(talk_sum) AS talk_sum, sum(talk_count) AS talk_count,
                max(added_max) AS added_max, max(removed_max) AS removed_max
            FROM queue_delta d CROSS JOIN unnest($1::text[]) z
            GROUP BY 1, 2, 3, 4
            """
        /// Periods whose longest wait is being taken away and not matched by an offer added.
        static let findLostMaxima = """
            INSERT INTO lost_max
            SELECT p.time_zone, p.period_start, p.queue_key, p.media_key FROM (\(queuePeriods)) p
            JOIN mart.agg_queue_interval g USING (time_zone, period_start, queue_key, media_key)
            WHERE p.removed_max >= g.wait_ms_max AND p.removed_max > COALESCE(p.added_max, -1)
            """
        static let applyQueues = """
            INSERT INTO mart.agg_queue_interval AS g (time_zone, period_start, queue_key, media_key, offered, answered,
                abandoned, abandoned_short, answered_within_sla, wait_ms_sum, wait_count, wait_ms_max, talk_ms_sum,
                talk_count)
            SELECT time_zone, period_start, queue_key, media_key, offered, answered, abandoned, abandoned_short,
                within_sla, wait_sum, wait_count, added_max, talk_sum, talk_count FROM (\(queuePeriods)) p
            ON CONFLICT (time_zone, period_start, queue_key, media_key) DO UPDATE SET
                offered = g.offered + EXCLUDED.offered, answered = g.answered + EXCLUDED.answered,
                abandoned = g.abandoned + EXCLUDED.abandoned,
                abandoned_short = g.abandoned_short + EXCLUDED.abandoned_short,
                answered_within_sla = g.answered_within_sla + EXCLUDED.answered_within_sla,
                wait_ms_sum = g.wait_ms_sum + EXCLUDED.wait_ms_sum, wait_count = g.wait_count + EXCLUDED.wait_count,
                wait_ms_max = GREATEST(g.wait_ms_max, EXCLUDED.wait_ms_max),
                talk_ms_sum = g.talk_ms_sum + EXCLUDED.talk_ms_sum, talk_count = g.talk_count + EXCLUDED.talk_count
            """
        /// The lost maxima read again from the period's offers (by time: the BRIN index); periods
        /// left without offers go.
        static let rereadMaxima = """
            UPDATE mart.agg_queue_interval g SET wait_ms_max = (
                SELECT max(f.wait_ms) FROM mart.fact_queue_offer f
                WHERE f.offered_at >= g.period_start AND f.offered_at < g.period_start + make_interval(mins => $1)
                  AND f.queue_key = g.queue_key AND COALESCE(f.media_key, 0) = g.media_key)
            FROM lost_max l
            WHERE g.time_zone = l.time_zone AND g.period_start = l.period_start AND g.queue_key = l.queue_key
              AND g.media_key = l.media_key;
            """
        /// Rows moved to nothing go (as the rebuild never makes them).
        static let deleteEmptyQueues = """
            DELETE FROM mart.agg_queue_interval g USING queue_delta d, unnest($1::text[]) z
            WHERE g.time_zone = z AND g.period_start = mart.period_start('sub_hour', d.quarter, z, $2)
              AND g.queue_key = d.queue_key AND g.media_key = d.media_key AND g.offered = 0
            """
        static let deleteEmptyAgents = """
            DELETE FROM mart.agg_agent_day g USING agent_delta d, unnest($1::text[]) z
            WHERE g.time_zone = z AND g.day = (d.quarter AT TIME ZONE z)::date AND g.agent_key = d.agent_key
              AND (g.answered, g.talk_ms, g.hold_ms, g.ready_ms, g.not_ready_ms, g.logged_in_ms) = (0, 0, 0, 0, 0, 0)
            """
        static let deleteEmptyNotReady = """
            DELETE FROM mart.agg_agent_not_ready g USING not_ready_delta d, unnest($1::text[]) z
            WHERE g.time_zone = z AND g.day = (d.quarter AT TIME ZONE z)::date AND g.agent_key = d.agent_key
              AND g.reason = d.reason AND g.intervals = 0
            """
        static let copyAgentDelta = "COPY agent_delta FROM STDIN"
        static let applyAgents = """
            INSERT INTO mart.agg_agent_day AS g (time_zone, day, agent_key, answered, talk_ms, hold_ms, ready_ms,
                not_ready_ms, logged_in_ms)
            SELECT z, (d.quarter AT TIME ZONE z)::date, d.agent_key, sum(answered), sum(talk_ms), sum(hold_ms),
                sum(ready_ms), sum(not_ready_ms), sum(logged_in_ms)
            FROM agent_delta d CROSS JOIN unnest($1::text[]) z GROUP BY 1, 2, 3
            ON CONFLICT (time_zone, day, agent_key) DO UPDATE SET
                answered = g.answered + EXCLUDED.answered, talk_ms = g.talk_ms + EXCLUDED.talk_ms,
                hold_ms = g.hold_ms + EXCLUDED.hold_ms, ready_ms = g.ready_ms + EXCLUDED.ready_ms,
                not_ready_ms = g.not_ready_ms + EXCLUDED.not_ready_ms,
                logged_in_ms = g.logged_in_ms + EXCLUDED.logged_in_ms
            """
        static let copyNotReadyDelta = "COPY not_ready_delta FROM STDIN"
        static let applyNotReady = """
            INSERT INTO mart.agg_agent_not_ready AS g (time_zone, day, agent_key, reason, intervals, not_ready_ms)
            SELECT z, (d.quarter AT TIME ZONE z)::date, d.agent_key, d.reason, sum(intervals), sum(ms)
            FROM not_ready_delta d CROSS JOIN unnest($1::text[]) z GROUP BY 1, 2, 3, 4
            ON CONFLICT (time_zone, day, agent_key, reason) DO UPDATE SET
                intervals = g.intervals + EXCLUDED.intervals, not_ready_ms = g.not_ready_ms + EXCLUDED.not_ready_ms
            """
    }
}
