import Control
import Coordinator
import Foundation
import Lab
import PostgresClient
import Synchronization
import Topology
import Traffic

/// `bcpipe chaos`: the lab under steady live traffic while a seeded random schedule injects
/// faults, then a ledger from the real databases — acknowledged, in every IDB, in every mart,
/// lost, miscounted (report rows that differ from a recount of the events: what a duplicate
/// would damage), unexpected (CONTRACT 6.1). Every kind of fault happens at least once, in an
/// order and with lengths drawn from the seed; more follow while time remains.
public struct ChaosRun: Sendable {
    public enum Fault: Sendable, CustomStringConvertible, Equatable {
        /// The WAN between the two original sites cut for a while (refuse or blackhole).
        case cut(LinkState, seconds: Double)
        /// The link going down and up every `period` seconds for `seconds`.
        case flaps(period: Double, seconds: Double)
        case killCollector
        case killExtractor
        case killCoordinator
        /// A site's PostgreSQL server stopped immediately (crash recovery) and started again.
        case restartServer
        /// The disk under a collector's queue filled while it queues (it answers 503, the other
        /// collector of its pair acknowledges), then freed.
        case diskFull(seconds: Double)
        /// A byte flipped in a queued segment while the WAN is cut.
        case flipByte
        /// The reporting site lost; `dr declare`; the site rebuilt empty; `rtn start`.
        case siteFailure

        public var description: String {
            switch self {
            case .cut(let how, let s): "WAN cut (\(how.rawValue)) for \(Int(s.rounded())) s"
            case .flaps(let p, let s): "link flapping every \(Int(p)) s for \(Int(s)) s"
            case .killCollector: "SIGKILL of a collector"
            case .killExtractor: "SIGKILL of an extractor"
            case .killCoordinator: "SIGKILL of a coordinator"
            case .restartServer: "PostgreSQL immediate restart"
            case .diskFull(let s): "a collector's disk full for \(Int(s)) s"
            case .flipByte: "a flipped byte in a queue segment"
            case .siteFailure: "site failure, dr declare, rebuild, rtn start"
            }
        }

        /// About how long it takes (for the schedule), quiet time after it included.
        var estimate: Double {
            switch self {
            case .cut(_, let s), .flaps(_, let s), .diskFull(let s): s + 3
            case .killCollector, .killExtractor, .killCoordinator: 6
            case .restartServer: 8
            case .flipByte: 9
            case .siteFailure: 40
            }
        }
    }

    /// The schedule of a seed: every kind once in a seeded order (the disk fault only with
    /// root), then random ones (no second site failure) while the estimates fit in `seconds`.
    public static func schedule(seed: UInt64, seconds: Double, threshold: Double, diskFaults: Bool) -> [Fault] {
        var rng = SplitMix(seed: seed)
        func draw() -> [Fault] {
            var kinds: [Fault] = [
                .cut(rng.uniform(0, 1) < 0.5 ? .refuse : .blackhole, seconds: rng.uniform(2, threshold * 0.6)),
                .cut(rng.uniform(0, 1) < 0.5 ? .refuse : .blackhole, seconds: threshold + rng.uniform(4, 8)),
                .flaps(period: 2, seconds: 8), .killCollector, .killExtractor, .killCoordinator, .restartServer,
                .flipByte, .siteFailure,
            ]
            if diskFaults { kinds.append(.diskFull(seconds: rng.uniform(4, 8))) }
            return kinds
        }
        var plan = draw().map { ($0, rng.next()) }.sorted { $0.1 < $1.1 }.map(\.0)
        var used = plan.reduce(0) { $0 + $1.estimate }
        while true {
            let more = draw().filter { $0 != .siteFailure }
            let next = more[Int(rng.next() % UInt64(more.count))]
            guard used + next.estimate <= seconds else { break }
            plan.append(next)
            used += next.estimate
        }
        return plan
    }

