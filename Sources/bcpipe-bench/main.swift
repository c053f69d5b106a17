import Collector
import EventModel
import Foundation
import Lab
import Logging
import PostgresClient
import Synchronization
import Topology
import ZstdCompression

// bcpipe-bench: prints throughput figures beside their baselines, measured in the same run.
// Run it through scripts/bench (release build). Environment: BENCH_EVENTS (default 1000000),
// BENCH_BASE_PORT (default 27700) for the labs it starts, BENCH_ONLY (parse,zstd,copy,queue,collector,ack,extractor,dr,rtn,lag,peer,load),
// BENCH_BACKLOG (default 10000000) events for the queue's drain-memory figure (0 skips it).

let eventCount = ProcessInfo.processInfo.environment["BENCH_EVENTS"].flatMap(Int.init) ?? 1_000_000
let only = Set(
    (ProcessInfo.processInfo.environment["BENCH_ONLY"]
        ?? "parse,zstd,copy,queue,collector,ack,extractor,dr,rtn,lag,peer,load").split(
            separator: ","
        ).map(String.init))
let benchStarted = Date()
let workDir = FileManager.default.temporaryDirectory.appendingPathComponent("bcpipe-bench-\(getpid())").path
try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: workDir) }

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
func fmt(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }
func rate(_ n: Double) -> String {
    n >= 1e6 ? fmt(n / 1e6, 2) + " M" : n >= 1e3 ? fmt(n / 1e3, 1) + " k" : fmt(n, 0) + " "
}
func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

/// The labs' ports start here; each lab section adds its own offset.
let benchBasePort = ProcessInfo.processInfo.environment["BENCH_BASE_PORT"].flatMap(Int.init) ?? 27_700

/// The sections that failed: the run goes on with the next, records the failure in
/// BENCHMARKS.md and exits non-zero (a full run with a failure does not write the README's table).
let failedSections = Mutex<[String]>([])
/// Runs a lab section when `BENCH_ONLY` picks it; a failure is recorded and the run goes on.
func section(_ name: String, _ body: () async throws -> Void) async {
    guard only.contains(name) else { return }
    print("")
    do {
        try await body()
    } catch {
        print("\(name): FAILED: \(error)")
        figure("Failed in this run", "the \(name) benchmarks", "FAILED: \(error)")
        failedSections.withLock { $0.append(name) }
    }
}

/// Runs a shell command, returning its wall time in seconds.
func timeShell(_ command: String) throws -> Double {
    let clock = ContinuousClock()
    let start = clock.now
    let out = try Processes.run(["/bin/sh", "-c", command], timeout: 600)
    guard out.status == 0 else { throw LabError("`\(command)` failed: \(out.text)") }
    return seconds(clock.now - start)
}

print(
    "bcpipe benchmarks — \(eventCount) events, \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
)
print("")

// The events and their NDJSON.
var events: [Event] = []
events.reserveCapacity(eventCount)
var synth = SyntheticEvents(seed: 42)
for _ in 0..<eventCount { events.append(synth.next()!) }
var ndjson: [UInt8] = []
ndjson.reserveCapacity(eventCount * 240)
for e in events {
    e.appendJSON(to: &ndjson)
    ndjson.append(10)
}
let megabytes = Double(ndjson.count) / 1e6
print("input: \(eventCount) events, \(fmt(megabytes)) MB of NDJSON (\(ndjson.count / eventCount) bytes an event)")
print("")

// 1. Parse + validate, in 16 MiB bodies like ingest requests.
if only.contains("parse") {
    let parser = EventParser(isKnownSource: { $0 == "site1/voice" })
    var bodies: [Range<Int>] = []
    var start = 0
    while start < ndjson.count {
        var end = min(start + 16 << 20, ndjson.count)
        while end < ndjson.count && ndjson[end - 1] != 10 { end += 1 }
        bodies.append(start..<end)
        start = end
    }
    var times: [Double] = []
    var parsed = 0
    for _ in 0..<3 {
        let clock = ContinuousClock()
        let t0 = clock.now
        parsed = 0
        ndjson.withUnsafeBytes { all in
            for r in bodies { parsed += parser.parse(body: UnsafeRawBufferPointer(rebasing: all[r])).events.count }
        }
        times.append(seconds(clock.now - t0))
    }
    precondition(parsed == eventCount, "parsed \(parsed) of \(eventCount)")
    let t = median(times)
    print(
        "parse+validate    \(rate(Double(eventCount) / t))events/s   \(fmt(megabytes / t)) MB/s   (median of 3, one core)"
    )
    figure(
        "Parsing and compression", "parse + validate NDJSON (one core, median of 3)",
        "\(rate(Double(eventCount) / t))events/s, \(fmt(megabytes / t)) MB/s")
}

