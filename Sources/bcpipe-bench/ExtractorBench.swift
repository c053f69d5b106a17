import Collector
import EventModel
import Extractor
import Foundation
import Lab
import Logging
import PostgresClient
import Synchronization
import Topology
import Traffic

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Extractor figures with the extractor run as the lab runs it — its own process and role, the
/// other site's IDBs through the WAN simulator, the lab's settings:
///
/// - a backlog of each size in `sizes` in the four IDBs (both halves of each pair), from the
///   extractor's start until `report.completeness` shows every source complete through its last
///   event, beside `psql \copy` of the same events into one keyed table on the same server; the
///   extractor's peak RSS and CPU;
/// - freshness under a steady 10 000 events/s: from the first `200` of each batch to its events
///   in the reports.
func benchExtractor(sizes: [Int], workDir: String, basePort: Int) async throws {
    // BENCH_FRESHNESS=0 skips the freshness runs (to profile a backlog alone).
    if ProcessInfo.processInfo.environment["BENCH_FRESHNESS"] != "0" {
        try await benchFreshness(workDir: workDir, basePort: basePort)
    }
    for (i, size) in sizes.enumerated() {
        try await benchBacklog(size: size, workDir: workDir, basePort: basePort + 100 * ((i + 1) % 2))
    }
}

/// One backlog of `size` events caught up by the lab's extractor process.
func benchBacklog(size: Int, workDir: String, basePort: Int) async throws {
    var options = LocalLab.Options()
    options.basePort = basePort
    options.startExtractors = false
    options.stuckThreshold = 3600
    // Like for like with the baseline (one psql into one table, alone on the machine): one
    // extractor building one mart. Active-standby would add the standby's logical replication of
    // every mart write on the same two cores, active-active the other site's extractor.
    options.mode = .activeActive
    options.extractorSites = ["site1"]
    let lab = try await startBenchLab(workDir + "/extractor-lab-\(size)", options)
    defer { try? lab.down(remove: true) }
    let topology = try Topology.load(path: lab.topologyPath)
    let copyFile = workDir + "/extract-rows-\(size).copy"
    defer { try? FileManager.default.removeItem(atPath: copyFile) }
    let fillStart = Date()
    let last = try await fillIDBs(topology, events: size, copyFile: copyFile)
    print(
        "extractor backlog \(size): the four IDBs filled in \(fmt(Date().timeIntervalSince(fillStart), 0)) s (as the shippers write them)"
    )

    // The extractor as the lab runs it, timed from its start to every source complete.
    let site1 = topology.site(named: "site1")!
    try await PostgresConnection.with(PostgresConfiguration(conninfo: site1.postgres, database: "mart")) { mart in
        try await catchUp(lab, options, mart, site1: site1, through: last, copyFile: copyFile)
    }
}

