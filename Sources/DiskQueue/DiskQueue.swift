import Foundation
import Logging
import ZstdCompression

#if canImport(Glibc)
    import Glibc
#endif

/// Settings of a ``DiskQueue``; every field has a default.
public struct DiskQueueConfiguration: Sendable {
    public var directory: String
    /// A segment is sealed and a new one started past this size.
    public var segmentBytes: Int = 64 << 20
    /// The most bytes the queue may hold (unacknowledged segments); appends beyond fail with `.full`.
    public var maxBytes: Int = 8 << 30
    /// Free space to leave on the filesystem; appends that would eat into it fail with `.full`.
    public var freeDiskReserve: Int = 256 << 20
    /// zstd level of frame payloads.
    public var compressionLevel: Int32 = 3

    public init(directory: String) { self.directory = directory }
}

/// What a durable append returns.
public struct AppendReceipt: Sendable, Equatable {
    /// Queue-wide index of the batch's first event.
    public var firstIndex: UInt64
    public var count: Int
    /// Where the frame ends (the position after it).
    public var end: QueuePosition
}

/// Counters for metrics and `/v1/status`.
public struct QueueStats: Sendable, Equatable {
    /// Events appended and not yet acknowledged.
    public var events: UInt64
    /// Bytes on disk from the ack cursor to the end.
    public var bytes: Int
    public var segments: Int
    /// The oldest event time (ms since the epoch) of the first unacknowledged frame, if any.
    public var oldestEventTimestamp: Int64?
    /// Events lost to on-disk damage, counted exactly, since the queue was created.
    public var lostEvents: UInt64
    /// False after a write or fsync failed: no appends until reopened.
    public var writable: Bool
    public var cursor: QueuePosition
    public var durableEnd: QueuePosition
    /// Appends and fsyncs since open (appends ÷ fsyncs is the group-commit factor).
    public var appends: UInt64
    public var fsyncs: UInt64
}

/// A persistent, segmented, zstd-compressed, checksummed queue of record batches.
///
/// - Appends are durable when they return: a writer thread group-commits every append waiting
///   at that moment with one `fdatasync`. Segment creation and deletion fsync the directory.
/// - One consumer reads frames in order with a ``QueueReader`` and acknowledges with
///   ``ack(_:)``; the ack cursor is never saved ahead of durable data, and segments wholly
///   behind it are deleted.
/// - Opening repairs instead of refusing: a torn tail is cut off (its bytes kept in
///   `quarantine/`), damage in the middle is skipped at the next valid frame and its events
///   counted as lost, exactly, from the index gap. Opening reads one header per segment plus
///   the last segment, so its cost follows the number of segments, not the bytes queued.
/// - Bounded by ``DiskQueueConfiguration/maxBytes`` and a free-disk reserve: a full queue
///   refuses appends (`.full`) and drops nothing. A failed write stops appends; draining goes on.
///
/// `@unchecked Sendable`: its mutable state is behind `condition` (and the cursor file's
/// writes behind `cursorLock`), as marked below.
public final class DiskQueue: @unchecked Sendable {
    public let configuration: DiskQueueConfiguration
    let logger: Logger
    let segmentsDirectory: String
    let quarantineDirectory: String

    /// Blocking reads, acknowledgements and the close, for async callers: a thread of its own,
    /// so the cooperative pool (two threads on these machines) never waits on the disk.
    let io: BlockingIO
    /// One writer of the cursor file at a time (acknowledgements, damage counted by the reader);
    /// taken before `condition` when both are.
    private let cursorLock = NSLock()

