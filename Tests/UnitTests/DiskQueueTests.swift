import Foundation
import Testing

@testable import DiskQueue

#if canImport(Glibc)
    import Glibc
#endif

/// A fresh directory per test, removed afterwards.
final class TempDir {
    let path: String
    init(_ name: String) {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent("dq-\(name)-\(UUID().uuidString.prefix(8))")
            .path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func records(_ batch: Int, count: Int = 5) -> [[UInt8]] {
    (0..<count).map { Array("batch \(batch) record \($0) \(String(repeating: "payload", count: 10))".utf8) }
}

/// Reads everything left, acknowledging as it goes.
func drain(_ queue: DiskQueue) throws -> [[UInt8]] {
    let reader = queue.makeReader()
    var out: [[UInt8]] = []
    while true {
        let batches = try reader.next()
        if batches.isEmpty { break }
        for b in batches { out += b.records }
        try queue.ack(through: batches.last!.end, nextIndex: batches.last!.endIndex)
    }
    return out
}

func segmentFiles(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/segments")) ?? []).filter { $0.hasSuffix(".seg") }
        .sorted()
}

/// Flips one bit of a file at `offset`.
func flipBit(_ path: String, at offset: Int, bit: UInt8 = 0x10) throws {
    let handle = try FileHandle(forUpdatingAtPath: path).unwrap()
    try handle.seek(toOffset: UInt64(offset))
    var byte = try handle.read(upToCount: 1)!
    byte[0] ^= bit
    try handle.seek(toOffset: UInt64(offset))
    try handle.write(contentsOf: byte)
    try handle.close()
}

extension Optional {
    func unwrap() throws -> Wrapped {
        guard let self else { throw DiskQueueError(code: .io, message: "missing") }
        return self
    }
}

@Suite("Frame codec")
struct FrameCodecTests {
    @Test func crc32cKnownVector() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        let long = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let split = long.withUnsafeBytes { b in
            CRC32C.checksum(
                UnsafeRawBufferPointer(rebasing: b[5000...]),
                continuing: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[..<5000])))
        }
        #expect(split == CRC32C.checksum(long), "the checksum can be continued across buffers")
    }

    @Test func headersRoundTripAndEveryBitFlipIsCaught() {
        let h = FrameHeader(
            codec: .zstd, firstIndex: 123_456, count: 7, rawLength: 900, storedLength: 300, oldestTimestamp: -5,
            payloadCRC: 0xDEAD_BEEF)
        var bytes: [UInt8] = []
        h.encode(into: &bytes)
        #expect(bytes.count == FrameFormat.frameHeaderSize)
        #expect(bytes.withUnsafeBytes { FrameHeader.decode($0) } == .success(h))
        for bit in 0..<(bytes.count * 8) {
            var flipped = bytes
            flipped[bit / 8] ^= 1 << UInt8(bit % 8)
            if case .success = flipped.withUnsafeBytes({ FrameHeader.decode($0) }) {
                Issue.record("a flip of bit \(bit) went unnoticed")
            }
        }
    }

    @Test func recordBatchesRoundTrip() {
        let rs: [[UInt8]] = [[], [1], Array(repeating: 7, count: 70_000)]
        let raw = RecordBatch.encode(rs)
        #expect(raw.withUnsafeBytes { RecordBatch.decode($0, count: 3) } == rs)
        #expect(raw.withUnsafeBytes { RecordBatch.decode($0, count: 2) } == nil)
        #expect(Array(raw.dropLast()).withUnsafeBytes { RecordBatch.decode($0, count: 3) } == nil)
    }

    func segment(frames: Int) -> (bytes: [UInt8], offsets: [Int]) {
        var bytes = SegmentHeader(segment: 1, firstIndex: 0).encode()
        var offsets: [Int] = []
        for i in 0..<frames {
            let payload = RecordBatch.encode(records(i, count: 3))
            offsets.append(bytes.count)
            FrameHeader(
                codec: .none, firstIndex: UInt64(i * 3), count: 3, rawLength: UInt32(payload.count),
                storedLength: UInt32(payload.count), oldestTimestamp: 0, payloadCRC: CRC32C.checksum(payload)
            ).encode(into: &bytes)
            bytes += payload
        }
        return (bytes, offsets)
    }

    func scan(_ bytes: [UInt8]) throws -> [ScanItem] {
        var s = SegmentScanner(MemorySegment(bytes), from: FrameFormat.segmentHeaderSize, to: bytes.count)
        var out: [ScanItem] = []
        while let item = try s.next() { out.append(item) }
        return out
    }

    @Test func scannerSkipsDamageToTheNextValidFrame() throws {
        let (clean, offsets) = segment(frames: 5)
        #expect(try scan(clean).count == 5)
        for target in [offsets[2] + 2, offsets[2] + 30, offsets[2] + FrameFormat.frameHeaderSize + 10] {  // magic, header field, payload
            var bytes = clean
            bytes[target] ^= 0x40
            let items = try scan(bytes)
            #expect(items.count == 5, "frames 0, 1, the damage, frames 3 and 4: \(items)")
            guard case .corrupt(let offset, let length, _, let next) = items[2] else {
                Issue.record("expected damage at frame 2, got \(items[2])")
                continue
            }
            #expect(offset == offsets[2])
            #expect(length == offsets[3] - offsets[2])
            #expect(next.firstIndex == 9)
        }
    }

    @Test func scannerReportsATornTail() throws {
        let (clean, offsets) = segment(frames: 3)
        let torn = Array(clean.prefix(offsets[2] + 20))
        let items = try scan(torn)
        #expect(items.count == 3)
        #expect(items[2] == .tail(offset: offsets[2], length: 20, damaged: nil, complete: false))
        let garbage = clean + [UInt8](repeating: 0, count: 100)
        #expect(try scan(garbage).last == .tail(offset: clean.count, length: 100, damaged: nil, complete: false))
    }

    @Test func scannerNeverLoopsOnGarbage() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let junk =
                SegmentHeader(segment: 1, firstIndex: 0).encode()
                + (0..<5000).map { _ in UInt8.random(in: 0...255, using: &rng) }
                + Array("BCQFBCQF".utf8)
            let items = try scan(junk)
            #expect(items.count == 1)
        }
    }
}

