import Foundation
import PostgresClient

/// Recounts the reporting views from the mart's event layer, independently of the extractor's
/// transform, and counts the rows where a view and its recount differ.
///
/// This is what a duplicate would damage: `mart.event`'s primary key already keeps each
/// `(source, seq)` once, but an event extracted twice, or an aggregate moved twice by its
/// deltas, shows up as a wrong row in `queue_hourly`, `agent_daily` or `interactions`. The
/// recounts follow CONTRACT 5 directly in SQL, in seq order per interaction: offers split at each
/// `queued`; talk and hold segments as ``events`` says; agent state intervals to the agent's next
/// `agent.*` event. They read the events the facts were made of (`mart.event.transformed`: an
/// extraction cycle marks each event it transforms, in the transaction that writes the facts;
/// replicated with them to a standby), in one snapshot. (The CTEs are materialized: inlined,
/// the planner's row estimates made nested loops of the joins — seconds for 6 000 events.)
public enum ViewRecount {
    /// Rows of each view that differ from the recount: rows found only in the view plus rows
    /// found only in the recount (a row with a wrong value counts twice).
    public struct Mismatches: Codable, Sendable, Equatable {
        public var queueHourly = 0
        public var agentDaily = 0
        public var interactions = 0
        public var total: Int { queueHourly + agentDaily + interactions }
        public init() {}
    }

    /// The complete events; each interaction event numbered by its offer (0 before the first
    /// `queued`) and by the talk and hold segments it belongs to; the closed talk and hold
    /// segments; the offers with their resolution, talk and hold.
    ///
    /// A talk segment runs from the first `answered`/`retrieved` after the last talk stopper
    /// (`held`, `transferred`, `ended`) to the next stopper; a hold segment from the first `held`
    /// after the last hold stopper (`retrieved`, `ended`) to the next (CONTRACT 5). A segment not
    /// stopped yet counts nothing. An offer's talk is that of the segments started in it once it
    /// was answered; its hold, every hold segment started in it.
    static func events(over events: String) -> String {
        """
        complete AS (
            \(events)
        ),
        ev AS MATERIALIZED (
            SELECT e.*,
                   count(*) FILTER (WHERE type = 'interaction.queued') OVER running AS offer_no,
                   count(*) FILTER (WHERE type IN ('interaction.held', 'interaction.transferred', 'interaction.ended'))
                       OVER before AS talk_segment,
                   count(*) FILTER (WHERE type IN ('interaction.retrieved', 'interaction.ended')) OVER before AS hold_segment
            FROM complete e WHERE interaction IS NOT NULL
            WINDOW running AS (PARTITION BY source, interaction ORDER BY seq),
                   before AS (PARTITION BY source, interaction ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ),
        talk AS MATERIALIZED (
            SELECT source, interaction,
                (array_agg(offer_no ORDER BY seq) FILTER (WHERE type IN ('interaction.answered', 'interaction.retrieved')))[1] AS offer_no,
                extract(epoch FROM
                    max(ts) FILTER (WHERE type IN ('interaction.held', 'interaction.transferred', 'interaction.ended'))
                    - (array_agg(ts ORDER BY seq) FILTER (WHERE type IN ('interaction.answered', 'interaction.retrieved')))[1]
                ) * 1000 AS ms,
                max(seq) FILTER (WHERE type IN ('interaction.held', 'interaction.transferred', 'interaction.ended')) AS stop_seq
            FROM ev GROUP BY source, interaction, talk_segment
        ),
        hold AS MATERIALIZED (
            SELECT source, interaction,
                (array_agg(offer_no ORDER BY seq) FILTER (WHERE type = 'interaction.held'))[1] AS offer_no,
                extract(epoch FROM
                    max(ts) FILTER (WHERE type IN ('interaction.retrieved', 'interaction.ended'))
                    - (array_agg(ts ORDER BY seq) FILTER (WHERE type = 'interaction.held'))[1]
                ) * 1000 AS ms
            FROM ev GROUP BY source, interaction, hold_segment
        ),
        resolved AS MATERIALIZED (
            SELECT source, interaction, offer_no,
                (array_agg(ts ORDER BY seq) FILTER (WHERE type = 'interaction.queued'))[1] AS offered_at,
                (array_agg(queue ORDER BY seq) FILTER (WHERE type = 'interaction.queued'))[1] AS queue,
                (array_agg(type ORDER BY seq) FILTER (WHERE type IN ('interaction.answered', 'interaction.abandoned')))[1] AS resolution,
                (array_agg(ts ORDER BY seq) FILTER (WHERE type IN ('interaction.answered', 'interaction.abandoned')))[1] AS resolved_at,
                (array_agg(seq ORDER BY seq) FILTER (WHERE type IN ('interaction.answered', 'interaction.abandoned')))[1] AS resolved_seq,
                (array_agg(agent ORDER BY seq) FILTER (WHERE type IN ('interaction.answered', 'interaction.abandoned')))[1] AS agent
            FROM ev WHERE offer_no > 0 GROUP BY source, interaction, offer_no
        ),
        offer_talk AS MATERIALIZED (
            SELECT t.source, t.interaction, t.offer_no, sum(t.ms) AS talk
            FROM talk t JOIN resolved r USING (source, interaction, offer_no)
            WHERE r.resolution = 'interaction.answered' AND t.stop_seq > r.resolved_seq
            GROUP BY 1, 2, 3
        ),
        offer_hold AS MATERIALIZED (
            SELECT source, interaction, offer_no, sum(ms) AS hold FROM hold GROUP BY 1, 2, 3
        ),
        offers AS MATERIALIZED (
            SELECT r.*, COALESCE(ot.talk, 0) AS talk, COALESCE(oh.hold, 0) AS hold
            FROM resolved r
            LEFT JOIN offer_talk ot USING (source, interaction, offer_no)
            LEFT JOIN offer_hold oh USING (source, interaction, offer_no)
        ),
        media AS MATERIALIZED (
            SELECT DISTINCT ON (source, interaction) source, interaction, media FROM complete
            WHERE type = 'interaction.created' ORDER BY source, interaction, seq
        )
        """
    }

