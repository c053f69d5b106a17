import Foundation
import Topology

/// What a lab directory holds: its options, its sites and their ports. Saved as `lab.json`.
public struct LabState: Codable, Sendable, Equatable {
    public struct Site: Codable, Sendable, Equatable {
        public var name: String
        /// 1-based slot; ports derive from it.
        public var index: Int
        /// False for a replacement site added for return to normal (no sources of its own).
        public var hasSources: Bool
    }

    public var basePort: Int
    public var mode: Topology.Mode
    public var stuckThreshold: Int
    public var lateData: Topology.LateDataPolicy
    public var sites: [Site]
    /// The live traffic `lab up` was last asked for (events/s over all sources), so a site added
    /// later gets its share; nil in labs saved before it was recorded.
    public var traffic: Double?
    /// The alert rules of the lab's Prometheus (`lab up --prometheus`), nil when it runs none.
    public var prometheusRules: String?
    /// Where the collectors' queues live (a directory on another filesystem than the lab's), nil
    /// for the lab's own `var/`.
    public var queueRoot: String?

    /// The most sites a lab's port plan has room for.
    public static let maxSites = 4

    public func site(_ name: String) -> Site? { sites.first { $0.name == name } }

    // MARK: the port plan (all below Linux's ephemeral range)

    /// The witness (`bcpipe witness run`), at the observers' location outside every site.
    public var witnessPort: Int { basePort + 9 }
    public func postgresPort(_ site: Site) -> Int { basePort + 10 + site.index }
    public func coordinatorPort(_ site: Site) -> Int { basePort + 20 + site.index }
    /// Where the site's extractor serves /healthz and /metrics.
    public func extractorMetricsPort(_ site: Site) -> Int { basePort + 80 + site.index }
    /// The lab's Prometheus (`lab up --prometheus`), at the observers' location.
    public var prometheusPort: Int { basePort + 90 }
    /// Collector `j` (0 = `-a`, 1 = `-b`) of the source of site slot `index`.
    public func collectorPort(siteIndex: Int, member: Int) -> Int { basePort + 30 + 2 * (siteIndex - 1) + member }
    public func wanPostgresPort(from a: Site, to b: Site) -> Int { basePort + 40 + 4 * (a.index - 1) + (b.index - 1) }
    public func wanCoordinatorPort(from a: Site, to b: Site) -> Int {
        basePort + 60 + 4 * (a.index - 1) + (b.index - 1)
    }

    /// Every port the lab uses, with what it is for.
    public var ports: [(Int, String)] {
        var out: [(Int, String)] = [(witnessPort, "witness")]
        if prometheusRules != nil { out.append((prometheusPort, "Prometheus")) }
        for s in sites {
            out.append((postgresPort(s), "\(s.name) PostgreSQL"))
            for t in sites where t.name != s.name {
                out.append((wanPostgresPort(from: s, to: t), "WAN \(s.name)→\(t.name) PostgreSQL"))
                out.append((wanCoordinatorPort(from: s, to: t), "WAN \(s.name)→\(t.name) coordinator"))
            }
        }
        return out
    }

    /// The WAN routes between every pair of sites.
    public var routes: [WANRoute] {
        var out: [WANRoute] = []
        for a in sites {
            for b in sites where a.name != b.name {
                out.append(
                    WANRoute(
                        from: a.name, to: b.name, service: "postgres", listen: wanPostgresPort(from: a, to: b),
                        upstream: postgresPort(b)))
                out.append(
                    WANRoute(
                        from: a.name, to: b.name, service: "coordinator", listen: wanCoordinatorPort(from: a, to: b),
                        upstream: coordinatorPort(b)))
            }
        }
        return out
    }

    // MARK: topology files

    /// The topology as seen from `viewpoint` (other sites through the WAN), or from outside both sites (nil: direct).
    public func topology(directory: String, viewpoint: String?) -> Topology {
        let from = viewpoint.flatMap(site)
        let topoSites = sites.map { s -> Topology.Site in
            if let from, from.name != s.name {
                return .init(
                    name: s.name, postgres: "host=127.0.0.1 port=\(wanPostgresPort(from: from, to: s)) user=bcpipe",
                    coordinator: HostPort(host: "127.0.0.1", port: wanCoordinatorPort(from: from, to: s)))
            }
            return .init(
                name: s.name, postgres: "host=127.0.0.1 port=\(postgresPort(s)) user=bcpipe",
                coordinator: HostPort(host: "127.0.0.1", port: coordinatorPort(s)))
        }
        let sourceSites = sites.filter(\.hasSources)
        let sources = sourceSites.map { Topology.Source(name: "\($0.name)/voice", site: $0.name) }
        var collectors: [Topology.Collector] = []
        for s in sourceSites {
            // The HA pair: -a writes the local IDB, -b the remote one (the other original site).
            let remote = sourceSites.first { $0.name != s.name } ?? s
            for (member, idbSite) in [s, remote].enumerated() {
                let name = "\(s.name)-\(member == 0 ? "a" : "b")"
                collectors.append(
                    .init(
                        name: name, source: "\(s.name)/voice",
                        idb: .init(
                            site: idbSite.name,
                            database: "idb_\(s.name)_\(member == 0 ? "a" : "b")".replacingOccurrences(
                                of: "-", with: "_")),
                        listen: HostPort(host: "127.0.0.1", port: collectorPort(siteIndex: s.index, member: member)),
                        queueDir: (queueRoot ?? directory + "/var") + "/\(name)"))
            }
        }
        // Every site has a mart and an extractor; a site added later (a replacement) starts as a
        // standby and comes into service through return to normal.
        let extractors = sites.enumerated().map { i, s in
            Topology.Extractor(
                site: s.name, role: mode == .activeActive || (i == 0 && s.hasSources) ? .active : .standby)
        }
        var extract = Topology.ExtractSettings()
        extract.dataStuckThreshold = stuckThreshold
        extract.lateData = lateData
        return Topology(
            deployment: .init(name: "bcpipe-lab", mode: mode), sites: topoSites, sources: sources,
            collectors: collectors, extractors: extractors, extract: extract, reporting: Self.reporting,
            witnesses: [HostPort(host: "127.0.0.1", port: witnessPort)], baseDirectory: directory)
    }

    /// The lab reports like CONTRACT 3's example: billing has its own SLA, and the interval
    /// views are kept in UTC and in New York's time.
    static var reporting: Topology.ReportingSettings {
        var r = Topology.ReportingSettings()
        r.queueSLASeconds = ["billing": 30]
        r.timeZones = ["UTC", "America/New_York"]
        return r
    }

    public static func load(directory: String) throws -> LabState? {
        let path = directory + "/lab.json"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(LabState.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw LabError("\(path) is unreadable (\(error)); run `bcpipe lab down --dir \(directory)` and start again")
        }
    }

    public func save(directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: directory + "/lab.json"), options: .atomic)
    }
}

extension Topology.Mode: Codable {}
extension Topology.LateDataPolicy: Codable {}
