import Foundation
import PostgresClient
import Topology

/// Every statement on a mart's deployment control tables (`control.deployment`, `procedure`,
/// `journal`, `retired`, `purge_hold`, the procedures' writes to `source_state` and `watermark`),
/// SQL/mart/004 and 008's one owner in Swift. Procedures, the coordinator, the extractor's commit
/// rule and the status read and write through it and get typed values back. (The extractor's own
/// bookkeeping of each cycle — watermarks, source states, gaps — is ``MartWriter``'s.)
public struct ControlStore: Sendable {
    public let connection: PostgresConnection

    public init(_ connection: PostgresConnection) { self.connection = connection }

    // MARK: reading

    /// The mart's control state, with the last `journal` journal entries.
    public func load(journal limit: Int = 30) async throws -> ControlState {
        let c = connection
        guard let d = try await c.query(SQL.deployment).first else {
            throw ControlError(
                .notMigrated,
                "control.deployment is empty in \(c.configuration.targetDescription); run bcpipe db migrate")
        }
        var s = ControlState(
            site: d[0], epoch: try d.decode(1, as: Int64.self), phase: try Self.decode(d[2], as: Phase.self),
            mode: try d[3].map { try Self.decode($0, as: Topology.Mode.self) },
            role: try d[4].map { try Self.decode($0, as: Role.self) }, reportingSite: d[5], fencedReason: d[6])
        s.subscribed = try d.decode(7, as: Bool.self)
        for r in try await c.query("SELECT kind, name FROM control.retired ORDER BY kind, name") {
            switch r[0] {
            case "source": s.retiredSources.append(r[1] ?? "")
            case "idb": s.retiredIDBs.append(r[1] ?? "")
            default: s.retiredSites.append(r[1] ?? "")
            }
        }
        if let p = try await c.query(SQL.latestProcedure).first {
            s.procedure = ControlState.Procedure(
                id: try p.decode(0, as: Int64.self), kind: try Self.decode(p[1], as: ProcedureKind.self),
                target: try p.decode(2, as: String.self), status: try Self.decode(p[3], as: ProcedureStatus.self),
                stepsDone: try (p[4] ?? "").split(separator: ",").map { try Self.decode(String($0), as: Step.self) },
                startedBy: try p.decode(5, as: String.self), startedAt: p[6] ?? "",
                epochTo: try p.decode(7, as: Int64.self))
        }
        if limit > 0 {
            for r in try await c.query(SQL.journal(limit: limit)).reversed() {
                s.journal.append(
                    ControlState.JournalEntry(
                        at: r[0] ?? "", epoch: try r.decode(1, as: Int64.self), actor: r[2] ?? "",
                        procedure: r[3] ?? "", step: r[4] ?? "", status: r[5] ?? "", detail: r[6]))
            }
        }
        return s
    }

