import EventModel
import Foundation
import PostgresClient

extension Extractor {
    static let transformTables = """
        CREATE TEMP TABLE IF NOT EXISTS touched_i (source text, interaction text) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS touched_a (agent text, from_ts timestamptz) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS hourly_delta (hour timestamptz, queue_key int, media_key smallint, offered bigint,
            answered bigint, abandoned bigint, within_sla bigint, wait_sum bigint, wait_count bigint, talk_sum bigint,
            talk_count bigint) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS touched_days (day date, agent text) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS names (kind text, name text) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS new_interaction (source text, interaction text, media text, direction text,
            first_queue text, last_queue text, agent text, created_at timestamptz, answered_at timestamptz,
            ended_at timestamptz, outcome text, wait_ms bigint, talk_ms bigint, hold_ms bigint, transfers int) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS new_offer (source text, seq bigint, interaction text, queue text, media text,
            offered_at timestamptz, outcome text, wait_ms bigint, talk_ms bigint, agent text, answered_at timestamptz,
            hold_ms bigint) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS new_state (source text, seq bigint, agent text, state text, reason text,
            started_at timestamptz, ended_at timestamptz) ON COMMIT DELETE ROWS
        """

    static let eventColumns =
        "e.source, e.seq, e.ts, e.type, e.interaction, e.media, e.direction, e.queue, e.agent, e.reason"

    static func events(_ rows: PostgresRows) throws -> [Event] {
        try rows.compactMap { try event($0) }
    }

