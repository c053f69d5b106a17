import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A place in the queue: a segment and a byte offset in it (always a frame boundary).
public struct QueuePosition: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var segment: UInt64
    public var offset: Int

    public init(segment: UInt64, offset: Int) {
        self.segment = segment
        self.offset = offset
    }

    public static func < (a: Self, b: Self) -> Bool { (a.segment, a.offset) < (b.segment, b.offset) }
    public var description: String { "segment \(segment) offset \(offset)" }
}

/// What the cursor file records: how far the consumer has acknowledged, and the losses counted.
public struct AckCursor: Sendable, Equatable {
    /// The first unacknowledged frame.
    public var position: QueuePosition
    /// The index of the first unacknowledged event.
    public var nextIndex: UInt64
    /// Events lost to damage so far (counted once each).
    public var lostEvents: UInt64
    /// The last damaged region counted, so a region found again after a restart is not counted twice.
    public var lastLoss: QueuePosition
    var generation: UInt64 = 0

    public init(
        position: QueuePosition, nextIndex: UInt64, lostEvents: UInt64 = 0,
        lastLoss: QueuePosition = .init(segment: 0, offset: 0)
    ) {
        self.position = position
        self.nextIndex = nextIndex
        self.lostEvents = lostEvents
        self.lastLoss = lastLoss
    }

    static let slotSize = 128
    static let magic: [UInt8] = Array("BCQC".utf8)

    func encodeSlot() -> [UInt8] {
        var out = AckCursor.magic
        out.appendLE(UInt16(1))
        out.appendLE(UInt16(0))
        out.appendLE(generation)
        out.appendLE(position.segment)
        out.appendLE(UInt64(position.offset))
        out.appendLE(nextIndex)
        out.appendLE(lostEvents)
        out.appendLE(lastLoss.segment)
        out.appendLE(UInt64(lastLoss.offset))
        let crc = CRC32C.checksum(out)
        out.appendLE(crc)
        out += [UInt8](repeating: 0, count: AckCursor.slotSize - out.count)
        return out
    }

    static func decodeSlot(_ b: UnsafeRawBufferPointer) -> AckCursor? {
        guard b.count >= 68, Array(b[0..<4]) == magic,
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[0..<64])) == b.le(UInt32.self, 64)
        else { return nil }
        var c = AckCursor(
            position: .init(segment: b.le(UInt64.self, 16), offset: Int(b.le(UInt64.self, 24))),
            nextIndex: b.le(UInt64.self, 32), lostEvents: b.le(UInt64.self, 40),
            lastLoss: .init(segment: b.le(UInt64.self, 48), offset: Int(b.le(UInt64.self, 56))))
        c.generation = b.le(UInt64.self, 8)
        return c
    }
}

/// The cursor file: two checksummed slots written alternately, so a write torn by a crash
/// leaves the previous cursor intact. Reading takes the valid slot of the highest generation.
final class CursorFile {
    let path: String
    let fd: Int32
    private(set) var current: AckCursor?

    init(directory: String) throws {
        path = directory + "/cursor"
        fd = try FileIO.open(path, O_RDWR | O_CREAT)
        current = CursorFile.newest(try FileIO.pread(fd, count: 2 * AckCursor.slotSize, at: 0, path: path))
    }

    /// The valid slot of the highest generation.
    static func newest(_ bytes: [UInt8]) -> AckCursor? {
        bytes.withUnsafeBytes { b in
            (0..<2).compactMap { i -> AckCursor? in
                let start = i * AckCursor.slotSize
                guard b.count >= start + AckCursor.slotSize else { return nil }
                return AckCursor.decodeSlot(UnsafeRawBufferPointer(rebasing: b[start..<(start + AckCursor.slotSize)]))
            }.max { $0.generation < $1.generation }
        }
    }

    /// Read-only access for inspection tools (no file is created).
    static func peek(directory: String) -> AckCursor? {
        let path = directory + "/cursor"
        guard let fd = try? FileIO.open(path, O_RDONLY) else { return nil }
        defer { close(fd) }
        guard let bytes = try? FileIO.pread(fd, count: 2 * AckCursor.slotSize, at: 0, path: path) else { return nil }
        return newest(bytes)
    }

    /// Writes the next generation into the other slot and makes it durable.
    func write(_ cursor: AckCursor) throws {
        published(try persist(cursor))
    }

    /// Writes `cursor` as the next generation and makes it durable, without publishing it as
    /// `current` (the caller does, under its lock). One caller at a time.
    func persist(_ cursor: AckCursor) throws -> AckCursor {
        var c = cursor
        c.generation = (current?.generation ?? 0) + 1
        let slot = Int(c.generation % 2)
        try c.encodeSlot().withUnsafeBytes { try FileIO.pwriteAll(fd, $0, at: slot * AckCursor.slotSize, path: path) }
        try FileIO.fdatasync(fd, path: path)
        return c
    }

    func published(_ cursor: AckCursor) { current = cursor }

    deinit { close(fd) }
}
