import Foundation

/// The deployment described by the topology file of CONTRACT 3, validated.
public struct Topology: Sendable, Equatable {
    public var deployment: Deployment
    public var sites: [Site]
    public var sources: [Source]
    public var collectors: [Collector]
    public var extractors: [Extractor]
    public var extract: ExtractSettings
    public var reporting: ReportingSettings
    public var retention: RetentionSettings
    /// `bcpipe witness run` processes outside every site (CONTRACT 6.4): `dr declare` asks them
    /// whether the failed site still answers before it promotes anything.
    public var witnesses: [HostPort]
    /// The directory relative paths in the file (`queue_dir`) are resolved against.
    public var baseDirectory: String

    public init(
        deployment: Deployment, sites: [Site], sources: [Source], collectors: [Collector], extractors: [Extractor],
        extract: ExtractSettings = .init(), reporting: ReportingSettings = .init(),
        retention: RetentionSettings = .init(), witnesses: [HostPort] = [],
        baseDirectory: String
    ) {
        self.deployment = deployment
        self.sites = sites
        self.sources = sources
        self.collectors = collectors
        self.extractors = extractors
        self.extract = extract
        self.reporting = reporting
        self.retention = retention
        self.witnesses = witnesses
        self.baseDirectory = baseDirectory
    }

    public struct Deployment: Sendable, Equatable {
        public var name: String
        public var mode: Mode
        public init(name: String, mode: Mode) {
            self.name = name
            self.mode = mode
        }
    }

    /// How the sites' marts work together.
    public enum Mode: String, Sendable, Equatable, CaseIterable, Codable {
        case activeActive = "active-active"
        case activeStandby = "active-standby"
    }

    public struct Site: Sendable, Equatable {
        public var name: String
        /// libpq conninfo of the site's PostgreSQL server, as this host reaches it.
        public var postgres: String
        /// The coordinator's HTTP address.
        public var coordinator: HostPort
        public init(name: String, postgres: String, coordinator: HostPort) {
            self.name = name
            self.postgres = postgres
            self.coordinator = coordinator
        }
    }

    public struct Source: Sendable, Equatable {
        public var name: String
        public var site: String
        public init(name: String, site: String) {
            self.name = name
            self.site = site
        }
    }

    public struct IDBRef: Sendable, Equatable, Hashable {
        public var site: String
        public var database: String
        public init(site: String, database: String) {
            self.site = site
            self.database = database
        }
    }

    public struct Collector: Sendable, Equatable {
        public var name: String
        public var source: String
        public var idb: IDBRef
        public var listen: HostPort
        /// The disk queue directory, absolute (resolved against the file's directory).
        public var queueDir: String
        public init(name: String, source: String, idb: IDBRef, listen: HostPort, queueDir: String) {
            self.name = name
            self.source = source
            self.idb = idb
            self.listen = listen
            self.queueDir = queueDir
        }
    }

    public enum ExtractorRole: String, Sendable, Equatable, CaseIterable, Codable {
        case active, standby
    }

    public struct Extractor: Sendable, Equatable {
        public var site: String
        public var role: ExtractorRole
        public init(site: String, role: ExtractorRole) {
            self.site = site
            self.role = role
        }
    }

    /// What happens to data that arrives after its source was declared stuck (CONTRACT 6.3).
    public enum LateDataPolicy: String, Sendable, Equatable, CaseIterable {
        case discard, backfill
    }

    public struct ExtractSettings: Sendable, Equatable {
        /// Info Mart's `extract-data-stuck-threshold`, seconds.
        public var dataStuckThreshold: Int = 28_800
        public var lateData: LateDataPolicy = .discard
        /// Seconds between extraction cycles at most.
        public var interval: Double = 1
        public init() {}
    }

    public struct ReportingSettings: Sendable, Equatable {
        /// The service-level threshold for `answered_within_sla`, seconds.
        public var slaSeconds: Int = 20
        /// Per-queue overrides of ``slaSeconds`` (`reporting.queues.NAME.sla_seconds`).
        public var queueSLASeconds: [String: Int] = [:]
        /// Abandons within this wait are short abandons (counted apart, and in `abandoned`).
        public var shortAbandonSeconds: Int = 5
        /// IANA zones the interval views are kept in (PostgreSQL's time-zone database names them).
        public var timeZones: [String] = ["UTC"]
        /// The sub-hour level's length: 15 or 30 minutes.
        public var subHourMinutes: Int = 15
        public init() {}

        /// The SLA of `queue`, seconds.
        public func slaSeconds(queue: String) -> Int { queueSLASeconds[queue] ?? slaSeconds }
    }

    public struct RetentionSettings: Sendable, Equatable {
        /// Events and facts older than this many days leave the mart (nil: kept forever).
        public var martDays: Int?
        public init(martDays: Int? = nil) { self.martDays = martDays }
    }

    /// The site with this name, if any.
    public func site(named name: String) -> Site? { sites.first { $0.name == name } }

    /// The collector with this name, if any.
    public func collector(named name: String) -> Collector? { collectors.first { $0.name == name } }

    /// Every IDB of the deployment, in collector order.
    public var idbs: [IDBRef] {
        var seen = Set<IDBRef>()
        return collectors.map(\.idb).filter { seen.insert($0).inserted }
    }

    /// The databases a site's server holds: its IDBs and its mart.
    public func databases(atSite site: String) -> [String] {
        idbs.filter { $0.site == site }.map(\.database) + [Topology.martDatabase]
    }

    /// The name of the mart database on every site's server.
    public static let martDatabase = "mart"
}

/// `host:port`, as the topology writes listen and coordinator addresses.
public struct HostPort: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `127.0.0.1:7101` or `[::1]:7101`.
    public init?(_ text: String) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return nil
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            if hostPart.contains(":") { return nil }
        }
        guard !hostPart.isEmpty, let port = Int(portPart), (1...65535).contains(port) else { return nil }
        host = String(hostPart)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A topology file that cannot be used, with the path of the bad key.
public struct TopologyError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The key path, e.g. `collectors[2].idb.site`; empty for the whole file.
    public var path: String
    public var message: String
    /// The file, when the topology came from one.
    public var file: String?
    /// 1-based line in the file, when known.
    public var line: Int?

    public init(path: String, message: String, file: String? = nil, line: Int? = nil) {
        self.path = path
        self.message = message
        self.file = file
        self.line = line
    }

    public var description: String {
        var where_ = file ?? "topology"
        if let line { where_ += ":\(line)" }
        return path.isEmpty ? "\(where_): \(message)" : "\(where_): \(path): \(message)"
    }
}

/// A command refused by a safety rule (exit code 3): which rule, and what would make it pass.
public struct SafetyRefusal: Error, CustomStringConvertible, Sendable {
    public var rule: String
    public var message: String
    public var remedy: String

    public init(rule: String, message: String, remedy: String) {
        self.rule = rule
        self.message = message
        self.remedy = remedy
    }

    public var description: String { "refused by rule \"\(rule)\": \(message); \(remedy)" }
}