@Suite("Disk queue")
struct DiskQueueTests {
    @Test func appendReadAckAndReopen() async throws {
        let dir = TempDir("basic")
        var queue: DiskQueue? = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        for i in 0..<10 { _ = try await queue!.append(records(i), oldestTimestamp: 1000 + Int64(i)) }
        var stats = queue!.stats
        #expect(stats.events == 50)
        #expect(stats.oldestEventTimestamp == 1000)
        let reader = queue!.makeReader()
        let first = try reader.next(maxFrames: 4)
        #expect(first.count == 4)
        #expect(first[0].records == records(0))
        try queue!.ack(through: first.last!.end, nextIndex: first.last!.endIndex)
        stats = queue!.stats
        #expect(stats.events == 30)
        #expect(stats.oldestEventTimestamp == 1004)
        queue!.close()
        queue = nil

        let reopened = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        let rest = try drain(reopened)
        #expect(rest == (4..<10).flatMap { records($0) }, "reading resumes at the ack cursor")
        #expect(reopened.stats.events == 0)
        let receipt = try await reopened.append(records(10))
        #expect(receipt.firstIndex == 50, "indexes go on after a restart")
        reopened.close()
    }

    @Test func segmentsRotateAndAcknowledgedOnesAreDeleted() async throws {
        let dir = TempDir("rotate")
        var config = DiskQueueConfiguration(directory: dir.path)
        config.segmentBytes = 1024
        let queue = try DiskQueue(config)
        for i in 0..<60 { _ = try await queue.append(records(i, count: 10)) }
        #expect(segmentFiles(dir.path).count > 3)
        let all = try drain(queue)
        #expect(all == (0..<60).flatMap { records($0, count: 10) })
        #expect(segmentFiles(dir.path).count == 1, "only the active segment is left")
        #expect(queue.stats.bytes == 0)
        queue.close()
    }

