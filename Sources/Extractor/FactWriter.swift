import EventModel
import EventRows
import Foundation
import PostgresClient
import Topology

/// The transform of one cycle, in the cycle's transaction: the facts of every interaction and
/// agent with events complete through `T` are recomputed from all their events up to `T`, and
/// the aggregates move by the difference between the fact rows deleted and written.
///
/// Set-wise, in a fixed number of statements whatever the batch: the interactions and agents a
/// cycle touches go into temporary tables (COPY), what the mart held of them comes back in one
/// query each, the facts are computed here (``InteractionTransform``, ``AgentStateTransform``)
/// and copied in, and the aggregate deltas are applied with one upsert per aggregate. The events
/// of this cycle are never read back: the previous events of its interactions are read before
/// they are inserted.
struct FactWriter: Sendable {
    let site: String
    let reporting: Topology.ReportingSettings

    var intervals: IntervalAggregates { IntervalAggregates(reporting: reporting) }

    typealias Key = InteractionCache.Key

    /// What ``write(_:_:through:cache:phases:)`` did.
    struct Written: Sendable {
        var extracted = 0
        /// The interactions recomputed.
        var touched: Set<Key> = []
        /// The mart's events of the touched interactions the cache did not hold, read back in full.
        var readBack: [Key: [Event]] = [:]
        /// What the mart holds of the touched interactions' facts after the cycle.
        var facts: [Key: InteractionCache.Facts] = [:]
    }

    /// Inserts `merged` and transforms everything complete through `t`; an interaction's earlier
    /// events come from `cache` when it holds them, else from the mart.
    func write(
        _ c: isolated PostgresConnection, _ merged: PairMerger.Merged, through t: Int64, cache: InteractionCache,
        phases: inout PhaseClock
    ) async throws -> Written {
        let through = PostgresTimestamp(millisecondsSinceEpoch: t)
        try c.execute(SQL.temporaryTables)
        try c.execute(IntervalAggregates.SQL.temporaryTables)
        try await intervals.ensure(c)
        let (touched, agentsFrom, current) = try await complete(c, merged, through: t)
        try copy(
            c, SQL.copyTouchedInteractions,
            touched.map { [$0.source, $0.interaction, cache.holds($0) ? "t" : "f"] })
        try c.execute("ANALYZE touched_i")
        // Before this cycle's events go in: what the mart already holds of the interactions the
        // cache does not hold.
        var written = Written(touched: touched)
        for key in touched where !cache.holds(key) { written.readBack[key] = [] }
        for row in try await c.query(SQL.previousEvents) {
            guard let e = try IDBReader.event(row), let interaction = e.interaction else { continue }
            written.readBack[Key(source: e.source, interaction: interaction)]?.append(e)
        }
        // Only what the mart holds has facts to replace: the interactions it had events of.
        try copy(
            c, SQL.copyHeldInteractions,
            written.readBack.filter { !$0.value.isEmpty }.keys.map { [$0.source, $0.interaction] })
        phases.lap("read back")

        written.extracted = try PairMerger.insert(merged, into: c, completeThrough: t)
        try await c.query(SQL.markPendingTransformed, [through])
        phases.lap("events")

        // Agents: from their last transformed state change before their earliest new one.
        try copy(
            c, SQL.copyTouchedAgents, agentsFrom.map { [$0.key, Timestamp(millisecondsSinceEpoch: $0.value).rfc3339] })
        try c.execute(SQL.agentsFrom)
        let agentEvents = try await c.query(SQL.agentEvents, [through])

        // The facts being replaced, and what they counted in the aggregates.
        var deltas = AggregateDeltas()
        for r in try await c.query(SQL.deleteOffers, [intervals.shortAbandonMs]) {
            deltas.add(try Self.offerRow(r), sign: -1)
        }
        try c.execute(SQL.deleteInteractions)
        for r in try await c.query(SQL.deleteStates) { deltas.add(try Self.stateRow(r), sign: -1) }
        phases.lap("old facts")

        // The new facts.
        let computed = Self.recompute(touched, cache: cache, readBack: written.readBack, current: current, through: t)
        let interactions = computed.values.map(\.0)
        let offers = computed.values.flatMap(\.1)
        var byAgent: [String: [Event]] = [:]
        for row in agentEvents {
            if let e = try IDBReader.event(row), let agent = e.agent { byAgent[agent, default: []].append(e) }
        }
        let states = byAgent.values.flatMap { AgentStateTransform.compute($0) }
        phases.lap("compute")

        let keys = try await Dimensions.resolve(
            c,
            queues: Set(
                interactions.flatMap { [$0.firstQueue, $0.lastQueue] }.compactMap { $0 } + offers.map(\.queue)),
            agents: Set(interactions.compactMap(\.agent) + offers.compactMap(\.agent) + states.map(\.agent)),
            days: Set(interactions.compactMap { $0.createdAt.map { String($0.rfc3339.prefix(10)) } }))
        phases.lap("dimensions")
        // Against what the mart holds: the cache's rows, or none for what was just deleted.
        var changes = FactChanges(deltas: deltas)
        for key in touched {
            changes.add(key, computed: computed[key], held: cache.facts(key) ?? .init()) { offerRow($0, keys) }
        }
        deltas = changes.deltas
        written.facts = changes.facts
        try await writeFacts(c, changes, states, keys)
        for s in states {
            deltas.add(
                StateRow(
                    day: s.day, startedAt: s.startedAt.millisecondsSinceEpoch, agentKey: keys.agent(s.agent),
                    state: s.state, reason: s.reason, durationMs: s.endedAt.map { _ in s.durationMs }),
                sign: 1)
        }
        phases.lap("facts")
        try applyDeltas(c, deltas)
        try await intervals.apply(c, deltas.intervals) { try copy(c, $0, $1) }
        phases.lap("aggregates")
        return written
    }

