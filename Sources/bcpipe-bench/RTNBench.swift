import Coordinator
import Foundation
import Lab
import PostgresClient
import Synchronization
import Topology
import Traffic

/// Return to normal with a big mart: the survivor's mart (after `dr declare`) is grown to
/// `targetBytes` with copies of its own rows, then
/// - the baseline: `pg_dump -Fc | pg_restore` of that database into an empty one on the new
///   site's server (what an operator would do by hand, without the gap-free hand-over);
/// - `rtn start --site site3 --active site2`: its copy step (slot + exported snapshot, per-table
///   `pg_dump --snapshot | psql`) with the lab's traffic still flowing into the survivor, then the
///   catch-up: the time from the copy's end until the new subscriber has confirmed all the WAL the
///   survivor wrote up to the end of the command.
func benchReturnToNormal(workDir: String, basePort: Int, targetBytes: Int64) async throws {
    let options = continuityLabOptions(basePort: basePort, mode: .activeStandby, traffic: 1_000)
    let lab = try await startBenchLab(workDir + "/rtn", options)
    defer { try? lab.down(remove: true) }
    let survivorView = try Topology.load(path: lab.topologyPath(site: "site2"))
    let site2 = survivorView.site(named: "site2")!
    try await Task.sleep(for: .seconds(10))
    try lab.failSite("site1")
    _ = try await DisasterRecovery(
        topology: survivorView, failedSite: "site1", confirmSiteDown: true, dryRun: false, actor: "bench",
        say: { _ in }
    ).run()

    // Grow the survivor's mart: its events and interaction facts copied under new keys until
    // the database holds `targetBytes`.
    var config = PostgresConfiguration(conninfo: site2.postgres, database: "mart")
    config.statementTimeoutMilliseconds = 0
    let mart = try await PostgresConnection.connect(config)
    defer { Task { await mart.close() } }
    let grow = Date()
    var size = try await mart.query("SELECT pg_database_size('mart')")[0].decode(0, as: Int64.self)
    var round = 1
    while size < targetBytes {
        // Double (or less, for the last round) the rows, each copy under a new seq range.
        let factor = min(1.0, Double(targetBytes - size) / Double(max(size, 1)) * 1.15)
        try await mart.query(
            """
            INSERT INTO mart.event (source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs)
            SELECT source, seq + $1::bigint * 4000000000000000, ts, type, interaction || '~' || $1::text, media,
                   direction, queue, agent, reason, attrs
            FROM mart.event WHERE seq < 4000000000000000 AND random() < $2::float8
            """, [Int64(round), factor])
        try await mart.query(
            """
            INSERT INTO mart.fact_interaction SELECT * FROM mart.fact_interaction f
            WHERE f.interaction NOT LIKE '%~%' AND random() < $2::float8
            ON CONFLICT DO NOTHING
            """.replacingOccurrences(
                of: "SELECT * FROM mart.fact_interaction f",
                with: try await factCopyList(mart, round: round)), [Int64(round), factor])
        size = try await mart.query("SELECT pg_database_size('mart')")[0].decode(0, as: Int64.self)
        round += 1
    }
    try await mart.execute("VACUUM ANALYZE")
    try await mart.execute("CHECKPOINT")
    let events = try await mart.query("SELECT count(*) FROM mart.event")[0].decode(0, as: Int.self)
    let mib = Double(size) / 1_048_576
    print(
        "return to normal, a \(fmt(mib, 0)) MiB mart (\(rate(Double(events)))events, grown in \(fmt(Date().timeIntervalSince(grow), 0)) s):"
    )

    try await lab.addSite("site3", options: options)
    let topology = try Topology.load(path: lab.topologyPath(site: "site2"))
    let site3 = topology.site(named: "site3")!
    let bin = try PostgresTools.binDirectory(containing: "pg_dump")

    // Baseline: pg_dump | pg_restore of the same database into an empty one.
    var admin = PostgresConfiguration(conninfo: site3.postgres, database: "postgres")
    admin.statementTimeoutMilliseconds = 0
    let site3Admin = try await PostgresConnection.connect(admin)
    try await site3Admin.execute("DROP DATABASE IF EXISTS mart_baseline")
    try await site3Admin.execute("CREATE DATABASE mart_baseline")
    let t0 = Date()
    let dump = try PostgresTools.shell(
        """
        set -o pipefail
        "$BIN/pg_dump" -Fc --no-owner --no-privileges --dbname="$SRC" | "$BIN/pg_restore" --no-owner --no-privileges --dbname="$DST"
        """,
        environment: [
            "BIN": bin, "SRC": "\(site2.postgres) dbname=mart", "DST": "\(site3.postgres) dbname=mart_baseline",
        ])
    let baseline = Date().timeIntervalSince(t0)
    if dump.status != 0 { print("  pg_dump | pg_restore failed: \(dump.text.prefix(400))") }
    try await site3Admin.execute("DROP DATABASE mart_baseline")
    await site3Admin.close()

    // rtn start, its copy step timed by its own journal lines.
    let copyDone = Mutex<(ms: Int?, at: Date?)>((nil, nil))
    let r0 = Date()
    _ = try await ReturnToNormal(
        topology: topology, site: "site3", active: "site2", dryRun: false, actor: "bench",
        say: { line in
            if line.contains(" copy: done in "),
                let ms = line.split(separator: " ").dropLast().last.flatMap({ Int($0) })
            {
                copyDone.withLock { $0 = (ms, Date()) }
            }
        }
    ).run()
    let total = Date().timeIntervalSince(r0)
    let lsn = try await mart.query("SELECT pg_current_wal_lsn()::text")[0][0]!
    let slot = Replication.subscription(of: "site3")
    var caughtUp: Date?
    let deadline = Date().addingTimeInterval(600)
    while Date() < deadline {
        let done = try await mart.query(
            "SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2", [lsn, slot]
        ).first?.decode(0, as: Bool?.self)
        if done == true {
            caughtUp = Date()
            break
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    let (copyMs, copyAt) = copyDone.withLock { $0 }
    let copy = Double(copyMs ?? 0) / 1000
    print(
        "  pg_dump -Fc | pg_restore (baseline): \(fmt(baseline, 1)) s, \(fmt(mib / baseline, 1)) MiB/s"
    )
    print(
        "  rtn start copy step (slot + exported snapshot, per-table pg_dump --snapshot | psql, traffic flowing): \(fmt(copy, 1)) s, \(fmt(mib / max(copy, 0.001), 1)) MiB/s → ratio \(fmt(baseline / max(copy, 0.001), 2))   (goal ≥ 0.9)"
    )
    print(
        "  whole rtn start \(fmt(total, 1)) s; catch-up after the copy (subscriber confirmed the survivor's WAL up to the command's end): \(caughtUp.flatMap { c in copyAt.map { fmt(c.timeIntervalSince($0), 1) + " s" } } ?? "not within 600 s")"
    )
    figure(
        "Business continuity",
        "`rtn start` copy step, \(fmt(mib, 0)) MiB mart (\(rate(Double(events)))events; slot + exported snapshot, per-table `pg_dump --snapshot | psql`, indexes built after the load, traffic flowing)",
        "\(fmt(copy, 1)) s, \(fmt(mib / max(copy, 0.001), 1)) MiB/s",
        baseline: "`pg_dump -Fc | pg_restore` of the same database: \(fmt(baseline, 1)) s",
        goal: "\(fmt(baseline / max(copy, 0.001), 2)) (goal ≥ 0.9)")
    figure(
        "Business continuity",
        "catch-up after that copy (the new subscriber confirmed the survivor's WAL up to the command's end)",
        caughtUp.flatMap { c in copyAt.map { fmt(c.timeIntervalSince($0), 1) + " s" } } ?? "not within 600 s")
}

/// The column list that copies `mart.fact_interaction` rows under the round's new keys.
private func factCopyList(_ mart: PostgresConnection, round: Int) async throws -> String {
    let columns = try await mart.query(
        """
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = 'mart' AND table_name = 'fact_interaction' ORDER BY ordinal_position
        """
    ).map { $0[0]! }
    let list = columns.map { $0 == "interaction" ? "interaction || '~' || $1::text" : $0 }
    return "SELECT \(list.joined(separator: ", ")) FROM mart.fact_interaction f"
}

/// Replication lag at a given ingest rate: an active-standby lab (both sites' extractors, the
/// standby subscribed) takes a steady `rate` events/s paced like the freshness figure, while the
/// publisher's `replay_lag` is sampled every 100 ms; printed with the freshness it had meanwhile
/// and the machine's CPU use (everything shares the 2 cores).
func benchReplicationLag(workDir: String, basePort: Int, rate eventsPerSecond: Int) async throws {
    let options = continuityLabOptions(basePort: basePort, mode: .activeStandby, traffic: 0)
    let lab = try await startBenchLab(workDir + "/lag-\(eventsPerSecond)", options)
    defer { try? lab.down(remove: true) }
    let topology = try Topology.load(path: lab.topologyPath)
    let mart1 = try await PostgresConnection.connect(
        PostgresConfiguration(conninfo: topology.site(named: "site1")!.postgres, database: "mart"))
    defer { Task { await mart1.close() } }
    // The standby subscribes once its coordinator has seen the active mart.
    let deadline = Date().addingTimeInterval(60)
    while try await Replication.lags(mart1).first?.state != "streaming", Date() < deadline {
        try await Task.sleep(for: .milliseconds(200))
    }
    let sampler = Task {
        var lags: [Double] = []
        while !Task.isCancelled {
            if let l = try? await Replication.lags(mart1).first { lags.append(l.replayLagSeconds ?? 0) }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return lags
    }
    let url: @Sendable (String) -> String = { name in "http://\(topology.collector(named: name)!.listen)" }
    let f = try await measureFreshness(
        rate: eventsPerSecond, seconds: 30, firstSeq: 1, poster: Poster(token: nil), url: url,
        martConninfo: topology.site(named: "site1")!.postgres)
    sampler.cancel()
    let lags = await sampler.value.sorted()
    guard !lags.isEmpty else { return print("replication lag: no samples") }
    print(
        "replication lag at \(eventsPerSecond / 1000) k events/s for 30 s (publisher's replay_lag, \(lags.count) samples): p50 \(fmt(lags[lags.count / 2] * 1000, 1)) ms, p99 \(fmt(lags[min(lags.count - 1, lags.count * 99 / 100)] * 1000, 1)) ms   (goal p99 ≤ 1 s at 10 k events/s); meanwhile freshness p50 \(fmt(f.p50, 2)) s, p99 \(fmt(f.p99, 2)) s, machine \(f.busy)% busy"
    )
    figure(
        "Business continuity",
        "replication lag, active-standby, paced \(eventsPerSecond / 1000) k events/s for 30 s (publisher's `replay_lag`)",
        "p50 \(fmt(lags[lags.count / 2] * 1000, 1)) ms, p99 \(fmt(lags[min(lags.count - 1, lags.count * 99 / 100)] * 1000, 1)) ms (freshness meanwhile p50 \(fmt(f.p50, 2)) s)",
        baseline: "machine \(f.busy)% busy",
        goal: eventsPerSecond == 10_000 ? "goal p99 ≤ 1 s" : "below the goal rate, for the floor")
}