    /// Recomputes the facts of every interaction and agent with untransformed events up to `t`, and
    /// the aggregate buckets those facts fall in (before and after). Returns the interactions recomputed.
    static func transform(_ c: isolated PostgresConnection, through t: Int64, slaMs: Int64, site: String) async throws
        -> Int
    {
        let through = PostgresTimestamp(millisecondsSinceEpoch: t)
        let timing = ProcessInfo.processInfo.environment["BCPIPE_EXTRACTOR_TIMING"] != nil
        var mark = Date()
        func lap(_ what: String) {
            if timing {
                FileHandle.standardError.write(
                    Data("  transform \(what): \(Int(Date().timeIntervalSince(mark) * 1000)) ms\n".utf8))
            }
            mark = Date()
        }
        try c.execute(transformTables)
        let touched = try await c.query(
            """
            INSERT INTO touched_i SELECT source, interaction FROM fresh WHERE ts <= $1 AND interaction IS NOT NULL
            UNION SELECT source, interaction FROM mart.event WHERE NOT transformed AND ts <= $1 AND interaction IS NOT NULL
            """, [through]
        ).affectedRows
        // Each touched agent is recomputed from its last transformed state change before its
        // earliest new one: the intervals before that cannot change.
        try await c.query(
            """
            INSERT INTO touched_a
            SELECT n.agent, COALESCE(
                (SELECT max(e.ts) FROM mart.event e WHERE e.agent = n.agent AND e.type LIKE 'agent.%' AND e.transformed AND e.ts < n.min_ts),
                n.min_ts)
            FROM (SELECT agent, min(ts) AS min_ts FROM (
                      SELECT agent, ts FROM fresh WHERE ts <= $1 AND type LIKE 'agent.%'
                      UNION ALL SELECT agent, ts FROM mart.event WHERE NOT transformed AND ts <= $1 AND type LIKE 'agent.%') x
                  GROUP BY agent) n
            """, [through])
        // Temporary tables are never auto-analysed: without statistics the joins below plan badly.
        try c.execute("ANALYZE touched_i; ANALYZE touched_a")
        lap("touched")
        // The buckets the old facts were in.
        try c.execute(
            """
            INSERT INTO hourly_delta SELECT f.hour, f.queue_key, COALESCE(f.media_key, 1), -count(*),
                -count(*) FILTER (WHERE f.outcome = 'answered'), -count(*) FILTER (WHERE f.outcome = 'abandoned'),
                -count(*) FILTER (WHERE f.within_sla), -COALESCE(sum(f.wait_ms), 0), -count(f.wait_ms),
                -COALESCE(sum(f.talk_ms) FILTER (WHERE f.outcome = 'answered'), 0), -count(*) FILTER (WHERE f.outcome = 'answered')
              FROM mart.fact_queue_offer f JOIN touched_i USING (source, interaction)
              GROUP BY f.hour, f.queue_key, COALESCE(f.media_key, 1);
            INSERT INTO touched_days SELECT DISTINCT (f.answered_at AT TIME ZONE 'UTC')::date, a.agent
              FROM mart.fact_queue_offer f JOIN touched_i USING (source, interaction) JOIN mart.dim_agent a ON a.agent_key = f.agent_key;
            INSERT INTO touched_days SELECT DISTINCT s.day, a.agent FROM mart.fact_agent_state s
              JOIN mart.dim_agent a ON a.agent_key = s.agent_key JOIN touched_a t ON t.agent = a.agent AND s.started_at >= t.from_ts;
            DELETE FROM mart.fact_queue_offer f USING touched_i t WHERE f.source = t.source AND f.interaction = t.interaction;
            DELETE FROM mart.fact_interaction f USING touched_i t WHERE f.source = t.source AND f.interaction = t.interaction;
            DELETE FROM mart.fact_agent_state s USING mart.dim_agent a, touched_a t
              WHERE s.agent_key = a.agent_key AND a.agent = t.agent AND s.started_at >= t.from_ts
            """)

        lap("old buckets + deletes")
        // Interactions and offers, from all their events up to t.
        var interactionRows: [UInt8] = []
        var offerRows: [UInt8] = []
        var nameRows: [UInt8] = []
        var row = CopyRow()
        var named: Set<String> = []
        func name(_ kind: String, _ value: String?) {
            guard let value, named.insert(kind + "\u{1}" + value).inserted else { return }
            row.reset()
            row.append(kind)
            row.append(value)
            row.end()
            nameRows += row.bytes
        }
        if touched > 0 {
            let all = try events(
                try await c.query(
                    "SELECT \(eventColumns) FROM mart.event e JOIN touched_i USING (source, interaction) WHERE e.ts <= $1",
                    [through]))
            var grouped: [String: [Event]] = [:]
            for e in all { grouped[e.source + "\u{1}" + (e.interaction ?? ""), default: []].append(e) }
            for (_, evs) in grouped {
                guard let (f, offers) = InteractionTransform.compute(evs) else { continue }
                row.reset()
                row.append(f.source)
                row.append(f.interaction)
                row.append(f.media?.rawValue)
                row.append(f.direction?.rawValue)
                row.append(f.firstQueue)
                row.append(f.lastQueue)
                row.append(f.agent)
                row.append(f.createdAt?.rfc3339)
                row.append(f.answeredAt?.rfc3339)
                row.append(f.endedAt?.rfc3339)
                row.append(f.outcome.rawValue)
                row.append(f.waitMs)
                row.append(f.talkMs)
                row.append(f.holdMs)
                row.append(Int64(f.transfers))
                row.end()
                interactionRows += row.bytes
                name("queue", f.firstQueue)
                name("queue", f.lastQueue)
                name("agent", f.agent)
                for o in offers {
                    row.reset()
                    row.append(o.source)
                    row.append(o.seq)
                    row.append(o.interaction)
                    row.append(o.queue)
                    row.append(o.media?.rawValue)
                    row.append(o.offeredAt.rfc3339)
                    row.append(o.outcome?.rawValue)
                    row.append(o.waitMs)
                    row.append(o.talkMs)
                    row.append(o.agent)
                    row.append(
                        o.outcome == .answered
                            ? Timestamp(millisecondsSinceEpoch: o.offeredAt.millisecondsSinceEpoch + (o.waitMs ?? 0))
                                .rfc3339 : nil)
                    row.append(o.holdMs)
                    row.end()
                    offerRows += row.bytes
                    name("queue", o.queue)
                    name("agent", o.agent)
                }
            }
        }
        lap("interactions computed")
        // Agent state intervals of the touched agents, from all their agent events up to t.
        var stateRows: [UInt8] = []
        let agentEvents = try events(
            try await c.query(
                """
                SELECT \(eventColumns) FROM mart.event e JOIN touched_a t ON t.agent = e.agent
                WHERE e.type LIKE 'agent.%' AND e.ts >= t.from_ts AND e.ts <= $1
                """,
                [through]))
        var byAgent: [String: [Event]] = [:]
        for e in agentEvents { byAgent[e.agent!, default: []].append(e) }
        for (agent, evs) in byAgent {
            name("agent", agent)
            for s in AgentStateTransform.compute(evs) {
                row.reset()
                row.append(s.source)
                row.append(s.seq)
                row.append(s.agent)
                row.append(s.state.rawValue)
                row.append(s.reason)
                row.append(s.startedAt.rfc3339)
                row.append(s.endedAt?.rfc3339)
                row.end()
                stateRows += row.bytes
            }
        }
        for (table, bytes) in [
            ("names", nameRows), ("new_interaction", interactionRows), ("new_offer", offerRows),
            ("new_state", stateRows),
        ]
        where !bytes.isEmpty {
            try c.copyIn("COPY \(table) FROM STDIN") { sink in try sink.write(bytes) }
        }
        try c.execute("ANALYZE names; ANALYZE new_interaction; ANALYZE new_offer; ANALYZE new_state")
        lap("copy")
        try await c.query("UPDATE mart.event SET transformed = true WHERE NOT transformed AND ts <= $1", [through])
        lap("mark transformed")
        try await c.query(
            """
            INSERT INTO mart.dim_date (date_key, day, year, month, day_of_month, day_of_week)
            SELECT DISTINCT to_char(d, 'YYYYMMDD')::int, d, extract(year FROM d), extract(month FROM d), extract(day FROM d), extract(isodow FROM d)
            FROM (SELECT (created_at AT TIME ZONE 'UTC')::date AS d FROM new_interaction WHERE created_at IS NOT NULL) x
            ON CONFLICT DO NOTHING
            """)
        for statement in [
            """
            INSERT INTO mart.dim_queue (queue) SELECT DISTINCT name FROM names WHERE kind = 'queue' ON CONFLICT DO NOTHING
            """,
            """
            INSERT INTO mart.dim_agent (agent) SELECT DISTINCT name FROM names WHERE kind = 'agent' ON CONFLICT DO NOTHING
            """,
            """
            INSERT INTO mart.fact_interaction (source, interaction, site, media_key, direction, first_queue_key, last_queue_key,
                agent_key, created_date_key, created_at, answered_at, ended_at, outcome, wait_ms, talk_ms, hold_ms, transfers)
            SELECT n.source, n.interaction, \(PostgresConnection.quoteLiteral(site)), m.media_key, n.direction, fq.queue_key, lq.queue_key,
                a.agent_key, to_char(n.created_at AT TIME ZONE 'UTC', 'YYYYMMDD')::int, n.created_at, n.answered_at, n.ended_at,
                n.outcome, n.wait_ms, n.talk_ms, n.hold_ms, n.transfers
            FROM new_interaction n
            LEFT JOIN mart.dim_media m ON m.media = n.media
            LEFT JOIN mart.dim_queue fq ON fq.queue = n.first_queue
            LEFT JOIN mart.dim_queue lq ON lq.queue = n.last_queue
            LEFT JOIN mart.dim_agent a ON a.agent = n.agent
            """,
            """
            INSERT INTO mart.fact_queue_offer (source, seq, interaction, queue_key, media_key, offered_at, hour, outcome, wait_ms,
                talk_ms, within_sla, agent_key, answered_at, hold_ms)
            SELECT n.source, n.seq, n.interaction, q.queue_key, m.media_key, n.offered_at, date_trunc('hour', n.offered_at),
                n.outcome, n.wait_ms, n.talk_ms, n.outcome = 'answered' AND n.wait_ms <= \(slaMs), a.agent_key, n.answered_at, n.hold_ms
            FROM new_offer n JOIN mart.dim_queue q ON q.queue = n.queue
            LEFT JOIN mart.dim_media m ON m.media = n.media
            LEFT JOIN mart.dim_agent a ON a.agent = n.agent
            """,
            """
            INSERT INTO mart.fact_agent_state (source, seq, agent_key, state, reason, started_at, ended_at, day)
            SELECT n.source, n.seq, a.agent_key, n.state, n.reason, n.started_at, n.ended_at, (n.started_at AT TIME ZONE 'UTC')::date
            FROM new_state n JOIN mart.dim_agent a ON a.agent = n.agent
            ON CONFLICT (source, seq) DO UPDATE SET ended_at = EXCLUDED.ended_at, agent_key = EXCLUDED.agent_key
            """,
            """
            INSERT INTO touched_days SELECT DISTINCT (answered_at AT TIME ZONE 'UTC')::date, agent FROM new_offer WHERE agent IS NOT NULL AND answered_at IS NOT NULL
            """,
            """
            INSERT INTO touched_days SELECT DISTINCT (started_at AT TIME ZONE 'UTC')::date, agent FROM new_state
            """,
            """
            ANALYZE touched_days
            """,
            """
            -- queue_hourly moves by deltas: minus the replaced offers (above), plus the new ones.
            INSERT INTO hourly_delta SELECT f.hour, f.queue_key, COALESCE(f.media_key, 1), count(*),
                count(*) FILTER (WHERE f.outcome = 'answered'), count(*) FILTER (WHERE f.outcome = 'abandoned'),
                count(*) FILTER (WHERE f.within_sla), COALESCE(sum(f.wait_ms), 0), count(f.wait_ms),
                COALESCE(sum(f.talk_ms) FILTER (WHERE f.outcome = 'answered'), 0), count(*) FILTER (WHERE f.outcome = 'answered')
              FROM mart.fact_queue_offer f JOIN touched_i USING (source, interaction)
              GROUP BY f.hour, f.queue_key, COALESCE(f.media_key, 1)
            """,
            """
            INSERT INTO mart.agg_queue_hourly AS g (hour, queue_key, media_key, offered, answered, abandoned, answered_within_sla,
                wait_ms_sum, wait_count, talk_ms_sum, talk_count)
            SELECT hour, queue_key, media_key, sum(offered), sum(answered), sum(abandoned), sum(within_sla), sum(wait_sum),
                sum(wait_count), sum(talk_sum), sum(talk_count)
            FROM hourly_delta GROUP BY hour, queue_key, media_key
            ON CONFLICT (hour, queue_key, media_key) DO UPDATE SET
                offered = g.offered + EXCLUDED.offered, answered = g.answered + EXCLUDED.answered,
                abandoned = g.abandoned + EXCLUDED.abandoned, answered_within_sla = g.answered_within_sla + EXCLUDED.answered_within_sla,
                wait_ms_sum = g.wait_ms_sum + EXCLUDED.wait_ms_sum, wait_count = g.wait_count + EXCLUDED.wait_count,
                talk_ms_sum = g.talk_ms_sum + EXCLUDED.talk_ms_sum, talk_count = g.talk_count + EXCLUDED.talk_count
            """,
            """
            DELETE FROM mart.agg_queue_hourly WHERE offered = 0
            """,
            """
            DELETE FROM mart.agg_agent_daily d USING mart.dim_agent a, touched_days t
              WHERE d.agent_key = a.agent_key AND a.agent = t.agent AND d.day = t.day
            """,
            """
            INSERT INTO mart.agg_agent_daily (day, agent_key, answered, talk_ms, hold_ms, ready_ms, not_ready_ms)
            SELECT k.day, k.agent_key, COALESCE(o.answered, 0), COALESCE(o.talk, 0), COALESCE(o.hold, 0),
                COALESCE(st.ready, 0), COALESCE(st.not_ready, 0)
            FROM (SELECT DISTINCT t.day, a.agent_key FROM touched_days t JOIN mart.dim_agent a ON a.agent = t.agent
                  WHERE t.day IS NOT NULL) k
            LEFT JOIN LATERAL (
                SELECT count(*) AS answered, sum(talk_ms) AS talk, sum(hold_ms) AS hold FROM mart.fact_queue_offer f
                WHERE f.agent_key = k.agent_key AND f.outcome = 'answered'
                  AND f.answered_at >= (k.day::timestamp AT TIME ZONE 'UTC') AND f.answered_at < ((k.day + 1)::timestamp AT TIME ZONE 'UTC')
            ) o ON true
            LEFT JOIN LATERAL (
                SELECT (sum(extract(epoch FROM s.ended_at - s.started_at) * 1000) FILTER (WHERE s.state = 'agent.ready'))::bigint AS ready,
                       (sum(extract(epoch FROM s.ended_at - s.started_at) * 1000) FILTER (WHERE s.state = 'agent.not_ready'))::bigint AS not_ready
                FROM mart.fact_agent_state s WHERE s.agent_key = k.agent_key AND s.day = k.day AND s.ended_at IS NOT NULL
            ) st ON true
            """,
        ] {
            // BCPIPE_EXTRACTOR_TIMING=explain prints the fact inserts' plans (EXPLAIN ANALYZE runs them).
            if ProcessInfo.processInfo.environment["BCPIPE_EXTRACTOR_TIMING"] == "explain",
                statement.contains("INTO mart.fact")
            {
                let plan = try await c.query("EXPLAIN (ANALYZE, BUFFERS) " + statement)
                for r in plan { FileHandle.standardError.write(Data(("    " + (r[0] ?? "") + "\n").utf8)) }
            } else {
                try c.execute(statement)
            }
            lap(String(statement.drop(while: { $0 == " " || $0 == "\n" }).prefix(48)))
        }
        lap("facts + aggregates written")
        return touched
    }
}
