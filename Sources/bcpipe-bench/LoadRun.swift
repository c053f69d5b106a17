import Coordinator
import EventModel
import Foundation
import Lab
import Synchronization
import Topology
import Traffic

/// Sustained load (`BENCH_ONLY=load`, `scripts/load`): both sites up with their extractors, every source's batches
/// sent to both collectors of its pair at a paced rate for `seconds`, the WAN cut for the middle
/// fifth. Prints every answer that was not 200 (only 503 back-pressure is allowed), each
/// collector's RSS over the run (flat: the last third's peak within a margin of the peak of a
/// third after the first minute), the queues' peak and the time they take to drain once the link
/// is back.
func runLoad(workDir: String, basePort: Int, seconds: Double, eventsPerSecond: Double) async throws {
    var options = LocalLab.Options()
    options.basePort = basePort
    options.stuckThreshold = 3600
    // As deployed: both sites' extractors run, and take their share of the two cores.
    options.startExtractors = true
    let lab = try await startBenchLab(workDir + "/load-lab", options)
    defer { try? lab.down(remove: true) }
    let topology = try Topology.load(path: lab.topologyPath)
    // A source sends its batches in seq order, one at a time (CONTRACT 1: seq strictly increasing
    // per source; a collector takes what is below what it already stored as a duplicate), so the
    // batches are large.
    let batch = 4000
    print(
        "load: \(rate(eventsPerSecond))events/s over \(topology.sources.count) sources for \(Int(seconds)) s, each batch of \(batch) to both collectors of its pair; WAN cut from \(Int(seconds * 0.4)) s to \(Int(seconds * 0.6)) s"
    )

    // Each source's generator (a thread) encodes its batches as it goes, at the paced rate, and
    // hands each batch to one in-order sender thread per collector of its pair: a collector's
    // sender posts the next batch as soon as the last one was answered, whatever its partner
    // does; a sender more than 8 batches behind holds the generator back.
    let perSource = eventsPerSecond / Double(topology.sources.count)
    let t0 = Date()
    let deadline = t0.addingTimeInterval(seconds)
    let sent = LoadCount()
    let totals = LoadTotals()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (i, source) in topology.sources.enumerated() {
            let urls = topology.collectors.filter { $0.source == source.name }.map { "http://\($0.listen)" }
            let queues = urls.map { _ in BatchQueue(capacity: 8) }
            for (url, queue) in zip(urls, queues) {
                group.addTask {
                    await onThread("sender \(url)") {
                        let poster = BlockingPoster(base: url, totals: totals)
                        while let payload = queue.take() { poster.post(payload) }
                    }
                }
            }
            group.addTask {
                await onThread("generator \(source.name)") {
                    // Simulating the contact center costs more per event than the collector's
                    // work on these 2 shared cores, so 200 000 simulated events are replayed:
                    // each with the next seq, its time moved on by the replayed span every round.
                    var gen = TrafficGenerator(
                        source: source.name, seed: UInt64(i), start: Int64(Date().timeIntervalSince1970 * 1000),
                        firstSeq: 1, profile: .staffed(arrivalsPerSecond: 2000))
                    let template = (0..<200_000).map { _ in gen.next()! }
                    let span = template.last!.ts.millisecondsSinceEpoch - template[0].ts.millisecondsSinceEpoch + 1
                    var (k, shift, seq): (Int, Int64, Int64) = (0, 0, 1)
                    let interval = Double(batch) / perSource
                    var next = Date()
                    while Date() < deadline {
                        var body: [UInt8] = []
                        body.reserveCapacity(batch * 230)
                        for _ in 0..<batch {
                            var e = template[k]
                            e.seq = seq
                            e.ts.millisecondsSinceEpoch += shift
                            e.appendJSON(to: &body)
                            body.append(10)
                            seq += 1
                            k += 1
                            if k == template.count { (k, shift) = (0, shift + span) }
                        }
                        for queue in queues { queue.put(body) }
                        sent.add(batch)
                        next = next.addingTimeInterval(interval)
                        if next > Date() { Thread.sleep(until: next) }
                    }
                    for queue in queues { queue.finish() }
                }
            }
        }
        // The WAN cut for the middle fifth; RSS and queues sampled every 5 s.
        group.addTask {
            var cut = false
            var restored = false
            while Date() < deadline {
                let t = Date().timeIntervalSince(t0)
                if !cut && t >= seconds * 0.4 {
                    try lab.setLink("site1", "site2", .refuse)
                    cut = true
                    print(String(format: "[%5.0f s] WAN cut", t))
                }
                if cut && !restored && t >= seconds * 0.6 {
                    try lab.setLink("site1", "site2", .up)
                    restored = true
                    print(String(format: "[%5.0f s] WAN restored", t))
                }
                try await sampleLoad(lab, topology, at: t, sent: sent.value)
                try await Task.sleep(for: .seconds(5))
            }
            if !restored { try lab.setLink("site1", "site2", .up) }
        }
        try await group.waitForAll()
    }
    let elapsed = Date().timeIntervalSince(t0)
    let counts = totals.value
    let (accepted, duplicates, rejected) = (counts.accepted, counts.duplicates, counts.rejected)
    let (backPressure, errors, unanswered) = (counts.backPressure, counts.errors, counts.unanswered)
    let latencies = counts.latencies.sorted()
    let p99 = latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))]

    // Drained after: time from the end of the load until every queue is empty.
    let drainStart = Date()
    var peakQueue = 0
    while true {
        var total = 0
        for c in topology.collectors { total += await DeploymentStatus.collectorStatus(c).queueEvents ?? 0 }
        peakQueue = max(peakQueue, total)
        if total == 0 { break }
        try await Task.sleep(for: .milliseconds(250))
    }
    let drain = Date().timeIntervalSince(drainStart)
    let samples = loadSamples.withLock { $0 }
    print("")
    print(
        "load: \(sent.value) events sent in \(fmt(elapsed, 0)) s = \(rate(Double(sent.value) / elapsed))events/s (target \(rate(eventsPerSecond))), \(accepted) accepted by the collectors (each event by both of its pair; \(duplicates) more answered as duplicates of a retried request, \(rejected) rejected), request p99 \(fmt(p99 * 1000, 1)) ms"
    )
    print("load: answers other than 200: 503 \(backPressure), other errors \(errors), unanswered \(unanswered)")
    print("load: queues drained \(fmt(drain, 1)) s after the load ended (\(peakQueue) events queued then)")
    // Flat memory: the peak RSS of the last third of the run against the peak of a third as long
    // after the first minute's warm-up (single samples swing by ±20 MiB with the batches in hand).
    var flat = true
    let third = seconds / 3
    let warm = min(60, third)
    for c in topology.collectors {
        let rss = samples.compactMap { s in s.rss[c.name].map { (s.t, $0) } }
        let early = rss.filter { $0.0 >= warm && $0.0 < warm + third }.map(\.1).max() ?? 0
        let late = rss.filter { $0.0 >= seconds - third }.map(\.1).max() ?? 0
        let peak = rss.map(\.1).max() ?? 0
        if late - early > max(16, early / 4) { flat = false }
        print(
            "load: collector \(c.name) peak RSS \(early) MiB from \(Int(warm)) s to \(Int(warm + third)) s, \(late) MiB in the last \(Int(third)) s, \(peak) MiB over the run"
        )
    }
    // Every event is sent once in order: a duplicate answer without a retry means one was dropped.
    let ok = errors == 0 && flat && (duplicates == 0 || unanswered > 0)
    print(
        "load: \(ok ? "PASS" : "FAIL"): \(errors == 0 ? "no error answers" : "\(errors) error answers"), \(duplicates) duplicate answers, memory \(flat ? "flat" : "GREW")"
    )
    figure(
        "Load",
        "sustained ingest for \(Int(seconds)) s, WAN cut for the middle fifth (each batch to both collectors; extractors running, as deployed)",
        "\(rate(Double(sent.value) / elapsed))events/s sent, request p99 \(fmt(p99 * 1000, 1)) ms",
        goal:
            "offered \(rate(eventsPerSecond))events/s; errors \(errors), 503s \(backPressure), memory \(flat ? "flat" : "grew"), drained in \(fmt(drain, 1)) s (goal: 0 errors, memory flat)"
    )
}

final class LoadCount: Sendable {
    let count = Mutex(0)
    func add(_ n: Int) { count.withLock { $0 += n } }
    var value: Int { count.withLock { $0 } }
}

struct LoadSample: Sendable {
    var t: Double
    var rss: [String: Int]  // MiB
    var queued: Int
}

let loadSamples = Mutex<[LoadSample]>([])

func sampleLoad(_ lab: LocalLab, _ topology: Topology, at t: Double, sent: Int) async throws {
    var rss: [String: Int] = [:]
    var queued = 0
    for c in topology.collectors {
        if let kb = collectorMemoryKB(lab, c.name, "VmRSS") { rss[c.name] = kb / 1024 }
        queued += await DeploymentStatus.collectorStatus(c).queueEvents ?? 0
    }
    loadSamples.withLock { $0.append(LoadSample(t: t, rss: rss, queued: queued)) }
    print(
        String(format: "[%5.0f s] ", t)
            + "sent \(sent) · queued \(queued) · RSS MiB \(topology.collectors.map { "\($0.name) \(rss[$0.name] ?? -1)" }.joined(separator: ", "))"
    )
}
