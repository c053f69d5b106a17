import Foundation
import PostgresClient
import Topology

/// `bcpipe rtn start` (CONTRACT 6.5): purge hold on, a consistent copy of the reporting mart to
/// the returning site without a gap — a logical slot created with an exported snapshot, the
/// tables dumped from that snapshot, then (active-standby) a subscription from that very slot
/// with `copy_data = false`, or (active-active) the copied watermarks as the new extractor's
/// start — then the site's sources, IDBs and collectors re-admitted, purge hold off, `normal`.
/// Journaled and resumable like `dr declare`; the copy step is redone whole if interrupted.
public struct ReturnToNormal: Sendable {
    public var topology: Topology
    public var site: String
    public var active: String
    public var dryRun: Bool
    public var actor: String
    public var say: @Sendable (String) -> Void

    /// The steps; with a switch-over (`--active` the returning site, active-standby) one more.
    public static func steps(switchOver: Bool) -> [(name: String, what: String)] {
        var steps = [
            ("purge-hold", "hold IDB purges until the returning site has caught up"),
            ("return-to-normal", "phase return-to-normal"),
            ("prepare", "clear the returning site's mart and fence; it waits as a standby during the copy"),
            ("copy", "copy the reporting mart from an exported snapshot, then follow it from the same slot"),
            ("re-admit", "re-admit the site's sources and IDBs (its IDBs are read again from the start); new epoch"),
        ]
        if switchOver {
            steps.append(
                (
                    "switch-over",
                    "the reporting site stops writing, the returning mart catches up and becomes the active one; the old one follows it"
                ))
        }
        steps.append(("normal", "release the purge hold; phase normal"))
        return steps
    }

    public init(
        topology: Topology, site: String, active: String, dryRun: Bool, actor: String = operatorIdentity(),
        say: @escaping @Sendable (String) -> Void
    ) {
        self.topology = topology
        self.site = site
        self.active = active
        self.dryRun = dryRun
        self.actor = actor
        self.say = say
    }

    static func connect(_ site: Topology.Site, _ database: String = Topology.martDatabase) async throws
        -> PostgresConnection
    {
        var config = PostgresConfiguration(conninfo: site.postgres, database: database)
        config.connectTimeout = 5
        config.statementTimeoutMilliseconds = 600_000
        config.applicationName = "bcpipe rtn start"
        return try await PostgresConnection.connect(config)
    }

