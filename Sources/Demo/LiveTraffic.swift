import EventModel
import Foundation
import Synchronization
import Topology
import Traffic

/// Contact-center traffic in real time for the demo, posted the way the contract says a source
/// sends it (each batch to both collectors of its HA pair), with the ledger of what was
/// acknowledged: the demo's reconciliation compares the marts with it.
public final class LiveTraffic: Sendable {
    struct State {
        var generators: [String: TrafficGenerator] = [:]
        var heads: [String: Event] = [:]
        /// Acknowledged by at least one collector of the pair: source → seq → event time (ms).
        var acked: [String: [Int64: Int64]] = [:]
        /// Every event posted (recorded before the request goes out): what may be in a mart.
        var posted: [String: Set<Int64>] = [:]
        var stopped: Set<String> = []
        var batches = 0
    }

    let topology: Topology
    let poster = Poster()
    let state = Mutex(State())

    /// - Parameters:
    ///   - arrivalsPerSecond: interactions a second at each source (each makes a handful of
    ///     events over its life: queued, offered, answered, held, ended…).
    public init(topology: Topology, sources: [String], arrivalsPerSecond: Double, seed: UInt64) {
        self.topology = topology
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        state.withLock { s in
            for (i, source) in sources.enumerated() {
                var g = TrafficGenerator(
                    source: source, seed: seed + UInt64(i), start: now, firstSeq: now * 1000,
                    profile: .staffed(arrivalsPerSecond: arrivalsPerSecond))
                s.heads[source] = g.next()
                s.generators[source] = g
            }
        }
    }

    /// The calls at a failed site stop: its sources send nothing more.
    public func stop(source: String) { state.withLock { _ = $0.stopped.insert(source) } }

    /// A stopped source sends again, from now on (what fell due while it was stopped is skipped).
    public func resume(source: String) {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        state.withLock { s in
            guard s.stopped.remove(source) != nil else { return }
            while let e = s.heads[source], e.ts.millisecondsSinceEpoch <= now {
                s.heads[source] = s.generators[source]!.next()
            }
        }
    }

    /// Posts everything due every 100 ms until cancelled.
    public func run() async {
        while !Task.isCancelled {
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let due: [(String, [Event])] = state.withLock { s in
                var out: [(String, [Event])] = []
                for source in s.generators.keys.sorted() where !s.stopped.contains(source) {
                    var events: [Event] = []
                    while let e = s.heads[source], e.ts.millisecondsSinceEpoch <= now {
                        events.append(e)
                        if e.type != .heartbeat { s.posted[source, default: []].insert(e.seq) }
                        s.heads[source] = s.generators[source]!.next()
                    }
                    if !events.isEmpty { out.append((source, events)) }
                }
                return out
            }
            await withTaskGroup(of: Void.self) { group in
                for (source, events) in due { group.addTask { await self.send(source, events) } }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    func send(_ source: String, _ events: [Event]) async {
        var body: [UInt8] = []
        for e in events {
            e.appendJSON(to: &body)
            body.append(10)
        }
        let payload = body
        let urls = topology.collectors.filter { $0.source == source }.map { "http://\($0.listen)" }
        // Each collector of the pair gets the batch; a short patience: a collector whose site is
        // down or cut off does not answer, and the other one's 200 is the acknowledgement.
        let answers = await withTaskGroup(of: Bool.self) { group in
            for url in urls {
                group.addTask { ((try? await self.poster.post(payload, to: url, patience: 3)) ?? 0) == 200 }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        guard answers > 0 else { return }  // never acknowledged: it may or may not be stored
        state.withLock { s in
            s.batches += 1
            for e in events where e.type != .heartbeat {
                s.acked[source, default: [:]][e.seq] = e.ts.millisecondsSinceEpoch
            }
        }
    }

    /// Acknowledged events (heartbeats aside) with times at or before `cutoff` (ms): source → seqs.
    public func acknowledged(through cutoff: Int64) -> [String: [Int64: Int64]] {
        state.withLock { s in s.acked.mapValues { $0.filter { $0.value <= cutoff } } }
    }

    /// Every event posted so far (acknowledged or not, answered or still in flight).
    public func posted() -> [String: Set<Int64>] { state.withLock { $0.posted } }

    /// What the collectors answered, over all of them: 503s (back-pressure), other errors, and
    /// attempts nobody answered (a site down, a link cut).
    public var answers: (backPressure: Int, errors: Int, unanswered: Int) {
        poster.results.values.reduce((0, 0, 0)) { ($0.0 + $1.backPressure, $0.1 + $1.errors, $0.2 + $1.unanswered) }
    }

    public var acknowledgedCount: Int { state.withLock { $0.acked.values.reduce(0) { $0 + $1.count } } }

    /// What the reporting mart must hold through `cutoff`: what was acknowledged — except a
    /// failed site's sources, whose events up to the failure are what the surviving IDBs hold
    /// (and, once they send again after return to normal, what was acknowledged since).
    /// - Returns: the expected events (source → seq → time, ms), the surviving IDBs' seqs of the
    ///   failed site's sources (sent, whatever the ledger says), and how many acknowledged events
    ///   only the failed site's disks held (CONTRACT 6.1's one allowed loss).
    func expectations(
        _ topology: Topology, through cutoff: Int64, failedSite: String?, failedAt: Int64, resumedAt: Int64? = nil
    ) async throws -> (expected: [String: [Int64: Int64]], held: [String: Set<Int64>], lostWithSite: Int) {
        var expected = acknowledged(through: cutoff)
        var heldKeys: [String: Set<Int64>] = [:]
        var lostWithSite = 0
        guard let failedSite else { return (expected, heldKeys, 0) }
        for source in topology.sources where source.site == failedSite {
            let held = try await DemoStory.survivingIDBEvents(topology, source: source.name, failed: failedSite)
            let acked = expected[source.name] ?? [:]
            let before = held.filter { $0.value <= min(failedAt, cutoff) }
            lostWithSite += acked.filter { $0.value <= failedAt && before[$0.key] == nil }.count
            let since = resumedAt.map { r in acked.filter { $0.value >= r } } ?? [:]
            expected[source.name] = before.merging(since) { a, _ in a }
            heldKeys[source.name, default: []].formUnion(held.keys)
        }
        return (expected, heldKeys, lostWithSite)
    }
}
