import ArgumentParser
import Coordinator
import Foundation
import PostgresClient
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

extension BCPipe {
    /// `bcpipe status`: the deployment as the databases of every site report it.
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show phase, mode, epoch and every site's server as this host sees them.")
        @OptionGroup var topologyOptions: TopologyOptions
        @Flag(help: "Print one JSON document.") var json = false

        struct SourceStatus: Codable {
            var source: String
            var state: String
            var completeThrough: String?
            var lagSeconds: Double?
        }

        struct SiteStatus: Codable {
            var name: String
            var reachable: Bool
            var error: String?
            var phase: String?
            var epoch: Int64?
            var role: String?
            var reportingSite: String?
            var fenced: String?
            var coordinator: String
            var coordinatorAnswers: Bool = false
            var retired: [String] = []
            var procedure: ControlState.Procedure?
            var journal: [ControlState.JournalEntry] = []
            /// This mart's subscribers as its server reports them (active-standby).
            var replication: [Replication.SubscriberLag] = []
            /// The subscriptions this mart follows (a standby in active-standby).
            var following: [Replication.Following] = []
            var databases: [String]
            var extractorCompleteThrough: String?
            var extractorCycles: Int64?
            var sources: [SourceStatus] = []
        }

        struct CollectorStatus: Codable {
            var name: String
            var source: String
            var listen: String
            var idb: String
            var running: Bool
            var mode: String?
            var idbReachable: Bool?
            var queueEvents: Int?
            var queueBytes: Int?
            var oldestEventTs: String?
            var lostEvents: Int?
            var shippedSeq: Int64?
            var error: String?
        }

        struct Report: Codable {
            var deployment: String
            var mode: String
            /// The highest epoch any reachable mart holds, and that mart's phase and reporting site.
            var epoch: Int64?
            var phase: String?
            var reportingSite: String?
            var sites: [SiteStatus]
            var collectors: [CollectorStatus]
        }

        /// A collector's `/v1/status`, with a short timeout.
        static func collectorStatus(_ c: Topology.Collector) async -> CollectorStatus {
            var status = CollectorStatus(
                name: c.name, source: c.source, listen: c.listen.description, idb: "\(c.idb.site)/\(c.idb.database)",
                running: false)
            var request = URLRequest(url: URL(string: "http://\(c.listen)/v1/status")!)
            request.timeoutInterval = 2
            do {
                let (data, _) = try await URLSession.shared.data(for: request)
                let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
                let queue = json["queue"] as? [String: Any] ?? [:]
                status.running = true
                status.mode = json["mode"] as? String
                status.idbReachable = (json["idb"] as? [String: Any])?["reachable"] as? Bool
                status.queueEvents = queue["events"] as? Int
                status.queueBytes = queue["bytes"] as? Int
                status.oldestEventTs = queue["oldest_event_ts"] as? String
                status.lostEvents = queue["lost_events"] as? Int
                status.shippedSeq = ((json["shipped"] as? [String: Any])?["seq"] as? NSNumber)?.int64Value
            } catch {
                status.error = "not answering: \(error.localizedDescription)"
            }
            return status
        }

