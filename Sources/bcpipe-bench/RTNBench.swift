import Coordinator
import Foundation
import Lab
import PostgresClient
import Synchronization
import Topology
import Traffic

/// Return to normal with a big mart: the survivor's mart (after `dr declare`) is grown to
/// `targetBytes` with copies of its own rows, then
/// - the baseline: the faster of `pg_dump -Fd -j2` + `pg_restore -j2` and `pg_dump | psql` of
///   that database into an empty one on the new site's server (what an operator would do by
///   hand, without the gap-free hand-over), each three times, with its spread;
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
    try await PostgresConnection.with(config) { mart in
        try await benchReturnToNormal(
            lab: lab, options: options, survivorView: survivorView, mart: mart, targetBytes: targetBytes)
    }
}

/// The rest of ``benchReturnToNormal(workDir:basePort:targetBytes:)`` on the survivor's mart.
private func benchReturnToNormal(
    lab: LocalLab, options: LocalLab.Options, survivorView: Topology, mart: PostgresConnection, targetBytes: Int64
)
    async throws
{
    let site2 = survivorView.site(named: "site2")!
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

    // Baselines, each three times into an empty database on the new site's server: a parallel
    // directory-format dump and restore on both cores, and a plain dump piped into psql. The
    // faster one's median is the baseline; the spread of each is printed.
    var admin = PostgresConfiguration(conninfo: site3.postgres, database: "postgres")
    admin.statementTimeoutMilliseconds = 0
    let baselines = try await PostgresConnection.with(admin) { site3Admin in
        var times: [String: [Double]] = [:]
        let methods = [
            (
                "`pg_dump -Fd -j2` + `pg_restore -j2`",
                """
                rm -rf "$DIR"
                "$BIN/pg_dump" -Fd -j2 --no-owner --no-privileges --file="$DIR" --dbname="$SRC" || exit 1
                "$BIN/pg_restore" -j2 --no-owner --no-privileges --dbname="$DST" "$DIR"; status=$?
                rm -rf "$DIR"
                exit $status
                """
            ),
            (
                "`pg_dump | psql`",
                """
                set -o pipefail
                "$BIN/pg_dump" --no-owner --no-privileges --dbname="$SRC" | "$BIN/psql" -q --dbname="$DST" >/dev/null
                """
            ),
        ]
        for _ in 0..<3 {
            for (name, script) in methods {
                try await site3Admin.execute("DROP DATABASE IF EXISTS mart_baseline")
                try await site3Admin.execute("CREATE DATABASE mart_baseline")
                let t0 = Date()
                let out = try PostgresTools.shell(
                    script,
                    environment: [
                        "BIN": bin, "SRC": "\(site2.postgres) dbname=mart",
                        "DST": "\(site3.postgres) dbname=mart_baseline",
                        "DIR": workDir + "/rtn-baseline.dump",
                    ])
                // Like pg_restore, psql goes on past a statement that fails; say so, but time it.
                if out.status != 0 { print("  baseline \(name) reported errors: \(out.text.prefix(400))") }
                times[name, default: []].append(Date().timeIntervalSince(t0))
            }
        }
        try await site3Admin.execute("DROP DATABASE mart_baseline")
        return methods.map { (name: $0.0, times: times[$0.0]!.sorted()) }
    }
    let fastest = baselines.min { median($0.times) < median($1.times) }!
    let baseline = median(fastest.times)
    func spread(_ t: [Double]) -> String {
        "median \(fmt(median(t), 1)) s (\(fmt(t.first!, 1))–\(fmt(t.last!, 1)) s over 3 runs)"
    }

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
    for b in baselines { print("  baseline \(b.name): \(spread(b.times))") }
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
        baseline:
            "the faster of two ways of copying the same database, \(fastest.name): \(spread(fastest.times)); \(baselines.filter { $0.name != fastest.name }.map { "\($0.name): \(spread($0.times))" }.joined(separator: "; "))",
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
/// publisher is sampled every 100 ms from LSNs, not from `replay_lag` (NULL when nothing is in
/// flight, which is not 0 ms): bytes = the publisher's WAL position less what the subscriber has
/// confirmed applied (its slot's `confirmed_flush_lsn`); time = how long ago the publisher's WAL passed the position the subscriber has
/// replayed (from the same samples' history: at most one sample interval too high, never too low). Printed with
/// the freshness it had meanwhile and the machine's CPU use (everything shares the 2 cores).
func benchReplicationLag(workDir: String, basePort: Int, rate eventsPerSecond: Int) async throws {
    let options = continuityLabOptions(basePort: basePort, mode: .activeStandby, traffic: 0)
    let lab = try await startBenchLab(workDir + "/lag-\(eventsPerSecond)", options)
    defer { try? lab.down(remove: true) }
    let topology = try Topology.load(path: lab.topologyPath)
    let config = PostgresConfiguration(conninfo: topology.site(named: "site1")!.postgres, database: "mart")
    let (lags, f) = try await PostgresConnection.with(config) { mart1 in
        // The standby subscribes once its coordinator has seen the active mart.
        let deadline = Date().addingTimeInterval(60)
        while try await Replication.lags(mart1).first?.state != "streaming", Date() < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        let sampler = Task { await sampleLSNLag(mart1) }
        let url: @Sendable (String) -> String = { name in "http://\(topology.collector(named: name)!.listen)" }
        let f = try await measureFreshness(
            rate: eventsPerSecond, seconds: 30, firstSeq: 1, poster: Poster(token: nil), url: url,
            martConninfo: topology.site(named: "site1")!.postgres)
        sampler.cancel()
        return (await sampler.value, f)
    }
    guard !lags.isEmpty else { return print("replication lag: no samples") }
    let times = lags.map(\.seconds).sorted()
    let bytes = lags.map(\.bytes).sorted()
    func pct(_ xs: [Double], _ p: Int) -> Double { xs[min(xs.count - 1, xs.count * p / 100)] }
    let text =
        "time p50 \(fmt(pct(times, 50) * 1000, 0)) ms, p99 \(fmt(pct(times, 99) * 1000, 0)) ms; bytes p50 \(fmt(pct(bytes, 50) / 1024, 0)) KiB, p99 \(fmt(pct(bytes, 99) / 1024, 0)) KiB (\(lags.count) samples; freshness meanwhile p50 \(fmt(f.p50, 2)) s)"
    print(
        "replication lag at \(eventsPerSecond / 1000) k events/s for 30 s, from LSNs: \(text)   (goal p99 ≤ 1 s at 10 k events/s); machine \(f.busy)% busy"
    )
    figure(
        "Business continuity",
        "replication lag, active-standby, paced \(eventsPerSecond / 1000) k events/s for 30 s (from LSNs: the publisher's WAL position against the position its subscriber confirmed applied, every 100 ms)",
        text, baseline: "no baseline (machine \(f.busy)% busy)",
        goal: eventsPerSecond == 10_000 ? "goal p99 ≤ 1 s" : "below the goal rate, for the floor")
}

/// One lag sample: the publisher's WAL not yet replayed by the subscriber, in bytes and in time.
struct LSNLag: Sendable {
    var seconds: Double
    var bytes: Double
}

/// Samples the standby's lag every 100 ms until cancelled. The time lag of a sample is how long
/// ago the last sample whose WAL position was still below the replayed one was taken (0 when the
/// subscriber has replayed everything).
func sampleLSNLag(_ publisher: PostgresConnection) async -> [LSNLag] {
    var history: [(at: Date, lsn: Double)] = []
    var out: [LSNLag] = []
    while !Task.isCancelled {
        let rows = try? await publisher.query(
            """
            SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8,
                   pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::float8
            FROM pg_replication_slots
            WHERE slot_name LIKE 'bcpipe\\_%' AND confirmed_flush_lsn IS NOT NULL ORDER BY slot_name LIMIT 1
            """)
        if let r = rows?.first, let current = r[0].flatMap(Double.init), let replayed = r[1].flatMap(Double.init) {
            let now = Date()
            history.append((now, current))
            // The publisher's WAL passed the replayed position after the last sample still below it.
            let before = history.last { $0.lsn < replayed }
            let behind = replayed >= current ? 0 : now.timeIntervalSince(before?.at ?? history[0].at)
            out.append(LSNLag(seconds: behind, bytes: max(0, current - replayed)))
        }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return out
}