    @Test func concurrentAppendsShareFsyncs() async throws {
        let dir = TempDir("group")
        let queue = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<16 {
                group.addTask { for i in 0..<25 { _ = try await queue.append(records(w * 1000 + i, count: 2)) } }
            }
            try await group.waitForAll()
        }
        let s = queue.stats
        #expect(s.appends == 400)
        #expect(s.fsyncs < s.appends, "group commit: \(s.appends) appends in \(s.fsyncs) fsyncs")
        let got = try drain(queue)
        #expect(got.count == 800)
        #expect(Set(got).count == 800)
        queue.close()
    }

    @Test func aTornTailIsCutAndNothingAcknowledgedIsLost() async throws {
        let dir = TempDir("torn")
        var queue: DiskQueue? = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        for i in 0..<5 { _ = try await queue!.append(records(i)) }
        queue!.close()
        queue = nil
        let seg = dir.path + "/segments/" + segmentFiles(dir.path).last!
        // A crash mid-write: half a frame header and some zeros after the last complete frame.
        let handle = try FileHandle(forWritingAtPath: seg).unwrap()
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(Array("BCQF".utf8) + [1, 1, 0, 0, 9, 9] + [UInt8](repeating: 0, count: 300)))
        try handle.close()

        let reopened = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        #expect(reopened.stats.lostEvents == 0, "a torn write was never acknowledged")
        _ = try await reopened.append(records(5))
        #expect(try drain(reopened) == (0..<6).flatMap { records($0) })
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: dir.path + "/quarantine").count == 1,
            "the cut bytes are kept aside")
        reopened.close()
    }

    /// Damage in the middle of the active segment (found on open) or of a sealed one (found while
    /// reading): only the damaged frame's events are lost, and they are counted exactly, once.
    @Test(arguments: ["header", "payload"], [false, true])
    func aFlippedBitLosesOnlyThatFrame(where place: String, sealed: Bool) async throws {
        let dir = TempDir("flip")
        var config = DiskQueueConfiguration(directory: dir.path)
        config.segmentBytes = sealed ? 2048 : 64 << 20
        var queue: DiskQueue? = try DiskQueue(config)
        for i in 0..<20 { _ = try await queue!.append(records(i, count: 4)) }
        queue!.close()
        queue = nil
        let segs = segmentFiles(dir.path)
        let seg = dir.path + "/segments/" + segs[0]
        // The second frame of the first segment.
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: seg)))
        var s = SegmentScanner(MemorySegment(data), from: FrameFormat.segmentHeaderSize, to: data.count)
        _ = try s.next()
        guard case .frame(let offset, let header) = try s.next() else { Issue.record("no second frame"); return }
        let recordsInFrame = Int(header.count)
        try flipBit(seg, at: place == "header" ? offset + 17 : offset + FrameFormat.frameHeaderSize + 3)

        let reopened = try DiskQueue(config)
        let got = try drain(reopened)
        let expected = (0..<20).flatMap { records($0, count: 4) }
        let lostBatch = Int(header.firstIndex) / 4
        #expect(got == expected.enumerated().filter { $0.offset / 4 != lostBatch }.map(\.element))
        #expect(reopened.stats.lostEvents == UInt64(recordsInFrame))
        reopened.close()
        // Counted once: reopening and reading again does not count it again.
        let again = try DiskQueue(config)
        _ = try drain(again)
        #expect(again.stats.lostEvents == UInt64(recordsInFrame))
        again.close()
    }

    @Test func aFullQueueRefusesAndRecovers() async throws {
        let dir = TempDir("full")
        var config = DiskQueueConfiguration(directory: dir.path)
        config.maxBytes = 8 * 1024
        config.freeDiskReserve = 0
        let queue = try DiskQueue(config)
        var accepted = 0
        var refused: DiskQueueError?
        for i in 0..<1000 {
            do {
                _ = try await queue.append([Array((0..<500).map { UInt8(truncatingIfNeeded: $0 * (i + 1) * 7919) })])
                accepted += 1
            } catch let e as DiskQueueError {
                refused = e
                break
            }
        }
        #expect(refused?.code == .full)
        #expect(refused?.message.contains("the limit is 8192") == true)
        #expect(accepted > 3)
        #expect(try drain(queue).count == accepted, "everything accepted before the refusal is there")
        _ = try await queue.append(records(1))
        #expect(queue.stats.events == 5, "room again once acknowledged")
        queue.close()
    }

    @Test func anotherProcessCannotOpenAQueueInUse() throws {
        let dir = TempDir("lock")
        let queue = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        #expect(throws: DiskQueueError.self) { _ = try DiskQueue(DiskQueueConfiguration(directory: dir.path)) }
        queue.close()
        let again = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        again.close()
    }

    @Test func inspectorVerifiesAndSalvages() async throws {
        let dir = TempDir("salvage")
        var config = DiskQueueConfiguration(directory: dir.path)
        config.segmentBytes = 1024
        var queue: DiskQueue? = try DiskQueue(config)
        for i in 0..<30 { _ = try await queue!.append(records(i, count: 3)) }
        queue!.close()
        queue = nil
        var damage: [QueueInspector.Finding] = []
        try QueueInspector(directory: dir.path).walk(fromCursor: false) { f, r in
            if case .damage = f { damage.append(f) } else { _ = try r() }
        }
        #expect(damage.isEmpty)
        #expect(segmentFiles(dir.path).count > 2)
        let seg = dir.path + "/segments/" + segmentFiles(dir.path)[1]
        try flipBit(seg, at: FrameFormat.segmentHeaderSize + FrameFormat.frameHeaderSize + 1)
        try QueueInspector(directory: dir.path).walk(fromCursor: false) { f, _ in
            if case .damage = f { damage.append(f) }
        }
        #expect(damage.count == 1)
        guard case .damage(let position, _, let lost, _) = damage.first else { return }
        #expect(position.segment == 2)
        #expect(lost == 3)

        let result = try QueueInspector(directory: dir.path).salvage()
        #expect(result.dropped == 1)
        #expect(result.lost == 3)
        #expect(FileManager.default.fileExists(atPath: result.backup))
        defer { try? FileManager.default.removeItem(atPath: result.backup) }
        let salvaged = try DiskQueue(config)
        // Catches a count that includes the lost events: `events` is what will ship.
        #expect(salvaged.stats.events == 87)
        #expect(salvaged.stats.lostEvents == 3, "counted by the salvage, before anything is read")
        let got = try drain(salvaged)
        #expect(got.count == 87)
        #expect(salvaged.stats.lostEvents == 3)
        salvaged.close()
    }
}
