import Foundation
import Synchronization
import ZstdCompression

#if canImport(Glibc)
    import Glibc
#endif

/// One frame read back: its records and where it lies.
public struct QueueBatch: Sendable {
    public var firstIndex: UInt64
    public var records: [[UInt8]]
    public var oldestTimestamp: Int64
    public var start: QueuePosition
    /// Pass to ``DiskQueue/ack(through:nextIndex:)`` once the batch is safely elsewhere.
    public var end: QueuePosition
    /// The index after the batch's last event.
    public var endIndex: UInt64 { firstIndex + UInt64(records.count) }
}

/// Reads frames in order from the ack cursor, up to the durable end, one frame in memory at a time.
///
/// Damage found while reading (a sealed segment's bit flip) is skipped at the next valid frame;
/// the events in between are counted as lost, once, and the bytes kept in `quarantine/`.
///
/// Its position and open file are behind a `Mutex`, held for a whole ``next(maxFrames:maxBytes:)``:
/// a reader has one consumer, and ``read(maxFrames:maxBytes:)`` runs that call on the queue's
/// I/O thread.
public final class QueueReader: Sendable {
    struct Cursor {
        var position: QueuePosition
        var nextIndex: UInt64
        var fd: Int32 = -1
        var fdSegment: UInt64 = 0
    }

    let queue: DiskQueue
    private let cursor: Mutex<Cursor>

    public var position: QueuePosition { cursor.withLock { $0.position } }
    public var nextIndex: UInt64 { cursor.withLock { $0.nextIndex } }

    init(queue: DiskQueue, position: QueuePosition, nextIndex: UInt64) {
        self.queue = queue
        cursor = Mutex(Cursor(position: position, nextIndex: nextIndex))
    }

    deinit { cursor.withLock { if $0.fd >= 0 { close($0.fd) } } }

    /// ``next(maxFrames:maxBytes:)`` on the queue's I/O thread (preads and zstd), off the
    /// cooperative pool.
    public func read(maxFrames: Int = 64, maxBytes: Int = 8 << 20) async throws -> [QueueBatch] {
        try await queue.io.run { try self.next(maxFrames: maxFrames, maxBytes: maxBytes) }
    }

    /// Up to `maxFrames` frames (or `maxBytes` of records), possibly none when the reader is at
    /// the durable end. Blocking; from async code use ``read(maxFrames:maxBytes:)``.
    public func next(maxFrames: Int = 64, maxBytes: Int = 8 << 20) throws -> [QueueBatch] {
        try cursor.withLock { c in
            var out: [QueueBatch] = []
            var bytes = 0
            while out.count < maxFrames && bytes < maxBytes {
                guard let batch = try nextFrame(&c) else { break }
                bytes += batch.records.reduce(0) { $0 + $1.count }
                out.append(batch)
            }
            return out
        }
    }

    private func file(_ segment: UInt64, _ c: inout Cursor) throws -> (Int32, String) {
        let path = queue.segmentPath(segment)
        if c.fd >= 0 && c.fdSegment == segment { return (c.fd, path) }
        if c.fd >= 0 { close(c.fd) }
        c.fd = try FileIO.open(path, O_RDONLY)
        c.fdSegment = segment
        return (c.fd, path)
    }

    private func nextFrame(_ c: inout Cursor) throws -> QueueBatch? {
        while true {
            let (end, appendIndex) = queue.readLimits()
            if c.position >= end { return nil }
            let segmentEnd: Int
            if c.position.segment == end.segment {
                segmentEnd = end.offset
            } else {
                let (fd, path) = try file(c.position.segment, &c)
                segmentEnd = try FileIO.size(fd, path: path)
            }
            if c.position.offset >= segmentEnd {
                // The end of a sealed segment: go on in the next one.
                guard let next = queue.nextSegment(after: c.position.segment) else { return nil }
                c.position = QueuePosition(segment: next, offset: FrameFormat.segmentHeaderSize)
                if let header = try queue.readSegmentHeader(next), header.firstIndex > c.nextIndex {
                    // The previous segment's damaged end: its events are gone.
                    try queue.readerFoundDamage(at: c.position, length: 0, events: header.firstIndex - c.nextIndex)
                    c.nextIndex = header.firstIndex
                }
                continue
            }
            let (fd, path) = try file(c.position.segment, &c)
            var scanner = SegmentScanner(FileSegment(fd: fd, path: path), from: c.position.offset, to: segmentEnd)
            guard let item = try scanner.next() else { return nil }
            switch item {
            case .frame(let offset, let header):
                if header.firstIndex > c.nextIndex {
                    // Valid frames with a gap between them: events were dropped (e.g. by salvage).
                    try queue.readerFoundDamage(
                        at: .init(segment: c.position.segment, offset: offset), length: 0,
                        events: header.firstIndex - c.nextIndex)
                }
                let payload = try FileIO.pread(
                    fd, count: Int(header.storedLength), at: offset + FrameFormat.frameHeaderSize, path: path)
                let raw: [UInt8]
                switch header.codec {
                case .none: raw = payload
                case .zstd: raw = try Zstd.decompress(payload, maxOutput: Int(header.rawLength))
                }
                guard let records = raw.withUnsafeBytes({ RecordBatch.decode($0, count: Int(header.count)) }) else {
                    // Checksums matched but the content does not: treat the frame as damaged.
                    try queue.readerFoundDamage(at: c.position, length: header.frameSize, events: UInt64(header.count))
                    c.position.offset = offset + header.frameSize
                    c.nextIndex = header.endIndex
                    continue
                }
                let start = c.position
                c.position.offset = offset + header.frameSize
                c.nextIndex = header.endIndex
                return QueueBatch(
                    firstIndex: header.firstIndex, records: records, oldestTimestamp: header.oldestTimestamp,
                    start: start,
                    end: c.position)
            case .corrupt(let offset, let length, _, let next):
                let lost = next.firstIndex > c.nextIndex ? next.firstIndex - c.nextIndex : 0
                try queue.readerFoundDamage(
                    at: .init(segment: c.position.segment, offset: offset), length: length, events: lost)
                c.position.offset = offset + length
                c.nextIndex = next.firstIndex
            case .tail(let offset, let length, let damaged, _):
                // Damage up to the segment's end. The next segment's header (or the append index)
                // says how many events it held.
                let resume: UInt64
                if let next = queue.nextSegment(after: c.position.segment), let h = try queue.readSegmentHeader(next) {
                    resume = h.firstIndex
                } else {
                    resume = damaged?.endIndex ?? appendIndex
                }
                let lost = resume > c.nextIndex ? resume - c.nextIndex : 0
                try queue.readerFoundDamage(
                    at: .init(segment: c.position.segment, offset: offset), length: length, events: lost)
                c.position.offset = segmentEnd
                c.nextIndex = resume
            }
        }
    }
}
