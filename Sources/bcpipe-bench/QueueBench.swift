import DiskQueue
import EventModel
import Foundation
import Lab
import Synchronization

/// Disk-queue figures: durable append with 1, 4 and 16 writers, read+ack from a warm and from
/// a cold page cache, compression, p99 append latency, peak RSS draining a large backlog.
/// Baselines on the same bytes (the NDJSON, newlines included, on both sides) and the same cores:
/// a writer compresses in its own task, so one writer uses one core and several use both —
/// `zstd -3 -T1 | dd conv=fdatasync` beside one writer, `zstd -3 -T2 | dd conv=fdatasync` beside
/// several; `zstd -d` of that output beside read + ack, from the same cache state.
func benchQueue(events: [Event], lines: [[UInt8]], workDir: String, backlogEvents: Int) async throws {
    let batchSize = 100
    let batches = stride(from: 0, to: lines.count, by: batchSize).map {
        Array(lines[$0..<min($0 + batchSize, lines.count)])
    }

    // The physical baselines: the same bytes, zstd -3 on one and on two threads, written with
    // fdatasync at the end; and zstd -d of that file.
    let file = workDir + "/queue-input.ndjson"
    var joined: [UInt8] = []
    joined.reserveCapacity(lines.reduce(0) { $0 + $1.count + 1 })
    for l in lines {
        joined += l
        joined.append(10)
    }
    let mb = Double(joined.count) / 1e6
    try Data(joined).write(to: URL(fileURLWithPath: file))
    joined = []
    /// MB/s of the events through `command`, median of 3; `cold` drops the compressed file's
    /// pages first each time.
    func shellMBps(_ command: String, cold: Bool = false) throws -> Double {
        var times: [Double] = []
        for _ in 0..<3 {
            if cold { dropPageCache(workDir + "/baseline.zst") }
            times.append(try timeShell(command))
        }
        return mb / median(times)
    }
    func compressBaseline(threads: Int) throws -> Double {
        try shellMBps(
            "zstd -3 -T\(threads) -q -c '\(file)' | dd of='\(workDir)/baseline.zst' bs=1M conv=fdatasync status=none")
    }
    let baseline1 = try compressBaseline(threads: 1)
    let baseline2 = try compressBaseline(threads: 2)
    print(
        "queue baseline    zstd -3 | dd conv=fdatasync: \(fmt(baseline1)) MB/s on one thread (-T1), \(fmt(baseline2)) MB/s on two (-T2)"
    )
    func decompressBaseline(cold: Bool) throws -> Double {
        try shellMBps("zstd -d -q -c '\(workDir)/baseline.zst' > /dev/null", cold: cold)
    }

    var best = 0.0
    for writers in [1, 4, 16] {
        let baseline = writers == 1 ? baseline1 : baseline2
        let cores = writers == 1 ? "-T1" : "-T2"
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
        best = max(best, mb / t / baseline)
        let perFsync = fmt(Double(s.appends) / Double(max(s.fsyncs, 1)), 1)
        let p99 = fmt(latencies.percentile(0.99) * 1000, 2)
        print(
            "queue append ×\(writers)\(writers < 10 ? " " : "")  \(rate(Double(lines.count) / t))events/s   \(fmt(mb / t)) MB/s   \(perFsync) appends/fsync   p99 \(p99) ms   vs zstd \(cores) | dd \(fmt(mb / t / baseline, 2))"
        )
        figure(
            "Disk queue", "durable append, \(writers) writer\(writers == 1 ? "" : "s") (100-event batches)",
            "\(rate(Double(lines.count) / t))events/s, \(fmt(mb / t)) MB/s, \(perFsync) appends/fsync, p99 \(p99) ms",
            baseline: "`zstd -3 \(cores) | dd conv=fdatasync` of the same bytes: \(fmt(baseline)) MB/s",
            goal: "\(fmt(mb / t / baseline, 2))\(writers == 16 ? " (goal ≥ 0.8; p99 ≤ 5 ms)" : "")")
        if writers == 16 {
            print(
                "queue compression ratio \(fmt(mb * 1e6 / Double(s.bytes), 2)) (\(fmt(Double(s.bytes) / 1e6)) MB on disk, frame headers included)"
            )
            figure(
                "Disk queue", "compression (frame headers included)", "ratio \(fmt(mb * 1e6 / Double(s.bytes), 1))",
                baseline:
                    "`zstd -3` of the same bytes as one stream: ratio \(fmt(mb * 1e6 / Double(fileSize(workDir + "/baseline.zst")), 1))"
            )
        }
        // Read + ack: warm after 4 writers (the segments just written are in the page cache),
        // cold after 16 (every segment's pages dropped first).
        if writers == 4 || writers == 16 {
            let cold = writers == 16
            if cold { dropPageCache(dir) }
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
            let base = try decompressBaseline(cold: cold)
            let cache = cold ? "cold page cache" : "warm page cache"
            print(
                "queue read+ack (\(cache))  \(rate(Double(read) / rt))events/s   \(fmt(mb / rt)) MB/s   vs zstd -d \(fmt(base)) MB/s   (goal ≥ 1 M events/s)"
            )
            figure(
                "Disk queue", "read + ack, \(cache)", "\(rate(Double(read) / rt))events/s, \(fmt(mb / rt)) MB/s",
                baseline: "`zstd -d` of the same bytes compressed, \(cache): \(fmt(base)) MB/s",
                goal: "\(fmt(mb / rt / base, 2)) (goal ≥ 1 M events/s)")
        }
        queue.close()
        try? FileManager.default.removeItem(atPath: dir)
    }
    print(
        "  best durable append vs its baseline: \(fmt(best, 2))   (goal ≥ 0.80; p99 goal ≤ 5 ms at 16 writers)")

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
final class LatencyRecorder: Sendable {
    private let values = Mutex<[Double]>([])
    func add(_ v: Double) { values.withLock { $0.append(v) } }
    var all: [Double] { values.withLock { $0 } }
    func percentile(_ p: Double) -> Double {
        let sorted = values.withLock { $0 }.sorted()
        return sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }
}

/// Drops a file's (or every file's under a directory) clean pages from the page cache, as if it
/// had not been read since boot (`POSIX_FADV_DONTNEED`; the queue's files are fsync'd, so clean).
func dropPageCache(_ path: String) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return }
    let files =
        isDirectory.boolValue
        ? (FileManager.default.subpaths(atPath: path) ?? []).map { path + "/" + $0 } : [path]
    for f in files {
        let fd = open(f, O_RDONLY)
        guard fd >= 0 else { continue }
        fdatasync(fd)
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
        close(fd)
    }
}

func fileSize(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? Int) ?? 1
}