// 2. zstd level 3 in 1 MiB frames vs the zstd command line tool, on the same footing: both file
// to file (the input read from the warm page cache, the output written, no fsync), one thread.
if only.contains("zstd") {
    let file = workDir + "/events.ndjson"
    try Data(ndjson).write(to: URL(fileURLWithPath: file))
    var compressor = try ZstdCompressor(level: 3)
    var times: [Double] = []
    var compressedBytes = 0
    for _ in 0..<3 {
        let clock = ContinuousClock()
        let t0 = clock.now
        let input = try Data(contentsOf: URL(fileURLWithPath: file))
        FileManager.default.createFile(atPath: file + ".lib.zst", contents: nil)
        guard let out = FileHandle(forWritingAtPath: file + ".lib.zst") else {
            throw LabError("cannot write \(file).lib.zst")
        }
        compressedBytes = 0
        try input.withUnsafeBytes { all in
            var start = 0
            while start < all.count {
                let end = min(start + 1 << 20, all.count)
                let frame = try compressor.compress(UnsafeRawBufferPointer(rebasing: all[start..<end]))
                compressedBytes += frame.count
                out.write(Data(frame))
                start = end
            }
        }
        try out.close()
        times.append(seconds(clock.now - t0))
    }
    var cliTimes: [Double] = []
    for _ in 0..<3 { cliTimes.append(try timeShell("zstd -3 -T1 -q -f '\(file)' -o '\(file).zst'")) }
    let cliBytes = fileSize(file + ".zst")
    let t = median(times)
    let ct = median(cliTimes)
    print(
        "zstd -3 (library) \(fmt(megabytes / t)) MB/s   ratio \(fmt(Double(ndjson.count) / Double(compressedBytes), 2))   (1 MiB frames, file to file, one thread)"
    )
    print(
        "zstd -3 (CLI)     \(fmt(megabytes / ct)) MB/s   ratio \(fmt(Double(ndjson.count) / Double(cliBytes), 2))   (one stream, -T1, file to file, process start included)"
    )
    print("  throughput vs CLI: \(fmt(ct / t, 2))×")
    figure(
        "Parsing and compression",
        "zstd level 3, 1 MiB frames (library), file to file from the warm page cache, one thread, median of 3",
        "\(fmt(megabytes / t)) MB/s, ratio \(fmt(Double(ndjson.count) / Double(compressedBytes), 1))",
        baseline:
            "`zstd -3 -T1 FILE -o FILE.zst` (one stream; its process start included): \(fmt(megabytes / ct)) MB/s, ratio \(fmt(Double(ndjson.count) / Double(cliBytes), 1))",
        goal: "\(fmt(ct / t, 2))×")
}

// 3. COPY of the events into an IDB-shaped table: Swift client vs psql \copy, same rows, same table.
if only.contains("copy") {
    let basePort = benchBasePort
    var logger = Logger(label: "bench")
    logger.logLevel = .warning
    let exe = URL(
        fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
    )
    .deletingLastPathComponent().appendingPathComponent("bcpipe").path
    let lab = LocalLab(directory: workDir + "/lab", executable: exe, logger: logger)
    var options = LocalLab.Options()
    options.basePort = basePort
    let state = try await lab.up(options)
    defer { try? lab.down(remove: true) }
    let port = state.postgresPort(state.sites[0])
    let conninfo = "host=127.0.0.1 port=\(port) user=bcpipe dbname=idb_site1_a"
    var config = PostgresConfiguration(conninfo: conninfo)
    config.statementTimeoutMilliseconds = 0
    let conn = try await PostgresConnection.connect(config)
    try await conn.execute(
        "DROP TABLE IF EXISTS public.bench_events; CREATE TABLE public.bench_events (LIKE idb.events INCLUDING ALL)")

    let columns = IDBWriter.columns
    // The same rows as a file for psql.
    let rowsFile = workDir + "/events.copy"
    var all: [UInt8] = []
    var row = CopyRow()
    for e in events {
        IDBWriter.encode(e, into: &row)
        all += row.bytes
    }
    try Data(all).write(to: URL(fileURLWithPath: rowsFile))
    all = []
    let shared = events

    var swiftTimes: [Double] = []
    var psqlTimes: [Double] = []
    for _ in 0..<3 {
        try await conn.execute("TRUNCATE public.bench_events")
        try await conn.execute("CHECKPOINT")
        let clock = ContinuousClock()
        let t0 = clock.now
        let n = try await conn.transaction { c in
            try c.copyIn("COPY public.bench_events (\(columns)) FROM STDIN") { sink in
                var row = CopyRow()
                for e in shared {
                    IDBWriter.encode(e, into: &row)
                    try sink.write(row)
                }
            }
        }
        swiftTimes.append(seconds(clock.now - t0))
        precondition(n == eventCount)

        try await conn.execute("TRUNCATE public.bench_events")
        try await conn.execute("CHECKPOINT")
        psqlTimes.append(
            try timeShell(
                "psql '\(conninfo)' -q -v ON_ERROR_STOP=1 -c \"\\copy public.bench_events (\(columns)) FROM '\(rowsFile)'\""
            ))
    }
    let count = try await conn.query("SELECT count(*) FROM public.bench_events")[0].decode(0, as: Int.self)
    precondition(count == eventCount)
    await conn.close()
    let st = median(swiftTimes)
    let pt = median(psqlTimes)
    print(
        "COPY (Swift)      \(rate(Double(eventCount) / st))events/s   (encodes rows from events while streaming; median of 3)"
    )
    print("COPY (psql \\copy) \(rate(Double(eventCount) / pt))events/s   (pre-encoded file; median of 3)")
    print("  Swift / psql: \(fmt(pt / st, 2))   (goal ≥ 0.90)")
    figure(
        "IDB writes", "COPY \(eventCount) events into an IDB-shaped table (rows encoded while streaming)",
        "\(rate(Double(eventCount) / st))events/s",
        baseline: "`psql \\copy` of the same rows: \(rate(Double(eventCount) / pt))events/s",
        goal: "\(fmt(pt / st, 2)) (goal ≥ 0.9)")
}

