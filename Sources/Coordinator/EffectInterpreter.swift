import Control
import Foundation
import PostgresClient
import Topology

/// Carries out one ``DeploymentMachine/Effect`` against the databases: the marts through the
/// procedure's sessions (``ControlStore``), the IDBs' fences, replication. Every effect is
/// idempotent — a rerun after a kill does it again. Returns what the journal records of it.
struct EffectInterpreter: Sendable {
    var topology: Topology
    var sessions: MartSessions
    var actor: String
    var say: @Sendable (String) -> Void

    func perform(_ effect: DeploymentMachine.Effect) async throws -> [String: String] {
        switch effect {
        case .raiseEpoch(let site, let epoch, let phase):
            // Waits for an extractor cycle in flight (it holds the row FOR SHARE): after this, no
            // cycle of the old epoch commits.
            try await mart(site).raiseEpoch(to: epoch, phase: phase)
            var detail = ["epoch": "\(epoch)"]
            if let phase { detail["phase"] = phase.rawValue }
            return detail
        case .setPhase(let site, let phase):
            try await mart(site).setPhase(phase)
            return ["phase": phase.rawValue]
        case .fenceIDBs(let server, let failed, let epoch):
            return ["idbs": try await fenceIDBs(server: server, failed: failed, epoch: epoch)]
        case .retire(let site, let failed, let epoch):
            let (sources, idbs) = (sources(of: failed), idbs(at: failed).map { "\($0.site)/\($0.database)" })
            try await mart(site).retire(site: failed, sources: sources, idbs: idbs, epoch: epoch)
            return ["sources": sources.joined(separator: ","), "idbs": idbs.joined(separator: ",")]
        case .promote(let site):
            try await promote(site)
            return ["reporting_site": site]
        case .holdPurges(let site, let returning):
            try await mart(site).holdPurges(reason: Self.holdReason(returning), actor: actor)
            return ["hold": Self.holdReason(returning)]
        case .releasePurges(let site, let returning):
            try await mart(site).releasePurges(reason: Self.holdReason(returning))
            return ["released": Self.holdReason(returning)]
        case .prepare(let site, let epoch, let reporting):
            try await prepare(site, epoch: epoch, reporting: reporting)
            return ["site": site, "role": Role.standby.rawValue]
        case .copy(let site, let from, let follow):
            guard let newSite = topology.site(named: site), let activeSite = topology.site(named: from) else {
                throw ControlError(.inconsistent, "the copy names a site the topology does not have")
            }
            return try await MartCopy(
                target: try await mart(site).connection, source: try await mart(from).connection, newSite: newSite,
                activeSite: activeSite, follow: follow, say: say
            ).run()
        case .readmit(let site, let returning, let epoch, let extracting):
            try await mart(site).readmit(
                site: returning, sources: sources(of: returning), idbs: idbs(at: returning), epoch: epoch,
                extracting: extracting)
            return ["sources": sources(of: returning).joined(separator: ",")]
        case .setRole(let site, let role):
            try await mart(site).setRole(role)
            return ["role": "\(site) \(role.rawValue)"]
        case .releaseIDBFences(let failed):
            return ["fences_released": await releaseIDBFences(failed: failed)]
        case .awaitReadmission(let site, let returning):
            try await awaitReadmission(standby: site, returning: returning)
            return [:]
        case .stopWriting(let site, let epoch):
            try await mart(site).setRole(.standby, epoch: epoch)
            return ["standby": site]
        case .awaitCatchUp(let site, let from):
            try await awaitCatchUp(site, from: from)
            return [:]
        case .stopFollowing(let site, let publisher):
            try await Replication.detach(try await mart(site).connection, site: site)
            try await Replication.dropSlot(try await mart(publisher).connection, Replication.subscription(of: site))
            return [:]
        case .follow(let site, let publisher):
            try await follow(site, publisher: publisher)
            return ["follows": "\(site) → \(publisher)"]
        case .activate(let site, let epoch):
            try await mart(site).setRole(.active, reporting: site, epoch: epoch)
            return ["active": site]
        case .setReporting(let site, let reporting, let epoch):
            try await mart(site).setRole(nil, reporting: reporting, epoch: epoch)
            return ["reporting": reporting]
        }
    }

    func mart(_ site: String) async throws -> ControlStore { try await sessions.store(site) }

    static func holdReason(_ returning: String) -> String { "rtn start \(returning)" }

    func sources(of site: String) -> [String] { topology.sources.filter { $0.site == site }.map(\.name) }

    func idbs(at site: String) -> [(site: String, database: String)] {
        topology.collectors.filter { $0.idb.site == site }.map { ($0.idb.site, $0.idb.database) }
    }