/// Starts the lab's extractor on the filled IDBs and measures it against `psql \copy`.
func catchUp(
    _ lab: LocalLab, _ options: LocalLab.Options, _ mart: PostgresConnection, site1: Topology.Site, through last: Int64,
    copyFile: String
) async throws {
    var options = options
    let through = PostgresTimestamp(millisecondsSinceEpoch: last)
    options.startExtractors = true
    let t0 = Date()
    try lab.restartStopped(quietBenchOptions(options))
    let pidText = try String(contentsOfFile: lab.directory + "/sites/site1/run/extractor.pid", encoding: .utf8)
    let pid = Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    let cpuBefore = processCPUSeconds(pid)
    var peakRSS = 0
    while true {
        let done = try await mart.query(
            "SELECT count(*) FILTER (WHERE complete_through >= $1), count(*) FROM report.completeness", [through])
        peakRSS = max(peakRSS, processRSS(pid).peak)
        if let r = done.first, try r.decode(1, as: Int.self) == 2, try r.decode(0, as: Int.self) == 2 { break }
        guard Date().timeIntervalSince(t0) < 3600 else { throw LabError("the backlog was not caught up in an hour") }
        try await Task.sleep(for: .milliseconds(100))
    }
    let seconds = Date().timeIntervalSince(t0)
    let cpu = processCPUSeconds(pid) - cpuBefore
    peakRSS = max(peakRSS, processRSS(pid).peak)
    let stored = try await mart.query("SELECT count(*) FROM mart.event")[0].decode(0, as: Int.self)
    keepExtractorLog(lab, as: "backlog-\(stored)")

    // The baseline: the same events (each once) into one keyed table on the same server.
    try await mart.execute(
        "DROP TABLE IF EXISTS public.bench_copy; CREATE TABLE public.bench_copy (LIKE mart.event INCLUDING DEFAULTS, PRIMARY KEY (source, seq))"
    )
    let tPsql = try timeShell(
        "psql '\(site1.postgres) dbname=mart' -q -v ON_ERROR_STOP=1 -c \"\\copy public.bench_copy (\(IDBWriter.columns)) FROM '\(copyFile)'\""
    )
    try await mart.execute("DROP TABLE public.bench_copy")
    let mine = Double(stored) / seconds
    let copy = Double(stored) / tPsql
    print(
        "  caught up \(stored) events in \(fmt(seconds, 1)) s: \(rate(mine))events/s; psql \\copy of the same events into one keyed table: \(rate(copy))events/s; ratio \(fmt(mine / copy, 2)) (goal ≥ 0.4)"
    )
    print(
        "  extractor process: \(fmt(cpu / seconds, 2)) cores on average, peak RSS \(peakRSS >> 20) MiB; an hour of 10 k events/s (36 M) at this rate: \(fmt(36_000_000 / mine / 60, 1)) min"
    )
    figure(
        "Extraction",
        "catch-up of a \(stored)-event backlog in the four IDBs by site1's extractor process alone (active-active lab, site2's extractor stopped; start → every source complete through its last event)",
        "\(rate(mine))events/s (\(fmt(seconds, 1)) s)",
        baseline: "`psql \\copy` of the same events into one keyed table: \(rate(copy))events/s",
        goal: "\(fmt(mine / copy, 2)) × copy (goal ≥ 0.4)")
    figure(
        "Extraction", "the same catch-up: the extractor's peak RSS and CPU; the hour of 10 k events/s it implies",
        "peak RSS \(peakRSS >> 20) MiB, \(fmt(cpu / seconds, 2)) cores; 36 M events in \(fmt(36_000_000 / mine / 60, 1)) min",
        baseline: "no baseline", goal: "hour ≤ 10 min; RSS flat in the backlog's size")
}

/// Fills both IDBs of both pairs with `events` generated events (half per source), written as
/// each collector's shipper writes them, and their COPY rows (each event once) into `copyFile`.
/// Ends each source with a heartbeat at one common time; returns that time (ms).
func fillIDBs(_ topology: Topology, events: Int, copyFile: String) async throws -> Int64 {
    FileManager.default.createFile(atPath: copyFile, contents: nil)
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: copyFile))
    defer { try? out.close() }
    var connections: [String: PostgresConnection] = [:]
    for c in topology.collectors {
        let site = topology.site(named: c.idb.site)!
        connections[c.name] = try await PostgresConnection.connect(
            PostgresConfiguration(conninfo: site.postgres, database: c.idb.database))
    }
    do {
        let end = try await fill(topology, connections, events: events, into: out)
        for c in connections.values { await c.close() }
        return end
    } catch {
        for c in connections.values { await c.close() }
        throw error
    }
}