    // Everything below is guarded by `condition` (its lock).
    let condition = NSCondition()
    private var segments: [(id: UInt64, size: Int)] = []
    private var activeFD: Int32 = -1
    private var appendIndex: UInt64 = 0
    private(set) var durableEnd: QueuePosition
    private var cursorFile: CursorFile
    private var pending: [PendingAppend] = []
    private var reservedBytes = 0
    private var failure: String?
    private var closed = false
    private var closing = false
    private var writerDone = false
    private var dataWaiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    private var appendCount: UInt64 = 0
    private var fsyncCount: UInt64 = 0
    private let lockFD: Int32
    private let compressors = CompressorPool()
    /// The records of the last durable frame found when the queue was opened (acknowledged or
    /// not), so a collector can tell which seqs it accepted before a restart.
    public private(set) var lastRecords: [[UInt8]]?

    struct PendingAppend {
        var count: UInt32
        var rawLength: UInt32
        var stored: [UInt8]
        var crc: UInt32
        var codec: FrameFormat.Codec
        var oldest: Int64
        var continuation: CheckedContinuation<AppendReceipt, Error>
        var frameSize: Int { FrameFormat.frameHeaderSize + stored.count }
    }

    // MARK: open

    /// Opens (creating if needed) the queue in `configuration.directory`, recovering from any crash.
    ///
    /// #### Errors
    /// `.inUse` when another process holds it; `.io` when the directory cannot be used.
    public init(_ configuration: DiskQueueConfiguration, logger: Logger = Logger(label: "bcpipe.queue")) throws {
        self.configuration = configuration
        self.logger = logger
        io = BlockingIO(label: "bcpipe.queue.io")
        let dir = configuration.directory
        segmentsDirectory = dir + "/segments"
        quarantineDirectory = dir + "/quarantine"
        for d in [dir, segmentsDirectory, quarantineDirectory] {
            do {
                try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            } catch {
                throw DiskQueueError(code: .io, message: "cannot create \(d): \(error.localizedDescription)")
            }
        }
        lockFD = try FileIO.open(dir + "/lock", O_RDWR | O_CREAT)
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(lockFD)
            throw DiskQueueError(
                code: .inUse, message: "\(dir) is in use by another process (a collector or a queue tool)")
        }
        do {
            cursorFile = try CursorFile(directory: dir)
            durableEnd = QueuePosition(segment: 1, offset: FrameFormat.segmentHeaderSize)
            try recover()
        } catch {
            Glibc.close(lockFD)
            throw error
        }
        // The writer holds the queue until close() ends it.
        let writer = Thread { self.writerLoop() }
        writer.name = "bcpipe.queue.writer"
        writer.start()
    }

    static func segmentName(_ id: UInt64) -> String {
        let digits = String(id)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".seg"
    }

    func segmentPath(_ id: UInt64) -> String { segmentsDirectory + "/" + Self.segmentName(id) }

    static func listSegments(_ directory: String) -> [UInt64] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".seg") }.compactMap { UInt64($0.dropLast(4)) }.sorted()
    }

    private func recover() throws {
        var ids = Self.listSegments(segmentsDirectory)
        var cursor = cursorFile.current
        // Segments wholly behind the cursor were acknowledged; a crash left them before deletion.
        if let c = cursor {
            for id in ids where id < c.position.segment { unlink(segmentPath(id)) }
            ids.removeAll { $0 < c.position.segment }
            try FileIO.fsyncDirectory(segmentsDirectory)
        }
        if ids.isEmpty {
            let id = max(cursor?.position.segment ?? 1, 1)
            let first = cursor?.nextIndex ?? 0
            try createSegment(id, firstIndex: first)
            ids = [id]
        }
        if cursor == nil || cursor!.position.segment < ids[0] {
            // No cursor yet, or its segment is gone: start at the first segment.
            let first = try readSegmentHeader(ids[0])?.firstIndex ?? cursor?.nextIndex ?? 0
            cursor = AckCursor(
                position: .init(segment: ids[0], offset: FrameFormat.segmentHeaderSize), nextIndex: first,
                lostEvents: cursor?.lostEvents ?? 0, lastLoss: cursor?.lastLoss ?? .init(segment: 0, offset: 0))
            try cursorFile.write(cursor!)
        }
        segments = try ids.map { id in
            let fd = try FileIO.open(segmentPath(id), O_RDONLY)
            defer { Glibc.close(fd) }
            return (id, try FileIO.size(fd, path: segmentPath(id)))
        }

        // Scan the last segment: find the durable end, cut a torn tail, count mid-segment damage.
        let last = ids.last!
        let path = segmentPath(last)
        let fd = try FileIO.open(path, O_RDWR)
        activeFD = fd
        let size = try FileIO.size(fd, path: path)
        let header = try readSegmentHeader(last)
        var index = header?.firstIndex ?? cursor!.nextIndex
        var start = FrameFormat.segmentHeaderSize
        if cursor!.position.segment == last {
            start = max(start, cursor!.position.offset)
            index = cursor!.nextIndex
        }
        if size < FrameFormat.segmentHeaderSize {
            // The segment's header never reached the disk, so nothing in it was acknowledged: rewrite it.
            guard ftruncate(fd, 0) == 0 else { throw FileIO.error("truncate", path) }
            try SegmentHeader(segment: last, firstIndex: index).encode().withUnsafeBytes {
                try FileIO.pwriteAll(fd, $0, at: 0, path: path)
            }
            try FileIO.fdatasync(fd, path: path)
        }
        var scanner = SegmentScanner(FileSegment(fd: fd, path: path), from: start, to: max(size, start))
        var end = start
        var lastFrameOffset: Int?
        while let item = try scanner.next() {
            switch item {
            case .frame(let offset, let h):
                lastFrameOffset = offset
                if h.firstIndex > index {
                    try recordLoss(
                        at: .init(segment: last, offset: offset), length: 0, events: h.firstIndex - index, fd: fd,
                        path: path)
                }
                index = h.endIndex
                end = offset + h.frameSize
            case .corrupt(let offset, let length, _, let next):
                let lost = next.firstIndex > index ? next.firstIndex - index : 0
                try recordLoss(
                    at: .init(segment: last, offset: offset), length: length, events: lost, fd: fd, path: path)
                index = next.firstIndex
            case .tail(let offset, let length, let damaged, let complete):
                let lost = complete ? UInt64(damaged?.count ?? 0) : 0
                try recordLoss(
                    at: .init(segment: last, offset: offset), length: length, events: lost, fd: fd, path: path)
                if complete, let damaged { index = damaged.endIndex }
                guard ftruncate(fd, off_t(offset)) == 0 else { throw FileIO.error("truncate", path) }
                try FileIO.fdatasync(fd, path: path)
                logger.warning(
                    "cut the queue's torn or damaged tail",
                    metadata: ["segment": "\(last)", "offset": "\(offset)", "bytes": "\(length)", "lost": "\(lost)"])
                end = offset
            }
        }
        segments[segments.count - 1].size = max(end, FrameFormat.segmentHeaderSize)
        if let offset = lastFrameOffset {
            lastRecords = try? QueueInspector.records(fd: fd, path: path, at: offset)
        }
        appendIndex = index
        durableEnd = QueuePosition(segment: last, offset: max(end, FrameFormat.segmentHeaderSize))
        if cursor!.position > durableEnd {
            logger.error(
                "the ack cursor was ahead of the durable data; moved back", metadata: ["cursor": "\(cursor!.position)"])
            var c = cursorFile.current!
            c.position = durableEnd
            c.nextIndex = appendIndex
            try cursorFile.write(c)
        }
    }

    func readSegmentHeader(_ id: UInt64) throws -> SegmentHeader? {
        let path = segmentPath(id)
        let fd = try FileIO.open(path, O_RDONLY)
        defer { Glibc.close(fd) }
        let bytes = try FileIO.pread(fd, count: FrameFormat.segmentHeaderSize, at: 0, path: path)
        return bytes.withUnsafeBytes { SegmentHeader.decode($0) }
    }

    private func createSegment(_ id: UInt64, firstIndex: UInt64) throws {
        let path = segmentPath(id)
        let fd = try FileIO.open(path, O_WRONLY | O_CREAT | O_TRUNC)
        defer { Glibc.close(fd) }
        try SegmentHeader(segment: id, firstIndex: firstIndex).encode().withUnsafeBytes {
            try FileIO.pwriteAll(fd, $0, at: 0, path: path)
        }
        try FileIO.fdatasync(fd, path: path)
        try FileIO.fsyncDirectory(segmentsDirectory)
    }

    /// Counts damaged bytes once: moves a copy to `quarantine/` and adds their events to the loss
    /// counter, unless this region (or a later one) was already counted.
    func recordLoss(at position: QueuePosition, length: Int, events: UInt64, fd: Int32, path: String) throws {
        guard var c = cursorFile.current, position > c.lastLoss else { return }
        c.lostEvents += events
        c.lastLoss = position
        try cursorFile.write(c)
        if length > 0 {
            let copy = try FileIO.pread(fd, count: min(length, 64 << 20), at: position.offset, path: path)
            try? FileIO.writeDurably(
                copy, to: quarantineDirectory + "/\(Self.segmentName(position.segment))-\(position.offset).bad")
        }
        if events > 0 {
            logger.error(
                "queue damage: events lost",
                metadata: ["position": "\(position)", "bytes": "\(length)", "events": "\(events)"])
        }
    }

    /// Called by the reader when it meets damage in a sealed segment.
    func readerFoundDamage(at position: QueuePosition, length: Int, events: UInt64) throws {
        cursorLock.lock()
        defer { cursorLock.unlock() }
        condition.lock()
        defer { condition.unlock() }
        let path = segmentPath(position.segment)
        let fd = try FileIO.open(path, O_RDONLY)
        defer { Glibc.close(fd) }
        try recordLoss(at: position, length: length, events: events, fd: fd, path: path)
    }

    // MARK: append

    /// Appends a batch of records and returns once it is durable on disk.
    ///
    /// `oldestTimestamp` (ms since the epoch) feeds the oldest-event statistic.
    ///
    /// #### Errors
    /// `.full` (nothing written; retry later), `.writeFailed` (the queue stopped accepting
    /// appends), `.closed`.
    public func append(_ records: [[UInt8]], oldestTimestamp: Int64 = 0) async throws -> AppendReceipt {
        precondition(!records.isEmpty, "append needs at least one record")
        let raw = RecordBatch.encode(records)
        let stored = try compressors.compress(raw, level: configuration.compressionLevel)
        let crc = CRC32C.checksum(stored)
        return try await withCheckedThrowingContinuation { continuation in
            let request = PendingAppend(
                count: UInt32(records.count), rawLength: UInt32(raw.count), stored: stored, crc: crc, codec: .zstd,
                oldest: oldestTimestamp, continuation: continuation)
            condition.lock()
            if let refusal = admit(request.frameSize) {
                condition.unlock()
                continuation.resume(throwing: refusal)
                return
            }
            reservedBytes += request.frameSize
            pending.append(request)
            condition.signal()
            condition.unlock()
        }
    }

    /// Why an append of a `size`-byte frame would be refused now (full, failed, closed), or nil
    /// when it would be taken: what a collector's `/readyz` answers.
    public func refusal(forFrameOf size: Int) -> DiskQueueError? {
        condition.lock()
        defer { condition.unlock() }
        return admit(size)
    }

    /// Why an append of `size` bytes must be refused now, if it must. Called with the lock held.
    private func admit(_ size: Int) -> DiskQueueError? {
        if closed || closing { return DiskQueueError(code: .closed, message: "the queue is closed") }
        if let failure {
            return DiskQueueError(
                code: .writeFailed,
                message: "a write failed earlier (\(failure)); appends stop until the queue is reopened")
        }
        let queued = queuedBytesLocked() + reservedBytes
        if queued + size > configuration.maxBytes {
            return DiskQueueError(
                code: .full, message: "full: \(queued) bytes queued, the limit is \(configuration.maxBytes)")
        }
        if let free = FileIO.freeBytes(configuration.directory),
            free - reservedBytes - size < configuration.freeDiskReserve
        {
            return DiskQueueError(
                code: .full,
                message: "full: \(free) bytes free on the disk, the reserve is \(configuration.freeDiskReserve)")
        }
        return nil
    }

    private func writerLoop() {
        while true {
            condition.lock()
            while pending.isEmpty && !closing { condition.wait() }
            if pending.isEmpty && closing {
                writerDone = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let batch = pending
            pending = []
            var index = appendIndex
            var position = durableEnd
            let failed = failure
            condition.unlock()

            if let failed {
                let error = DiskQueueError(code: .writeFailed, message: "a write failed earlier (\(failed))")
                finish(batch, result: .failure(error), durable: nil)
                continue
            }
            var receipts: [AppendReceipt] = []
            var buffer: [UInt8] = []
            var bufferStart = position.offset
            do {
                for request in batch {
                    if position.offset + request.frameSize > configuration.segmentBytes
                        && position.offset > FrameFormat.segmentHeaderSize
                    {
                        try writeAndSync(buffer, at: bufferStart)
                        buffer.removeAll(keepingCapacity: true)
                        position = try rotate(after: position.segment, firstIndex: index)
                        bufferStart = position.offset
                    }
                    let header = FrameHeader(
                        codec: request.codec, firstIndex: index, count: request.count, rawLength: request.rawLength,
                        storedLength: UInt32(request.stored.count), oldestTimestamp: request.oldest,
                        payloadCRC: request.crc)
                    header.encode(into: &buffer)
                    buffer += request.stored
                    index += UInt64(request.count)
                    position.offset += request.frameSize
                    receipts.append(
                        AppendReceipt(firstIndex: header.firstIndex, count: Int(request.count), end: position))
                }
                try writeAndSync(buffer, at: bufferStart)
                finish(batch, result: .success(receipts), durable: (position, index))
            } catch {
                let message = (error as? DiskQueueError)?.message ?? "\(error)"
                logger.error(
                    "disk queue write failed; appends stop, draining goes on", metadata: ["error": "\(message)"])
                condition.lock()
                failure = message
                // Take back whatever part of the refused frames reached the file, so an append
                // answered "write failed" does not come back as data after a restart.
                _ = ftruncate(activeFD, off_t(bufferStart))
                condition.unlock()
                finish(batch, result: .failure(DiskQueueError(code: .writeFailed, message: message)), durable: nil)
            }
        }
    }

    private func writeAndSync(_ bytes: [UInt8], at offset: Int) throws {
        guard !bytes.isEmpty else { return }
        let path = segmentPath(durableEnd.segment)
        try bytes.withUnsafeBytes { try FileIO.pwriteAll(activeFD, $0, at: offset, path: path) }
        try FileIO.fdatasync(activeFD, path: path)
        condition.lock()
        fsyncCount += 1
        // Bytes before `offset + count` are durable: publish them so readers may go on.
        durableEnd.offset = offset + bytes.count
        segments[segments.count - 1].size = durableEnd.offset
        condition.unlock()
    }

    private func rotate(after id: UInt64, firstIndex: UInt64) throws -> QueuePosition {
        let next = id + 1
        try createSegment(next, firstIndex: firstIndex)
        let fd = try FileIO.open(segmentPath(next), O_RDWR)
        condition.lock()
        Glibc.close(activeFD)
        activeFD = fd
        segments.append((next, FrameFormat.segmentHeaderSize))
        durableEnd = QueuePosition(segment: next, offset: FrameFormat.segmentHeaderSize)
        condition.unlock()
        return durableEnd
    }

    private func finish(
        _ batch: [PendingAppend], result: Result<[AppendReceipt], DiskQueueError>, durable: (QueuePosition, UInt64)?
    ) {
        condition.lock()
        reservedBytes -= batch.reduce(0) { $0 + $1.frameSize }
        if let (end, index) = durable {
            durableEnd = end
            appendIndex = index
            appendCount += UInt64(batch.count)
        }
        let waiters = durable != nil ? dataWaiters : [:]
        if durable != nil { dataWaiters.removeAll() }
        condition.unlock()
        for w in waiters.values { w.resume() }
        switch result {
        case .success(let receipts):
            for (request, receipt) in zip(batch, receipts) { request.continuation.resume(returning: receipt) }
        case .failure(let error):
            for request in batch { request.continuation.resume(throwing: error) }
        }
    }

    // MARK: consume

    /// A reader positioned at the ack cursor. Use one reader at a time.
    public func makeReader() -> QueueReader {
        condition.lock()
        defer { condition.unlock() }
        let c = cursorFile.current!
        return QueueReader(queue: self, position: c.position, nextIndex: c.nextIndex)
    }

    /// The durable end and the segments after `segment`, for the reader.
    func readLimits() -> (end: QueuePosition, appendIndex: UInt64) {
        condition.lock()
        defer { condition.unlock() }
        return (durableEnd, appendIndex)
    }

    func nextSegment(after id: UInt64) -> UInt64? {
        condition.lock()
        defer { condition.unlock() }
        return segments.first { $0.id > id }?.id
    }

    /// Acknowledges everything before `position` (a batch's `end`), with `nextIndex` the index after
    /// its last event. Persists the cursor, then deletes segments wholly behind it.
    ///
    /// #### Errors
    /// `.io` if the cursor cannot be written (nothing is deleted then). A position beyond the
    /// durable end is refused: the cursor is never saved ahead of durable data.
    ///
    /// The cursor's write and `fdatasync` and the segments' removal happen outside the queue's
    /// lock: appends (on the HTTP handlers' threads) never wait for an acknowledgement's I/O.
    /// Blocking; from async code use ``acknowledge(through:nextIndex:)``.
    public func ack(through position: QueuePosition, nextIndex: UInt64) throws {
        cursorLock.lock()
        defer { cursorLock.unlock() }
        condition.lock()
        guard position <= durableEnd else {
            condition.unlock()
            throw DiskQueueError(
                code: .io, message: "cannot acknowledge \(position): durable data ends at \(durableEnd)")
        }
        guard var c = cursorFile.current, position >= c.position else {
            condition.unlock()
            return
        }
        var target = position
        // At the end of a sealed segment, the cursor moves to the start of the next one.
        if let i = segments.firstIndex(where: { $0.id == position.segment }), i < segments.count - 1,
            position.offset >= segments[i].size
        {
            target = QueuePosition(segment: segments[i + 1].id, offset: FrameFormat.segmentHeaderSize)
        }
        condition.unlock()
        c.position = target
        c.nextIndex = max(c.nextIndex, nextIndex)
        let written = try cursorFile.persist(c)
        condition.lock()
        cursorFile.published(written)
        let behind = segments.filter { $0.id < target.segment }
        segments.removeAll { $0.id < target.segment }
        condition.unlock()
        // Wholly behind the durable cursor: no one reads them again (the writer appends to the last).
        guard !behind.isEmpty else { return }
        for s in behind { unlink(segmentPath(s.id)) }
        try FileIO.fsyncDirectory(segmentsDirectory)
    }

    /// ``ack(through:nextIndex:)`` on the queue's I/O thread, off the cooperative pool.
    public func acknowledge(through position: QueuePosition, nextIndex: UInt64) async throws {
        try await io.run { try self.ack(through: position, nextIndex: nextIndex) }
    }

    /// Waits until data beyond `position` is durable, or `timeout` seconds pass. Returns whether there is.
    public func waitForData(after position: QueuePosition, timeout: Double) async -> Bool {
        let id = UUID()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if durableEnd > position || closed {
                condition.unlock()
                continuation.resume()
                return
            }
            dataWaiters[id] = continuation
            condition.unlock()
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [weak self] in
                guard let self else { return }
                self.condition.lock()
                let waiter = self.dataWaiters.removeValue(forKey: id)
                self.condition.unlock()
                waiter?.resume()
            }
        }
        return readLimits().end > position
    }

    // MARK: stats and life cycle

    private func queuedBytesLocked() -> Int {
        guard let c = cursorFile.current else { return 0 }
        return segments.filter { $0.id >= c.position.segment }.reduce(0) { $0 + $1.size }
            - (segments.contains { $0.id == c.position.segment } ? c.position.offset : 0)
    }

    /// Current counters.
    public var stats: QueueStats {
        condition.lock()
        let c = cursorFile.current!
        var s = QueueStats(
            events: appendIndex > c.nextIndex ? appendIndex - c.nextIndex : 0, bytes: queuedBytesLocked(),
            segments: segments.count, oldestEventTimestamp: nil, lostEvents: c.lostEvents, writable: failure == nil,
            cursor: c.position, durableEnd: durableEnd, appends: appendCount, fsyncs: fsyncCount)
        let position = c.position
        let hasData = position < durableEnd
        condition.unlock()
        if hasData, let header = try? frameHeader(at: position) {
            s.oldestEventTimestamp = header.oldestTimestamp
        }
        return s
    }

    func frameHeader(at position: QueuePosition) throws -> FrameHeader? {
        let path = segmentPath(position.segment)
        let fd = try FileIO.open(path, O_RDONLY)
        defer { Glibc.close(fd) }
        let bytes = try FileIO.pread(fd, count: FrameFormat.frameHeaderSize, at: position.offset, path: path)
        return try? bytes.withUnsafeBytes { FrameHeader.decode($0) }.get()
    }

    /// ``close()`` on the queue's I/O thread, off the cooperative pool.
    public func shutdown() async {
        await io.run { self.close() }
    }

    /// Stops accepting appends, lets the writer finish (durably) what it holds, and releases the
    /// directory. Blocking (it waits for the writer's last `fdatasync`); from async code use
    /// ``shutdown()``.
    public func close() {
        condition.lock()
        if closed {
            condition.unlock()
            return
        }
        closing = true
        condition.broadcast()
        while !writerDone { condition.wait() }
        closed = true
        let waiters = dataWaiters
        dataWaiters.removeAll()
        if activeFD >= 0 { Glibc.close(activeFD) }
        activeFD = -1
        condition.unlock()
        for w in waiters.values { w.resume() }
        flock(lockFD, LOCK_UN)
        Glibc.close(lockFD)
    }

    deinit {
        if !closed {
            if activeFD >= 0 { Glibc.close(activeFD) }
            Glibc.close(lockFD)
        }
    }
}

/// zstd contexts reused across appends (creating one per batch costs more than compressing a small batch).
/// `@unchecked Sendable`: the free list is behind `lock`; a context is used by one caller at a time.
final class CompressorPool: @unchecked Sendable {
    private let lock = NSLock()
    private var free: [Box] = []

    final class Box {
        var compressor: ZstdCompressor
        init(_ c: consuming ZstdCompressor) { compressor = c }
    }

    func compress(_ raw: [UInt8], level: Int32) throws -> [UInt8] {
        lock.lock()
        let box = free.popLast()
        lock.unlock()
        let b = try box ?? Box(ZstdCompressor(level: level))
        defer {
            lock.lock()
            free.append(b)
            lock.unlock()
        }
        return try b.compressor.compress(raw)
    }
}