    public struct Ledger: Sendable {
        public var acknowledged = 0
        /// Database → events (heartbeats aside) through the cutoff.
        public var idbs: [(String, Int)] = []
        public var marts: [(String, Int)] = []
        public var reconciliation: Reconciliation
        /// Events the queues found damaged and counted (a flipped byte): reported, not silent.
        public var countedByQueues = 0
        /// What the collectors answered besides 200: back-pressure, errors, nobody.
        public var backPressure = 0
        public var errorAnswers = 0
        public var unanswered = 0
        /// `dr declare` tried during WAN cuts, and how many of those promoted a mart (must be 0:
        /// the witness still reaches the "failed" site).
        public var declaredDuringCuts = 0
        public var promotedDuringCuts = 0
        public var passed: Bool {
            reconciliation.lost == 0 && reconciliation.miscounted.total == 0 && reconciliation.unexpected == 0
                && reconciliation.incomplete == nil && reconciliation.expected > 0 && promotedDuringCuts == 0
        }
    }

    public var lab: LocalLab
    public var options: LocalLab.Options
    public var seconds: Double
    public var seed: UInt64
    public var arrivalsPerSecond = 3.0
    public var say: @Sendable (String) -> Void
    /// The collector whose queue gets a small disk of its own (at the site that does not fail).
    let diskCollector = "site2-b"

    public init(
        lab: LocalLab, options: LocalLab.Options, seconds: Double, seed: UInt64,
        say: @escaping @Sendable (String) -> Void
    ) {
        self.lab = lab
        self.options = options
        self.seconds = seconds
        self.seed = seed
        self.say = say
    }

