import Control
import EventModel
import Foundation
import PostgresClient
import Topology

/// Everything one cycle writes to the mart, in one transaction: the fencing check, each source's
/// state and gaps, the event layer (through ``PairMerger``), the facts and aggregates of what is
/// complete (``FactWriter``), the IDB watermarks and the extractor's row. SIGKILL anywhere and the
/// transaction rolls back: the watermarks and the facts they produced move together.
struct MartWriter: Sendable {
    let settings: ExtractorSettings

    /// The mart's control row as a cycle starts: whether and at which epoch it may write.
    struct Control: Sendable, Equatable {
        var stamp: CycleStamp
        var retiredIDBs: Set<String>
        var epoch: Int64 { stamp.epoch }
    }

    /// A cycle that found the mart's epoch or role changed under it (a procedure step ran): it
    /// rolls back, and the next cycle starts from the new state.
    struct Superseded: Error, CustomStringConvertible {
        var description: String
    }

    /// What a committed cycle did.
    struct Outcome: Sendable {
        var extracted = 0
        var interactions = 0
        var decision: CompletenessWatermark.Decision
        /// Sources whose state changed: (source, before, after).
        var transitions: [(String, String, SourceState)] = []
        /// What the interaction cache learns once the cycle has committed.
        var cache = InteractionCache.Update()
    }

    static func loadControl(_ mart: PostgresConnection, defaultRole: Role) async throws -> Control {
        let store = ControlStore(mart)
        guard var stamp = try await store.stamp(forShare: false) else {
            throw Superseded(description: "control.deployment is empty; run bcpipe db migrate")
        }
        stamp.role = stamp.role ?? defaultRole
        return Control(stamp: stamp, retiredIDBs: try await store.retiredIDBs())
    }

    /// Each IDB's watermark (`last_ingest_id`).
    func watermarks(_ mart: PostgresConnection) async throws -> [ExtractorSettings.IDB: Int64] {
        var out: [ExtractorSettings.IDB: Int64] = [:]
        for row in try await mart.query(SQL.watermarks) {
            let (site, db, source) = (row[0], row[1], row[2])
            if let idb = settings.idbs.first(where: { $0.site == site && $0.database == db && $0.source == source }) {
                out[idb] = try row.decode(3, as: Int64.self)
            }
        }
        return out
    }

    /// Writes one cycle in `c`'s transaction. Throws ``Superseded`` when the control row changed
    /// since `control` was read (the caller rolls back).
    func commit(
        _ c: isolated PostgresConnection, control: Control, batches: [IDBReader.Batch], merged: PairMerger.Merged,
        cache: InteractionCache, now: Int64, phases: inout PhaseClock
    ) async throws -> Outcome {
        // Held FOR SHARE until commit: a procedure step that changes it waits for this cycle, and
        // a cycle that started under another epoch or role does not commit.
        var held = try await ControlStore(c).stamp(forShare: true)
        if held?.role == nil { held?.role = settings.role }
        guard DeploymentMachine.mayCommit(started: control.stamp, now: held) else {
            throw Superseded(description: "the mart's epoch or role changed during the cycle; starting over")
        }

        let stored = try await storedSources(c)
        var fresh: [String: Int64] = [:]
        for b in batches {
            if let a = b.availableThrough { fresh[b.idb.source] = max(fresh[b.idb.source] ?? a, a) }
        }
        let decision = CompletenessWatermark.decide(
            sources: settings.sources.map(\.name), stored: stored, fresh: fresh, now: now,
            thresholdMs: settings.thresholdMs, lateData: settings.lateData)
        var outcome = Outcome(decision: decision)
        outcome.transitions = try await writeSources(c, decision, stored: stored)
        phases.lap("sources")

        // late_data: discard — what a stuck source sends inside its window stays lost.
        var events = merged
        if !decision.discardWindows.isEmpty {
            let keep = merged.events.indices.filter { i in
                let e = merged.events[i]
                return decision.discardWindows[e.source]?.discards(e.ts.millisecondsSinceEpoch) != true
            }
            events.events = keep.map { merged.events[$0] }
            events.attrs = keep.map { merged.attrs[$0] }
        }
        if let t = decision.completeThrough {
            let facts = FactWriter(site: settings.site, reporting: settings.reporting)
            let written = try await facts.write(c, events, through: t, cache: cache, phases: &phases)
            outcome.extracted = written.extracted
            outcome.interactions = written.touched.count
            outcome.cache = InteractionCache.Update(
                readBack: written.readBack, inserted: events.events, touched: written.touched, facts: written.facts,
                through: t)
        } else {
            outcome.extracted = try PairMerger.insert(events, into: c, completeThrough: nil)
            outcome.cache.inserted = events.events
            phases.lap("events")
        }
        for b in batches {
            try await c.query(
                SQL.upsertWatermark,
                nullable: [
                    b.idb.site, b.idb.database, b.idb.source, b.lastIngestID, b.maxSeq, Self.ts(b.availableThrough),
                ])
        }
        try await c.query(SQL.upsertExtractor, nullable: [settings.site, Self.ts(decision.completeThrough)])
        phases.lap("watermarks")
        return outcome
    }