    /// The events the mart's facts were made of.
    public static let martEvents = "SELECT e.* FROM mart.event e WHERE e.transformed"

    /// `report.interactions` recounted: `source, interaction, media, first_queue, last_queue,
    /// agent, outcome, wait_ms, talk_ms, hold_ms, transfers`.
    public static let interactions = interactions(over: martEvents)

    /// The same over `events` (a query with the event columns of `mart.event`).
    public static func interactions(over events: String) -> String {
        """
        WITH \(Self.events(over: events))
        SELECT source, interaction,
            (array_agg(media ORDER BY seq) FILTER (WHERE type = 'interaction.created'))[1] AS media,
            (array_agg(queue ORDER BY seq) FILTER (WHERE type = 'interaction.queued'))[1] AS first_queue,
            (array_agg(queue ORDER BY seq DESC) FILTER (WHERE type = 'interaction.queued'))[1] AS last_queue,
            (array_agg(agent ORDER BY seq DESC) FILTER (WHERE type = 'interaction.answered'))[1] AS agent,
            CASE WHEN bool_or(type = 'interaction.answered') THEN 'answered'
                 WHEN bool_or(type = 'interaction.abandoned') THEN 'abandoned'
                 WHEN bool_or(type = 'interaction.ended') THEN 'unanswered' ELSE 'open' END AS outcome,
            (extract(epoch FROM (array_agg(ts ORDER BY seq) FILTER (WHERE type IN ('interaction.answered', 'interaction.abandoned')))[1]
              - COALESCE((array_agg(ts ORDER BY seq) FILTER (WHERE type = 'interaction.queued'))[1],
                         (array_agg(ts ORDER BY seq) FILTER (WHERE type = 'interaction.created'))[1])) * 1000)::bigint AS wait_ms,
            COALESCE(min(it.talk), 0)::bigint AS talk_ms,
            COALESCE(min(ih.hold), 0)::bigint AS hold_ms,
            count(*) FILTER (WHERE type = 'interaction.transferred') AS transfers
        FROM ev
        LEFT JOIN (SELECT source, interaction, sum(ms) AS talk FROM talk GROUP BY 1, 2) it USING (source, interaction)
        LEFT JOIN (SELECT source, interaction, sum(ms) AS hold FROM hold GROUP BY 1, 2) ih USING (source, interaction)
        GROUP BY source, interaction
        """
    }

    /// `report.queue_hourly` recounted (`$1`: the SLA in ms, `$2`: the queues' own SLAs, a JSON
    /// object of queue → ms — ``slaJSON(_:)``): every column.
    public static let queueHourly = queueHourly(over: martEvents)

    public static func queueHourly(over events: String) -> String {
        """
        WITH \(Self.events(over: events)),
        o AS (
            SELECT date_trunc('hour', offered_at, 'UTC') AS hour, queue, m.media, resolution,
                   extract(epoch FROM resolved_at - offered_at) * 1000 AS wait, talk
            FROM offers LEFT JOIN media m USING (source, interaction)
        )
        SELECT hour, queue, media, count(*) AS offered,
            count(*) FILTER (WHERE resolution = 'interaction.answered') AS answered,
            count(*) FILTER (WHERE resolution = 'interaction.abandoned') AS abandoned,
            count(*) FILTER (WHERE resolution = 'interaction.answered'
                             AND wait <= COALESCE(($2::jsonb ->> queue)::bigint, $1)) AS answered_within_sla,
            round(avg(wait) FILTER (WHERE resolution IS NOT NULL)::numeric)::bigint AS avg_wait_ms,
            round(avg(talk) FILTER (WHERE resolution = 'interaction.answered')::numeric)::bigint AS avg_talk_ms
        FROM o GROUP BY hour, queue, media
        """
    }

