import Control
import Foundation
import PostgresClient
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The deployment as the databases, coordinators and collectors of every site report it: what
/// `bcpipe status` prints, `bcpipe status --json` and a coordinator's `/v1/deployment` serve, and
/// a coordinator's status page (`GET /`) shows. Every network call has a short timeout, so an
/// unreachable site is reported as such, quickly.
public struct DeploymentStatus: Codable, Sendable {
    public var deployment: String
    public var mode: Topology.Mode
    /// The highest epoch any reachable mart holds, and that mart's phase and reporting site.
    public var epoch: Int64?
    public var phase: Phase?
    public var reportingSite: String?
    public var sites: [SiteStatus]
    public var collectors: [CollectorStatus]
    /// The topology's witnesses and what each reaches of every site.
    public var witnesses: [WitnessStatus] = []
    /// What guards `dr declare` against declaring a partitioned site failed (CONTRACT 6.4).
    public var partitionGuard: String = ""
    public var collectedAt: String

    /// Pretty, with sorted keys: what `status --json` prints and `/v1/deployment` serves.
    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return encoder
    }

    public struct SiteStatus: Codable, Sendable {
        public var name: String
        public var reachable: Bool
        public var error: String?
        public var phase: Phase?
        public var epoch: Int64?
        public var role: Role?
        public var reportingSite: String?
        public var fenced: String?
        public var coordinator: String
        public var coordinatorAnswers: Bool = false
        public var retired: [String] = []
        public var procedure: ControlState.Procedure?
        public var journal: [ControlState.JournalEntry] = []
        /// This mart's subscribers as its server reports them (active-standby).
        public var replication: [Replication.SubscriberLag] = []
        /// The subscriptions this mart follows (a standby in active-standby).
        public var following: [Replication.Following] = []
        public var databases: [String]
        public var extractorCompleteThrough: String?
        public var extractorCycles: Int64?
        public var sources: [SourceStatus] = []
        /// The zones and levels the mart keeps its interval views in (CONTRACT 5.1); nil until its
        /// extractor has built them.
        public var intervalViews: IntervalViews?
    }

    public struct IntervalViews: Codable, Sendable, Equatable {
        public var timeZones: [String]
        public var subHourMinutes: Int

        /// `sub-hour (15 min), hour, day, week, month in UTC, America/New_York`
        public var summary: String {
            "sub-hour (\(subHourMinutes) min), hour, day, week, month in \(timeZones.joined(separator: ", "))"
        }
    }

    /// The reporting mart's interval views, as it says.
    public var intervalViews: IntervalViews? { sites.first { $0.name == reportingSite }?.intervalViews }

    public struct CollectorStatus: Codable, Sendable {
        public var name: String
        public var source: String
        public var listen: String
        public var idb: String
        public var running: Bool
        public var mode: DeliveryMode?
        public var idbReachable: Bool?
        public var queueEvents: Int?
        public var queueBytes: Int?
        public var oldestEventTs: String?
        public var lostEvents: Int?
        public var shippedSeq: Int64?
        public var error: String?
    }

    public struct WitnessStatus: Codable, Sendable {
        public var address: String
        public var reachable: Bool
        public var error: String?
        /// What it reaches of each site, as it answered `GET /v1/reach`.
        public var sees: [SiteReach] = []
    }

    /// What guards `dr declare` against declaring a partitioned site failed, with these witnesses.
    public static func partitionGuard(_ witnesses: [WitnessStatus]) -> String {
        if witnesses.isEmpty {
            return
                "no witness configured: an operator's --confirm-site-down is dr declare's only guard against declaring a partitioned site failed"
        }
        let answering = witnesses.filter(\.reachable).count
        return
            "\(answering) of \(witnesses.count) witness\(witnesses.count == 1 ? "" : "es") answering: dr declare is refused while one of them reaches the failed site\(answering == 0 ? ", and now, with none answering, unless --without-witness is given" : "")"
    }

    /// A witness's answer for every site.
    public static func witnessStatus(_ address: HostPort, token: String?) async -> WitnessStatus {
        switch await WitnessClient(address: address, token: token, timeout: 8).reachAll() {
        case .success(let sees): return WitnessStatus(address: address.description, reachable: true, sees: sees)
        case .failure(let e): return WitnessStatus(address: address.description, reachable: false, error: e.description)
        }
    }

    /// A collector's `/v1/status`, with a short timeout.
    public static func collectorStatus(_ c: Topology.Collector) async -> CollectorStatus {
        var status = CollectorStatus(
            name: c.name, source: c.source, listen: c.listen.description, idb: "\(c.idb.site)/\(c.idb.database)",
            running: false)
        var request = URLRequest(url: URL(string: "http://\(c.listen)/v1/status")!)
        request.timeoutInterval = 2
        do {
            let (data, _) = try await URLSession.shared.fetch(request)
            status.running = true
            let report = try JSONDecoder().decode(CollectorReport.self, from: data)
            status.mode = report.mode
            status.idbReachable = report.idb.reachable
            status.queueEvents = Int(report.queue.events)
            status.queueBytes = report.queue.bytes
            status.oldestEventTs = report.queue.oldestEventTs
            status.lostEvents = Int(report.queue.lostEvents)
            status.shippedSeq = report.shipped.seq
        } catch {
            status.error = "not answering: \(error.localizedDescription)"
        }
        return status
    }

    /// Gathers it all; `token` (`BCPIPE_COORDINATOR_TOKEN`) is sent to the witnesses.
    public static func gather(_ topology: Topology, token: String? = nil) async -> DeploymentStatus {
        // The witnesses probe while the sites are looked at from here.
        async let witnesses = withTaskGroup(of: (Int, WitnessStatus).self) { group in
            for (i, w) in topology.witnesses.enumerated() {
                group.addTask { (i, await witnessStatus(w, token: token)) }
            }
            var out: [(Int, WitnessStatus)] = []
            for await w in group { out.append(w) }
            return out.sorted { $0.0 < $1.0 }.map(\.1)
        }
        var sites: [SiteStatus] = []
        for site in topology.sites {
            var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
            config.connectTimeout = 3
            config.statementTimeoutMilliseconds = 5_000
            var status = SiteStatus(
                name: site.name, reachable: false, coordinator: site.coordinator.description,
                databases: topology.databases(atSite: site.name))
            status.coordinatorAnswers = await Reachability.http(site.coordinator)
            do {
                status = try await PostgresConnection.with(config) { try await Self.read(status, from: $0) }
            } catch {
                status.error = "\(error)"
            }
            sites.append(status)
        }
        var collectors: [CollectorStatus] = []
        for c in topology.collectors { collectors.append(await collectorStatus(c)) }
        let leader = sites.filter { $0.fenced == nil && $0.epoch != nil }.max { ($0.epoch ?? 0) < ($1.epoch ?? 0) }
        let seen = await witnesses
        return DeploymentStatus(
            deployment: topology.deployment.name, mode: topology.deployment.mode, epoch: leader?.epoch,
            phase: leader?.phase, reportingSite: leader?.reportingSite, sites: sites, collectors: collectors,
            witnesses: seen, partitionGuard: partitionGuard(seen),
            collectedAt: ISO8601DateFormatter.withFractionalSeconds.string(from: Date()))
    }

    /// A reachable site's mart: its control state, replication, progress and sources.
    static func read(_ base: SiteStatus, from conn: PostgresConnection) async throws -> SiteStatus {
        var s = base
        let store = ControlStore(conn)
        let control = try await store.load(journal: 20)
        s.phase = control.phase
        s.epoch = control.epoch
        s.role = control.role
        s.reportingSite = control.reportingSite
        s.fenced = control.fencedReason
        s.retired = control.retiredSites + control.retiredSources + control.retiredIDBs
        s.procedure = control.procedure
        s.journal = control.journal
        s.replication = try await Replication.lags(conn)
        s.following = try await Replication.following(conn)
        if let e = try await store.extractorProgress(site: s.name) {
            s.extractorCompleteThrough = e.completeThrough
            s.extractorCycles = e.cycles
        }
        s.sources = try await store.sourceStates()
        if let r = try await conn.query(
            "SELECT array_to_string(time_zones, ','), sub_hour_minutes FROM mart.interval_settings"
        ).first {
            s.intervalViews = IntervalViews(
                timeZones: (r[0] ?? "").split(separator: ",").map(String.init),
                subHourMinutes: try r.decode(1, as: Int.self))
        }
        s.reachable = true
        return s
    }

    /// The text `bcpipe status` prints.
    public func lines() -> [String] {
        var out: [String] = []
        out.append(
            "deployment \(self.deployment): mode \(self.mode.rawValue), phase \(self.phase?.rawValue ?? "?"), epoch \(self.epoch.map(String.init) ?? "?"), reporting mart \(self.reportingSite.map { "\($0)/mart" } ?? "?")"
        )
        for s in sites {
            let coordinator = s.coordinatorAnswers ? "coordinator up" : "coordinator DOWN"
            if s.reachable {
                out.append(
                    "  \(s.name): reachable, \(coordinator), mart \(s.role?.rawValue ?? "?"), phase \(s.phase?.rawValue ?? "?"), epoch \(s.epoch.map(String.init) ?? "?"), databases \(s.databases.joined(separator: ", "))"
                )
                if let f = s.fenced { out.append("    FENCED: \(f)") }
                for r in s.replication {
                    out.append(
                        "    replication to \(r.subscription): \(r.state), lag \(r.replayLagSeconds.map { String(format: "%.3f s", $0) } ?? "-"), \(r.bytesBehind ?? 0) bytes behind"
                    )
                }
                for f in s.following { out.append("    \(f.description)") }
                if !s.retired.isEmpty { out.append("    retired: \(s.retired.joined(separator: ", "))") }
                if let v = s.intervalViews { out.append("    interval views: \(v.summary)") }
                for src in s.sources {
                    out.append(
                        "    source \(src.source): \(src.state.rawValue), complete through \(src.completeThrough ?? "-")\(src.lagSeconds.map { String(format: ", lag %.1f s", $0) } ?? "")"
                    )
                }
            } else {
                out.append("  \(s.name): UNREACHABLE, \(coordinator) — \(s.error ?? "")")
            }
        }
        if let site = sites.first(where: { $0.name == self.reportingSite })
            ?? sites.first(where: { $0.procedure != nil }),
            let p = site.procedure
        {
            out.append(
                "procedure: \(p.kind.rawValue) \(p.target) — \(p.status.rawValue), started by \(p.startedBy) at \(p.startedAt), steps done: \(p.stepsDone.isEmpty ? "none" : p.stepsDone.map(\.rawValue).joined(separator: ", "))"
            )
            for j in site.journal.suffix(10) {
                out.append("  \(j.at) epoch \(j.epoch) \(j.actor): \(j.procedure) / \(j.step) \(j.status)")
            }
        }
        out.append("witnesses: \(partitionGuard)")
        for w in witnesses {
            guard w.reachable else {
                out.append("  \(w.address): NOT ANSWERING — \(w.error ?? "")")
                continue
            }
            out.append(
                "  \(w.address): answering; " + w.sees.map { "\($0.site): \($0.summary)" }.joined(separator: "; "))
        }
        out.append("collectors:")
        for c in collectors {
            guard c.running else {
                out.append("  \(c.name) (\(c.source) → \(c.idb)): DOWN — \(c.error ?? "")")
                continue
            }
            let age =
                c.oldestEventTs.flatMap { ISO8601DateFormatter.parse($0) }.map {
                    String(format: "%.0f s", Date().timeIntervalSince($0))
                } ?? "-"
            out.append(
                "  \(c.name) (\(c.source) → \(c.idb)): \(c.mode?.rawValue ?? "?"), queue \(c.queueEvents ?? 0) events, oldest \(age), shipped seq \(c.shippedSeq.map(String.init) ?? "-")\((c.lostEvents ?? 0) > 0 ? ", LOST \(c.lostEvents!)" : "")"
            )
        }
        return out
    }
}

extension ISO8601DateFormatter {
    public static func parse(_ text: String) -> Date? {
        withFractionalSeconds.date(from: text) ?? ISO8601DateFormatter().date(from: text)
    }

    public static var withFractionalSeconds: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