// 4. The disk queue.
if only.contains("queue") {
    print("")
    let lines = events.map { e -> [UInt8] in
        var out: [UInt8] = []
        e.appendJSON(to: &out)
        return out
    }
    let backlog = ProcessInfo.processInfo.environment["BENCH_BACKLOG"].flatMap(Int.init) ?? 10_000_000
    try await benchQueue(events: events, lines: lines, workDir: workDir, backlogEvents: backlog)
}

// 5. The collector on the lab.
await section("collector") {
    let basePort = benchBasePort + 100
    try await benchCollector(events: eventCount, workDir: workDir, basePort: basePort)
}

// 5b. Acknowledgement latency at a paced 20,000 events/s: three rounds of three runs.
await section("ack") {
    try await benchAckLatency(workDir: workDir, basePort: benchBasePort + 1000)
}

// 6. The extractor on the lab.
await section("extractor") {
    let basePort = benchBasePort + 200
    // 1 M and 5 M against COPY, and a measured backlog of 10 M (BENCH_EXTRACT_SIZES=a,b,c).
    let sizes =
        ProcessInfo.processInfo.environment["BENCH_EXTRACT_SIZES"].map {
            $0.split(separator: ",").compactMap { Int($0) }
        } ?? [eventCount, 5 * eventCount, 10 * eventCount]
    try await benchExtractor(sizes: sizes, workDir: workDir, basePort: basePort)
}

// 7. Disaster recovery on the lab.
await section("dr") {
    let basePort = benchBasePort + 300
    try await benchDisasterRecovery(workDir: workDir, basePort: basePort)
}

// 8. Return to normal with a big mart, beside pg_dump | pg_restore.
await section("rtn") {
    let basePort = benchBasePort + 500
    let bytes = ProcessInfo.processInfo.environment["BENCH_MART_BYTES"].flatMap(Int64.init) ?? 1 << 30
    try await benchReturnToNormal(workDir: workDir, basePort: basePort, targetBytes: bytes)
}

// 9. Replication lag at the goal's rate, and below it for the floor.
await section("lag") {
    let basePort = benchBasePort + 600
    for (i, rate) in [10_000, 2_000].enumerated() {
        try await benchReplicationLag(workDir: workDir, basePort: basePort + 100 * i, rate: rate)
    }
}

// 10. The peer, rsyslog + ompgsql, beside bcpipe's collector on the same events.
await section("peer") {
    let basePort = benchBasePort + 900
    try await benchPeer(workDir: workDir, basePort: basePort)
}

// 11. Sustained load (10 minutes by default; alone: scripts/load).
await section("load") {
    let basePort = benchBasePort + 800
    let env = ProcessInfo.processInfo.environment
    try await runLoad(
        workDir: workDir, basePort: basePort, seconds: env["BENCH_LOAD_SECONDS"].flatMap(Double.init) ?? 600,
        eventsPerSecond: env["BENCH_LOAD_RATE"].flatMap(Double.init) ?? 100_000)
}

// BENCHMARKS.md: every figure beside its baseline and goal, and the machine (BENCH_REPORT=path).
if let path = ProcessInfo.processInfo.environment["BENCH_REPORT"], !path.isEmpty {
    try writeBenchmarks(to: path, events: eventCount, started: benchStarted)
    print("")
    print("wrote \(path)")
    // A full run (no BENCH_ONLY) writes the README's table too (BENCH_README, default README.md
    // beside BENCHMARKS.md).
    if ProcessInfo.processInfo.environment["BENCH_ONLY"] == nil, failedSections.withLock({ $0.isEmpty }) {
        let readme =
            ProcessInfo.processInfo.environment["BENCH_README"]
            ?? URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("README.md").path
        try writeReadmeTable(to: readme, started: benchStarted)
        print("wrote the table in \(readme)")
    }
}

let failed = failedSections.withLock { $0 }
if !failed.isEmpty {
    print("FAILED: \(failed.joined(separator: ", "))")
    try? FileManager.default.removeItem(atPath: workDir)
    exit(1)
}