/// ``fillIDBs(_:events:copyFile:)`` on open connections.
func fill(_ topology: Topology, _ connections: [String: PostgresConnection], events: Int, into out: FileHandle)
    async throws -> Int64
{
    let start = Int64(Date().timeIntervalSince1970 * 1000) - 7_200_000
    var lastTs: Int64 = 0
    var lastSeq: [String: Int64] = [:]
    var offset = 0
    for (i, source) in topology.sources.enumerated() {
        var gen = TrafficGenerator(
            source: source.name, seed: 40 + UInt64(i), start: start, profile: .staffed(arrivalsPerSecond: 500))
        var left = events / topology.sources.count
        while left > 0 {
            var chunk: [Event] = []
            chunk.reserveCapacity(min(left, 20_000))
            while chunk.count < min(left, 20_000), let e = gen.next() { chunk.append(e) }
            left -= chunk.count
            var row = CopyRow()
            var text: [UInt8] = []
            for e in chunk where e.type != .heartbeat {
                IDBWriter.encode(e, into: &row)
                text += row.bytes
            }
            out.write(Data(text))
            lastTs = max(lastTs, chunk.last?.ts.millisecondsSinceEpoch ?? 0)
            lastSeq[source.name] = chunk.last?.seq
            offset += 1
            guard let batch = IDBWriter.prepare(chunk, segment: 1, offset: offset) else { continue }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for c in topology.collectors where c.source == source.name {
                    let conn = connections[c.name]!
                    group.addTask { _ = try await IDBWriter.ship(batch, on: conn, collector: c.name) }
                }
                try await group.waitForAll()
            }
        }
    }
    // A heartbeat per source at one time after every event: the sources' availability meets there.
    let end = lastTs + 1_000
    for source in topology.sources {
        let beat = Event(
            source: source.name, seq: (lastSeq[source.name] ?? 0) + 1, ts: Timestamp(millisecondsSinceEpoch: end),
            type: .heartbeat)
        offset += 1
        guard let batch = IDBWriter.prepare([beat], segment: 1, offset: offset) else { continue }
        for c in topology.collectors where c.source == source.name {
            _ = try await IDBWriter.ship(batch, on: connections[c.name]!, collector: c.name)
        }
    }
    return end
}

/// Freshness under a steady 10 000 events/s (then 2 000 for the floor) with the lab's own
/// extractor process and settings, from the first `200` of each batch to its events in the reports.
func benchFreshness(workDir: String, basePort: Int) async throws {
    var options = LocalLab.Options()
    options.basePort = basePort
    options.stuckThreshold = 3600
    let lab = try await startBenchLab(workDir + "/freshness-lab", options)
    defer { try? lab.down(remove: true) }
    let topology = try Topology.load(path: lab.topologyPath)
    let url: @Sendable (String) -> String = { name in "http://\(topology.collector(named: name)!.listen)" }
    let pidText = try String(contentsOfFile: lab.directory + "/sites/site1/run/extractor.pid", encoding: .utf8)
    let pid = Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    var firstSeq: Int64 = 1
    for (rate, seconds) in [(10_000, 20), (2_000, 15)] {
        let cpuBefore = processCPUSeconds(pid)
        let f = try await measureFreshness(
            rate: rate, seconds: seconds, firstSeq: firstSeq, poster: Poster(token: nil), url: url,
            martConninfo: topology.site(named: "site1")!.postgres)
        let cores = (processCPUSeconds(pid) - cpuBefore) / f.elapsed
        firstSeq += Int64(rate * seconds)
        print(
            "freshness at \(rate / 1000) k events/s (first 200 → in the reports): p50 \(fmt(f.p50, 2)) s, p99 \(fmt(f.p99, 2)) s over \(f.count) of \(f.sent) requests; never seen within the run: \(f.unseen) events; extractor \(fmt(cores, 2)) cores, machine \(f.busy)% busy   (goals at 10 k: p50 ≤ 1 s, p99 ≤ 3 s, 0 unseen)"
        )
        figure(
            "Extraction",
            "freshness at a steady \(rate / 1000) k events/s, the lab's extractor process and settings (first collector 200 → in the reports)",
            "p50 \(fmt(f.p50, 2)) s, p99 \(fmt(f.p99, 2)) s; \(f.unseen) events never seen",
            baseline: "no baseline (extractor \(fmt(cores, 2)) cores, machine \(f.busy)% busy)",
            goal: rate == 10_000 ? "goal p50 ≤ 1 s, p99 ≤ 3 s, 0 unseen" : "below the goal rate, for the floor")
    }
}

