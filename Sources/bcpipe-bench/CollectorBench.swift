import Collector
import EventModel
import Foundation
import Lab
import Logging
import PostgresClient
import Topology
import Traffic

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The events a collector still holds in its disk queue (not yet committed in its IDB), from its
/// `/v1/status`: a cheap poll that costs the IDB nothing.
func queuedEvents(at base: String) async throws -> Int {
    let (data, _) = try await URLSession.shared.data(from: URL(string: base + "/v1/status")!)
    let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    return (json?["queue"] as? [String: Any])?["events"] as? Int ?? -1
}

/// Collector figures on the lab over loopback: durable ingest with the IDB reachable and cut
/// off, shipping (drain) throughput beside `psql \copy` of the same rows, ack latency at a
/// paced 20,000 events/s, peak RSS. The collectors' figures are taken with the extractors
/// stopped: on this 2-core machine an extractor catching up on the millions of events the
/// benchmark has just stored takes a core from the collector and its server (production runs
/// them on different hosts). The ack latency is then measured once more with the extractors
/// catching up, to show what sharing the cores costs.
func benchCollector(events count: Int, workDir: String, basePort: Int) async throws {
    var options = LocalLab.Options()
    options.basePort = basePort
    options.startExtractors = false
    let lab = try await startBenchLab(workDir + "/collector-lab", options)
    defer { try? lab.down(remove: true) }
    let topology = try Topology.load(path: lab.topologyPath)
    func url(_ name: String) -> String { "http://\(topology.collector(named: name)!.listen)" }
    let poster = Poster(token: nil)

    // Traffic in 1000-event requests; each run starts above the last run's seqs.
    var nextSeq: Int64 = 1
    func batches(_ n: Int, seed: UInt64) -> [[UInt8]] {
        ndjsonBodies(count: n, perRequest: 1000, firstSeq: &nextSeq, seed: seed)
    }
    func ingest(_ bodies: [[UInt8]], to target: String, inFlight: Int) async throws -> Double {
        let t0 = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<inFlight {
                group.addTask {
                    var i = w
                    while i < bodies.count {
                        try await poster.post(bodies[i], to: target)
                        i += inFlight
                    }
                }
            }
            try await group.waitForAll()
        }
        return Date().timeIntervalSince(t0)
    }
    func waitDrained(_ name: String) async throws -> Double {
        let t0 = Date()
        while try await queuedEvents(at: url(name)) != 0 { try await Task.sleep(for: .milliseconds(50)) }
        return Date().timeIntervalSince(t0)
    }

    // 1. IDB reachable (site1-a writes its local IDB while it ingests). A 200 is the disk
    // queue's fsync; the shipper moves the events on to the IDB behind it, so the time until the
    // IDB holds them all (the queue empty) is reported beside it.
    let direct = batches(count, seed: 1)
    let tDirect = try await ingest(direct, to: url("site1-a"), inFlight: 8)
    let tInIDB = tDirect + (try await waitDrained("site1-a"))
    print(
        "collector ingest, IDB reachable   \(rate(Double(count) / tDirect))events/s acknowledged (a 200 = fsync'd in the disk queue; 8 requests in flight, 1000 events each); all in the IDB after \(fmt(tInIDB, 1)) s = \(rate(Double(count) / tInIDB))events/s   (goal ≥ 100 k)"
    )
    figure(
        "Collectors",
        "durable ingest, IDB reachable (loopback, 8 requests of 1000 in flight): acknowledged (a `200` = fsync'd in the disk queue), and first request → every event committed in the IDB",
        "\(rate(Double(count) / tDirect))events/s acknowledged; \(rate(Double(count) / tInIDB))events/s into the IDB (\(fmt(tInIDB, 1)) s)",
        goal: "goal ≥ 100 k events/s")

    // 2. IDB cut off (site1-b's IDB is across the WAN): everything goes to the disk queue.
    try lab.setLink("site1", "site2", .refuse)
    let cut = batches(count, seed: 2)
    let rows = cut.flatMap { body in body.split(separator: 10).map { Array($0) } }
    let tCut = try await ingest(cut, to: url("site1-b"), inFlight: 8)
    print("collector ingest, IDB cut off     \(rate(Double(count) / tCut))events/s durable into the disk queue")
    figure(
        "Collectors", "durable ingest, IDB cut off (into the disk queue; a `200` = fsync'd)",
        "\(rate(Double(count) / tCut))events/s")

    // 3. The link returns: drain the backlog, timed from the moment the link is back (the
    // shipper's reconnection backoff included, as an operator would see it).
    try lab.setLink("site1", "site2", .up)
    let linkBack = Date()
    while true {
        let (data, _) = try await URLSession.shared.data(from: URL(string: url("site1-b") + "/v1/status")!)
        let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        if (json?["idb"] as? [String: Any])?["reachable"] as? Bool == true { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    let reconnect = Date().timeIntervalSince(linkBack)
    let tDrain = reconnect + (try await waitDrained("site1-b"))
    print(
        "collector drain of a \(count)-event backlog: \(fmt(tDrain, 1)) s = \(rate(Double(count) / tDrain))events/s shipped through the WAN simulator, from the link's return (of which \(fmt(reconnect, 1)) s reconnecting)"
    )

    // Baseline: psql \copy of the same rows into an idb.events-shaped table, same server, same path.
    let site2 = topology.site(named: "site2")!
    let viaWAN = try Topology.load(path: lab.topologyPath(site: "site1")).site(named: "site2")!.postgres
    let conn = try await PostgresConnection.connect(
        PostgresConfiguration(conninfo: site2.postgres, database: "idb_site1_b"))
    try await conn.execute(
        "DROP TABLE IF EXISTS public.bench_copy; CREATE TABLE public.bench_copy (LIKE idb.events INCLUDING ALL)")
    await conn.close()
    let parser = EventParser()
    var copyText: [UInt8] = []
    var row = CopyRow()
    for r in rows {
        guard case .success(let e) = r.withUnsafeBytes({ parser.parseLine($0) }), e.type != .heartbeat else { continue }
        IDBWriter.encode(e, into: &row)
        copyText += row.bytes
    }
    let file = workDir + "/collector-rows.copy"
    try Data(copyText).write(to: URL(fileURLWithPath: file))
    let tPsql = try timeShell(
        "psql '\(viaWAN) dbname=idb_site1_b' -q -v ON_ERROR_STOP=1 -c \"\\copy public.bench_copy (\(IDBWriter.columns)) FROM '\(file)'\""
    )
    print(
        "  psql \\copy of the same rows, same path: \(rate(Double(count) / tPsql))events/s   shipping / psql: \(fmt(tPsql / tDrain, 2))   (goal ≥ 0.8)"
    )
    figure(
        "Collectors",
        "drain of a \(count)-event backlog through the WAN simulator, from the link's return to the queue empty (reconnection included)",
        "\(fmt(tDrain, 1)) s, \(rate(Double(count) / tDrain))events/s (reconnecting \(fmt(reconnect, 1)) s)",
        baseline: "`psql \\copy` of the same rows, same path: \(rate(Double(count) / tPsql))events/s",
        goal: "\(fmt(tPsql / tDrain, 2)) (goal ≥ 0.8)")

    // 4. Acknowledgement latency at a paced 20,000 events/s (200-event requests every 10 ms),
    //    as BENCH_ONLY=ack measures it over three rounds.
    func paced(seed: UInt64) async -> PacedRun {
        await pacedPost(
            ndjsonBodies(count: 200_000, perRequest: 200, firstSeq: &nextSeq, seed: seed), to: url("site1-a"),
            interval: 0.01, senders: 8)
    }
    func ms(_ r: PacedRun) -> String {
        "p50 \(fmt(r.percentile(0.5) * 1000, 2)) ms, p99 \(fmt(r.percentile(0.99) * 1000, 2)) ms"
    }
    let latency = await paced(seed: 3)
    print(
        "collector ack latency at \(rate(latency.achieved))events/s: \(ms(latency))   (goal p99 ≤ 10 ms at 20 k events/s)"
    )
    figure(
        "Collectors",
        "acknowledgement latency at a paced \(rate(latency.achieved))events/s, from each request's due time",
        ms(latency), goal: "goal p99 ≤ 10 ms at 20 k events/s")
    // The same with the extractors started: they catch up on everything stored above.
    var withExtractors = options
    withExtractors.startExtractors = true
    try await lab.up(quietBenchOptions(withExtractors))
    let shared = await paced(seed: 4)
    print(
        "  the same while the extractors catch up on the same 2 cores: \(rate(shared.achieved))events/s, \(ms(shared))"
    )
    figure(
        "Collectors",
        "acknowledgement latency at a paced \(rate(shared.achieved))events/s, extractors catching up on the same 2 cores",
        ms(shared), goal: "(contention, not a goal)")

    // 5. Peak RSS of the collectors.
    for name in ["site1-a", "site1-b"] {
        let hwm = collectorMemoryKB(lab, name, "VmHWM").map { "\($0) kB" } ?? "?"
        print("collector \(name) peak RSS \(hwm)   (goal ≤ 150 MiB)")
        figure("Collectors", "collector \(name) peak RSS after all of the above", hwm, goal: "goal ≤ 150 MiB")
    }
}

/// A lab for the business-continuity figures: live traffic, no source ever stuck.
func continuityLabOptions(basePort: Int, mode: Topology.Mode, traffic: Double) -> LocalLab.Options {
    var options = LocalLab.Options()
    options.basePort = basePort
    options.mode = mode
    options.stuckThreshold = 3600
    options.traffic = traffic
    return options
}

/// A collector's memory figure from `/proc/PID/status` (`VmRSS`, `VmHWM`), kB.
func collectorMemoryKB(_ lab: LocalLab, _ name: String, _ field: String) -> Int? {
    guard let pidFile = try? lab.collectorPIDFile(name),
        let pid = try? String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
        let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") })
    else { return nil }
    return Int(line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
}

/// The options with the lab's processes logging warnings only.
func quietBenchOptions(_ options: LocalLab.Options) -> LocalLab.Options {
    var o = options
    o.collectorEnvironment["BCPIPE_LOG_LEVEL"] = "warning"
    // BENCH_EXTRACTOR_TIMING=1: the lab's extractors log each cycle's phases.
    if ProcessInfo.processInfo.environment["BENCH_EXTRACTOR_TIMING"] != nil {
        o.collectorEnvironment["BCPIPE_EXTRACTOR_TIMING"] = "1"
        o.collectorEnvironment["BCPIPE_LOG_LEVEL"] = "notice"
    }
    return o
}

/// A lab for a benchmark, with the release `bcpipe` beside this executable and quiet logs.
func startBenchLab(_ directory: String, _ options: LocalLab.Options) async throws -> LocalLab {
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
        "bcpipe"
    ).path
    let lab = LocalLab(directory: directory, executable: exe, logger: logger)
    try await lab.up(quietBenchOptions(options))
    return lab
}