    static func decode<T: RawRepresentable>(_ value: String?, as: T.Type) throws -> T where T.RawValue == String {
        guard let value, let v = T(rawValue: value) else {
            throw ControlError(
                .inconsistent,
                "the mart's control tables hold \(value.map { "\"\($0)\"" } ?? "NULL") where a \(T.self) is expected; run bcpipe db migrate with this version"
            )
        }
        return v
    }

    /// What an extractor cycle checks: the epoch, role and fence, `FOR SHARE` inside the cycle's
    /// transaction (a procedure step changing the row waits for the cycle to end).
    public func stamp(forShare: Bool) async throws -> CycleStamp? {
        guard let r = try await connection.query(forShare ? SQL.stampForShare : SQL.stamp).first else { return nil }
        return CycleStamp(
            epoch: try r.decode(0, as: Int64.self), role: try r[1].map { try Self.decode($0, as: Role.self) },
            fencedReason: r[2])
    }

    /// The IDBs disaster recovery retired (`site/database`).
    public func retiredIDBs() async throws -> Set<String> {
        Set(try await connection.query("SELECT name FROM control.retired WHERE kind = 'idb'").compactMap { $0[0] })
    }

    /// How many of `sources` this mart (a standby reading its replicated rows) still calls retired.
    public func retiredSourceCount(_ sources: [String]) async throws -> Int64 {
        try await connection.query(
            "SELECT count(*) FROM control.source_state WHERE source = ANY($1::text[]) AND state = $2",
            [Self.array(sources), SourceState.retired.rawValue])[0].decode(0, as: Int64.self)
    }

    // MARK: the procedure lock, rows and journal

    /// Takes the procedure lock of this mart for this session: one procedure at a time writes to
    /// a mart — the one it journals to and any other it changes. Waits up to 60 s.
    public func lockProcedures(site: String) async throws {
        try await connection.execute("SET lock_timeout = '60s'")
        do {
            try await connection.query("SELECT pg_advisory_lock(hashtext('bcpipe procedure'))")
        } catch let e as PostgresError where e.sqlState == "55P03" {
            throw ControlError(
                .busy,
                "another procedure has held \(site)'s mart for 60 s (see bcpipe status); run this again when it has finished",
                cause: e)
        }
    }

    /// Records a new procedure (and, for a declaration, what guarded it) in one transaction.
    public func insertProcedure(
        _ plan: DeploymentMachine.Plan, args: [String: String], actor: String,
        safetyCheck: (status: String, found: String)? = nil
    ) async throws -> Int64 {
        let argsJSON = String(decoding: try JSONEncoder.sortedKeys.encode(args), as: UTF8.self)
        let journalName = plan.journalName
        return try await connection.transaction { c in
            let id = try await c.query(
                """
                INSERT INTO control.procedure (kind, target, args, epoch_from, epoch_to, started_by)
                VALUES ($1, $2, $3::jsonb, $4::bigint, $5::bigint, $6) RETURNING id
                """, [plan.kind.rawValue, plan.target, argsJSON, plan.epochFrom, plan.epochTo, actor]
            )[0].decode(0, as: Int64.self)
            if let safetyCheck {
                try await c.query(
                    """
                    INSERT INTO control.journal (epoch, actor, procedure, step, status, detail)
                    VALUES ($1, $2, $3, 'safety-check', $4, jsonb_build_object('found', $5::text))
                    """, [plan.epochTo, actor, journalName, safetyCheck.status, safetyCheck.found])
            }
            return id
        }
    }

    /// Marks a step done and journals it with the operator, in one transaction.
    public func stepDone(
        _ step: Step, procedure: Int64, epoch: Int64, actor: String, journalName: String, detail: String
    ) async throws {
        try await connection.transaction { c in
            try await c.query(
                "UPDATE control.procedure SET steps_done = array_append(steps_done, $2) WHERE id = $1",
                [procedure, step.rawValue])
            try await c.query(
                """
                INSERT INTO control.journal (epoch, actor, procedure, step, status, detail)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb)
                """, [epoch, actor, journalName, step.rawValue, ProcedureStatus.done.rawValue, detail])
        }
    }

    public func finishProcedure(_ id: Int64) async throws {
        try await connection.query(
            "UPDATE control.procedure SET status = $2, finished_at = now() WHERE id = $1",
            [id, ProcedureStatus.done.rawValue])
    }

    // MARK: the deployment row

    /// Writes the site, mode and role from the topology where they are still unset (first start).
    public func initialize(topology: Topology, site: String) async throws {
        let role = topology.extractors.first { $0.site == site }?.role.rawValue
        let reporting = topology.extractors.first { $0.role == .active }?.site
        try await connection.query(
            """
            UPDATE control.deployment SET site = COALESCE(site, $1), mode = COALESCE(mode, $2),
                role = COALESCE(role, $3), reporting_site = COALESCE(reporting_site, $4)
            WHERE site IS NULL OR mode IS NULL OR role IS NULL OR reporting_site IS NULL
            """, nullable: [site, topology.deployment.mode.rawValue, role, reporting])
    }

    /// Raises the epoch to at least `epoch` (never lowers it) and sets the phase if given. Waits
    /// for an extractor cycle in flight (it holds the row `FOR SHARE`).
    public func raiseEpoch(to epoch: Int64, phase: Phase? = nil) async throws {
        try await connection.query(
            "UPDATE control.deployment SET epoch = GREATEST(epoch, $1), phase = COALESCE($2, phase), updated_at = now()",
            nullable: [epoch, phase?.rawValue])
    }

    public func setPhase(_ phase: Phase) async throws {
        try await connection.query(
            "UPDATE control.deployment SET phase = $1, updated_at = now()", [phase.rawValue])
    }

    /// Sets the role, and where given the reporting site and (at least) the epoch.
    public func setRole(_ role: Role?, reporting: String? = nil, epoch: Int64? = nil) async throws {
        try await connection.query(
            """
            UPDATE control.deployment SET role = COALESCE($1, role), reporting_site = COALESCE($2, reporting_site),
                epoch = GREATEST(epoch, COALESCE($3, epoch)), updated_at = now()
            """, nullable: [role?.rawValue, reporting, epoch])
    }

    /// Fences this mart because a peer retired its site at `epoch` — only if it holds a lower
    /// epoch still (return to normal may have re-admitted it since it was read). Whether it did.
    public func fence(reason: String, epoch: Int64) async throws -> Bool {
        try await connection.query(
            "UPDATE control.deployment SET fenced_reason = $1, fenced_epoch = $2 WHERE epoch < $2 AND fenced_reason IS NULL",
            [reason, epoch]
        ).affectedRows > 0
    }

    /// A returning site's mart made a standby of the deployment again: its row rewritten, what
    /// its old life retired and any procedure it was running forgotten.
    public func resetForReturn(site: String, epoch: Int64, reporting: String, mode: Topology.Mode) async throws {
        try await connection.query(
            """
            UPDATE control.deployment SET site = $1, epoch = $2, phase = $5, role = $6,
                reporting_site = $3, fenced_reason = NULL, fenced_epoch = NULL, mode = $4, updated_at = now()
            """, [site, epoch, reporting, mode.rawValue, Phase.returnToNormal.rawValue, Role.standby.rawValue])
        try await connection.execute("DELETE FROM control.retired")
        try await connection.query(
            "DELETE FROM control.procedure WHERE status = $1", [ProcedureStatus.running.rawValue])
    }

    // MARK: retiring and re-admitting a site

    /// Disaster recovery's retire step: the site, its sources (their state `retired`) and IDBs.
    public func retire(site: String, sources: [String], idbs: [String], epoch: Int64) async throws {
        try await connection.transaction { c in
            try await c.query(
                "INSERT INTO control.retired (kind, name, epoch) VALUES ('site', $1, $2) ON CONFLICT DO NOTHING",
                [site, epoch])
            for s in sources {
                try await c.query(
                    "INSERT INTO control.retired (kind, name, epoch) VALUES ('source', $1, $2) ON CONFLICT DO NOTHING",
                    [s, epoch])
            }
            for i in idbs {
                try await c.query(
                    "INSERT INTO control.retired (kind, name, epoch) VALUES ('idb', $1, $2) ON CONFLICT DO NOTHING",
                    [i, epoch])
            }
        }
        try await markRetired(sources: sources, site: site)
    }

    /// The sources' state `retired` (what the reports say of them).
    public func markRetired(sources: [String], site: String) async throws {
        for s in sources {
            try await connection.query(
                """
                INSERT INTO control.source_state (source, site, state) VALUES ($1, $2, $3)
                ON CONFLICT (source) DO UPDATE SET state = $3, updated_at = now()
                """, [s, site, SourceState.retired.rawValue])
        }
    }

    /// Return to normal's re-admission in this mart, in one transaction: the new epoch (an
    /// extractor cycle that started before commits nothing), the site no longer retired; where
    /// this mart's extractor writes (`extracting`), the sources current again and the site's IDBs
    /// read again from the start (the merge by (source, seq) takes each event once).
    public func readmit(
        site: String, sources: [String], idbs: [(site: String, database: String)], epoch: Int64, extracting: Bool
    ) async throws {
        let names = Self.array(sources)
        let pairs = idbs.map { [$0.site, $0.database] }
        try await connection.transaction { c in
            try await c.query("UPDATE control.deployment SET epoch = GREATEST(epoch, $1)", [epoch])
            try await c.query(
                "DELETE FROM control.retired WHERE (kind = 'site' AND name = $1) OR (kind = 'source' AND name = ANY($2::text[])) OR (kind = 'idb' AND name LIKE $1 || '/%')",
                [site, names])
            guard extracting else { return }
            try await c.query(
                "UPDATE control.source_state SET state = $2, last_advanced_at = now(), updated_at = now() WHERE source = ANY($1::text[])",
                [names, SourceState.current.rawValue])
            for p in pairs {
                try await c.query(
                    "DELETE FROM control.watermark WHERE idb_site = $1 AND idb_database = $2", [p[0], p[1]])
            }
        }
    }

    // MARK: purge holds

    /// Holds IDB purges (once per reason).
    public func holdPurges(reason: String, actor: String) async throws {
        try await connection.query(
            """
            INSERT INTO control.purge_hold (reason, set_by)
            SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM control.purge_hold WHERE reason = $1 AND released_at IS NULL)
            """, [reason, actor])
    }

    /// The purge holds in force, oldest first.
    public func purgeHolds() async throws -> [(reason: String, setBy: String, setAt: String)] {
        try await connection.query(
            "SELECT reason, set_by, set_at::text FROM control.purge_hold WHERE released_at IS NULL ORDER BY set_at"
        ).map { ($0[0] ?? "", $0[1] ?? "", $0[2] ?? "") }
    }

    public func releasePurges(reason: String) async throws {
        try await connection.query(
            "UPDATE control.purge_hold SET released_at = now() WHERE reason = $1 AND released_at IS NULL", [reason])
    }

    // MARK: the switch-over marker

    /// A row written on the old active after it stopped writing; seen on the new one once
    /// replication has carried everything before it. Returns its stamp.
    public func writeSwitchOverMarker() async throws -> String {
        try await connection.query(
            """
            INSERT INTO control.extractor (site, epoch, complete_through, cycles) VALUES ($1, 0, NULL, 0)
            ON CONFLICT (site) DO UPDATE SET updated_at = clock_timestamp() RETURNING updated_at::text
            """, [SQL.marker])[0][0] ?? ""
    }

    public func switchOverMarker() async throws -> String? {
        try await connection.query(
            "SELECT updated_at::text FROM control.extractor WHERE site = $1", [SQL.marker]
        ).first?[0]
    }

    public func deleteSwitchOverMarker() async throws {
        try await connection.query("DELETE FROM control.extractor WHERE site = $1", [SQL.marker])
    }

    // MARK: status

    /// An extractor's progress: its completeness and cycle count.
    public func extractorProgress(site: String) async throws -> (completeThrough: String?, cycles: Int64)? {
        guard
            let e = try await connection.query(
                "SELECT complete_through, cycles FROM control.extractor WHERE site = $1", [site]
            ).first
        else { return nil }
        return (e[0], try e.decode(1, as: Int64.self))
    }

    /// Each source's state and completeness.
    public func sourceStates() async throws -> [SourceStatus] {
        try await connection.query(
            "SELECT source, state, complete_through, extract(epoch FROM now() - complete_through) FROM control.source_state ORDER BY source"
        ).map {
            SourceStatus(
                source: try $0.decode(0, as: String.self), state: try Self.decode($0[1], as: SourceState.self),
                completeThrough: $0[2], lagSeconds: try $0.decode(3, as: Double?.self))
        }
    }

    // MARK: every mart

    /// Every mart's control state that answers within a few seconds, by site.
    public static func loadAll(_ topology: Topology) async -> [String: ControlState] {
        var states: [String: ControlState] = [:]
        for site in topology.sites {
            var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
            config.connectTimeout = 3
            config.operationTimeout = 5
            states[site.name] = try? await PostgresConnection.with(config) {
                try await ControlStore($0).load(journal: 0)
            }
        }
        return states
    }

    /// The reporting mart's site as the marts say it now (``DeploymentMachine/reportingSite``).
    public static func reportingSite(_ topology: Topology) async -> Topology.Site? {
        DeploymentMachine(topology: topology, marts: await loadAll(topology)).reportingSite.flatMap(
            topology.site(named:))
    }

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
            return s.fencedReason == nil && (s.role?.rawValue ?? e.role.rawValue) == Role.active.rawValue ? e.site : nil
        }
    }

    static func array(_ values: [String]) -> String { "{" + values.joined(separator: ",") + "}" }

    enum SQL {
        static let deployment = """
            SELECT site, epoch, phase, mode, role, reporting_site, fenced_reason,
                   EXISTS (SELECT 1 FROM pg_subscription
                           WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))
            FROM control.deployment
            """
        static let latestProcedure = """
            SELECT id, kind, target, status, array_to_string(steps_done, ','), started_by, started_at, epoch_to
            FROM control.procedure ORDER BY id DESC LIMIT 1
            """
        static func journal(limit: Int) -> String {
            "SELECT at, epoch, actor, procedure, step, status, detail::text FROM control.journal ORDER BY id DESC LIMIT \(limit)"
        }
        static let stamp = "SELECT epoch, role, fenced_reason FROM control.deployment"
        static let stampForShare = stamp + " FOR SHARE"
        static let marker = "switch-over marker"
    }
}

extension JSONEncoder {
    /// Compact, keys sorted: what the status documents and the journal's details are written with.
    public static var sortedKeys: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

/// A source's state and completeness in a mart (`control.source_state`).
public struct SourceStatus: Codable, Sendable, Equatable {
    public var source: String
    public var state: SourceState
    public var completeThrough: String?
    /// Seconds from its completeness to now.
    public var lagSeconds: Double?

    public init(source: String, state: SourceState, completeThrough: String?, lagSeconds: Double?) {
        self.source = source
        self.state = state
        self.completeThrough = completeThrough
        self.lagSeconds = lagSeconds
    }
}