    /// The fence against `failed` in the IDBs served at `server` (the failed site's extractor, if
    /// it comes back, reads it there and stops).
    func fenceIDBs(server: String, failed: String, epoch: Int64) async throws -> String {
        guard let s = topology.site(named: server) else { return "" }
        var written: [String] = []
        for (_, database) in idbs(at: server) {
            try await PostgresConnection.with(await sessions.configuration(s, database: database)) { idb in
                try await idb.query(
                    "INSERT INTO idb.fence (failed_site, epoch, declared_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    [failed, epoch, actor])
            }
            written.append("\(server)/\(database)")
        }
        return written.joined(separator: ",")
    }

    /// The fences against `failed` released in every IDB of the other sites that answers.
    func releaseIDBFences(failed: String) async -> String {
        var released: [String] = []
        for c in topology.collectors where c.idb.site != failed {
            guard let s = topology.site(named: c.idb.site) else { continue }
            let config = await sessions.configuration(s, database: c.idb.database)
            let done = try? await PostgresConnection.with(config) { idb in
                try await idb.query(
                    "UPDATE idb.fence SET released_at = now() WHERE failed_site = $1 AND released_at IS NULL", [failed])
            }
            if done != nil { released.append("\(c.idb.site)/\(c.idb.database)") }
        }
        return released.joined(separator: ",")
    }

    /// A standby stops subscribing to the failed active (its slot there is gone with it) and takes
    /// over the sequences replication did not carry; then it is the active and reporting mart.
    func promote(_ site: String) async throws {
        let store = try await mart(site)
        let c = store.connection
        if try await Replication.subscriptionExists(c, site: site), try await !Replication.isSynchronised(c, site: site)
        {
            // Promoted before its initial copy finished: what it holds is not one consistent
            // state, so it starts over from the surviving IDBs (the merge takes each event once).
            try await Replication.detach(c, site: site)
            try await c.execute("TRUNCATE \(Replication.tables.joined(separator: ", "))")
            // The retire step's mark on the failed site's sources went with the truncation.
            for failed in try await store.load(journal: 0).retiredSites {
                try await store.markRetired(sources: sources(of: failed), site: failed)
            }
            say("    the standby had not finished its initial copy: its mart is rebuilt from the surviving IDBs")
        }
        try await Replication.detach(c, site: site)
        try await Replication.fixSequences(c)
        try await store.setRole(.active, reporting: site)
    }

    /// The returning mart cleared: no subscription or slot of its old life, its control row that
    /// of a standby of this deployment.
    func prepare(_ site: String, epoch: Int64, reporting: String) async throws {
        let store = try await mart(site)
        let target = store.connection
        for r in try await target.query(
            "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ) {
            try await Replication.unsubscribe(target, r[0]!)
        }
        // Slots a recovered server kept for subscribers of its old life would hold WAL forever.
        try await target.query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bcpipe\\_%' AND NOT active"
        )
        try await store.resetForReturn(site: site, epoch: epoch, reporting: reporting, mode: topology.deployment.mode)
    }

    /// Waits (60 s at most) until the standby's replicated `control.source_state` no longer calls
    /// the returning site's sources retired: the re-admission has reached it through replication.
    func awaitReadmission(standby: String, returning: String) async throws {
        let store = try await mart(standby)
        let started = Date()
        while try await store.retiredSourceCount(sources(of: returning)) > 0 {
            guard Date().timeIntervalSince(started) < 60 else {
                throw ControlError(
                    .timedOut,
                    "the standby mart has not replayed the re-admission of \(returning)'s sources within 60 s; see the replication line of bcpipe rtn status, then run this command again to finish"
                )
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        say("    the standby replayed the re-admission in \(Int(Date().timeIntervalSince(started) * 1000)) ms")
    }

    /// Switch-over: a marker written on the old active after it stopped writing, awaited on the
    /// new one (so it holds everything the old one wrote).
    func awaitCatchUp(_ site: String, from: String) async throws {
        let marker = try await mart(from).writeSwitchOverMarker()
        let deadline = Date().addingTimeInterval(300)
        while try await mart(site).switchOverMarker() != marker {
            guard Date() < deadline else {
                throw ControlError(
                    .timedOut, "\(site) did not catch up with \(from) within 300 s; run the command again to resume")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// `site` follows `publisher` from here (both hold the same rows: no copy); the publisher
    /// takes over the sequences first.
    func follow(_ site: String, publisher: String) async throws {
        let (old, new) = (try await mart(site).connection, try await mart(publisher).connection)
        try await Replication.fixSequences(new)
        try await Replication.ensurePublication(new)
        if try await !Replication.subscriptionExists(old, site: site) {
            try await Replication.dropSlot(old, Replication.subscription(of: site))
            try await Replication.subscribe(old, site: site, publisher: new, publisherSite: publisher, copyData: false)
        }
        // (The delete is replicated to the old one.)
        try await mart(publisher).deleteSwitchOverMarker()
    }
}