    /// What this cycle makes complete: its own events up to `t` (returned as `current`) and the
    /// stored ones that waited for `t` — the interactions they touch, and each touched agent's
    /// earliest new state change.
    func complete(_ c: isolated PostgresConnection, _ merged: PairMerger.Merged, through t: Int64) async throws
        -> (touched: Set<Key>, agentsFrom: [String: Int64], current: [Event])
    {
        var touched = Set<Key>()
        var agentsFrom: [String: Int64] = [:]
        func touch(_ source: String, _ interaction: String?, _ agent: String?, _ type: String, _ ts: Int64) {
            if let interaction { touched.insert(Key(source: source, interaction: interaction)) }
            if let agent, type.hasPrefix("agent.") { agentsFrom[agent] = min(agentsFrom[agent] ?? ts, ts) }
        }
        var current: [Event] = []
        for e in merged.events where e.ts.millisecondsSinceEpoch <= t {
            current.append(e)
            touch(e.source, e.interaction, e.agent, e.type.rawValue, e.ts.millisecondsSinceEpoch)
        }
        for r in try await c.query(SQL.pending, [PostgresTimestamp(millisecondsSinceEpoch: t)]) {
            touch(
                try r.decode(0, as: String.self), r[1], r[2], try r.decode(3, as: String.self),
                try r.decode(4, as: PostgresTimestamp.self).millisecondsSinceEpoch)
        }
        return (touched, agentsFrom, current)
    }

    /// Each touched interaction's facts from all its events up to `t`: the earlier ones from the
    /// cache or the read-back, this cycle's from memory (a seq the mart held already counts once).
    static func recompute(
        _ touched: Set<Key>, cache: InteractionCache, readBack: [Key: [Event]], current: [Event], through t: Int64
    ) -> [Key: (InteractionFact, [OfferFact])] {
        var byInteraction: [Key: [Event]] = [:]
        for key in touched {
            byInteraction[key] = (cache.events(key) ?? readBack[key] ?? []).filter { $0.ts.millisecondsSinceEpoch <= t }
        }
        for e in current {
            guard let interaction = e.interaction else { continue }
            let key = Key(source: e.source, interaction: interaction)
            if byInteraction[key]?.contains(where: { $0.seq == e.seq }) == false { byInteraction[key]!.append(e) }
        }
        var computed: [Key: (InteractionFact, [OfferFact])] = [:]
        for (key, events) in byInteraction {
            if let r = InteractionTransform.compute(events) { computed[key] = r }
        }
        return computed
    }

