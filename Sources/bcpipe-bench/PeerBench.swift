import Foundation
import Lab
import PostgresClient
import Topology
import Traffic

/// The peer, in the same run (`BENCH_ONLY=peer`): rsyslog 8 with `imptcp` → `mmjsonparse` →
/// `ompgsql` into PostgreSQL 15 through a disk-assisted action queue, driven by the team's
/// harness (`../shared/peers/rsyslog`, or `BENCH_PEER_HARNESS`), and bcpipe's collector on the
/// lab taking the same events the same four ways:
///
/// - ingest with the database up, first send → every event committed in the database;
/// - ingest with the database out of reach (rsyslog: PostgreSQL stopped; bcpipe: the WAN link to
///   the collector's IDB refused), until the sender is acknowledged (rsyslog: TCP; bcpipe: `200`);
/// - drain once the database is back, from that moment to the last event committed;
/// - SIGKILL right after the sender is done while queueing, restart, database back: events lost.
///
/// The harness's generator writes two kinds of line CONTRACT 1 refuses (`interaction.routed`, and
/// `interaction.created` without `media`); bcpipe gets the same lines with those two mended
/// (`interaction.held`, `"media":"voice"`), so the bytes an event differ by a few.
func benchPeer(workDir: String, basePort: Int) async throws {
    let events = 1_000_000
    let outageEvents = 100_000
    let harness = try peerHarness()
    try installPeer()
    let peer = PeerHarness(directory: harness, scratch: workDir + "/peer")
    print("peer: rsyslog + ompgsql (disk-assisted action queue), harness \(harness)")
    try await peer.run(["setup"])
    let copy = try await peer.run(["copy", "--runs", "1"]).first { $0["table"] as? String == "events_pk" }
    let tput = try await peer.run(["throughput", "--runs", "1", "--n", "\(events)"]).first
    let outage = try await peer.run(["outage", "--runs", "1", "--n", "\(outageEvents)"]).first
    let crash = try await peer.run(["crash", "--runs", "1", "--n", "\(outageEvents)"]).first
    _ = try await peer.run(["teardown"])
    guard let tput, let outage, let crash else { throw LabError("peer: the harness printed no result") }

    let ours = try await bcpipePeerFigures(
        sender: peer.scratch + "/sender", workDir: workDir, basePort: basePort,
        events: events, outageEvents: outageEvents)

    let theirIngest = number(tput["ev_s"])
    let theirSpill = Double(outageEvents) / max(number(outage["sender_acked_s"]), 0.001)
    let theirDrain = number(outage["drain_ev_s"])
    let theirLost = Int(number(crash["lost"]))
    let theirDelivered = Int(number(crash["sender_believes_delivered"] ?? crash["events"]))
    let copyRate = number(copy?["rows_s"])
    print(
        "peer ingest, database up: rsyslog \(rate(theirIngest))events/s; bcpipe \(rate(ours.ingest))events/s into the IDB (\(rate(ours.acked))events/s acknowledged) → \(fmt(ours.ingest / theirIngest, 1))×   (goal ≥ 4×)"
    )
    print(
        "peer ingest, database out of reach: rsyslog \(rate(theirSpill))events/s spilled; bcpipe \(rate(ours.spill))events/s into the disk queue → \(fmt(ours.spill / theirSpill, 1))×"
    )
    print(
        "peer drain after: rsyslog \(rate(theirDrain))events/s; bcpipe \(rate(ours.drain))events/s → \(fmt(ours.drain / theirDrain, 1))×   (goal ≥ 4×)"
    )
    print(
        "peer SIGKILL while queueing: rsyslog lost \(theirLost) of \(theirDelivered) delivered; bcpipe lost \(ours.lost) of \(ours.acknowledged) acknowledged   (goal 0)"
    )
    let section = "The peer: rsyslog + ompgsql, same run"
    let footing =
        "\(spaced(events)) events of the harness's generator, ~224 B each; rsyslog: one TCP sender (`imptcp`), disk-assisted action queue (fsync on, checkpoint 1, 2 workers, 1 000-row transactions); bcpipe: collector site1-a, HTTP, 8 requests of 1 000 in flight"
    figure(
        section, "ingest, database up: first send → every event committed in the database (\(footing))",
        "bcpipe \(rate(ours.ingest))events/s (acknowledged, i.e. in the fsync'd disk queue: \(rate(ours.acked))events/s)",
        baseline: "rsyslog \(rate(theirIngest))events/s; `psql \\copy` into a keyed table \(rate(copyRate))rows/s",
        goal: "\(fmt(ours.ingest / theirIngest, 1))× (goal ≥ 4×)")
    figure(
        section,
        "ingest while the database is out of reach (rsyslog: PostgreSQL stopped, \(spaced(outageEvents)) events; bcpipe: its IDB's link refused, \(spaced(outageEvents)) events, collector site1-b)",
        "bcpipe \(rate(ours.spill))events/s into the disk queue",
        baseline: "rsyslog \(rate(theirSpill))events/s spilling to disk", goal: "\(fmt(ours.spill / theirSpill, 1))×")
    figure(
        section,
        "drain of those \(spaced(outageEvents)) events once the database is back (from that moment to the last commit)",
        "bcpipe \(rate(ours.drain))events/s (\(fmt(ours.drainSeconds, 1)) s, through the WAN simulator)",
        baseline: "rsyslog \(rate(theirDrain))events/s", goal: "\(fmt(ours.drain / theirDrain, 1))× (goal ≥ 4×)")
    figure(
        section, "SIGKILL right after the sender is done, while queueing; restart; database back",
        "bcpipe lost \(ours.lost) of \(ours.acknowledged) acknowledged",
        baseline: "rsyslog lost \(theirLost) of \(theirDelivered) delivered (TCP-acknowledged)",
        goal: "goal 0 (\(ours.lost == 0 ? "met" : "NOT met"))")
}