/// Posts `rate` events/s (half per source, to both collectors of each pair, 100 ticks a second)
/// for `seconds`, and times each request from its first 200 to the mart showing its last event
/// transformed. Events not shown within 60 s of the end are counted as never seen.
func measureFreshness(
    rate: Int, seconds: Int, firstSeq: Int64, poster: Poster, url: @escaping @Sendable (String) -> String,
    martConninfo: String
) async throws -> (p50: Double, p99: Double, count: Int, sent: Int, busy: Int, unseen: Int, elapsed: Double) {
    let acks = LatencyLog()
    let perTick = rate / 200  // events per source every 10 ms
    var gens = ["site1/voice", "site2/voice"].enumerated().map { i, s in
        TrafficGenerator(
            source: s, seed: 90 + UInt64(i) + UInt64(firstSeq), start: Int64(Date().timeIntervalSince1970 * 1000),
            firstSeq: firstSeq, profile: .staffed(arrivalsPerSecond: Double(rate) / 12))
    }
    let tStart = Date()
    let cpuBefore = cpuTimes()
    let martConn = try await PostgresConnection.connect(PostgresConfiguration(conninfo: martConninfo, database: "mart"))
    let poller = Task {
        while !Task.isCancelled {
            var seen: [String: Int64] = [:]
            for source in ["site1/voice", "site2/voice"] {
                let rows = try await martConn.query(
                    "SELECT max(seq) FROM mart.event WHERE source = $1 AND transformed", [source])
                seen[source] = Int64(rows.first?[0] ?? "0") ?? 0
            }
            acks.visible(seen, at: Date())
            // Every 100 ms: a finer poll cost the mart's server half a core while the extractor
            // lagged (each max(seq) walks back over the untransformed tail), slowing what it measures.
            try await Task.sleep(for: .milliseconds(100))
        }
    }
    var sent = 0
    try await withThrowingTaskGroup(of: Void.self) { group in
        for tick in 0..<(seconds * 100) {
            let due = tStart.addingTimeInterval(Double(tick) * 0.01)
            let wait = due.timeIntervalSinceNow
            if wait > 0 { try await Task.sleep(for: .seconds(wait)) }
            for i in gens.indices {
                var body: [UInt8] = []
                var top: Int64 = 0
                for _ in 0..<perTick {
                    var e = gens[i].next()!
                    e.ts = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
                    e.appendJSON(to: &body)
                    body.append(10)
                    top = e.seq
                }
                let source = gens[i].source
                let prefix = String(source.prefix(5))
                let payload = body
                let count = perTick
                sent += 1
                group.addTask {
                    // The clock of a batch starts at the first 200 of its pair.
                    let first = FirstAnswer()
                    @Sendable func post(_ collector: String) async throws {
                        _ = try await poster.post(payload, to: url(collector))
                        first.mark()
                    }
                    async let a: Void = post("\(prefix)-a")
                    async let b: Void = post("\(prefix)-b")
                    _ = try await (a, b)
                    acks.acked(source: source, seq: top, events: count, at: first.at ?? Date())
                }
            }
        }
        try await group.waitForAll()
    }
    let elapsed = Date().timeIntervalSince(tStart)
    let cpuAfter = cpuTimes()
    let settle = Date()
    while acks.pendingCount > 0 && Date().timeIntervalSince(settle) < 60 {
        try await Task.sleep(for: .milliseconds(100))
    }
    poller.cancel()
    _ = await poller.result
    await martConn.close()
    let f = acks.freshness()
    let busy = Int(
        100 * (1 - Double(cpuAfter.idle - cpuBefore.idle) / Double(max(1, cpuAfter.total - cpuBefore.total))))
    return (f.p50, f.p99, f.count, sent, busy, acks.pendingEvents, elapsed)
}

