import EventModel
import Foundation
import Lab
import Topology
import Traffic

/// Acknowledgement latency at a paced 20,000 events/s (`BENCH_ONLY=ack`): a `200` is the disk
/// queue's `fdatasync` of the request's events, so this is what a source waits per request.
/// Three rounds, each on a fresh lab: three 10-second runs with the extractors stopped, then
/// three with both sites' extractors running (as deployed, sharing the 2 cores). Each run posts
/// 200-event requests due every 10 ms from 8 sender threads with raw keep-alive sockets (no
/// URLSession in the way); a request's latency runs from its due time to its answer, so a
/// sender held up by a slow answer makes the next request late and that wait counts (no
/// coordinated omission). One more round keeps the queues on the disk and puts the rest of the
/// lab (both PostgreSQL servers) in `/dev/shm`: the queue's disk is then its own, as deployed
/// (the IDBs on other hosts), where on this VM the rounds above share the one virtual disk with
/// both servers. A last round runs everything in `/dev/shm` (tmpfs: no `fdatasync` costs
/// anything there) — the same bytes, cores and processes without the disk, which tells what of
/// the latency is the disk's.
func benchAckLatency(workDir: String, basePort: Int, rounds: Int = 3, runs: Int = 3) async throws {
    print("")
    print(
        "acknowledgement latency at a paced 20,000 events/s, \(rounds) rounds of \(runs) runs, one with the queues on a disk of their own, one on tmpfs:"
    )
    var nextSeq: Int64 = 1
    for round in 1...(rounds + 2) {
        let ownDisk = round == rounds + 1
        let onTmpfs = round == rounds + 2
        let label =
            onTmpfs
            ? "tmpfs round (no disk)"
            : ownDisk ? "own-disk round (queues on the disk, PostgreSQL on tmpfs)" : "round \(round)"
        var options = LocalLab.Options()
        options.basePort = basePort
        options.startExtractors = false
        if ownDisk { options.queueRoot = workDir + "/ack-queues" }
        let directory = onTmpfs || ownDisk ? "/dev/shm/bcpipe-bench-ack-\(getpid())" : workDir + "/ack-lab"
        let lab = try await startBenchLab(directory, options)
        defer { try? lab.down(remove: true) }
        let topology = try Topology.load(path: lab.topologyPath)
        let target = "http://\(topology.collector(named: "site1-a")!.listen)"
        for extractors in [false, true] {
            if extractors {
                var on = options
                on.startExtractors = true
                try await lab.up(quietBenchOptions(on))
            }
            var p99s: [String] = []
            for run in 1...runs {
                let bodies = ndjsonBodies(count: 200_000, perRequest: 200, firstSeq: &nextSeq, seed: UInt64(run))
                let r = await pacedPost(bodies, to: target, interval: 0.01, senders: 8)
                let line =
                    "p50 \(fmt(r.percentile(0.5) * 1000, 2)) ms, p99 \(fmt(r.percentile(0.99) * 1000, 2)) ms, max \(fmt(r.percentile(1) * 1000, 1)) ms"
                print(
                    "  \(label), extractors \(extractors ? "running" : "stopped"), run \(run): \(rate(r.achieved))events/s, \(line)\(r.failures > 0 ? ", \(r.failures) requests not answered 200" : "")"
                )
                p99s.append(fmt(r.percentile(0.99) * 1000, 2))
                figure(
                    "Collector acknowledgement latency",
                    "\(label) run \(run), extractors \(extractors ? "running" : "stopped"): 200-event requests every 10 ms (\(rate(r.achieved))events/s achieved)",
                    line + (r.failures > 0 ? "; \(r.failures) not answered 200" : ""),
                    baseline: onTmpfs ? "" : "the tmpfs round of this run: the same without the disk",
                    goal: onTmpfs
                        ? "(the baseline of the rows above)"
                        : extractors
                            ? "(beside: the cores shared)"
                            : ownDisk ? "goal p99 ≤ 10 ms (the queue's disk its own)" : "goal p99 ≤ 10 ms")
            }
            print(
                "  \(label), extractors \(extractors ? "running" : "stopped"): p99 \(p99s.joined(separator: ", ")) ms"
            )
        }
    }
}

/// NDJSON request bodies of `perRequest` events of one source, seqs from `firstSeq` on.
func ndjsonBodies(count: Int, perRequest: Int, firstSeq: inout Int64, seed: UInt64) -> [[UInt8]] {
    var gen = TrafficGenerator(
        source: "site1/voice", seed: seed, start: Int64(Date().timeIntervalSince1970 * 1000), firstSeq: firstSeq,
        profile: .staffed(arrivalsPerSecond: 2000))
    var out: [[UInt8]] = []
    var body: [UInt8] = []
    for i in 0..<count {
        let e = gen.next()!
        e.appendJSON(to: &body)
        body.append(10)
        if (i + 1) % perRequest == 0 {
            out.append(body)
            body = []
        }
        firstSeq = e.seq + 1
    }
    if !body.isEmpty { out.append(body) }
    return out
}

/// What a paced run measured: each request's latency from its due time to its answer.
struct PacedRun: Sendable {
    var latencies: [Double]
    var achieved: Double
    var failures: Int

    func percentile(_ p: Double) -> Double {
        let sorted = latencies.sorted()
        return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }
}

/// Posts `bodies` to `base`, request `i` due at `t0 + i × interval`, request `i` sent by sender
/// `i % senders` (each a thread with its own keep-alive connection).
func pacedPost(_ bodies: [[UInt8]], to base: String, interval: Double, senders: Int) async -> PacedRun {
    let totals = LoadTotals()
    let latencies = LatencyRecorder()
    let t0 = Date().addingTimeInterval(0.2)
    let events = bodies.reduce(0) { $0 + $1.count(where: { $0 == 10 }) }
    await withTaskGroup(of: Void.self) { group in
        for k in 0..<senders {
            group.addTask {
                await onThread("ack sender \(k)") {
                    let poster = BlockingPoster(base: base, totals: totals)
                    for i in stride(from: k, to: bodies.count, by: senders) {
                        let due = t0.addingTimeInterval(Double(i) * interval)
                        if due > Date() { Thread.sleep(until: due) }
                        poster.post(bodies[i])
                        let latency = Date().timeIntervalSince(due)
                        latencies.add(latency)
                    }
                }
            }
        }
    }
    let elapsed = Date().timeIntervalSince(t0)
    let counts = totals.value
    return PacedRun(
        latencies: latencies.all, achieved: Double(events) / elapsed,
        failures: counts.errors + counts.unanswered + counts.backPressure)
}
