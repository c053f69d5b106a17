/// Random access to the bytes of one segment (a file, or memory in tests).
public protocol SegmentBytes {
    /// Reads up to `count` bytes at `offset`; fewer only at the end.
    func read(_ offset: Int, _ count: Int) throws -> [UInt8]
}

/// What the scanner finds at a position of a segment.
public enum ScanItem: Sendable, Equatable {
    /// A frame whose header and payload checksums are right.
    case frame(offset: Int, header: FrameHeader)
    /// Unreadable bytes `[offset, offset + length)` followed by a valid frame (`next`).
    /// `damaged` is the header found at `offset` when it alone was intact.
    case corrupt(offset: Int, length: Int, damaged: FrameHeader?, next: FrameHeader)
    /// Unreadable bytes from `offset` to the end with no valid frame after them: a write cut
    /// short by a crash, or damage to the last frames. `damaged` as above; `complete` when the
    /// damaged header's whole frame is present (so it was written out, and may have been acknowledged).
    case tail(offset: Int, length: Int, damaged: FrameHeader?, complete: Bool)
}

/// Walks the frames of a segment between two offsets, verifying every checksum and resynchronising
/// past damage at the next valid frame. Pure: it reads, never writes. Every step advances, so it
/// always ends.
public struct SegmentScanner {
    let bytes: SegmentBytes
    public private(set) var offset: Int
    let end: Int

    public init(_ bytes: SegmentBytes, from offset: Int, to end: Int) {
        self.bytes = bytes
        self.offset = offset
        self.end = end
    }

    /// The next item, or nil at the end.
    public mutating func next() throws -> ScanItem? {
        guard offset < end else { return nil }
        let at = offset
        var damaged: FrameHeader?
        var complete = false
        if let header = try verifiedHeader(at) {
            if at + header.frameSize <= end {
                if try payloadIsValid(header, at) {
                    offset = at + header.frameSize
                    return .frame(offset: at, header: header)
                }
                complete = true
            }
            damaged = header
        }
        // Resynchronise: the next offset holding a frame that verifies completely.
        if let (nextOffset, next) = try findValidFrame(after: at) {
            offset = nextOffset
            return .corrupt(offset: at, length: nextOffset - at, damaged: damaged, next: next)
        }
        offset = end
        return .tail(offset: at, length: end - at, damaged: damaged, complete: complete)
    }

    func verifiedHeader(_ at: Int) throws -> FrameHeader? {
        guard end - at >= FrameFormat.frameHeaderSize else { return nil }
        let h = try bytes.read(at, FrameFormat.frameHeaderSize)
        guard case .success(let header) = h.withUnsafeBytes({ FrameHeader.decode($0) }) else { return nil }
        return header
    }

    func payloadIsValid(_ header: FrameHeader, _ at: Int) throws -> Bool {
        let payload = try bytes.read(at + FrameFormat.frameHeaderSize, Int(header.storedLength))
        return payload.count == Int(header.storedLength) && CRC32C.checksum(payload) == header.payloadCRC
    }

    func findValidFrame(after at: Int) throws -> (Int, FrameHeader)? {
        let chunk = 1 << 20
        var pos = at + 1
        while pos + FrameFormat.frameHeaderSize <= end {
            let window = try bytes.read(pos, min(chunk + 3, end - pos))
            guard window.count >= 4 else { return nil }
            var i = 0
            while i + 4 <= window.count {
                if window[i] == 0x42, window[i + 1] == 0x43, window[i + 2] == 0x51, window[i + 3] == 0x46 {
                    let candidate = pos + i
                    if let h = try verifiedHeader(candidate), candidate + h.frameSize <= end,
                        try payloadIsValid(h, candidate)
                    {
                        return (candidate, h)
                    }
                }
                i += 1
            }
            pos += max(1, window.count - 3)
        }
        return nil
    }
}

/// A segment held in memory (tests and tools).
public struct MemorySegment: SegmentBytes {
    public var data: [UInt8]
    public init(_ data: [UInt8]) { self.data = data }
    public func read(_ offset: Int, _ count: Int) throws -> [UInt8] {
        guard offset < data.count else { return [] }
        return Array(data[offset..<min(data.count, offset + count)])
    }
}

/// A segment file read with pread.
struct FileSegment: SegmentBytes {
    let fd: Int32
    let path: String
    func read(_ offset: Int, _ count: Int) throws -> [UInt8] {
        try FileIO.pread(fd, count: count, at: offset, path: path)
    }
}
