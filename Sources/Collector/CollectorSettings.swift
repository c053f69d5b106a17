import DiskQueue
import Foundation
import Topology

/// Everything a collector needs, resolved once from the topology and the environment.
public struct CollectorSettings: Sendable {
    public var name: String
    public var source: String
    public var sourceNames: Set<String>
    public var listen: HostPort
    /// libpq conninfo of the IDB's server (as this host reaches it) and the IDB's database.
    public var idbConninfo: String
    /// The role to log in as instead of the conninfo's (`BCPIPE_DB_USER`).
    public var idbUser: String?
    public var idbDatabase: String
    public var idbSite: String
    public var queue: DiskQueueConfiguration
    /// `BCPIPE_INGEST_TOKEN`: when set, requests need `Authorization: Bearer TOKEN`.
    public var token: String?
    /// The largest request body, after decoding (CONTRACT 2 `max_request_bytes`).
    public var maxRequestBytes: Int = 16 << 20
    /// Ingest requests handled at once at most; past it a request is answered `503` before its
    /// body is read (each may hold up to ``maxRequestBytes`` in memory).
    public var maxConcurrentRequests: Int = 64
    /// Events shipped in one IDB transaction at most.
    public var shipBatchEvents: Int = 20_000
    /// Seconds to wait for the IDB: connecting, and any one operation.
    public var connectTimeout: Int = 3
    public var operationTimeout: Double = 15
    /// Reconnection backoff, seconds (capped exponential, with jitter). Capped at a quarter of a
    /// second: an attempt is one connect (refused at once while the link is down, bounded by
    /// `connectTimeout` while it is blackholed; the warning is logged once a minute), and once the
    /// link is back the queue starts draining within about 0.25 s — the peer benchmark's drain
    /// measured the wait, half a second on average at the former one-second cap.
    public var retryInitial: Double = 0.1
    public var retryMax: Double = 0.25

    public init(
        name: String, source: String, sourceNames: Set<String>, listen: HostPort, idbConninfo: String,
        idbDatabase: String, idbSite: String, queue: DiskQueueConfiguration
    ) {
        self.name = name
        self.source = source
        self.sourceNames = sourceNames
        self.listen = listen
        self.idbConninfo = idbConninfo
        self.idbDatabase = idbDatabase
        self.idbSite = idbSite
        self.queue = queue
    }

    /// The settings of collector `name` in `topology`.
    ///
    /// Environment: `BCPIPE_DB_USER` (the role it logs in to its IDB as: the IDB's own
    /// `bcpipe_collector_<database>`); `BCPIPE_INGEST_TOKEN`; `BCPIPE_QUEUE_MAX_BYTES`, `BCPIPE_QUEUE_RESERVE_BYTES` and
    /// `BCPIPE_MAX_REQUEST_BYTES` override the queue bound, the free-disk reserve and the body limit;
    /// `BCPIPE_MAX_CONCURRENT_REQUESTS` the requests handled at once.
    public static func from(
        topology: Topology, name: String, environment: [String: String] = ProcessInfo.processInfo.environment
    )
        throws -> CollectorSettings
    {
        guard let c = topology.collector(named: name) else {
            throw TopologyError(
                path: "collectors",
                message:
                    "no collector named \"\(name)\"; the topology's collectors are \(topology.collectors.map(\.name).joined(separator: ", "))"
            )
        }
        guard let site = topology.site(named: c.idb.site) else {
            throw TopologyError(path: "collectors", message: "collector \(name): unknown IDB site \(c.idb.site)")
        }
        var queue = DiskQueueConfiguration(directory: c.queueDir)
        if let v = environment["BCPIPE_QUEUE_MAX_BYTES"].flatMap(Int.init) { queue.maxBytes = v }
        if let v = environment["BCPIPE_QUEUE_RESERVE_BYTES"].flatMap(Int.init) { queue.freeDiskReserve = v }
        var s = CollectorSettings(
            name: c.name, source: c.source, sourceNames: Set(topology.sources.map(\.name)), listen: c.listen,
            idbConninfo: site.postgres, idbDatabase: c.idb.database, idbSite: c.idb.site, queue: queue)
        if let token = environment["BCPIPE_INGEST_TOKEN"], !token.isEmpty { s.token = token }
        if let v = environment["BCPIPE_MAX_REQUEST_BYTES"].flatMap(Int.init) { s.maxRequestBytes = v }
        if let v = environment["BCPIPE_MAX_CONCURRENT_REQUESTS"].flatMap(Int.init), v > 0 {
            s.maxConcurrentRequests = v
        }
        if let user = environment["BCPIPE_DB_USER"], !user.isEmpty { s.idbUser = user }
        return s
    }
}