    /// `report.agent_daily` recounted: answered offers (their talk and hold) by the UTC day of
    /// the answer, ready and not-ready time by the UTC day each interval started; days with
    /// nothing to count are left out (on both sides of the comparison).
    public static let agentDaily = agentDaily(over: martEvents)

    public static func agentDaily(over events: String) -> String {
        """
        WITH \(Self.events(over: events)),
        answered AS (
            SELECT (resolved_at AT TIME ZONE 'UTC')::date AS day, agent, count(*) AS answered,
                   sum(talk) AS talk_ms, sum(hold) AS hold_ms
            FROM offers WHERE resolution = 'interaction.answered' AND agent IS NOT NULL GROUP BY 1, 2
        ),
        intervals AS (
            SELECT agent, type, ts, lead(ts) OVER (PARTITION BY agent ORDER BY ts, source, seq) AS ended_at
            FROM complete WHERE type LIKE 'agent.%' AND agent IS NOT NULL
        ),
        states AS (
            SELECT (ts AT TIME ZONE 'UTC')::date AS day, agent,
                   sum(extract(epoch FROM ended_at - ts) * 1000) FILTER (WHERE type = 'agent.ready') AS ready_ms,
                   sum(extract(epoch FROM ended_at - ts) * 1000) FILTER (WHERE type = 'agent.not_ready') AS not_ready_ms
            FROM intervals WHERE ended_at IS NOT NULL GROUP BY 1, 2
        )
        SELECT COALESCE(a.day, s.day) AS day, COALESCE(a.agent, s.agent) AS agent,
               COALESCE(a.answered, 0) AS answered, COALESCE(a.talk_ms, 0)::bigint AS talk_ms,
               COALESCE(a.hold_ms, 0)::bigint AS hold_ms, COALESCE(s.ready_ms, 0)::bigint AS ready_ms,
               COALESCE(s.not_ready_ms, 0)::bigint AS not_ready_ms
        FROM answered a FULL JOIN states s ON s.day = a.day AND s.agent = a.agent
        """
    }

    /// Rows found on one side only of `recount` and `view` (both with the same columns).
    static func difference(_ recount: String, _ view: String) -> String {
        """
        WITH r AS (\(recount)), v AS (\(view))
        SELECT (SELECT count(*) FROM (SELECT * FROM r EXCEPT ALL SELECT * FROM v) x)
             + (SELECT count(*) FROM (SELECT * FROM v EXCEPT ALL SELECT * FROM r) y)
        """
    }

    public static let nonZeroDaily = "WHERE (answered, talk_ms, hold_ms, ready_ms, not_ready_ms) <> (0, 0, 0, 0, 0)"

    /// The queues' own SLAs as the recounts take them: a JSON object of queue → ms.
    public static func slaJSON(_ queueSLAMs: [String: Int64]) -> String {
        let data = try? JSONSerialization.data(withJSONObject: queueSLAMs, options: [.sortedKeys])
        return data.map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// Recounts the three views in one repeatable-read snapshot of `mart`, with the deployment's
    /// SLA and the queues' own.
    public static func mismatches(_ mart: PostgresConnection, slaMs: Int64, queueSLAMs: [String: Int64] = [:])
        async throws -> Mismatches
    {
        let interactionsDiff = difference(
            interactions,
            """
            SELECT source, interaction, media, first_queue, last_queue, agent, outcome, wait_ms, talk_ms, hold_ms,
                   transfers::bigint FROM report.interactions
            """)
        let hourlyDiff = difference(queueHourly, "SELECT * FROM report.queue_hourly")
        let dailyDiff = difference(
            "SELECT * FROM (\(agentDaily)) d \(nonZeroDaily)",
            "SELECT day, agent, answered, talk_ms, hold_ms, ready_ms, not_ready_ms FROM report.agent_daily \(nonZeroDaily)"
        )
        return try await mart.transaction { c in
            try c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            var m = Mismatches()
            m.queueHourly = try await c.query(hourlyDiff, [slaMs, slaJSON(queueSLAMs)])[0].decode(0, as: Int.self)
            m.agentDaily = try await c.query(dailyDiff)[0].decode(0, as: Int.self)
            m.interactions = try await c.query(interactionsDiff)[0].decode(0, as: Int.self)
            return m
        }
    }
}
