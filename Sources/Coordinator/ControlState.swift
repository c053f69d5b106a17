import Foundation
import PostgresClient
import Topology

/// A mart's `control` view of the deployment: epoch, phase, role, fencing, what disaster
/// recovery retired, the procedure in progress and the journal. Each site's mart holds its own;
/// the deployment's epoch is the highest of them.
public struct ControlState: Codable, Sendable, Equatable {
    public struct Procedure: Codable, Sendable, Equatable {
        public var id: Int64
        public var kind: String
        public var target: String
        public var status: String
        public var stepsDone: [String]
        public var startedBy: String
        public var startedAt: String
        public var epochTo: Int64
    }

    public struct JournalEntry: Codable, Sendable, Equatable {
        public var at: String
        public var epoch: Int64
        public var actor: String
        public var procedure: String
        public var step: String
        public var status: String
        public var detail: String?
    }

    public var site: String?
    public var epoch: Int64
    public var phase: String
    public var mode: String?
    public var role: String?
    public var reportingSite: String?
    public var fencedReason: String?
    public var retiredSources: [String] = []
    public var retiredIDBs: [String] = []
    public var retiredSites: [String] = []
    public var procedure: Procedure?
    public var journal: [JournalEntry] = []

    /// Reads the state from a mart connection.
    public static func load(_ c: PostgresConnection, journal limit: Int = 30) async throws -> ControlState {
        guard
            let d = try await c.query(
                "SELECT site, epoch, phase, mode, role, reporting_site, fenced_reason FROM control.deployment"
            ).first
        else { throw ControlError("control.deployment is empty; run bcpipe db migrate") }
        var s = ControlState(
            site: d[0], epoch: try d.decode(1, as: Int64.self), phase: try d.decode(2, as: String.self), mode: d[3],
            role: d[4], reportingSite: d[5], fencedReason: d[6])
        for r in try await c.query("SELECT kind, name FROM control.retired ORDER BY kind, name") {
            switch r[0] {
            case "source": s.retiredSources.append(r[1] ?? "")
            case "idb": s.retiredIDBs.append(r[1] ?? "")
            default: s.retiredSites.append(r[1] ?? "")
            }
        }
        if let p = try await c.query(
            """
            SELECT id, kind, target, status, array_to_string(steps_done, ','), started_by, started_at, epoch_to
            FROM control.procedure ORDER BY id DESC LIMIT 1
            """
        ).first {
            s.procedure = Procedure(
                id: try p.decode(0, as: Int64.self), kind: try p.decode(1, as: String.self),
                target: try p.decode(2, as: String.self), status: try p.decode(3, as: String.self),
                stepsDone: (p[4] ?? "").split(separator: ",").map(String.init),
                startedBy: try p.decode(5, as: String.self), startedAt: p[6] ?? "",
                epochTo: try p.decode(7, as: Int64.self))
        }
        for r in try await c.query(
            "SELECT at, epoch, actor, procedure, step, status, detail::text FROM control.journal ORDER BY id DESC LIMIT \(limit)"
        ).reversed() {
            s.journal.append(
                JournalEntry(
                    at: r[0] ?? "", epoch: try r.decode(1, as: Int64.self), actor: r[2] ?? "", procedure: r[3] ?? "",
                    step: r[4] ?? "", status: r[5] ?? "", detail: r[6]))
        }
        return s
    }

    /// Writes the site, mode and role from the topology where they are still unset (first start).
    public static func initialize(_ c: PostgresConnection, topology: Topology, site: String) async throws {
        let role = topology.extractors.first { $0.site == site }?.role.rawValue
        let reporting = topology.extractors.first { $0.role == .active }?.site
        try await c.query(
            """
            UPDATE control.deployment SET site = COALESCE(site, $1), mode = COALESCE(mode, $2),
                role = COALESCE(role, $3), reporting_site = COALESCE(reporting_site, $4)
            WHERE site IS NULL OR mode IS NULL OR role IS NULL OR reporting_site IS NULL
            """, nullable: [site, topology.deployment.mode.rawValue, role, reporting])
    }
}

public struct ControlError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Who runs a procedure: `$BCPIPE_OPERATOR`, else the OS user, at this host.
public func operatorIdentity() -> String {
    let env = ProcessInfo.processInfo.environment
    let who = env["BCPIPE_OPERATOR"] ?? env["USER"] ?? env["LOGNAME"] ?? "uid\(getuid())"
    return "\(who)@\(ProcessInfo.processInfo.hostName)"
}

extension ControlState {
    /// The reporting mart's site as the marts say it now: the reporting site named by the
    /// highest-epoch reachable mart that is not fenced (the topology's active extractor only when
    /// no mart answers with one — after disaster recovery the topology file no longer tells).
    public static func reportingSite(_ topology: Topology) async -> Topology.Site? {
        let best = await loadAll(topology).values.filter { $0.fencedReason == nil }.max { $0.epoch < $1.epoch }
        let name = best?.reportingSite ?? topology.extractors.first { $0.role == .active }?.site
        return name.flatMap(topology.site(named:))
    }
}

extension ControlState {
    /// The sites whose marts extract now: active in their own control row and not fenced, less
    /// the sites the highest-epoch mart retired. A mart that does not answer counts as active when
    /// the topology says so (what it extracted is unknown, and purging must then refuse).
    public static func activeMartSites(_ topology: Topology) async -> [String] {
        let states = await loadAll(topology)
        let leader = states.values.filter { $0.fencedReason == nil }.max { $0.epoch < $1.epoch }
        let retired = Set(leader?.retiredSites ?? [])
        return topology.extractors.compactMap { e in
            guard !retired.contains(e.site) else { return nil }
            guard let s = states[e.site] else { return e.role == .active ? e.site : nil }
            return s.fencedReason == nil && (s.role ?? e.role.rawValue) == "active" ? e.site : nil
        }
    }
}

extension ControlState {
    /// Every mart's control state that answers within a few seconds, by site.
    public static func loadAll(_ topology: Topology) async -> [String: ControlState] {
        var states: [String: ControlState] = [:]
        for site in topology.sites {
            var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
            config.connectTimeout = 3
            config.operationTimeout = 5
            guard let c = try? await PostgresConnection.connect(config) else { continue }
            states[site.name] = try? await load(c, journal: 0)
            await c.close()
        }
        return states
    }
}

/// Epoch numbers as ballots: the epochs a procedure journaled at a site raises to belong to that
/// site alone — of the deployment's `n` sites sorted by name, the one at index `i` owns the epochs
/// `e` with `e % n == (i + 1) % n` (site1 of two: 1, 3, 5…; site2: 2, 4, 6…). Two operators who
/// declare each other's site failed during a partition (each side sees the other as down) thus
/// raise different epochs, and when the link returns the lower one is fenced by its peer's
/// coordinator: never two writable reporting marts under one epoch.
public enum Epochs {
    public static func next(after epoch: Int64, at site: String, sites: [String]) -> Int64 {
        let names = Array(Set(sites)).sorted()
        let n = Int64(max(names.count, 1))
        let owned = Int64((names.firstIndex(of: site) ?? 0) + 1) % n
        var e = epoch + 1
        while e % n != owned { e += 1 }
        return e
    }

    public static func next(after epoch: Int64, at site: String, _ topology: Topology) -> Int64 {
        next(after: epoch, at: site, sites: topology.sites.map(\.name))
    }

    /// The epoch the same site owned before `epoch` (one of its own).
    public static func previous(before epoch: Int64, _ topology: Topology) -> Int64 {
        epoch - Int64(max(Set(topology.sites.map(\.name)).count, 1))
    }
}