    public func run() async throws -> DisasterRecovery.Outcome {
        guard let newSite = topology.site(named: site) else {
            throw TopologyError(
                path: "--site",
                message: "unknown site \"\(site)\"; sites are \(topology.sites.map(\.name).joined(separator: ", "))")
        }
        guard let activeSite = topology.site(named: active) else {
            throw TopologyError(path: "--active", message: "unknown site \"\(active)\"")
        }
        guard topology.extractors.contains(where: { $0.site == site }) else {
            throw SafetyRefusal(
                rule: "returning-site-has-a-mart",
                message: "site \(site) has no extractor (and so no mart) in the topology",
                remedy: "add `- { site: \(site), role: standby }` under extractors in the topology file")
        }
        let switchOver = active == site
        if switchOver && isActiveActive {
            throw SafetyRefusal(
                rule: "switch-over", message: "active-active has no switch-over: every site's mart is active",
                remedy: "pass --active with the site whose mart reports now")
        }
        // The mart that reports now: the copy's source, where the procedure is journaled.
        let current: Topology.Site
        if switchOver {
            guard let r = await ControlState.reportingSite(topology) else {
                throw ControlError("no reporting mart answers; it is the copy's source")
            }
            if r.name == site {
                // Done before: the returning site reports already.
                let c = try await Self.connect(newSite)
                let state = try await ControlState.load(c, journal: 0)
                await c.close()
                if state.phase == "normal", state.role == "active" {
                    let message =
                        "already done: \(site) is the active site and reports; phase normal, epoch \(state.epoch)"
                    say(message)
                    return .alreadyDone(message)
                }
                throw ControlError("\(site)'s mart reports but is in phase \(state.phase); see bcpipe status")
            }
            current = r
        } else {
            current = activeSite
        }
        let steps = Self.steps(switchOver: switchOver)
        let mart = try await Self.connect(current)
        defer { Task { await mart.close() } }
        try await ProcedureSteps.lock(mart, site: current.name)
        let state = try await ControlState.load(mart)
        guard state.reportingSite == current.name, state.fencedReason == nil else {
            throw SafetyRefusal(
                rule: "active-is-the-reporting-mart",
                message:
                    "\(current.name)'s mart is not the reporting mart (it names \(state.reportingSite ?? "none")\(state.fencedReason.map { "; fenced: \($0)" } ?? ""))",
                remedy: "pass --active with the site whose mart reports now (see bcpipe status)")
        }
        // Re-admission is one new epoch; the switch-over that follows it (moving the writer) another.
        let admitted = Epochs.next(after: state.epoch, at: current.name, topology)
        let epochTo = switchOver ? Epochs.next(after: admitted, at: current.name, topology) : admitted
        let runner = ProcedureSteps(
            mart: mart, kind: "rtn start", target: site, actor: actor, steps: steps, say: say)
        if state.procedure?.status != "running" {
            guard state.phase == "emergency" else {
                if state.phase == "normal", let p = state.procedure, p.kind == "rtn start", p.target == site {
                    let message = "already done: \(site) returned by \(p.startedBy) at \(p.startedAt); phase normal"
                    say(message)
                    return .alreadyDone(message)
                }
                throw SafetyRefusal(
                    rule: "phase", message: "the deployment is in phase \(state.phase), not emergency",
                    remedy: "return to normal follows disaster recovery (bcpipe dr declare)")
            }
            if dryRun {
                say(
                    "dry run: would return \(site) (as \(isActiveActive || switchOver ? "active" : "standby")) with \(active) reporting, epoch \(state.epoch) → \(admitted)\(switchOver ? " → \(epochTo) (switch-over)" : ""):"
                )
                for (i, s) in steps.enumerated() { say("  \(i + 1). \(s.name): \(s.what)") }
                return .dryRun
            }
        }
        let (returning, activeName, epochNow, who) = (site, active, state.epoch, actor)
        let procedure = try await runner.begin(state) {
            try await mart.query(
                """
                INSERT INTO control.procedure (kind, target, args, epoch_from, epoch_to, started_by)
                VALUES ('rtn start', $1, jsonb_build_object('active', $2::text), $3::bigint, $5::bigint, $4) RETURNING id
                """, [returning, activeName, epochNow, who, epochTo])[0].decode(0, as: Int64.self)
        }
        let epoch = procedure.epochTo
        try await runner.run(procedure) { step in
            let readmitted = switchOver ? Epochs.previous(before: epoch, topology) : epoch
            return try await perform(
                step, mart: mart, newSite: newSite, activeSite: current,
                epoch: step == "switch-over" ? epoch : readmitted)
        }
        say(
            "return to normal done: \(site) is \(isActiveActive || switchOver ? "active" : "the standby"), \(active)/mart reports; epoch \(epoch), phase normal"
        )
        return .done(epoch: epoch)
    }

    var isActiveActive: Bool { topology.deployment.mode == .activeActive }

