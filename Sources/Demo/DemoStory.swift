import Control
import Coordinator
import Foundation
import Lab
import PostgresClient
import Synchronization
import Topology

/// `bcpipe demo`: the business-continuity story of CONTRACT 7 played on a local two-site lab with
/// live traffic, act by act, each ending with a reconciliation computed from the real databases
/// and checked against what the act promises.
public struct DemoStory: Sendable {
    public struct Act: Codable, Sendable {
        public var number: Int
        public var title: String
        public var started: Double  // seconds since the demo started
        public var ended: Double
        public var phase: String
        public var did: [String]
        public var reconciliation: Reconciliation?
        public var problems: [String]
        public var ok: Bool { problems.isEmpty }
    }

    /// What the sampler saw every second: for the run report's charts.
    public struct Sample: Codable, Sendable {
        public var t: Double
        public var phase: String
        /// Collector → queued events.
        public var queues: [String: Int]
        /// Source → extraction lag (s) in the reporting mart.
        public var lags: [String: Double]
        /// Now minus the reporting mart's completeness watermark (s).
        public var freshness: Double?
    }

    public struct Result: Codable, Sendable {
        public var startedAt: String
        public var seconds: Double
        public var mode: String
        public var stuckThreshold: Int
        public var acts: [Act]
        public var samples: [Sample]
        public var reportingSite: String?
        public var ok: Bool { acts.allSatisfy(\.ok) }
    }

    public var lab: LocalLab
    public var options: LocalLab.Options
    /// Act lengths in seconds (shorter in tests).
    public var normalSeconds = 20.0
    public var shortOutageSeconds = 8.0
    public var arrivalsPerSecond = 3.0
    public var say: @Sendable (String) -> Void

    public init(lab: LocalLab, options: LocalLab.Options, say: @escaping @Sendable (String) -> Void) {
        self.lab = lab
        self.options = options
        self.say = say
    }

    final class Recorder: Sendable {
        let acts = Mutex<[Act]>([])
        let samples = Mutex<[Sample]>([])
    }