    public func run() async throws -> Ledger {
        let t0 = Date()
        func log(_ line: String) { say(String(format: "[%6.1f s] ", Date().timeIntervalSince(t0)) + line) }
        let diskFaults = geteuid() == 0
        // Every kind once, then more while --seconds lasts (drawn ahead, further than needed).
        let firstRound = Self.schedule(
            seed: seed, seconds: 0, threshold: Double(options.stuckThreshold), diskFaults: diskFaults
        ).count
        let plan = Self.schedule(
            seed: seed, seconds: seconds * 4, threshold: Double(options.stuckThreshold), diskFaults: diskFaults)
        say(
            "chaos: seed \(seed), faults for \(Int(seconds)) s (every kind of the \(firstRound) at least once), stuck threshold \(options.stuckThreshold) s"
        )
        if !diskFaults { say("chaos: not root: no disk-full fault (a small disk of its own needs mount -t tmpfs)") }
        try await lab.up(options)
        if diskFaults {
            try lab.mountQueueDisk(collector: diskCollector, bytes: 32 << 20, options: options)
        }
        let observer = try Topology.load(path: lab.topologyPath)
        let traffic = LiveTraffic(
            topology: observer, sources: observer.sources.map(\.name), arrivalsPerSecond: arrivalsPerSecond,
            seed: seed)
        let trafficTask = Task { await traffic.run() }
        defer { trafficTask.cancel() }
        var rng = SplitMix(seed: seed ^ 0xC4A0_5EED)
        // A failed site's sources: reported up to the failure from the surviving IDBs, and from
        // their return on from what was acknowledged.
        var failure: (site: String, at: Int64, resumed: Int64)?
        var declarations = (tried: 0, promoted: 0)

        try await Task.sleep(for: .seconds(3))
        for (i, fault) in plan.enumerated() {
            if i >= firstRound && Date().timeIntervalSince(t0) >= seconds { break }
            log("fault \(i + 1): \(fault)")
            switch fault {
            case .cut(let how, let s):
                try lab.setLink("site1", "site2", how)
                let cutAt = Date()
                // An operator at the other site, seeing the reporting site gone, declares it failed.
                declarations.tried += 1
                if try await declareDuringCut(observer, log: log) { declarations.promoted += 1 }
                try await Task.sleep(for: .seconds(max(0, s - Date().timeIntervalSince(cutAt))))
                try lab.setLink("site1", "site2", .up)
            case .flaps(let period, let s):
                let end = Date().addingTimeInterval(s)
                var down = true
                while Date() < end {
                    try lab.setLink("site1", "site2", down ? (rng.uniform(0, 1) < 0.5 ? .refuse : .blackhole) : .up)
                    down.toggle()
                    try await Task.sleep(for: .seconds(period / 2))
                }
                try lab.setLink("site1", "site2", .up)
            case .killCollector:
                let victim = observer.collectors[Int(rng.next() % UInt64(observer.collectors.count))].name
                log(
                    "  SIGKILL collector \(victim)\(try lab.killProcess(.collector(victim)) ? "" : " (was not running)")"
                )
                try await restartSoon()
            case .killExtractor, .killCoordinator:
                let site = observer.sites[Int(rng.next() % UInt64(observer.sites.count))].name
                let process: LocalLab.Process =
                    fault == .killExtractor ? .extractor(site: site) : .coordinator(site: site)
                log("  SIGKILL \(process)\(try lab.killProcess(process) ? "" : " (was not running)")")
                try await restartSoon()
            case .restartServer:
                let site = observer.sites[Int(rng.next() % UInt64(observer.sites.count))].name
                try lab.restartServer(site)
                log("  \(site)'s PostgreSQL stopped immediately and started again")
                try await Task.sleep(for: .seconds(5))
                try lab.restartStopped(options)
            case .diskFull(let s):
                try lab.setLink("site1", "site2", .refuse)
                try await Task.sleep(for: .seconds(1))
                let filler = try lab.fillQueueDisk(collector: diskCollector, leaving: 256 << 10)
                log("  \(diskCollector)'s queue disk filled (256 KiB left, under its free-disk reserve)")
                try await Task.sleep(for: .seconds(s))
                try FileManager.default.removeItem(atPath: filler)
                try lab.setLink("site1", "site2", .up)
            case .flipByte:
                // A -b collector of a site that is up queues while the link is cut; a byte of what
                // it queued is flipped, and it is restarted so that it reads the frames again.
                let victim =
                    ["site2-b", "site1-b"].first { $0.hasPrefix(failure?.site ?? "none") == false } ?? "site2-b"
                let before = try lab.newestQueueSegment(collector: victim)
                try lab.setLink("site1", "site2", .blackhole)
                try await Task.sleep(for: .seconds(6))
                if let (path, offset) = try lab.flipQueueByte(collector: victim, since: before, random: rng.next()) {
                    log("  flipped the byte at \(offset) of \(path); SIGKILL and restart of \(victim)")
                    try lab.killProcess(.collector(victim))
                    try lab.restartStopped(options)
                } else {
                    log("  \(victim) queued too little to flip a byte in")
                }
                try lab.setLink("site1", "site2", .up)
            case .siteFailure:
                let status = await DeploymentStatus.gather(observer)
                let failed = status.reportingSite ?? "site1"
                let survivor = observer.sites.first { $0.name != failed }!.name
                for s in observer.sources where s.site == failed { traffic.stop(source: s.name) }
                let at = Int64(Date().timeIntervalSince1970 * 1000)
                try lab.failSite(failed)
                failure = (failed, at, 0)
                log("  \(failed) lost (its server and processes killed; its calls stop)")
                let view = try Topology.load(path: lab.topologyPath(site: survivor))
                _ = try await DisasterRecovery(
                    topology: view, failedSite: failed, confirmSiteDown: true, dryRun: false, actor: "bcpipe chaos",
                    say: { _ in }
                ).run()
                log("  dr declare onto \(survivor): done")
                try await Task.sleep(for: .seconds(3))
                try await lab.addSite(failed, options: options)
                log("  \(failed) rebuilt with an empty server")
                _ = try await ReturnToNormal(
                    topology: view, site: failed, active: survivor, dryRun: false, actor: "bcpipe chaos",
                    say: { _ in }
                ).run()
                failure?.resumed = Int64(Date().timeIntervalSince1970 * 1000)
                for s in observer.sources where s.site == failed { traffic.resume(source: s.name) }
                log("  rtn start: \(failed) back as the standby; its calls resume")
            }
            try await Task.sleep(for: .seconds(rng.uniform(1, 3)))
        }

        log("faults stopped; the pipeline settles")
        try lab.setLink("site1", "site2", .up)
        try lab.restartStopped(options)
        try await DemoStory.waitForDrainedQueues(observer, seconds: 240)
        var ledger = try await Self.ledger(observer, traffic: traffic, failure: failure)
        (ledger.declaredDuringCuts, ledger.promotedDuringCuts) = declarations
        log("settled")
        return ledger
    }