    func perform(
        _ step: String, mart: PostgresConnection, newSite: Topology.Site, activeSite: Topology.Site, epoch: Int64
    ) async throws -> String {
        let reason = "rtn start \(site)"
        switch step {
        case "purge-hold":
            try await mart.query(
                """
                INSERT INTO control.purge_hold (reason, set_by)
                SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM control.purge_hold WHERE reason = $1 AND released_at IS NULL)
                """, [reason, actor])
            return #"{"hold": "\#(reason)"}"#
        case "return-to-normal":
            try await mart.query("UPDATE control.deployment SET phase = 'return-to-normal', updated_at = now()")
            return #"{"phase": "return-to-normal"}"#
        case "prepare":
            let target = try await Self.connect(newSite)
            defer { Task { await target.close() } }
            try await ProcedureSteps.lock(target, site: site)
            for r in try await target.query(
                "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ) {
                try await Replication.unsubscribe(target, r[0]!)
            }
            // Slots a recovered server kept for subscribers of its old life would hold WAL forever.
            try await target.query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bcpipe\\_%' AND NOT active"
            )
            try await target.query(
                """
                UPDATE control.deployment SET site = $1, epoch = $2, phase = 'return-to-normal', role = 'standby',
                    reporting_site = $3, fenced_reason = NULL, fenced_epoch = NULL, mode = $4, updated_at = now()
                """, [site, epoch, active, topology.deployment.mode.rawValue])
            try await target.execute(
                "DELETE FROM control.retired; DELETE FROM control.procedure WHERE status = 'running'")
            return #"{"site": "\#(site)", "role": "standby"}"#
        case "copy":
            return try await copy(newSite: newSite, activeSite: activeSite)
        case "re-admit":
            let failedSources = topology.sources.filter { $0.site == site }.map(\.name)
            let siteIDBs = topology.collectors.filter { $0.idb.site == site }
            // Both marts (in active-standby the standby gets the replicated tables anyway).
            let target = try await Self.connect(newSite)
            defer { Task { await target.close() } }
            try await ProcedureSteps.lock(target, site: site)
            for (c, isReporting) in [(mart, true), (target, false)] {
                try await c.transaction { c in
                    // The new epoch: an extractor cycle that started before this commits nothing.
                    try await c.query("UPDATE control.deployment SET epoch = GREATEST(epoch, $1)", [epoch])
                    try await c.query(
                        "DELETE FROM control.retired WHERE (kind = 'site' AND name = $1) OR (kind = 'source' AND name = ANY($2::text[])) OR (kind = 'idb' AND name LIKE $1 || '/%')",
                        [site, "{" + failedSources.joined(separator: ",") + "}"])
                    if isReporting || isActiveActive {
                        try await c.query(
                            "UPDATE control.source_state SET state = 'current', last_advanced_at = now(), updated_at = now() WHERE source = ANY($1::text[])",
                            ["{" + failedSources.joined(separator: ",") + "}"])
                        // Its IDBs may be new servers: read them again from the start (the merge
                        // by (source, seq) takes each event once).
                        for i in siteIDBs {
                            try await c.query(
                                "DELETE FROM control.watermark WHERE idb_site = $1 AND idb_database = $2",
                                [i.idb.site, i.idb.database])
                        }
                    }
                }
            }
            try await target.query(
                "UPDATE control.deployment SET role = $1", [isActiveActive ? "active" : "standby"])
            // Fences in the surviving IDBs are released.
            var released: [String] = []
            for c in topology.collectors where c.idb.site != site {
                guard let s = topology.site(named: c.idb.site) else { continue }
                guard let idb = try? await Self.connect(s, c.idb.database) else { continue }
                try await idb.query(
                    "UPDATE idb.fence SET released_at = now() WHERE failed_site = $1 AND released_at IS NULL", [site])
                await idb.close()
                released.append("\(c.idb.site)/\(c.idb.database)")
            }
            return
                #"{"sources": "\#(failedSources.joined(separator: ","))", "fences_released": "\#(released.joined(separator: ","))"}"#
        case "switch-over":
            let target = try await Self.connect(newSite)
            defer { Task { await target.close() } }
            try await ProcedureSteps.lock(target, site: site)
            return try await SwitchOver.switchOver(
                old: mart, new: target, oldSite: activeSite, newSite: newSite, epoch: epoch)
        case "normal":
            let target = try await Self.connect(newSite)
            defer { Task { await target.close() } }
            try await ProcedureSteps.lock(target, site: site)
            // The hold is released where the replicated tables are written now (the new active
            // after a switch-over).
            let writer = active == site ? target : mart
            try await writer.query(
                "UPDATE control.purge_hold SET released_at = now() WHERE reason = $1 AND released_at IS NULL", [reason])
            if !isActiveActive {
                // `normal` means the standby reports what the active does: it has replayed the
                // re-admission (its sources no longer `retired`) before the phase says so.
                try await waitForStandby(active == site ? mart : target)
            }
            try await mart.query("UPDATE control.deployment SET phase = 'normal', updated_at = now()")
            try await target.query("UPDATE control.deployment SET phase = 'normal', updated_at = now()")
            return #"{"phase": "normal"}"#
        default:
            throw ControlError("unknown step \(step)")
        }
    }

    /// Waits (60 s at most) until the standby's replicated `control.source_state` no longer calls
    /// this site's sources retired: the re-admission has reached it through replication.
    func waitForStandby(_ standby: PostgresConnection) async throws {
        let sources = "{" + topology.sources.filter { $0.site == site }.map(\.name).joined(separator: ",") + "}"
        let started = Date()
        while true {
            let left = try await standby.query(
                "SELECT count(*) FROM control.source_state WHERE source = ANY($1::text[]) AND state = 'retired'",
                [sources])[0].decode(0, as: Int64.self)
            if left == 0 { break }
            guard Date().timeIntervalSince(started) < 60 else {
                throw ControlError(
                    "the standby mart has not replayed the re-admission of \(site)'s sources within 60 s; see the replication line of bcpipe rtn status, then run this command again to finish"
                )
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        say("    the standby replayed the re-admission in \(Int(Date().timeIntervalSince(started) * 1000)) ms")
    }

    /// The gap-free copy: slot + exported snapshot on the reporting mart, each published table
    /// dumped from that snapshot into the returning mart, then replication from the slot.
    func copy(newSite: Topology.Site, activeSite: Topology.Site) async throws -> String {
        let slot = Replication.subscription(of: site)
        let target = try await Self.connect(newSite)
        defer { Task { await target.close() } }
        let source = try await Self.connect(activeSite)
        defer { Task { await source.close() } }
        // Redone whole when interrupted: no subscription or slot of an earlier attempt survives.
        try await Replication.unsubscribe(target, slot)
        try await Replication.dropSlot(source, slot)
        try await Replication.ensurePublication(source)
        try await target.execute("TRUNCATE \(Replication.tables.joined(separator: ", "))")
        // Loaded without their indexes and keys, built once afterwards (as pg_restore does): a
        // bulk build is several times cheaper than maintaining them row by row. The definitions
        // are kept in the target (control.copy_index), so an interrupted copy rebuilds whatever
        // it had dropped.
        // Only a session holding the target's procedure lock may drop them (SQL/mart/008).
        try await ProcedureSteps.lock(target, site: site)
        _ = try await target.query("SELECT control.drop_copy_indexes()")
        // Progress and time left by table size (bytes of heap): cheap to know, and what the copy costs.
        var sizes: [String: Double] = [:]
        for table in Replication.tables {
            sizes[table] = try await source.query(
                "SELECT COALESCE(sum(pg_relation_size(relid)), 0)::float8 FROM pg_partition_tree($1::regclass)", [table]
            )[0].decode(0, as: Double.self)
        }
        let totalBytes = max(1, sizes.values.reduce(0, +))

        // The replication connection exports the snapshot and must stay open while it is used.
        var config = PostgresConfiguration(conninfo: activeSite.postgres + " replication=database", database: "mart")
        config.connectTimeout = 5
        config.applicationName = "bcpipe rtn start"
        let replication = try await PostgresConnection.connect(config)
        let created = try await replication.execute("CREATE_REPLICATION_SLOT \(slot) LOGICAL pgoutput EXPORT_SNAPSHOT")
        guard let snapshot = created.first?[2] else { throw ControlError("the slot did not export a snapshot") }
        say("    slot \(slot) at \(created.first?[1] ?? "?"), snapshot \(snapshot)")
        let started = Date()
        var copiedBytes = 0.0
        let bin = try PostgresTools.binDirectory(containing: "pg_dump")
        // pg_dump and psql log in as this procedure does.
        let role = source.configuration.user.map { " user=\(PostgresConfiguration.conninfoValue($0))" } ?? ""
        for (i, table) in Replication.tables.enumerated() {
            let t0 = Date()
            let out = try PostgresTools.shell(
                """
                set -o pipefail
                "$BIN/pg_dump" --dbname="$SRC" --snapshot="$SNAP" --data-only --no-owner --no-privileges --table="$TABLE" \
                  --load-via-partition-root \
                  | "$BIN/psql" -q -X -v ON_ERROR_STOP=1 --dbname="$DST"
                """,
                environment: [
                    "BIN": bin, "SRC": "\(activeSite.postgres) dbname=mart\(role)",
                    "DST": "\(newSite.postgres) dbname=mart\(role)",
                    // A partitioned table's rows are in its partitions: they are dumped too
                    // and loaded through the root, into the target's own partitions.
                    "SNAP": snapshot, "TABLE": Replication.partitioned.contains(table) ? table + "*" : table,
                ])
            guard out.status == 0 else {
                await replication.close()
                throw ControlError("copying \(table) failed: \(out.text)")
            }
            copiedBytes += sizes[table] ?? 0
            let elapsed = Date().timeIntervalSince(started)
            let left = copiedBytes > 0 ? elapsed / copiedBytes * (totalBytes - copiedBytes) : 0
            say(
                "    \(i + 1)/\(Replication.tables.count) \(table): \(String(format: "%.1f", (sizes[table] ?? 0) / 1_048_576)) MiB in \(Int(Date().timeIntervalSince(t0) * 1000)) ms — \(Int(copiedBytes * 100 / totalBytes))% of \(String(format: "%.1f", totalBytes / 1_048_576)) MiB, about \(Int(left.rounded())) s left"
            )
        }
        await replication.close()
        let built = Date()
        try await target.execute("SET maintenance_work_mem = '256MB'")
        let rebuilt = try await target.query("SELECT control.build_copy_indexes()")[0].decode(0, as: Int.self)
        say("    \(rebuilt) indexes and keys built in \(Int(Date().timeIntervalSince(built) * 1000)) ms")
        try await Replication.fixSequences(target)
        if isActiveActive {
            // Its own extractor goes on from the copied watermarks; the slot is not needed.
            try await Replication.dropSlot(source, slot)
        } else {
            try await Replication.subscribe(
                target, site: site, publisher: source, publisherSite: activeSite.name, existingSlot: slot)
        }
        return
            #"{"slot": "\#(slot)", "snapshot": "\#(snapshot)", "seconds": \#(Int(Date().timeIntervalSince(started)))}"#
    }
}