/// The peer harness's directory: `BENCH_PEER_HARNESS`, else the team's `../shared/peers/rsyslog`.
private func peerHarness() throws -> String {
    let path =
        ProcessInfo.processInfo.environment["BENCH_PEER_HARNESS"]
        ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        .deletingLastPathComponent().appendingPathComponent("shared/peers/rsyslog").path
    guard FileManager.default.fileExists(atPath: path + "/run.py") else {
        throw LabError(
            "peer: no harness at \(path) (run.py missing); set BENCH_PEER_HARNESS to the rsyslog peer harness's directory"
        )
    }
    return path
}

/// `rsyslog-pgsql` (and gcc for the harness's sender) installed when missing; root is needed.
private func installPeer() throws {
    let have = try Processes.run(["/bin/sh", "-c", "dpkg -s rsyslog-pgsql >/dev/null 2>&1 && command -v gcc"])
    if have.status == 0 { return }
    guard getuid() == 0 else {
        throw LabError(
            "peer: rsyslog-pgsql is not installed and installing it needs root: apt-get install -y rsyslog-pgsql gcc")
    }
    print("peer: installing rsyslog-pgsql")
    let out = try Processes.run(
        [
            "/bin/sh", "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog-pgsql gcc",
        ], timeout: 900)
    guard out.status == 0 else { throw LabError("peer: apt-get install rsyslog-pgsql failed: \(out.text.suffix(800))") }
}

/// One harness command at a time; its results are the JSON lines it prints.
struct PeerHarness {
    var directory: String
    var scratch: String

    func run(_ arguments: [String]) async throws -> [[String: Any]] {
        let out = try await Processes.output(
            ["/usr/bin/python3", directory + "/run.py"] + arguments, environment: ["PEER_DIR": scratch],
            timeout: 1800)
        guard out.status == 0 else {
            throw LabError("peer: run.py \(arguments.joined(separator: " ")) failed: \(out.text.suffix(1200))")
        }
        return out.text.split(separator: "\n").filter { $0.hasPrefix("{") }.compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }
}

private func number(_ v: Any?) -> Double {
    (v as? NSNumber)?.doubleValue ?? (v as? String).flatMap(Double.init) ?? 0
}

/// bcpipe's side of the comparison, on the lab.
struct PeerFigures {
    var acked: Double
    var ingest: Double
    var spill: Double
    var drain: Double
    var drainSeconds: Double
    var acknowledged: Int
    var lost: Int
}

private func bcpipePeerFigures(sender: String, workDir: String, basePort: Int, events: Int, outageEvents: Int)
    async throws -> PeerFigures
{
    var options = LocalLab.Options()
    options.basePort = basePort
    options.startExtractors = false
    let lab = try await startBenchLab(workDir + "/peer-lab", options)
    defer { try? lab.down(remove: true) }
    let topology = try Topology.load(path: lab.topologyPath)
    func url(_ name: String) -> String { "http://\(topology.collector(named: name)!.listen)" }
    let poster = Poster(token: nil)
    let idbA = PostgresConfiguration(conninfo: topology.site(named: "site1")!.postgres, database: "idb_site1_a")
    let idbB = PostgresConfiguration(conninfo: topology.site(named: "site2")!.postgres, database: "idb_site1_b")

    // Database up: 1 M events to site1-a, timed from the first send to the last row committed.
    let up = try peerBodies(sender: sender, count: events, firstSeq: 0)
    let t0 = Date()
    try await postAll(up, to: url("site1-a"), poster: poster)
    let acked = Double(events) / Date().timeIntervalSince(t0)
    let inIDB = try await waitForRows(idbA, via: url("site1-a"), seqs: 0..<Int64(events))
    guard inIDB.present == events else { throw LabError("peer: site1-a's IDB holds \(inIDB.present) of \(events)") }
    let ingest = Double(events) / inIDB.shippedAt.timeIntervalSince(t0)

    // Out of reach: site1-b's IDB is across the WAN; refuse the link.
    try lab.setLink("site1", "site2", .refuse)
    let down = try peerBodies(sender: sender, count: outageEvents, firstSeq: 0)
    let s0 = Date()
    try await postAll(down, to: url("site1-b"), poster: poster)
    let spill = Double(outageEvents) / Date().timeIntervalSince(s0)
    try lab.setLink("site1", "site2", .up)
    let d0 = Date()
    let drained = try await waitForRows(idbB, via: url("site1-b"), seqs: 0..<Int64(outageEvents))
    guard drained.present == outageEvents else {
        throw LabError("peer: site1-b's IDB holds \(drained.present) of \(outageEvents)")
    }
    let drainSeconds = drained.shippedAt.timeIntervalSince(d0)

    // SIGKILL while queueing: the link refused, the events acknowledged, the collector killed
    // at once, started again, the link back; what reaches the IDB within two minutes.
    try lab.setLink("site1", "site2", .refuse)
    let first = Int64(outageEvents)
    let crash = try peerBodies(sender: sender, count: outageEvents, firstSeq: first)
    try await postAll(crash, to: url("site1-b"), poster: poster)
    try lab.killProcess(.collector("site1-b"))
    try lab.restartStopped(quietBenchOptions(options))
    try lab.setLink("site1", "site2", .up)
    let present = try await waitForRows(
        idbB, via: url("site1-b"), seqs: first..<(first + Int64(outageEvents)), patience: 120
    ).present
    return PeerFigures(
        acked: acked, ingest: ingest, spill: spill, drain: Double(outageEvents) / drainSeconds,
        drainSeconds: drainSeconds, acknowledged: outageEvents, lost: outageEvents - present)
}