    /// The sources as the mart recorded them, locked for this cycle.
    func storedSources(_ c: isolated PostgresConnection) async throws -> [String: CompletenessWatermark.Stored] {
        var out: [String: CompletenessWatermark.Stored] = [:]
        for row in try await c.query(SQL.sourcesForUpdate) {
            let ms = { (i: Int) throws -> Int64? in try row.decode(i, as: Double?.self).map { Int64($0) } }
            var window: CompletenessWatermark.DiscardWindow?
            if let after = try ms(4), let before = try ms(5) { window = .init(after: after, before: before) }
            out[try row.decode(0, as: String.self)] = .init(
                availableThrough: try ms(1), lastAdvancedAt: try ms(2), state: try row.decode(3, as: String.self),
                discardWindow: window)
        }
        return out
    }

    /// Each source's state, availability and reported completeness; the gaps opened or closed.
    func writeSources(
        _ c: isolated PostgresConnection, _ d: CompletenessWatermark.Decision,
        stored: [String: CompletenessWatermark.Stored]
    ) async throws -> [(String, String, SourceState)] {
        for action in d.gapActions {
            switch action {
            case .open(let source, let from, let reason):
                try await c.query(SQL.openGap, nullable: [source, Self.ts(from), reason])
            case .closeDiscarding(let source, let to, let window):
                try await c.query(SQL.closeGap, nullable: [source, Self.ts(to)])
                if let window {
                    try await c.query(
                        SQL.setDiscardWindow, nullable: [source, Self.ts(window.after), Self.ts(window.before)])
                }
            case .closeBackfilled(let source, let to):
                try await c.query(SQL.closeGapBackfilled, nullable: [source, Self.ts(to)])
            }
        }
        var transitions: [(String, String, SourceState)] = []
        for a in d.availability {
            let state = d.states[a.source]!
            let before = stored[a.source]?.state ?? "new"
            if before != state.rawValue && !(before == "new" && state == .current) {
                transitions.append((a.source, before, state))
            }
            let site = settings.sources.first { $0.name == a.source }?.site ?? settings.site
            try await c.query(
                SQL.upsertSource,
                nullable: [
                    a.source, site, state.rawValue, Self.ts(d.reportedThrough(a.source)), Self.ts(a.lastAdvancedAt),
                    Self.ts(a.availableThrough),
                ])
        }
        return transitions
    }

    static func ts(_ ms: Int64?) -> PostgresTimestamp? { ms.map { PostgresTimestamp(millisecondsSinceEpoch: $0) } }
}

extension MartWriter {
    /// The statements of ``MartWriter``; every value is a bound parameter.
    enum SQL {
        static let watermarks = "SELECT idb_site, idb_database, source, last_ingest_id FROM control.watermark"
        static let sourcesForUpdate = """
            SELECT source, extract(epoch FROM COALESCE(available_through, complete_through)) * 1000,
                   extract(epoch FROM last_advanced_at) * 1000, state,
                   extract(epoch FROM discard_after) * 1000, extract(epoch FROM discard_before) * 1000
            FROM control.source_state FOR UPDATE
            """
        static let openGap = "INSERT INTO control.data_gaps (source, gap_from, reason) VALUES ($1, $2, $3)"
        static let closeGap = "UPDATE control.data_gaps SET gap_to = $2 WHERE source = $1 AND gap_to IS NULL"
        static let closeGapBackfilled =
            "UPDATE control.data_gaps SET gap_to = $2, backfilled_at = now() WHERE source = $1 AND gap_to IS NULL"
        static let setDiscardWindow =
            "UPDATE control.source_state SET discard_after = $2, discard_before = $3 WHERE source = $1"
        static let upsertSource = """
            INSERT INTO control.source_state
                (source, site, state, complete_through, last_advanced_at, available_through, stuck_since)
            VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $3 = 'stuck' THEN now() END)
            ON CONFLICT (source) DO UPDATE SET state = EXCLUDED.state, complete_through = EXCLUDED.complete_through,
                last_advanced_at = EXCLUDED.last_advanced_at, available_through = EXCLUDED.available_through,
                stuck_since = CASE WHEN EXCLUDED.state = 'stuck'
                                   THEN COALESCE(control.source_state.stuck_since, now()) END,
                updated_at = now()
            """
        static let upsertWatermark = """
            INSERT INTO control.watermark (idb_site, idb_database, source, last_ingest_id, max_seq, available_through)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (idb_site, idb_database, source) DO UPDATE SET last_ingest_id = EXCLUDED.last_ingest_id,
                max_seq = COALESCE(EXCLUDED.max_seq, control.watermark.max_seq),
                available_through = COALESCE(EXCLUDED.available_through, control.watermark.available_through),
                updated_at = now()
            """
        static let upsertExtractor = """
            INSERT INTO control.extractor (site, epoch, complete_through, cycles)
            VALUES ($1, (SELECT epoch FROM control.deployment), $2, 1)
            ON CONFLICT (site) DO UPDATE SET epoch = EXCLUDED.epoch, complete_through = EXCLUDED.complete_through,
                cycles = control.extractor.cycles + 1, updated_at = now()
            """
    }
}

/// How long each phase of a cycle took (seconds), in order.
struct PhaseClock: Sendable {
    private(set) var laps: [(String, Double)] = []
    private var mark = Date()

    mutating func lap(_ phase: String) {
        let now = Date()
        laps.append((phase, now.timeIntervalSince(mark)))
        mark = now
    }
}
