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
        for w in try await ControlStore(mart).watermarks() {
            if let idb = settings.idbs.first(where: {
                $0.site == w.site && $0.database == w.database && $0.source == w.source
            }) {
                out[idb] = w.lastIngestID
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
        let store = ControlStore(c)
        for b in batches {
            try await store.recordWatermark(
                site: b.idb.site, database: b.idb.database, source: b.idb.source, lastIngestID: b.lastIngestID,
                maxSeq: b.maxSeq, availableThrough: b.availableThrough)
        }
        try await store.recordCycle(site: settings.site, completeThrough: decision.completeThrough)
        phases.lap("watermarks")
        return outcome
    }

    /// The sources as the mart recorded them, locked for this cycle.
    func storedSources(_ c: isolated PostgresConnection) async throws -> [String: CompletenessWatermark.Stored] {
        var out: [String: CompletenessWatermark.Stored] = [:]
        for r in try await ControlStore(c).sourcesForUpdate() {
            var window: CompletenessWatermark.DiscardWindow?
            if let after = r.discardAfter, let before = r.discardBefore { window = .init(after: after, before: before) }
            out[r.source] = .init(
                availableThrough: r.availableThrough, lastAdvancedAt: r.lastAdvancedAt, state: r.state,
                discardWindow: window)
        }
        return out
    }

    /// Each source's state, availability and reported completeness; the gaps opened or closed.
    func writeSources(
        _ c: isolated PostgresConnection, _ d: CompletenessWatermark.Decision,
        stored: [String: CompletenessWatermark.Stored]
    ) async throws -> [(String, String, SourceState)] {
        let store = ControlStore(c)
        for action in d.gapActions {
            switch action {
            case .open(let source, let from, let reason):
                try await store.openGap(source: source, from: from, reason: reason)
            case .closeDiscarding(let source, let to, let window):
                try await store.closeGap(source: source, to: to, backfilled: false)
                if let window {
                    try await store.setDiscardWindow(source: source, after: window.after, before: window.before)
                }
            case .closeBackfilled(let source, let to):
                try await store.closeGap(source: source, to: to, backfilled: true)
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
            try await store.recordSource(
                a.source, site: site, state: state, completeThrough: d.reportedThrough(a.source),
                lastAdvancedAt: a.lastAdvancedAt, availableThrough: a.availableThrough)
        }
        return transitions
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