    /// After `lab down`: unmounts the small disk of the disk-full fault.
    public func cleanUp() {
        if geteuid() == 0 { lab.unmountQueueDisk(collector: diskCollector) }
    }

    /// `dr declare --confirm-site-down` of the reporting site, from the other site's view, while
    /// the WAN between them is cut: refused, since the witness still reaches it. Returns whether
    /// it promoted anything (a broken promise the ledger fails on).
    func declareDuringCut(_ observer: Topology, log: (String) -> Void) async throws -> Bool {
        let failed = await ControlStore.reportingSite(observer)?.name ?? "site1"
        guard let survivor = observer.sites.first(where: { $0.name != failed })?.name else { return false }
        let what = "  dr declare of \(failed) from \(survivor) during the cut"
        guard let refusal = try await TemptedOperator.declare(failed, from: survivor, lab: lab, actor: "bcpipe chaos")
        else {
            log("\(what): PROMOTED \(survivor) — two writable marts")
            return true
        }
        log("\(what): refused (\(refusal.rule))")
        return false
    }

    /// Restarts killed processes after a moment, as a supervisor would.
    func restartSoon() async throws {
        try await Task.sleep(for: .seconds(2))
        try lab.restartStopped(options)
    }

    static func ledger(
        _ topology: Topology, traffic: LiveTraffic, failure: (site: String, at: Int64, resumed: Int64)?
    ) async throws -> Ledger {
        try await Task.sleep(for: .seconds(1))
        let cutoff = Int64(Date().timeIntervalSince1970 * 1000) - 500
        let acknowledged = traffic.acknowledged(through: cutoff).values.reduce(0) { $0 + $1.count }
        let (expected, heldKeys, lostWithSite) = try await traffic.expectations(
            topology, through: cutoff, failedSite: failure?.site, failedAt: failure?.at ?? cutoff,
            resumedAt: failure?.resumed)
        let cutoffTs = PostgresTimestamp(millisecondsSinceEpoch: cutoff)
        func count(_ site: Topology.Site, _ database: String, _ sql: String) async -> Int {
            var config = PostgresConfiguration(conninfo: site.postgres, database: database)
            config.connectTimeout = 5
            config.statementTimeoutMilliseconds = 30_000
            let n = try? await PostgresConnection.with(config) {
                try await $0.query(sql, [cutoffTs])[0].decode(0, as: Int.self)
            }
            return n ?? -1
        }
        var idbs: [(String, Int)] = []
        for c in topology.collectors {
            guard let site = topology.site(named: c.idb.site) else { continue }
            idbs.append(
                (
                    "\(c.idb.site)/\(c.idb.database)",
                    await count(
                        site, c.idb.database, "SELECT count(*) FROM idb.events WHERE ts <= $1 AND type <> 'heartbeat'")
                ))
        }
        var marts: [(String, Int)] = []
        for site in topology.sites {
            marts.append(
                (
                    "\(site.name)/mart",
                    await count(
                        site, Topology.martDatabase,
                        "SELECT count(*) FROM mart.event WHERE ts <= $1 AND type <> 'heartbeat'")
                ))
        }
        guard let reporting = await ControlStore.reportingSite(topology) else {
            throw DemoError("no reporting mart answers: bcpipe status --config \(topology.sites.first?.name ?? "")")
        }
        var r = try await PostgresConnection.with(
            PostgresConfiguration(conninfo: reporting.postgres, database: Topology.martDatabase)
        ) { mart in
            try await Reconciliation.run(
                mart: mart, martName: "\(reporting.name)/mart", writer: reporting.name, expected: expected,
                sentAtAll: { traffic.posted().merging(heldKeys) { $0.union($1) } }, cutoff: cutoff,
                slaMs: Int64(topology.reporting.slaSeconds) * 1000, timeout: 180)
        }
        r.lostWithFailedSite = lostWithSite
        var counted = 0
        for c in topology.collectors { counted += await DeploymentStatus.collectorStatus(c).lostEvents ?? 0 }
        let answers = traffic.answers
        return Ledger(
            acknowledged: acknowledged, idbs: idbs, marts: marts, reconciliation: r, countedByQueues: counted,
            backPressure: answers.backPressure, errorAnswers: answers.errors, unanswered: answers.unanswered)
    }
}
