import Coordinator
import Foundation
import Lab
import PostgresClient
import Topology

/// Disaster-recovery figures on the lab, under live traffic: the time from `dr declare` starting
/// to the survivor's mart serving an interaction created after that moment (both modes). (The
/// replication lag is measured at paced rates by `benchReplicationLag`.)
func benchDisasterRecovery(workDir: String, basePort: Int) async throws {
    for (i, mode) in [Topology.Mode.activeStandby, .activeActive].enumerated() {
        let options = continuityLabOptions(basePort: basePort + 100 * i, mode: mode, traffic: 1_000)
        let lab = try await startBenchLab(workDir + "/dr-\(mode.rawValue)", options)
        defer { try? lab.down(remove: true) }
        let survivorView = try Topology.load(path: lab.topologyPath(site: "site2"))
        let site2 = survivorView.site(named: "site2")!
        let observer = try Topology.load(path: lab.topologyPath)
        let mart2 = try await PostgresConnection.connect(
            PostgresConfiguration(conninfo: observer.site(named: "site2")!.postgres, database: "mart"))
        defer { Task { await mart2.close() } }
        // Settle: the active mart (and in active-standby its replica) carry the traffic.
        let settle = Date()
        while Date().timeIntervalSince(settle) < 60 {
            let n = try await mart2.query("SELECT count(*) FROM mart.event")[0].decode(0, as: Int.self)
            if n > 5_000 { break }
            if mode == .activeActive, n > 0 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        try lab.failSite("site1")
        let t0 = Date()
        let since = PostgresTimestamp(millisecondsSinceEpoch: Int64(t0.timeIntervalSince1970 * 1000))
        _ = try await DisasterRecovery(
            topology: survivorView, failedSite: "site1", confirmSiteDown: true, dryRun: false, actor: "bench",
            say: { _ in }
        ).run()
        let declared = Date().timeIntervalSince(t0)
        var served: Double?
        while Date().timeIntervalSince(t0) < 120 {
            let fresh = try await mart2.query(
                "SELECT count(*) FROM report.interactions WHERE source = 'site2/voice' AND created_at >= $1", [since])[
                    0
                ]
                .decode(0, as: Int.self)
            if fresh > 0 {
                served = Date().timeIntervalSince(t0)
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        print(
            "dr declare, \(mode.rawValue): steps done in \(fmt(declared, 2)) s; survivor's mart serving fresh data \(served.map { fmt($0, 2) + " s" } ?? "not within 120 s") after the command started   (goal ≤ 10 s; \(site2.name) carries on)"
        )
        figure(
            "Business continuity",
            "`dr declare` → survivor's mart serving an interaction created after the command started, \(mode.rawValue) (lab traffic 1 000 events/s)",
            "\(served.map { fmt($0, 2) + " s" } ?? "not within 120 s") (steps \(fmt(declared, 2)) s)",
            goal: "goal ≤ 10 s")
    }
}