        func run() async throws {
            let topology = try topologyOptions.load()
            var sites: [SiteStatus] = []
            for site in topology.sites {
                var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
                config.connectTimeout = 3
                config.statementTimeoutMilliseconds = 5_000
                var status = SiteStatus(
                    name: site.name, reachable: false, coordinator: site.coordinator.description,
                    databases: topology.databases(atSite: site.name))
                var request = URLRequest(url: URL(string: "http://\(site.coordinator)/healthz")!)
                request.timeoutInterval = 2
                status.coordinatorAnswers = (try? await URLSession.shared.data(for: request)) != nil
                do {
                    let conn = try await PostgresConnection.connect(config)
                    let control = try await ControlState.load(conn, journal: 20)
                    status.phase = control.phase
                    status.epoch = control.epoch
                    status.role = control.role
                    status.reportingSite = control.reportingSite
                    status.fenced = control.fencedReason
                    status.retired = control.retiredSites + control.retiredSources + control.retiredIDBs
                    status.procedure = control.procedure
                    status.journal = control.journal
                    status.replication = try await Replication.lags(conn)
                    status.following = try await Replication.following(conn)
                    if let e = try await conn.query("SELECT complete_through, cycles FROM control.extractor").first {
                        status.extractorCompleteThrough = e[0]
                        status.extractorCycles = try e.decode(1, as: Int64.self)
                    }
                    for r in try await conn.query(
                        "SELECT source, state, complete_through, extract(epoch FROM now() - complete_through) FROM control.source_state ORDER BY source"
                    ) {
                        status.sources.append(
                            SourceStatus(
                                source: try r.decode(0, as: String.self), state: try r.decode(1, as: String.self),
                                completeThrough: r[2], lagSeconds: try r.decode(3, as: Double?.self)))
                    }
                    status.reachable = true
                    await conn.close()
                } catch {
                    status.error = "\(error)"
                }
                sites.append(status)
            }
            var collectors: [CollectorStatus] = []
            for c in topology.collectors { collectors.append(await Self.collectorStatus(c)) }
            let leader = sites.filter { $0.fenced == nil && $0.epoch != nil }.max { ($0.epoch ?? 0) < ($1.epoch ?? 0) }
            let report = Report(
                deployment: topology.deployment.name, mode: topology.deployment.mode.rawValue, epoch: leader?.epoch,
                phase: leader?.phase, reportingSite: leader?.reportingSite, sites: sites, collectors: collectors)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
                return
            }
            print(
                "deployment \(report.deployment): mode \(report.mode), phase \(report.phase ?? "?"), epoch \(report.epoch.map(String.init) ?? "?"), reporting mart \(report.reportingSite.map { "\($0)/mart" } ?? "?")"
            )
            for s in sites {
                let coordinator = s.coordinatorAnswers ? "coordinator up" : "coordinator DOWN"
                if s.reachable {
                    print(
                        "  \(s.name): reachable, \(coordinator), mart \(s.role ?? "?"), phase \(s.phase ?? "?"), epoch \(s.epoch.map(String.init) ?? "?"), databases \(s.databases.joined(separator: ", "))"
                    )
                    if let f = s.fenced { print("    FENCED: \(f)") }
                    for r in s.replication {
                        print(
                            "    replication to \(r.subscription): \(r.state), lag \(r.replayLagSeconds.map { String(format: "%.3f s", $0) } ?? "-"), \(r.bytesBehind ?? 0) bytes behind"
                        )
                    }
                    for f in s.following { print("    \(f.description)") }
                    if !s.retired.isEmpty { print("    retired: \(s.retired.joined(separator: ", "))") }
                    for src in s.sources {
                        print(
                            "    source \(src.source): \(src.state), complete through \(src.completeThrough ?? "-")\(src.lagSeconds.map { String(format: ", lag %.1f s", $0) } ?? "")"
                        )
                    }
                } else {
                    print("  \(s.name): UNREACHABLE, \(coordinator) — \(s.error ?? "")")
                }
            }
            if let site = sites.first(where: { $0.name == report.reportingSite })
                ?? sites.first(where: { $0.procedure != nil }),
                let p = site.procedure
            {
                print(
                    "procedure: \(p.kind) \(p.target) — \(p.status), started by \(p.startedBy) at \(p.startedAt), steps done: \(p.stepsDone.isEmpty ? "none" : p.stepsDone.joined(separator: ", "))"
                )
                for j in site.journal.suffix(10) {
                    print("  \(j.at) epoch \(j.epoch) \(j.actor): \(j.procedure) / \(j.step) \(j.status)")
                }
            }
            print("collectors:")
            for c in collectors {
                guard c.running else {
                    print("  \(c.name) (\(c.source) → \(c.idb)): DOWN — \(c.error ?? "")")
                    continue
                }
                let age =
                    c.oldestEventTs.flatMap { ISO8601DateFormatter.parse($0) }.map {
                        String(format: "%.0f s", Date().timeIntervalSince($0))
                    } ?? "-"
                print(
                    "  \(c.name) (\(c.source) → \(c.idb)): \(c.mode ?? "?"), queue \(c.queueEvents ?? 0) events, oldest \(age), shipped seq \(c.shippedSeq.map(String.init) ?? "-")\((c.lostEvents ?? 0) > 0 ? ", LOST \(c.lostEvents!)" : "")"
                )
            }
        }
    }
}

extension ISO8601DateFormatter {
    static func parse(_ text: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: text) ?? ISO8601DateFormatter().date(from: text)
    }
}