/// The harness generator's lines from `firstSeq`, mended for CONTRACT 1, in 1 000-event bodies.
private func peerBodies(sender: String, count: Int, firstSeq: Int64) throws -> [[UInt8]] {
    let out = try Processes.run(["/bin/sh", "-c", "'\(sender)' ndjson \(count) \(firstSeq) 2>/dev/null"], timeout: 300)
    guard out.status == 0 else { throw LabError("peer: the harness's sender failed: \(out.text.prefix(400))") }
    let text = out.text
        .replacingOccurrences(of: "\"type\":\"interaction.routed\"", with: "\"type\":\"interaction.held\"")
        .replacingOccurrences(
            of: "\"type\":\"interaction.created\",", with: "\"type\":\"interaction.created\",\"media\":\"voice\",")
    let lines = text.split(separator: "\n").filter { $0.hasPrefix("{") }
    guard lines.count == count else { throw LabError("peer: the sender wrote \(lines.count) of \(count) events") }
    return stride(from: 0, to: lines.count, by: 1000).map { i in
        lines[i..<min(i + 1000, lines.count)].reduce(into: [UInt8]()) {
            $0 += Array($1.utf8)
            $0.append(10)
        }
    }
}

/// Posts the bodies in seq order, 8 in flight; every event must be accepted.
private func postAll(_ bodies: [[UInt8]], to base: String, poster: Poster) async throws {
    let before = poster.results[base]?.accepted ?? 0
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<8 {
            group.addTask {
                var i = w
                while i < bodies.count {
                    try await poster.post(bodies[i], to: base)
                    i += 8
                }
            }
        }
        try await group.waitForAll()
    }
    let totals = poster.results[base]
    let accepted = (totals?.accepted ?? 0) - before
    let lines = bodies.reduce(0) { $0 + $1.count(where: { $0 == 10 }) }
    guard accepted == lines else {
        throw LabError("peer: \(base) accepted \(accepted) of \(lines) events (rejected \(totals?.rejected ?? 0))")
    }
}

/// Waits until the collector at `base` has shipped its whole queue (its `/v1/status`, polled every
/// 50 ms: a poll that costs the IDB nothing, as the harness's poll of `pg_stat_user_tables` costs
/// rsyslog's database nothing) or `patience` has passed; then counts once which seqs of `seqs`
/// the IDB holds for site1/voice. `shippedAt` is when the poll first saw the queue empty.
private func waitForRows(
    _ config: PostgresConfiguration, via base: String, seqs: Range<Int64>, patience: Double = 600
) async throws -> (present: Int, shippedAt: Date) {
    let deadline = Date().addingTimeInterval(patience)
    while Date() < deadline, (try? await queuedEvents(at: base)) != 0 {
        try await Task.sleep(for: .milliseconds(50))
    }
    let shippedAt = Date()
    let present = try await PostgresConnection.with(config) { conn in
        try await conn.query(
            "SELECT count(*) FROM idb.events WHERE source = 'site1/voice' AND seq >= $1 AND seq < $2",
            [seqs.lowerBound, seqs.upperBound])[0].decode(0, as: Int.self)
    }
    return (present, shippedAt)
}

/// `1000000` as `1 000 000`, as the rows write counts.
private func spaced(_ n: Int) -> String {
    var s = String(n)
    var i = s.count - 3
    while i > 0 {
        s.insert(" ", at: s.index(s.startIndex, offsetBy: i))
        i -= 3
    }
    return s
}