    /// COPYs `rows` (text columns, nil for NULL) with `sql`.
    func copy(_ c: isolated PostgresConnection, _ sql: String, _ rows: [[String?]]) throws {
        guard !rows.isEmpty else { return }
        _ = try c.copyIn(sql) { sink in
            var row = CopyRow()
            for r in rows {
                row.reset()
                for v in r { row.append(v) }
                row.end()
                try sink.write(row)
            }
        }
    }

    /// An offer's row as the aggregates count it, with its dimension keys.
    func offerRow(_ o: OfferFact, _ keys: Dimensions) -> OfferRow {
        let slaMs = Int64(reporting.slaSeconds(queue: o.queue)) * 1000
        return OfferRow(
            hour: o.hour, offeredAt: o.offeredAt.millisecondsSinceEpoch, queueKey: keys.queue(o.queue),
            mediaKey: keys.media(o.media) ?? 0, outcome: o.outcome, waitMs: o.waitMs, talkMs: o.talkMs,
            withinSLA: o.outcome == .answered && (o.waitMs ?? .max) <= slaMs,
            abandonedShort: o.outcome == .abandoned && (o.waitMs ?? .max) <= intervals.shortAbandonMs,
            agentKey: o.agent.map(keys.agent),
            answeredAt: o.outcome == .answered ? o.offeredAt.millisecondsSinceEpoch + (o.waitMs ?? 0) : nil,
            holdMs: o.holdMs)
    }

    /// Writes the changed facts: new rows copied in, changed rows updated in place from a copy,
    /// vanished offers deleted; and the agents' state intervals.
    func writeFacts(
        _ c: isolated PostgresConnection, _ changes: FactChanges, _ states: [AgentStateFact], _ keys: Dimensions
    ) async throws {
        func ts(_ t: Timestamp?) -> String? { t?.rfc3339 }
        func key(_ k: Int64?) -> String? { k.map(String.init) }
        func interaction(_ f: InteractionFact) -> [String?] {
            [
                f.source, f.interaction, site, key(keys.media(f.media)), f.direction?.rawValue,
                key(f.firstQueue.map(keys.queue)), key(f.lastQueue.map(keys.queue)), key(f.agent.map(keys.agent)),
                f.createdAt.map { String($0.rfc3339.prefix(10)).replacingOccurrences(of: "-", with: "") },
                ts(f.createdAt), ts(f.answeredAt), ts(f.endedAt), f.outcome.rawValue, f.waitMs.map(String.init),
                String(f.talkMs), String(f.holdMs), String(f.transfers), f.firstAt.rfc3339,
            ]
        }
        func offer(_ o: OfferFact, _ row: OfferRow) -> [String?] {
            [
                o.source, String(o.seq), o.interaction, String(row.queueKey), key(keys.media(o.media)),
                o.offeredAt.rfc3339, Timestamp(millisecondsSinceEpoch: o.hour).rfc3339, o.outcome?.rawValue,
                o.waitMs.map(String.init), o.talkMs.map(String.init), row.withinSLA ? "t" : "f", key(row.agentKey),
                row.answeredAt.map { Timestamp(millisecondsSinceEpoch: $0).rfc3339 }, String(o.holdMs),
            ]
        }
        if !changes.movedInteractions.isEmpty {
            try await c.query(
                SQL.deleteInteractionKeys,
                [
                    PostgresArray.text(changes.movedInteractions.map(\.source)),
                    PostgresArray.text(changes.movedInteractions.map(\.interaction)),
                ])
        }
        try copy(c, SQL.copyInteractions, changes.insertInteractions.map(interaction))
        if !changes.updateInteractions.isEmpty {
            try copy(c, SQL.copyInteractionUpdates, changes.updateInteractions.map(interaction))
            try c.execute(SQL.updateInteractions)
        }
        try copy(c, SQL.copyOffers, changes.insertOffers.map(offer))
        if !changes.updateOffers.isEmpty {
            try copy(c, SQL.copyOfferUpdates, changes.updateOffers.map(offer))
            try c.execute(SQL.updateOffers)
        }
        for (source, gone) in Dictionary(grouping: changes.deleteOffers, by: \.source) {
            try await c.query(
                SQL.deleteOfferSeqs, [source, "{" + gone.map { String($0.seq) }.joined(separator: ",") + "}"])
        }
        try copy(
            c, SQL.copyStates,
            states.map { s in
                [
                    s.source, String(s.seq), String(keys.agent(s.agent)), s.state.rawValue, s.reason,
                    s.startedAt.rfc3339,
                    ts(s.endedAt), String(Timestamp(millisecondsSinceEpoch: s.day).rfc3339.prefix(10)),
                ]
            })
    }