/// The time of the first of a pair's answers.
final class FirstAnswer: Sendable {
    private let first = Mutex<Date?>(nil)
    var at: Date? { first.withLock { $0 } }
    func mark() { first.withLock { if $0 == nil { $0 = Date() } } }
}

/// The machine's CPU jiffies from /proc/stat: idle (idle + iowait) and total.
func cpuTimes() -> (idle: Int, total: Int) {
    guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
        let line = text.split(separator: "\n").first
    else { return (0, 0) }
    let f = line.split(separator: " ").dropFirst().prefix(8).compactMap { Int($0) }
    guard f.count >= 5 else { return (0, 0) }
    return (f[3] + f[4], f.reduce(0, +))
}

/// A process's user + system CPU seconds (`/proc/PID/stat`).
func processCPUSeconds(_ pid: Int32) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return 0 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14 and stime 15 (1-based) → 11 and 12 here.
    guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// A process's resident set now and at its peak, bytes (`VmRSS`, `VmHWM`).
func processRSS(_ pid: Int32) -> (now: Int, peak: Int) {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
    func kb(_ key: String) -> Int {
        text.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap {
            Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }.map { $0 * 1024 } ?? 0
    }
    return (kb("VmRSS:"), kb("VmHWM:"))
}

/// Pairs acknowledgement times with the moment the mart showed the batch.
final class LatencyLog: Sendable {
    private struct State {
        var pending: [(source: String, seq: Int64, events: Int, at: Date)] = []
        var done: [Double] = []
    }
    private let state = Mutex(State())

    func acked(source: String, seq: Int64, events: Int, at: Date) {
        state.withLock { $0.pending.append((source, seq, events, at)) }
    }

    func visible(_ seen: [String: Int64], at: Date) {
        state.withLock { s in
            var done: [Double] = []
            s.pending.removeAll { p in
                guard let top = seen[p.source], top >= p.seq else { return false }
                done.append(max(0, at.timeIntervalSince(p.at)))
                return true
            }
            s.done += done
        }
    }

    var pendingCount: Int { state.withLock { $0.pending.count } }
    var pendingEvents: Int { state.withLock { $0.pending.reduce(0) { $0 + $1.events } } }

    func freshness() -> (p50: Double, p99: Double, count: Int) {
        state.withLock { state in
            let s = state.done.sorted()
            guard !s.isEmpty else { return (0, 0, 0) }
            return (s[s.count / 2], s[min(s.count - 1, Int(Double(s.count) * 0.99))], s.count)
        }
    }
}

/// With BENCH_EXTRACTOR_TIMING set, copies site1's extractor log (its cycles' phases) and its
/// PostgreSQL server's log to `$BENCH_LOG_DIR` (default /tmp) before the lab is removed.
func keepExtractorLog(_ lab: LocalLab, as name: String) {
    let env = ProcessInfo.processInfo.environment
    guard env["BENCH_EXTRACTOR_TIMING"] != nil else { return }
    let target = (env["BENCH_LOG_DIR"] ?? "/tmp") + "/bcpipe-extractor-\(name).log"
    try? FileManager.default.removeItem(atPath: target)
    try? FileManager.default.copyItem(atPath: lab.directory + "/sites/site1/extractor.log", toPath: target)
    let server = target.replacingOccurrences(of: "bcpipe-extractor-", with: "bcpipe-mart-")
    try? FileManager.default.removeItem(atPath: server)
    try? FileManager.default.copyItem(atPath: lab.directory + "/sites/site1/postgres.log", toPath: server)
    print("  (extractor log kept in \(target))")
}
