import DiskQueue
import Foundation
import Lab
import Testing
import Traffic

#if canImport(Glibc)
    import Glibc
#endif

/// The test helper executable built beside the test bundle.
var testkit: String {
    URL(fileURLWithPath: TestLab.executable).deletingLastPathComponent().appendingPathComponent("bcpipe-testkit").path
}

/// A child process whose stdout lines are collected as they arrive.
final class Child: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var lines: [String] = []
    private var partial = ""
    private let done = DispatchSemaphore(value: 0)

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.standardError
        try process.run()
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                lock.lock()
                partial += String(decoding: data, as: UTF8.self)
                let parts = partial.split(separator: "\n", omittingEmptySubsequences: false)
                lines += parts.dropLast().map(String.init)
                partial = String(parts.last ?? "")
                lock.unlock()
            }
            done.signal()
        }
    }

    var output: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    func kill9() { kill(process.processIdentifier, SIGKILL) }

    /// Waits for the process and its output to end.
    func wait() -> [String] {
        process.waitUntilExit()
        done.wait()
        return output
    }
}

func drainAll(_ dir: String) throws -> (records: [String], lost: UInt64) {
    let queue = try DiskQueue(DiskQueueConfiguration(directory: dir))
    defer { queue.close() }
    let reader = queue.makeReader()
    var out: [String] = []
    while true {
        let batches = try reader.next()
        if batches.isEmpty { break }
        for b in batches { out += b.records.map { String(decoding: $0, as: UTF8.self) } }
        try queue.ack(through: batches.last!.end, nextIndex: batches.last!.endIndex)
    }
    return (out, queue.stats.lostEvents)
}

@Suite("Disk queue under crashes and full disks", .serialized)
struct DiskQueueFaultTests {
    /// SIGKILL a process with four concurrent writers at random moments; after each kill the queue
    /// is reopened (recovery) and written again. In the end every acknowledged batch is read back
    /// exactly once, whole, and in each writer's order; nothing is counted as lost.
    @Test func sigkillAtRandomPointsLosesNoAcknowledgedBatch() throws {
        let seed = TestSeed.make("queue writer SIGKILL timings")
        var rng = SplitMix(seed: seed)
        for round in 0..<4 {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dq-crash-\(getpid())-\(round)")
                .path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var acked = Set<String>()  // "run writer batch"
            for run in 0..<4 {
                let child = try Child([testkit, "queue-writer", dir, "4", "100000", "8", "32768", "\(run)"])
                usleep(UInt32.random(in: 30_000...300_000, using: &rng))
                child.kill9()
                for line in child.wait() where line.hasPrefix("acked ") {
                    let parts = line.split(separator: " ")
                    acked.insert("\(run) \(parts[1]) \(parts[2])")
                }
            }
            #expect(acked.count > 0, "the writer acknowledged something before being killed (seed \(seed))")
            let (records, lost) = try drainAll(dir)
            #expect(lost == 0, "seed \(seed)")
            var batches: [String: [Int]] = [:]
            var lastBatch: [String: Int] = [:]
            for r in records {
                let f = r.split(separator: " ")
                let key = "\(f[0]) \(f[1]) \(f[2])"
                batches[key, default: []].append(Int(f[3])!)
                let writer = "\(f[0]) \(f[1])"
                let b = Int(f[2])!
                #expect((lastBatch[writer] ?? -1) <= b, "writer \(writer)'s batches stay in order")
                lastBatch[writer] = b
            }
            for (key, recs) in batches { #expect(recs == Array(0..<8), "batch \(key) is whole, once: \(recs)") }
            let missing = acked.subtracting(batches.keys)
            #expect(missing.isEmpty, "acknowledged but missing: \(missing.sorted().prefix(5)) (seed \(seed))")
        }
    }

    /// A real small filesystem: the reserve answers "full" before the disk is, nothing accepted
    /// is lost; with no reserve the disk itself fills, the queue stops accepting, drains what it
    /// holds, and works again after reopening.
    @Test func aFullDiskIsRefusedNotLost() async throws {
        guard geteuid() == 0 else {
            Issue.record("mounting a small tmpfs needs root; run the tests as root (CI does)")
            return
        }
        let mount = FileManager.default.temporaryDirectory.appendingPathComponent("dq-small-\(getpid())").path
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let out = try await Processes.output(["/bin/mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount])
        #expect(out.status == 0, "\(out.text)")
        defer {
            _ = try? Processes.run(["/bin/umount", mount])
            try? FileManager.default.removeItem(atPath: mount)
        }
        func noise(_ n: Int) -> [[UInt8]] {
            (0..<8).map { _ in
                (0..<(n / 8)).flatMap { _ in withUnsafeBytes(of: UInt64.random(in: 0...UInt64.max)) { Array($0) } }
            }
        }

        var config = DiskQueueConfiguration(directory: mount + "/q")
        config.segmentBytes = 512 * 1024
        config.freeDiskReserve = 1 << 20
        let queue = try DiskQueue(config)
        var accepted = 0
        var refusal: DiskQueueError?
        while refusal == nil {
            do {
                _ = try await queue.append(noise(1000))
                accepted += 8
            } catch let e as DiskQueueError { refusal = e }
        }
        #expect(refusal?.code == .full)
        #expect(refusal?.message.contains("free on the disk") == true)
        #expect(queue.stats.writable)
        queue.close()
        let (records, lost) = try drainAll(config.directory)
        #expect(records.count == accepted)
        #expect(lost == 0)

    }

    /// A write that fails (here: past a file-size limit, EFBIG) stops appends with "write failed";
    /// what was acknowledged before is drained, and the reopened queue works again.
    @Test func aFailedWriteStopsAppendsAndLosesNothingAcknowledged() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dq-efbig-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let child = try Child([
            "/usr/bin/env", "BCPIPE_TESTKIT_FILE_SIZE_LIMIT=200000", testkit, "queue-writer", dir, "2", "100000", "20",
            "67108864",
        ])
        let lines = child.wait()
        let acked = lines.filter { $0.hasPrefix("acked") }.count
        let failures = lines.filter { $0.hasPrefix("failed") }
        #expect(acked > 0)
        #expect(failures.count == 2, "both writers are refused: \(failures)")
        #expect(failures.allSatisfy { $0.contains("writeFailed") }, "\(failures)")
        let (records, lost) = try drainAll(dir)
        #expect(records.count == acked * 20, "every acknowledged batch is there")
        #expect(lost == 0)
        let reopened = try DiskQueue(DiskQueueConfiguration(directory: dir))
        #expect(reopened.stats.writable)
        _ = try await reopened.append([Array("after".utf8)])
        reopened.close()
    }

    /// Draining a large backlog after a restart streams it: memory stays flat.
    @Test func aLargeBacklogDrainsInFlatMemory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dq-backlog-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let writer = try Child([testkit, "queue-writer", dir, "2", "1500", "100", "4194304"])
        let wrote = writer.wait().filter { $0.hasPrefix("acked") }.count
        #expect(wrote == 3000)
        let drain = try Child([testkit, "queue-drain", dir])
        let line = drain.wait().first { $0.hasPrefix("drained") } ?? ""
        // "drained N events, peak RSS K kB"
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        #expect(numbers.first == 300_000, "\(line)")
        #expect((numbers.last ?? .max) < 64 * 1024, "peak RSS \(numbers.last ?? -1) kB for a ~55 MB backlog")
    }
}