    /// Moves `agg_queue_hourly` and `agg_agent_daily` by `deltas`; rows left at zero go.
    func applyDeltas(_ c: isolated PostgresConnection, _ deltas: AggregateDeltas) throws {
        let hourly = deltas.hourly.filter { $0.value != AggregateDeltas.Hourly() }
        let daily = deltas.daily.filter { $0.value != AggregateDeltas.Daily() }
        if !hourly.isEmpty {
            try copy(
                c, SQL.copyHourlyDelta,
                hourly.map { k, d in
                    [Timestamp(millisecondsSinceEpoch: k.hour).rfc3339, String(k.queueKey), String(k.mediaKey)]
                        + [
                            d.offered, d.answered, d.abandoned, d.withinSLA, d.waitSum, d.waitCount, d.talkSum,
                            d.talkCount,
                        ]
                        .map(String.init)
                })
            try c.execute(SQL.applyHourly)
        }
        if !daily.isEmpty {
            try copy(
                c, SQL.copyDailyDelta,
                daily.map { k, d in
                    [String(Timestamp(millisecondsSinceEpoch: k.day).rfc3339.prefix(10)), String(k.agentKey)]
                        + [d.answered, d.talkMs, d.holdMs, d.readyMs, d.notReadyMs].map(String.init)
                })
            try c.execute(SQL.applyDaily)
        }
    }

    static func offerRow(_ r: PostgresRow) throws -> OfferRow {
        OfferRow(
            hour: try r.decode(0, as: PostgresTimestamp.self).millisecondsSinceEpoch,
            offeredAt: try r.decode(10, as: PostgresTimestamp.self).millisecondsSinceEpoch,
            queueKey: try r.decode(1, as: Int64.self), mediaKey: try r.decode(2, as: Int64.self),
            outcome: try r.decode(3, as: String?.self).flatMap(OfferFact.Outcome.init(rawValue:)),
            waitMs: try r.decode(4, as: Int64?.self), talkMs: try r.decode(5, as: Int64?.self),
            withinSLA: r[6] == "t", abandonedShort: r[11] == "t", agentKey: try r.decode(7, as: Int64?.self),
            answeredAt: try r.decode(8, as: PostgresTimestamp?.self)?.millisecondsSinceEpoch,
            holdMs: try r.decode(9, as: Int64.self))
    }

    static func stateRow(_ r: PostgresRow) throws -> StateRow {
        StateRow(
            day: try r.decode(0, as: Int64.self) * 1000,
            startedAt: try r.decode(4, as: PostgresTimestamp.self).millisecondsSinceEpoch,
            agentKey: try r.decode(1, as: Int64.self),
            state: EventType(rawValue: try r.decode(2, as: String.self)) ?? .agentLogin, reason: r[5],
            durationMs: try r.decode(3, as: Int64?.self))
    }
}

/// The dimension keys a cycle's facts need: queues and agents inserted when new, dates too.
struct Dimensions: Sendable {
    var queues: [String: Int64] = [:]
    var agents: [String: Int64] = [:]
    var medias: [String: Int64] = [:]

    func queue(_ name: String) -> Int64 { queues[name]! }
    func agent(_ name: String) -> Int64 { agents[name]! }
    func media(_ m: Media?) -> Int64? { m.flatMap { medias[$0.rawValue] } }