    public func run() async throws -> Result {
        let t0 = Date()
        let recorder = Recorder()
        let threshold = Double(options.stuckThreshold)
        say("== act 0: bringing up the two-site lab (\(options.mode.rawValue), stuck threshold \(Int(threshold)) s)")
        try await lab.up(options)
        let observer = try Topology.load(path: lab.topologyPath)
        let traffic = LiveTraffic(
            topology: observer, sources: observer.sources.map(\.name), arrivalsPerSecond: arrivalsPerSecond, seed: 7)
        let trafficTask = Task { await traffic.run() }
        defer { trafficTask.cancel() }
        let sampler = Task { await Self.sample(observer, since: t0, into: recorder) }
        defer { sampler.cancel() }

        var number = 0
        func act(_ title: String, _ body: (inout Act) async throws -> Void) async throws {
            number += 1
            say("")
            say("== act \(number): \(title)")
            var a = Act(
                number: number, title: title, started: Date().timeIntervalSince(t0), ended: 0, phase: "", did: [],
                problems: [])
            try await body(&a)
            a.ended = Date().timeIntervalSince(t0)
            a.phase = await DeploymentStatus.gather(observer).phase?.rawValue ?? "?"
            say("   phase \(a.phase)")
            if let r = a.reconciliation { say("   reconciliation (\(r.mart), through \(r.cutoff)): \(r.line)") }
            say(a.ok ? "   ✓ as promised" : "   ✗ NOT as promised: \(a.problems.joined(separator: "; "))")
            recorder.acts.withLock { $0.append(a) }
        }
        func did(_ a: inout Act, _ what: String) {
            say("   \(what)")
            a.did.append(what)
        }
        /// Runs a procedure and records the steps it reported (not its progress lines) as the act's.
        func procedure(
            _ a: inout Act, _ command: ProcedureKind, _ run: (@escaping @Sendable (String) -> Void) async throws -> Void
        ) async throws {
            let lines = Mutex<[String]>([])
            try await run { line in lines.withLock { $0.append(line) } }
            for l in lines.withLock({ $0 }) where !l.hasSuffix("…") {
                did(&a, "\(command.rawValue): \(l.trimmingCharacters(in: .whitespaces))")
            }
        }
        /// Reconciles the reporting mart through now (minus a moment for requests in flight).
        func reconcile(_ a: inout Act, reporting: String, failed: String? = nil) async throws -> Reconciliation {
            try await Task.sleep(for: .seconds(1))
            let cutoff = Int64(Date().timeIntervalSince1970 * 1000) - 500
            let (expected, heldKeys, lostWithSite) = try await traffic.expectations(
                observer, through: cutoff, failedSite: failed, failedAt: cutoff)
            let site = observer.site(named: reporting)!
            var r = try await PostgresConnection.with(
                PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
            ) { mart in
                try await Reconciliation.run(
                    mart: mart, martName: "\(reporting)/mart", writer: reporting, expected: expected,
                    sentAtAll: { traffic.posted().merging(heldKeys) { $0.union($1) } },
                    cutoff: cutoff, slaMs: Int64(observer.reporting.slaSeconds) * 1000)
            }
            r.lostWithFailedSite = lostWithSite
            if r.lost > 0 { a.problems.append("\(r.lost) acknowledged events missing outside any known gap") }
            if r.miscounted.total > 0 {
                a.problems.append(
                    "report rows differ from a recount of the events: queue_hourly \(r.miscounted.queueHourly), agent_daily \(r.miscounted.agentDaily), interactions \(r.miscounted.interactions)"
                )
            }
            if r.unexpected > 0 { a.problems.append("\(r.unexpected) events never sent") }
            if let i = r.incomplete { a.problems.append(i) }
            if r.expected == 0 { a.problems.append("no traffic reached the mart") }
            a.reconciliation = r
            return r
        }

        try await act("normal two-site operation") { a in
            did(&a, "traffic at \(observer.sources.count) sources, each sent to both collectors of its HA pair")
            try await Task.sleep(for: .seconds(normalSeconds))
            let r = try await reconcile(&a, reporting: "site1")
            if !r.gaps.isEmpty { a.problems.append("a gap in normal operation") }
        }

        try await act(
            "WAN outage shorter than the stuck threshold (\(Int(shortOutageSeconds)) s < \(Int(threshold)) s)"
        ) {
            a in
            try lab.setLink("site1", "site2", .blackhole)
            did(&a, "WAN site1 ↔ site2 cut (blackhole): the -b collectors queue on disk, extraction waits")
            try await Task.sleep(for: .seconds(shortOutageSeconds))
            try lab.setLink("site1", "site2", .up)
            did(&a, "WAN restored: the queues drain, extraction goes on")
            try await Self.waitForDrainedQueues(observer)
            let r = try await reconcile(&a, reporting: "site1")
            if !r.gaps.isEmpty { a.problems.append("a gap after an outage shorter than the threshold") }
        }

        try await act("WAN outage longer than the threshold (\(Int(threshold + 12)) s > \(Int(threshold)) s)") { a in
            try lab.setLink("site1", "site2", .blackhole)
            did(&a, "WAN cut again, for longer than the threshold")
            let cut = Date()
            // The gap is recorded once a source's availability has not advanced for the threshold;
            // an extraction cycle that meets the blackhole waits out its timeouts (15 s) before
            // it sees that. Wait for the condition, not for a fixed time.
            let patience = threshold + 60
            var during: [Reconciliation.Gap] = []
            do {
                try await Self.waitUntil(seconds: patience) {
                    during = try await Self.gaps(observer, site: "site1")
                    return during.contains { !$0.backfilled }
                }
                did(
                    &a,
                    "the mart reports the gap \(Int(Date().timeIntervalSince(cut))) s after the cut: \(during.filter { !$0.backfilled }.map { "\($0.source) from \($0.from)" }.joined(separator: ", ")); the other source goes on"
                )
            } catch is DemoError {
                a.problems.append("no gap reported within \(Int(patience)) s of outage")
            }
            // From site2, site1 looks gone; an operator declares it failed. The witness, which
            // still reaches site1, stops them: a partition is not a disaster.
            if let refusal = try await TemptedOperator.declare("site1", from: "site2", lab: lab, actor: "bcpipe demo") {
                did(&a, "dr declare site1 from site2 during the cut: refused (\(refusal.rule)): \(refusal.message)")
                if refusal.rule != "witness-reaches-failed-site" {
                    a.problems.append("dr declare during the cut was refused by \(refusal.rule), not by the witness")
                }
            } else {
                a.problems.append("dr declare during a partition promoted site2's mart: two writable reporting marts")
            }
            // Longer than the threshold in any case, so the late data is older than it.
            let outage = Date().timeIntervalSince(cut)
            if outage < threshold + 12 { try await Task.sleep(for: .seconds(threshold + 12 - outage)) }
            try lab.setLink("site1", "site2", .up)
            did(&a, "WAN restored: queues drain, the late data is backfilled (late_data: \(options.lateData.rawValue))")
            try await Self.waitForDrainedQueues(observer)
            try await Self.waitUntil(seconds: 120) {
                try await Self.gaps(observer, site: "site1").allSatisfy(\.backfilled)
            }
            let r = try await reconcile(&a, reporting: "site1")
            if r.gaps.isEmpty || !r.gaps.allSatisfy(\.backfilled) { a.problems.append("the gap was not backfilled") }
            if r.inKnownGaps > 0 { a.problems.append("\(r.inKnownGaps) events still inside the gap") }
        }

        try await act("site 1 fails; disaster recovery onto site 2") { a in
            try lab.failSite("site1")
            for s in observer.sources where s.site == "site1" { traffic.stop(source: s.name) }
            did(&a, "site1 lost: its server and processes killed; its calls stop")
            let survivorView = try Topology.load(path: lab.topologyPath(site: "site2"))
            try await procedure(&a, .drDeclare) { say in
                _ = try await DisasterRecovery(
                    topology: survivorView, failedSite: "site1", confirmSiteDown: true, dryRun: false,
                    actor: "bcpipe demo", say: say
                ).run()
            }
            _ = try await reconcile(&a, reporting: "site2", failed: "site1")
        }

        try await act("emergency operation on site 2") { a in
            did(&a, "site2 alone: its sources reported, site1's up to the failure (the halves site2's IDBs hold)")
            try await Task.sleep(for: .seconds(normalSeconds / 2))
            _ = try await reconcile(&a, reporting: "site2", failed: "site1")
        }

        try await act("return to normal with a replacement site (site3)") { a in
            _ = try await lab.addSite("site3", options: options)
            did(&a, "site3 provisioned: an empty server, databases migrated, processes started")
            let view = try Topology.load(path: lab.topologyPath(site: "site2"))
            try await procedure(&a, .rtnStart) { say in
                _ = try await ReturnToNormal(
                    topology: view, site: "site3", active: "site2", dryRun: false, actor: "bcpipe demo", say: say
                ).run()
            }
            _ = try await reconcile(&a, reporting: "site2", failed: "site1")
        }

        try await act("normal again: site2 active, site3 its standby") { a in
            try await Task.sleep(for: .seconds(normalSeconds / 2))
            _ = try await reconcile(&a, reporting: "site2", failed: "site1")
            let view = try Topology.load(path: lab.topologyPath)
            let digests = try await Self.martDigest(view, "site2") == Self.martDigest(view, "site3")
            if digests {
                did(
                    &a, "site3's mart matches site2's row for row (events, interactions, queue_hourly, queue_intervals)"
                )
            } else {
                // The standby may be a moment behind: give it a few seconds.
                try await Self.waitUntil(seconds: 30) {
                    try await Self.martDigest(view, "site2") == Self.martDigest(view, "site3")
                }
                did(
                    &a, "site3's mart matches site2's row for row (events, interactions, queue_hourly, queue_intervals)"
                )
            }
        }

        trafficTask.cancel()
        sampler.cancel()
        let final = await DeploymentStatus.gather(try Topology.load(path: lab.topologyPath))
        return Result(
            startedAt: ISO8601DateFormatter().string(from: t0), seconds: Date().timeIntervalSince(t0),
            mode: options.mode.rawValue, stuckThreshold: options.stuckThreshold, acts: recorder.acts.withLock { $0 },
            samples: recorder.samples.withLock { $0 }, reportingSite: final.reportingSite)
    }

