import Coordinator
import Foundation
import Lab
import PostgresClient
import Topology

/// Disaster-recovery figures on the lab, under live traffic: from `bcpipe dr declare` starting
/// (run as its own process, as an operator runs it) to the survivor's mart serving an
/// interaction whose events were first sent after that moment, in both modes. "After" is told by
/// two stamps: the event's own time (the lab's sources post an event only once its time has come)
/// and the survivor's IDB's `received_at` (the server's clock), both at or after the command's
/// start. The mart is polled from the command's start, not from its end. (The replication lag is
/// measured at paced rates by `benchReplicationLag`.)
func benchDisasterRecovery(workDir: String, basePort: Int) async throws {
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
        "bcpipe"
    ).path
    for (i, mode) in [Topology.Mode.activeStandby, .activeActive].enumerated() {
        let options = continuityLabOptions(basePort: basePort + 100 * i, mode: mode, traffic: 1_000)
        let lab = try await startBenchLab(workDir + "/dr-\(mode.rawValue)", options)
        defer { try? lab.down(remove: true) }
        let observer = try Topology.load(path: lab.topologyPath)
        let site2 = observer.site(named: "site2")!.postgres
        let served = try await PostgresConnection.with(PostgresConfiguration(conninfo: site2, database: "mart")) {
            mart2 in
            try await PostgresConnection.with(PostgresConfiguration(conninfo: site2, database: "idb_site2_a")) { idb in
                // Settle: the active mart (and in active-standby its replica) carry the traffic.
                let settle = Date()
                while Date().timeIntervalSince(settle) < 60 {
                    let n = try await mart2.query("SELECT count(*) FROM mart.event")[0].decode(0, as: Int.self)
                    if n > 5_000 || (mode == .activeActive && n > 0) { break }
                    try await Task.sleep(for: .milliseconds(200))
                }
                try lab.failSite("site1")
                let t0 = Date()
                let since = PostgresTimestamp(millisecondsSinceEpoch: Int64(t0.timeIntervalSince1970 * 1000))
                let command = Task {
                    let out = try await Processes.output(
                        [
                            exe, "dr", "declare", "--failed-site", "site1", "--confirm-site-down", "--config",
                            lab.topologyPath(site: "site2"),
                        ], timeout: 300)
                    guard out.status == 0 else { throw LabError("dr declare failed: \(out.text.suffix(800))") }
                    return Date().timeIntervalSince(t0)
                }
                var found: (at: Double, interaction: String, receivedAfter: Double)?
                while found == nil, Date().timeIntervalSince(t0) < 120 {
                    let candidates = try await mart2.query(
                        """
                        SELECT interaction FROM report.interactions
                        WHERE source = 'site2/voice' AND created_at >= $1 ORDER BY created_at LIMIT 20
                        """, [since]
                    ).compactMap { $0[0] }
                    let at = Date().timeIntervalSince(t0)
                    if !candidates.isEmpty {
                        let rows = try await idb.query(
                            """
                            SELECT interaction, extract(epoch FROM min(received_at))::float8 FROM idb.events
                            WHERE source = 'site2/voice' AND interaction = ANY($1::text[]) GROUP BY interaction
                            HAVING min(received_at) >= $2 AND min(ts) >= $2 ORDER BY 2 LIMIT 1
                            """, [textArray(candidates), since])
                        if let r = rows.first, let ix = r[0], let received = r[1].flatMap(Double.init) {
                            found = (at, ix, received - t0.timeIntervalSince1970)
                        }
                    }
                    if found == nil { try await Task.sleep(for: .milliseconds(50)) }
                }
                let steps = try await command.value
                return (found, steps)
            }
        }
        let (fresh, declared) = served
        let figureText =
            fresh.map {
                "\(fmt($0.at, 2)) s (its first event reached the survivor's IDB \(fmt($0.receivedAfter, 2)) s after the start; the command took \(fmt(declared, 2)) s)"
            } ?? "not within 120 s (the command took \(fmt(declared, 2)) s)"
        print(
            "dr declare, \(mode.rawValue): survivor's mart serving an interaction first sent after the command started: \(figureText)   (goal ≤ 10 s)"
        )
        figure(
            "Business continuity",
            "`bcpipe dr declare` (its own process) → survivor's mart serving an interaction whose events were first sent after the command started (event time and the IDB's `received_at` both after it), \(mode.rawValue), lab traffic 1 000 events/s, polled from the command's start",
            figureText, goal: "goal ≤ 10 s")
    }
}

/// A PostgreSQL `text[]` literal of `items`.
func textArray(_ items: [String]) -> String {
    let quoted = items.map {
        "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
    return "{" + quoted.joined(separator: ",") + "}"
}