    static func resolve(_ c: isolated PostgresConnection, queues: Set<String>, agents: Set<String>, days: Set<String>)
        async throws -> Dimensions
    {
        var d = Dimensions()
        for r in try await c.query(FactWriter.SQL.medias) { d.medias[r[0] ?? ""] = try r.decode(1, as: Int64.self) }
        if !queues.isEmpty {
            for r in try await c.query(FactWriter.SQL.queueKeys, [PostgresArray.text(queues)]) {
                d.queues[r[0] ?? ""] = try r.decode(1, as: Int64.self)
            }
        }
        if !agents.isEmpty {
            for r in try await c.query(FactWriter.SQL.agentKeys, [PostgresArray.text(agents)]) {
                d.agents[r[0] ?? ""] = try r.decode(1, as: Int64.self)
            }
        }
        if !days.isEmpty { try await c.query(FactWriter.SQL.dates, [PostgresArray.text(days)]) }
        return d
    }
}

/// Array literals for bound parameters (`$1::text[]`).
enum PostgresArray {
    static func text<S: Sequence>(_ values: S) -> String where S.Element == String {
        "{"
            + values.map { v in
                "\"" + v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                    + "\""
            }.joined(separator: ",") + "}"
    }
}

extension FactWriter {
    /// The statements of the transform; every value is a bound parameter or COPY data.
    enum SQL {
        /// The transform's working tables, emptied at each commit; and its plans. Every join of
        /// a cycle is a few thousand touched keys against tables of millions of rows: by index,
        /// one probe per key. A hash or merge join reads the whole table each cycle — a cost that
        /// grows with the mart — and the planner picks one as soon as the keys are a few percent
        /// of a table (a backlog's first cycles), so this transaction does not let it. Nor does it
        /// JIT-compile: a read-back of 30 000 index probes is estimated above `jit_above_cost`,
        /// and compiling it cost more than running it.
        static let temporaryTables = """
            SET LOCAL enable_hashjoin = off;
            SET LOCAL enable_mergejoin = off;
            SET LOCAL jit = off;
            CREATE TEMP TABLE IF NOT EXISTS touched_i (source text, interaction text, cached boolean)
                ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS held_i (source text, interaction text) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS touched_a (agent text, min_ts timestamptz, from_ts timestamptz)
                ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS hourly_delta (hour timestamptz, queue_key int, media_key smallint,
                offered bigint, answered bigint, abandoned bigint, within_sla bigint, wait_sum bigint,
                wait_count bigint, talk_sum bigint, talk_count bigint) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS interaction_upd (LIKE mart.fact_interaction) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS offer_upd (LIKE mart.fact_queue_offer) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS daily_delta (day date, agent_key int, answered bigint, talk_ms bigint,
                hold_ms bigint, ready_ms bigint, not_ready_ms bigint) ON COMMIT DELETE ROWS
            """
        static let eventColumns =
            "e.source, e.seq, e.ts, e.type, e.interaction, e.media, e.direction, e.queue, e.agent, e.reason"
        /// Events that waited for `T` (`$1`) and are complete now.
        static let pending =
            "SELECT source, interaction, agent, type, ts FROM mart.event WHERE NOT transformed AND ts <= $1"
        static let copyTouchedInteractions = "COPY touched_i (source, interaction, cached) FROM STDIN"
        /// The touched interactions the cache does not hold and the mart has events of: the
        /// others have no facts there (facts come only from the mart's events), and looking for
        /// them would probe every partition of each fact table.
        static let copyHeldInteractions = "COPY held_i (source, interaction) FROM STDIN"
        /// Every event the mart holds of the touched interactions the cache does not hold.
        /// (Per interaction, by its index — OFFSET 0 keeps the planner from flattening it into a
        /// join that reads every event when its statistics lag a burst of rows.)
        static let previousEvents = """
            SELECT \(eventColumns) FROM touched_i t CROSS JOIN LATERAL (
                SELECT * FROM mart.event x WHERE x.source = t.source AND x.interaction = t.interaction OFFSET 0) e
            WHERE NOT t.cached
            """
        static let markPendingTransformed =
            "UPDATE mart.event SET transformed = true WHERE NOT transformed AND ts <= $1"
        static let copyTouchedAgents = "COPY touched_a (agent, min_ts) FROM STDIN"
        /// Each touched agent is recomputed from its last transformed state change before its
        /// earliest new one: the intervals before that cannot change.
        static let agentsFrom = """
            UPDATE touched_a t SET from_ts = COALESCE(
                (SELECT max(e.ts) FROM mart.event e
                 WHERE e.agent = t.agent AND e.type LIKE 'agent.%' AND e.transformed AND e.ts < t.min_ts),
                t.min_ts);
            ANALYZE touched_a
            """
        /// Per agent, by its index: with the join flattened, a young mart's statistics made the
        /// planner materialize every agent event up to T and filter it once per touched agent
        /// (9 s a cycle at 10 k events/s).
        static let agentEvents = """
            SELECT \(eventColumns) FROM touched_a t CROSS JOIN LATERAL (
                SELECT * FROM mart.event x
                WHERE x.agent = t.agent AND x.type LIKE 'agent.%' AND x.ts >= t.from_ts AND x.ts <= $1 OFFSET 0) e
            """
        /// The facts of the touched interactions the cache does not hold: deleted, to be written again.
        static let deleteOffers = """
            DELETE FROM mart.fact_queue_offer f USING held_i t
            WHERE f.source = t.source AND f.interaction = t.interaction
            RETURNING f.hour, f.queue_key, COALESCE(f.media_key, 0), f.outcome, f.wait_ms, f.talk_ms, f.within_sla,
                      f.agent_key, f.answered_at, f.hold_ms, f.offered_at,
                      f.outcome = 'abandoned' AND f.wait_ms <= $1
            """
        static let deleteInteractions = """
            DELETE FROM mart.fact_interaction f USING held_i t
            WHERE f.source = t.source AND f.interaction = t.interaction
            """
        static let deleteStates = """
            DELETE FROM mart.fact_agent_state s USING mart.dim_agent a, touched_a t
            WHERE s.agent_key = a.agent_key AND a.agent = t.agent AND s.started_at >= t.from_ts
            RETURNING extract(epoch FROM s.day)::bigint, s.agent_key, s.state,
                      (extract(epoch FROM s.ended_at - s.started_at) * 1000)::bigint, s.started_at, s.reason
            """
        static let medias = "SELECT media, media_key FROM mart.dim_media"
        static let queueKeys = """
            WITH new AS (
                INSERT INTO mart.dim_queue (queue) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING queue, queue_key)
            SELECT queue, queue_key FROM new
            UNION ALL SELECT queue, queue_key FROM mart.dim_queue WHERE queue = ANY($1::text[])
            """
        static let agentKeys = """
            WITH new AS (
                INSERT INTO mart.dim_agent (agent) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING agent, agent_key)
            SELECT agent, agent_key FROM new
            UNION ALL SELECT agent, agent_key FROM mart.dim_agent WHERE agent = ANY($1::text[])
            """
        static let dates = """
            INSERT INTO mart.dim_date (date_key, day, year, month, day_of_month, day_of_week)
            SELECT to_char(d, 'YYYYMMDD')::int, d, extract(year FROM d), extract(month FROM d), extract(day FROM d),
                   extract(isodow FROM d)
            FROM unnest($1::date[]) d ON CONFLICT DO NOTHING
            """
        static let copyInteractions = """
            COPY mart.fact_interaction (source, interaction, site, media_key, direction, first_queue_key, last_queue_key,
                agent_key, created_date_key, created_at, answered_at, ended_at, outcome, wait_ms, talk_ms, hold_ms,
                transfers, first_at) FROM STDIN
            """
        static let copyOffers = """
            COPY mart.fact_queue_offer (source, seq, interaction, queue_key, media_key, offered_at, hour, outcome, wait_ms,
                talk_ms, within_sla, agent_key, answered_at, hold_ms) FROM STDIN
            """
        static let copyInteractionUpdates = """
            COPY interaction_upd (source, interaction, site, media_key, direction, first_queue_key, last_queue_key,
                agent_key, created_date_key, created_at, answered_at, ended_at, outcome, wait_ms, talk_ms, hold_ms,
                transfers, first_at) FROM STDIN
            """
        /// In place: the keys stay, so a row with room on its page is updated without its indexes
        /// (a row whose first event changed moves to that event's partition).
        static let updateInteractions = """
            ANALYZE interaction_upd;
            UPDATE mart.fact_interaction f SET site = u.site, media_key = u.media_key, direction = u.direction,
                first_queue_key = u.first_queue_key, last_queue_key = u.last_queue_key, agent_key = u.agent_key,
                created_date_key = u.created_date_key, created_at = u.created_at, answered_at = u.answered_at,
                ended_at = u.ended_at, outcome = u.outcome, wait_ms = u.wait_ms, talk_ms = u.talk_ms,
                hold_ms = u.hold_ms, transfers = u.transfers, first_at = u.first_at
            FROM interaction_upd u
            WHERE f.source = u.source AND f.interaction = u.interaction AND f.first_at = u.first_at
            """
        static let copyOfferUpdates = """
            COPY offer_upd (source, seq, interaction, queue_key, media_key, offered_at, hour, outcome, wait_ms,
                talk_ms, within_sla, agent_key, answered_at, hold_ms) FROM STDIN
            """
        static let updateOffers = """
            ANALYZE offer_upd;
            UPDATE mart.fact_queue_offer f SET queue_key = u.queue_key, media_key = u.media_key,
                offered_at = u.offered_at, hour = u.hour, outcome = u.outcome, wait_ms = u.wait_ms,
                talk_ms = u.talk_ms, within_sla = u.within_sla, agent_key = u.agent_key, answered_at = u.answered_at,
                hold_ms = u.hold_ms
            FROM offer_upd u WHERE f.source = u.source AND f.seq = u.seq AND f.offered_at = u.offered_at
            """
        static let deleteInteractionKeys = """
            DELETE FROM mart.fact_interaction f USING unnest($1::text[], $2::text[]) k(source, interaction)
            WHERE f.source = k.source AND f.interaction = k.interaction
            """
        static let deleteOfferSeqs = "DELETE FROM mart.fact_queue_offer WHERE source = $1 AND seq = ANY($2::bigint[])"
        static let copyStates =
            "COPY mart.fact_agent_state (source, seq, agent_key, state, reason, started_at, ended_at, day) FROM STDIN"
        static let copyHourlyDelta = "COPY hourly_delta FROM STDIN"
        static let applyHourly = """
            INSERT INTO mart.agg_queue_hourly AS g (hour, queue_key, media_key, offered, answered, abandoned,
                answered_within_sla, wait_ms_sum, wait_count, talk_ms_sum, talk_count)
            SELECT hour, queue_key, media_key, offered, answered, abandoned, within_sla, wait_sum, wait_count, talk_sum,
                talk_count FROM hourly_delta
            ON CONFLICT (hour, queue_key, media_key) DO UPDATE SET
                offered = g.offered + EXCLUDED.offered, answered = g.answered + EXCLUDED.answered,
                abandoned = g.abandoned + EXCLUDED.abandoned,
                answered_within_sla = g.answered_within_sla + EXCLUDED.answered_within_sla,
                wait_ms_sum = g.wait_ms_sum + EXCLUDED.wait_ms_sum, wait_count = g.wait_count + EXCLUDED.wait_count,
                talk_ms_sum = g.talk_ms_sum + EXCLUDED.talk_ms_sum, talk_count = g.talk_count + EXCLUDED.talk_count;
            DELETE FROM mart.agg_queue_hourly g USING hourly_delta d
            WHERE g.hour = d.hour AND g.queue_key = d.queue_key AND g.media_key = d.media_key AND g.offered = 0
            """
        static let copyDailyDelta = "COPY daily_delta FROM STDIN"
        static let applyDaily = """
            INSERT INTO mart.agg_agent_daily AS g (day, agent_key, answered, talk_ms, hold_ms, ready_ms, not_ready_ms)
            SELECT day, agent_key, answered, talk_ms, hold_ms, ready_ms, not_ready_ms FROM daily_delta
            ON CONFLICT (day, agent_key) DO UPDATE SET
                answered = g.answered + EXCLUDED.answered, talk_ms = g.talk_ms + EXCLUDED.talk_ms,
                hold_ms = g.hold_ms + EXCLUDED.hold_ms, ready_ms = g.ready_ms + EXCLUDED.ready_ms,
                not_ready_ms = g.not_ready_ms + EXCLUDED.not_ready_ms;
            DELETE FROM mart.agg_agent_daily g USING daily_delta d
            WHERE g.day = d.day AND g.agent_key = d.agent_key
              AND (g.answered, g.talk_ms, g.hold_ms, g.ready_ms, g.not_ready_ms) = (0, 0, 0, 0, 0)
            """
    }
}