    static func sample(_ topology: Topology, since t0: Date, into recorder: Recorder) async {
        while !Task.isCancelled {
            let s = await DeploymentStatus.gather(topology)
            let reporting = s.sites.first { $0.name == s.reportingSite }
            var lags: [String: Double] = [:]
            for src in reporting?.sources ?? [] where src.state != .retired { lags[src.source] = src.lagSeconds }
            // The watermark is the lowest of the sources that are neither stuck nor retired.
            let freshness = (reporting?.sources ?? []).filter { $0.state == .current || $0.state == .delayed }
                .compactMap(\.lagSeconds).max()
            let sample = Sample(
                t: Date().timeIntervalSince(t0), phase: s.phase?.rawValue ?? "?",
                queues: Dictionary(uniqueKeysWithValues: s.collectors.map { ($0.name, $0.queueEvents ?? 0) }),
                lags: lags, freshness: freshness)
            recorder.samples.withLock { $0.append(sample) }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    static func waitUntil(seconds: Double, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while try await !condition() {
            guard Date() < deadline else { throw DemoError("a condition did not hold within \(Int(seconds)) s") }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    static func waitForDrainedQueues(_ topology: Topology, seconds: Double = 120) async throws {
        try await waitUntil(seconds: seconds) {
            var total = 0
            for c in topology.collectors { total += await DeploymentStatus.collectorStatus(c).queueEvents ?? 0 }
            return total == 0
        }
    }

    static func gaps(_ topology: Topology, site: String) async throws -> [Reconciliation.Gap] {
        try await PostgresConnection.with(
            PostgresConfiguration(conninfo: topology.site(named: site)!.postgres, database: Topology.martDatabase)
        ) { c in
            try await c.query(
                "SELECT source, gap_from::text, gap_to::text, backfilled_at IS NOT NULL FROM report.data_gaps"
            ).map {
                Reconciliation.Gap(
                    source: $0[0]!, from: $0[1]!, to: $0[2], backfilled: try $0.decode(3, as: Bool.self))
            }
        }
    }

    /// What the IDBs outside the failed site hold of a source: seq → event time (ms).
    static func survivingIDBEvents(_ topology: Topology, source: String, failed: String) async throws -> [Int64: Int64]
    {
        var held: [Int64: Int64] = [:]
        for c in topology.collectors where c.source == source && c.idb.site != failed {
            let rows = try await PostgresConnection.with(
                PostgresConfiguration(conninfo: topology.site(named: c.idb.site)!.postgres, database: c.idb.database)
            ) {
                try await $0.query(
                    "SELECT seq, (extract(epoch FROM ts) * 1000)::bigint FROM idb.events WHERE source = $1 AND type <> 'heartbeat'",
                    [source])
            }
            for r in rows { held[try r.decode(0, as: Int64.self)] = try r.decode(1, as: Int64.self) }
        }
        return held
    }

    static func martDigest(_ topology: Topology, _ site: String) async throws -> [String?] {
        let r = try await PostgresConnection.with(
            PostgresConfiguration(conninfo: topology.site(named: site)!.postgres, database: Topology.martDatabase)
        ) { c in
            try await c.query(
                """
                SELECT (SELECT count(*) FROM mart.event)::text,
                       (SELECT md5(string_agg(source || seq, ',' ORDER BY source, seq)) FROM mart.event),
                       (SELECT md5(string_agg(i::text, ',' ORDER BY source, interaction)) FROM report.interactions i),
                       (SELECT md5(string_agg(q::text, ',' ORDER BY hour, queue, media)) FROM report.queue_hourly q),
                       (SELECT md5(string_agg(q::text, ',' ORDER BY time_zone, level, period_start, queue, media))
                        FROM report.queue_intervals q)
                """)[0]
        }
        return [r[0], r[1], r[2], r[3], r[4]]
    }
}

public struct DemoError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
