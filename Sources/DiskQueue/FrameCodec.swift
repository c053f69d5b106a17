/// The on-disk format of the queue. All integers little-endian.
///
/// A segment file starts with a 28-byte header, then frames back to back:
///
/// ```
/// segment header: "BCQS" | version u16 | reserved u16 | segment id u64 | first index u64
///                 | crc32c(first 24) u32
/// frame header:   "BCQF" | version u8 | codec u8 | flags u16 | first index u64 | count u32
///                 | raw length u32 | stored length u32 | oldest ts ms i64 | payload crc32c u32
///                 | header crc32c u32 (of the 40 bytes before it)
/// payload:        stored-length bytes (zstd frame when codec = 1) of records:
///                 length u32 | bytes, repeated count times
/// ```
///
/// `first index` numbers events across the whole queue: the gap between two valid frames
/// is the exact number of events lost between them.
public enum FrameFormat {
    public static let segmentMagic: [UInt8] = Array("BCQS".utf8)
    public static let frameMagic: [UInt8] = Array("BCQF".utf8)
    public static let version: UInt8 = 1
    public static let segmentHeaderSize = 28
    public static let frameHeaderSize = 44
    /// The largest stored payload a frame may declare (bounds reads of a corrupt length).
    public static let maxStoredLength = 64 * 1024 * 1024
    public static let maxRawLength = 256 * 1024 * 1024

    public enum Codec: UInt8, Sendable {
        case none = 0
        case zstd = 1
    }
}

/// A decoded, checksum-verified frame header.
public struct FrameHeader: Sendable, Equatable {
    public var codec: FrameFormat.Codec
    public var firstIndex: UInt64
    public var count: UInt32
    public var rawLength: UInt32
    public var storedLength: UInt32
    public var oldestTimestamp: Int64
    public var payloadCRC: UInt32

    public init(
        codec: FrameFormat.Codec, firstIndex: UInt64, count: UInt32, rawLength: UInt32, storedLength: UInt32,
        oldestTimestamp: Int64, payloadCRC: UInt32
    ) {
        self.codec = codec
        self.firstIndex = firstIndex
        self.count = count
        self.rawLength = rawLength
        self.storedLength = storedLength
        self.oldestTimestamp = oldestTimestamp
        self.payloadCRC = payloadCRC
    }

    /// The index after this frame's last event.
    public var endIndex: UInt64 { firstIndex + UInt64(count) }
    /// Header plus payload.
    public var frameSize: Int { FrameFormat.frameHeaderSize + Int(storedLength) }

    /// Appends the 44-byte encoded header.
    public func encode(into out: inout [UInt8]) {
        let start = out.count
        out += FrameFormat.frameMagic
        out.append(FrameFormat.version)
        out.append(codec.rawValue)
        out.appendLE(UInt16(0))
        out.appendLE(firstIndex)
        out.appendLE(count)
        out.appendLE(rawLength)
        out.appendLE(storedLength)
        out.appendLE(UInt64(bitPattern: oldestTimestamp))
        out.appendLE(payloadCRC)
        let crc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start..<(start + 40)])) }
        out.appendLE(crc)
    }

    /// Why a header cannot be used.
    public enum DecodeFailure: Error, Equatable {
        case badMagic, badChecksum, unsupportedVersion, badLengths
    }

    /// Decodes and verifies 44 header bytes.
    public static func decode(_ b: UnsafeRawBufferPointer) -> Result<FrameHeader, DecodeFailure> {
        guard b.count >= FrameFormat.frameHeaderSize else { return .failure(.badMagic) }
        guard b[0] == 0x42, b[1] == 0x43, b[2] == 0x51, b[3] == 0x46 else { return .failure(.badMagic) }
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[0..<40]))
        guard crc == b.le(UInt32.self, 40) else { return .failure(.badChecksum) }
        guard b[4] == FrameFormat.version, let codec = FrameFormat.Codec(rawValue: b[5]) else {
            return .failure(.unsupportedVersion)
        }
        let h = FrameHeader(
            codec: codec, firstIndex: b.le(UInt64.self, 8), count: b.le(UInt32.self, 16),
            rawLength: b.le(UInt32.self, 20), storedLength: b.le(UInt32.self, 24),
            oldestTimestamp: Int64(bitPattern: b.le(UInt64.self, 28)), payloadCRC: b.le(UInt32.self, 36))
        guard Int(h.storedLength) <= FrameFormat.maxStoredLength, Int(h.rawLength) <= FrameFormat.maxRawLength,
            h.count > 0, Int(h.rawLength) >= Int(h.count) * 4
        else { return .failure(.badLengths) }
        return .success(h)
    }
}

/// Encoding of the records a frame carries.
public enum RecordBatch {
    /// Concatenates records as `length u32 | bytes`.
    public static func encode(_ records: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(records.reduce(0) { $0 + $1.count + 4 })
        for r in records {
            out.appendLE(UInt32(r.count))
            out += r
        }
        return out
    }

    /// Splits a decoded payload back into `count` records; nil if it does not hold exactly that.
    public static func decode(_ raw: UnsafeRawBufferPointer, count: Int) -> [[UInt8]]? {
        var out: [[UInt8]] = []
        out.reserveCapacity(count)
        var i = 0
        while i < raw.count {
            guard raw.count - i >= 4 else { return nil }
            let n = Int(raw.le(UInt32.self, i))
            i += 4
            guard raw.count - i >= n else { return nil }
            out.append(Array(UnsafeRawBufferPointer(rebasing: raw[i..<(i + n)])))
            i += n
        }
        return out.count == count ? out : nil
    }
}

/// The 28-byte header at the start of every segment: its id and the index of its first event.
public struct SegmentHeader: Sendable, Equatable {
    public var segment: UInt64
    /// The queue-wide index the segment's first frame starts at (its predecessor's end).
    public var firstIndex: UInt64

    public init(segment: UInt64, firstIndex: UInt64) {
        self.segment = segment
        self.firstIndex = firstIndex
    }

    public func encode() -> [UInt8] {
        var out = FrameFormat.segmentMagic
        out.appendLE(UInt16(FrameFormat.version))
        out.appendLE(UInt16(0))
        out.appendLE(segment)
        out.appendLE(firstIndex)
        let crc = CRC32C.checksum(out)
        out.appendLE(crc)
        return out
    }

    /// The header, or nil if it is damaged.
    public static func decode(_ b: UnsafeRawBufferPointer) -> SegmentHeader? {
        guard b.count >= FrameFormat.segmentHeaderSize, Array(b[0..<4]) == FrameFormat.segmentMagic,
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b[0..<24])) == b.le(UInt32.self, 24)
        else { return nil }
        return SegmentHeader(segment: b.le(UInt64.self, 8), firstIndex: b.le(UInt64.self, 16))
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func le<T: FixedWidthInteger>(_: T.Type, _ offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
