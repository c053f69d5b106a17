import Foundation
import PostgresClient
import Topology

/// What an extractor needs, resolved once from the topology.
public struct ExtractorSettings: Sendable {
    public struct IDB: Sendable, Hashable {
        public var site: String
        public var database: String
        public var conninfo: String
        public var source: String
    }

    public var site: String
    public var martConninfo: String
    public var idbs: [IDB]
    public var sources: [Topology.Source]
    public var thresholdMs: Int64
    public var lateData: Topology.LateDataPolicy
    public var interval: Double
    /// SLAs, short abandons, the interval views' zones and sub-hour level (CONTRACT 3, 5.1).
    public var reporting: Topology.ReportingSettings
    public var retention: Topology.RetentionSettings
    /// The global SLA, ms (a queue's own, when it has one, is ``Topology/ReportingSettings/slaSeconds(queue:)``).
    public var slaMs: Int64 { Int64(reporting.slaSeconds) * 1000 }
    /// The role to log in to the mart and the IDBs as instead of the conninfo's (the lab gives
    /// `bcpipe_extractor` through `BCPIPE_DB_USER`, read by the command line); nil: the conninfo's.
    public var dbUser: String?
    /// The role the topology gives this site's extractor (the mart's control row, once set, rules).
    public var role: Topology.ExtractorRole = .active
    /// Rows read from one IDB per cycle at most: what bounds a cycle's memory during a catch-up.
    public var batchRows = 200_000
    /// Log each cycle's phases (read, events, facts, aggregates…) with their times.
    public var logPhases = false
    public var timeouts = Timeouts()
    /// Seconds between the mart's retention runs (partitions made ahead, old ones purged).
    public var maintenanceInterval: Double = 86_400

    /// Every network wait of the extractor has a limit.
    public struct Timeouts: Sendable {
        /// Seconds to establish a connection (mart or IDB).
        public var connect = 3
        /// Seconds an IDB read may take client-side: a blackholed IDB costs a cycle at most this.
        public var idbOperation: Double = 8
        public var idbStatementMilliseconds = 6_000
        /// A cycle's mart transaction can be large after a backlog.
        public var martStatementMilliseconds = 120_000
        public init() {}
    }
    /// The clock (ms since the epoch); injectable so tests cover hours of thresholds in seconds.
    public var clock: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }

    public static func from(topology: Topology, site: String) throws -> ExtractorSettings {
        guard let me = topology.site(named: site) else {
            throw TopologyError(
                path: "extractors",
                message: "unknown site \"\(site)\"; sites are \(topology.sites.map(\.name).joined(separator: ", "))")
        }
        guard topology.extractors.contains(where: { $0.site == site }) else {
            throw TopologyError(path: "extractors", message: "site \(site) has no extractor in the topology")
        }
        let idbs = topology.collectors.map { c in
            IDB(
                site: c.idb.site, database: c.idb.database, conninfo: topology.site(named: c.idb.site)!.postgres,
                source: c.source)
        }
        var settings = ExtractorSettings(
            site: site, martConninfo: me.postgres, idbs: idbs, sources: topology.sources,
            thresholdMs: Int64(topology.extract.dataStuckThreshold) * 1000, lateData: topology.extract.lateData,
            interval: topology.extract.interval, reporting: topology.reporting, retention: topology.retention)
        settings.role = topology.extractors.first { $0.site == site }!.role
        return settings
    }
}
