import DiskQueue
import EventModel
import Foundation
import Lab

/// Disk-queue figures: durable append with 1, 4 and 16 writers, read+ack, compression, p99
/// append latency, peak RSS draining a large backlog, beside `zstd -3 | dd conv=fdatasync`.
func benchQueue(events: [Event], lines: [[UInt8]], workDir: String, backlogEvents: Int) async throws {
    let rawBytes = lines.reduce(0) { $0 + $1.count }
    let mb = Double(rawBytes) / 1e6
    let batchSize = 100
    let batches = stride(from: 0, to: lines.count, by: batchSize).map {
        Array(lines[$0..<min($0 + batchSize, lines.count)])
    }

    // The physical baseline: the same bytes, zstd -3, written with fdatasync at the end.
    let file = workDir + "/queue-input.ndjson"
    var joined: [UInt8] = []
    joined.reserveCapacity(rawBytes + lines.count)
    for l in lines {
        joined += l
        joined.append(10)
    }
    try Data(joined).write(to: URL(fileURLWithPath: file))
    var baseTimes: [Double] = []
    for _ in 0..<3 {
        baseTimes.append(
            try timeShell(
                "zstd -3 -T1 -q -c '\(file)' | dd of='\(workDir)/baseline.zst' bs=1M conv=fdatasync status=none"))
    }
    let baseline = mb / median(baseTimes)
    print("queue baseline    zstd -3 | dd conv=fdatasync: \(fmt(baseline)) MB/s of raw events")

    var best = 0.0
    for writers in [1, 4, 16] {
        let dir = workDir + "/queue-\(writers)"
        let queue = try DiskQueue(DiskQueueConfiguration(directory: dir))
        let latencies = LatencyRecorder()
        let clock = ContinuousClock()
        let t0 = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    var i = w
                    while i < batches.count {
                        let start = ContinuousClock.now
                        _ = try await queue.append(batches[i], oldestTimestamp: 0)
                        latencies.add(seconds(ContinuousClock.now - start))
                        i += writers
                    }
                }
            }
            try await group.waitForAll()
        }
        let t = seconds(clock.now - t0)
        let s = queue.stats
        best = max(best, mb / t)
        print(
            "queue append ×\(writers)\(writers < 10 ? " " : "")  \(rate(Double(lines.count) / t))events/s   \(fmt(mb / t)) MB/s   \(fmt(Double(s.appends) / Double(max(s.fsyncs, 1)), 1)) appends/fsync   p99 \(fmt(latencies.percentile(0.99) * 1000, 2)) ms   vs baseline \(fmt(mb / t / baseline, 2))"
        )
        figure(
            "Disk queue", "durable append, \(writers) writer\(writers == 1 ? "" : "s") (100-event batches)",
            "\(rate(Double(lines.count) / t))events/s, \(fmt(mb / t)) MB/s, \(fmt(Double(s.appends) / Double(max(s.fsyncs, 1)), 1)) appends/fsync, p99 \(fmt(latencies.percentile(0.99) * 1000, 2)) ms",
            baseline: "`zstd -3 | dd conv=fdatasync`: \(fmt(baseline)) MB/s",
            goal: "\(fmt(mb / t / baseline, 2))\(writers == 16 ? " (goal ≥ 0.8; p99 ≤ 5 ms)" : "")")
        if writers == 16 {
            let disk = s.bytes
            print(
                "queue compression ratio \(fmt(Double(rawBytes) / Double(disk), 2)) (\(fmt(Double(disk) / 1e6)) MB on disk, frame headers included)"
            )
            figure(
                "Disk queue", "compression (frame headers included)", "ratio \(fmt(Double(rawBytes) / Double(disk), 1))"
            )
            let reader = queue.makeReader()
            let r0 = clock.now
            var read = 0
            while true {
                let got = try reader.next(maxFrames: 64)
                guard let last = got.last else { break }
                read += got.reduce(0) { $0 + $1.records.count }
                try queue.ack(through: last.end, nextIndex: last.endIndex)
            }
            let rt = seconds(clock.now - r0)
            precondition(read == lines.count)
            print("queue read+ack    \(rate(Double(read) / rt))events/s   \(fmt(mb / rt)) MB/s   (goal ≥ 1 M events/s)")
            figure(
                "Disk queue", "read + ack", "\(rate(Double(read) / rt))events/s, \(fmt(mb / rt)) MB/s",
                goal: "goal ≥ 1 M events/s")
        }
        queue.close()
        try? FileManager.default.removeItem(atPath: dir)
    }
    print(
        "  best durable append vs baseline: \(fmt(best / baseline, 2))   (goal ≥ 0.80; p99 goal ≤ 5 ms at 16 writers)")

    // Peak RSS of a separate process draining a large backlog.
    if backlogEvents > 0 {
        let dir = workDir + "/queue-backlog"
        let queue = try DiskQueue(DiskQueueConfiguration(directory: dir))
        var written = 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<8 {
                group.addTask {
                    var i = w
                    while i * batchSize < backlogEvents {
                        _ = try await queue.append(batches[i % batches.count])
                        i += 8
                    }
                }
            }
            try await group.waitForAll()
        }
        written = Int(queue.stats.events)
        queue.close()
        let testkit = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
            "bcpipe-testkit"
        ).path
        let out = try Processes.run([testkit, "queue-drain", dir], timeout: 1800)
        let numbers = out.text.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        let rss = numbers.last ?? -1
        print(
            "queue drain of a \(written)-event backlog in a fresh process: peak RSS \(fmt(Double(rss) / 1024)) MiB   (goal < 64 MiB)"
        )
        figure(
            "Disk queue", "peak RSS draining a \(written)-event backlog (fresh process)",
            "\(fmt(Double(rss) / 1024)) MiB",
            goal: "goal < 64 MiB")
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Collects latencies from concurrent tasks.
final class LatencyRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Double] = []
    func add(_ v: Double) {
        lock.lock()
        values.append(v)
        lock.unlock()
    }
    func percentile(_ p: Double) -> Double {
        lock.lock()
        defer { lock.unlock() }
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }
}
