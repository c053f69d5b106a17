import Foundation
import ZstdCompression

#if canImport(Glibc)
    import Glibc
#endif

/// Offline inspection of a queue directory: reads only, never repairs (opening a ``DiskQueue``
/// repairs). Backs `bcpipe queue stat | verify | dump | salvage`.
public struct QueueInspector {
    public let directory: String
    var segmentsDirectory: String { directory + "/segments" }

    /// `directory` may be relative (to the working directory); it is kept absolute, so a salvage
    /// can name the directory that holds it.
    public init(directory: String) throws {
        self.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory + "/segments", isDirectory: &isDir), isDir.boolValue
        else {
            throw DiskQueueError(
                code: .unreadable, message: "\(directory) is not a bcpipe disk queue (no segments/ directory)")
        }
    }

    /// Something found while walking the queue.
    public enum Finding: Sendable, Equatable {
        case frame(QueuePosition, FrameHeader)
        /// Unreadable bytes; `lostEvents` from the index gap when it is known.
        case damage(QueuePosition, length: Int, lostEvents: UInt64?, detail: String)
    }

    public var cursor: AckCursor? { CursorFile.peek(directory: directory) }
    public var segments: [UInt64] { DiskQueue.listSegments(segmentsDirectory) }

    func path(_ id: UInt64) -> String { segmentsDirectory + "/" + DiskQueue.segmentName(id) }

    /// The size of each segment file, in segment order.
    public var segmentSizes: [Int] {
        segments.map { (try? FileManager.default.attributesOfItem(atPath: path($0)))?[.size] as? Int ?? 0 }
    }

    /// Walks every frame of every segment (from the cursor when `fromCursor`), verifying checksums,
    /// decompression and record framing.
    public func walk(fromCursor: Bool, _ visit: (Finding, _ records: () throws -> [[UInt8]]) throws -> Void) throws {
        let c = cursor
        var expected: UInt64? = fromCursor ? c?.nextIndex : nil
        for id in segments {
            if fromCursor, let c, id < c.position.segment { continue }
            let p = path(id)
            let fd = try FileIO.open(p, O_RDONLY)
            defer { close(fd) }
            let size = try FileIO.size(fd, path: p)
            let header = try FileIO.pread(fd, count: FrameFormat.segmentHeaderSize, at: 0, path: p).withUnsafeBytes {
                SegmentHeader.decode($0)
            }
            if header == nil && size > 0 {
                try visit(
                    .damage(
                        .init(segment: id, offset: 0), length: min(size, FrameFormat.segmentHeaderSize), lostEvents: 0,
                        detail: "damaged segment header"), { [] })
            }
            if let h = header, let e = expected, h.firstIndex > e {
                try visit(
                    .damage(
                        .init(segment: id, offset: 0), length: 0, lostEvents: h.firstIndex - e,
                        detail: "events missing before this segment"), { [] })
            }
            if let h = header { expected = max(expected ?? h.firstIndex, h.firstIndex) }
            var start = FrameFormat.segmentHeaderSize
            if fromCursor, let c, id == c.position.segment { start = c.position.offset }
            var scanner = SegmentScanner(FileSegment(fd: fd, path: p), from: start, to: max(size, start))
            while let item = try scanner.next() {
                switch item {
                case .frame(let offset, let h):
                    let position = QueuePosition(segment: id, offset: offset)
                    let decode: () throws -> [[UInt8]] = { try QueueInspector.records(fd: fd, path: p, at: offset) }
                    if let e = expected, h.firstIndex > e {
                        try visit(
                            .damage(
                                position, length: 0, lostEvents: h.firstIndex - e,
                                detail: "events missing before this frame"), { [] })
                    }
                    expected = h.endIndex
                    try visit(.frame(position, h), decode)
                case .corrupt(let offset, let length, let damaged, let next):
                    let lost = expected.map { next.firstIndex > $0 ? next.firstIndex - $0 : 0 }
                    try visit(
                        .damage(
                            .init(segment: id, offset: offset), length: length, lostEvents: lost,
                            detail: damaged == nil ? "damaged frame header" : "damaged frame payload"), { [] })
                    expected = next.firstIndex
                case .tail(let offset, let length, let damaged, let complete):
                    let lost: UInt64? = complete ? UInt64(damaged?.count ?? 0) : nil
                    try visit(
                        .damage(
                            .init(segment: id, offset: offset), length: length, lostEvents: lost,
                            detail: complete
                                ? "damaged last frame" : "torn tail (a write cut short; opening the queue cuts it off)"),
                        { [] })
                    if let damaged { expected = damaged.endIndex }
                }
            }
        }
    }

    /// Reads and decodes the records of the frame at `offset`.
    static func records(fd: Int32, path: String, at offset: Int) throws -> [[UInt8]] {
        let hb = try FileIO.pread(fd, count: FrameFormat.frameHeaderSize, at: offset, path: path)
        let h = try hb.withUnsafeBytes { FrameHeader.decode($0) }.get()
        let payload = try FileIO.pread(
            fd, count: Int(h.storedLength), at: offset + FrameFormat.frameHeaderSize, path: path)
        let raw = h.codec == .zstd ? try Zstd.decompress(payload, maxOutput: Int(h.rawLength)) : payload
        guard let records = raw.withUnsafeBytes({ RecordBatch.decode($0, count: Int(h.count)) }) else {
            throw DiskQueueError(
                code: .unreadable, message: "\(path) offset \(offset): records do not match the header")
        }
        return records
    }

    /// What a salvage did.
    public struct SalvageResult: Sendable {
        public var kept: Int
        public var dropped: Int
        /// Events lost in the dropped regions, counted now into the cursor's `lost_events`.
        public var lost: UInt64
        public var backup: String
    }

    /// The file in a queue directory where each salvage records what it dropped and when.
    public static let salvageLog = "salvage.log"

    /// Rewrites the queue keeping every readable unacknowledged frame's payload byte for byte.
    ///
    /// The kept frames are renumbered without gaps, and the events of the dropped regions are
    /// counted now, into the cursor's `lost_events` and a line of ``salvageLog``: afterwards
    /// `verify` is clean, the queue's `events` is exactly what will ship, and the loss is
    /// history, not damage to repair again. The damaged original is kept beside it as
    /// `DIR.damaged-TIMESTAMP`.
    public func salvage() throws -> SalvageResult {
        let lock = try FileIO.open(directory + "/lock", O_RDWR | O_CREAT)
        defer { close(lock) }
        guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            throw DiskQueueError(code: .inUse, message: "\(directory) is in use; stop its collector before salvaging")
        }
        let tmp = directory + ".salvage-tmp"
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp + "/segments", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: tmp + "/quarantine", withIntermediateDirectories: true)
        let old = cursor
        var writer = SalvageWriter(directory: tmp, segment: old?.position.segment ?? 1)
        var dropped = 0
        var lost: UInt64 = 0
        var nextIndex: UInt64? = old?.nextIndex
        try walk(fromCursor: true) { finding, records in
            switch finding {
            case .frame(let position, var header):
                _ = try records()  // only frames that decode completely are kept
                let index = nextIndex ?? header.firstIndex
                header.firstIndex = index
                nextIndex = header.endIndex
                let src = path(position.segment)
                let sfd = try FileIO.open(src, O_RDONLY)
                defer { close(sfd) }
                let payload = try FileIO.pread(
                    sfd, count: Int(header.storedLength), at: position.offset + FrameFormat.frameHeaderSize, path: src)
                try writer.write(header, payload)
            case .damage(_, let length, let events, _):
                if length > 0 { dropped += 1 }
                lost += events ?? 0
            }
        }
        let first = try writer.finish(firstIndex: nextIndex ?? 0)
        let cursorFile = try CursorFile(directory: tmp)
        try cursorFile.write(
            AckCursor(
                position: first.position, nextIndex: old?.nextIndex ?? first.index,
                lostEvents: (old?.lostEvents ?? 0) + lost, lastLoss: .init(segment: 0, offset: 0)))
        let stamp = Date()
        let backup = directory + ".damaged-\(Int(stamp.timeIntervalSince1970))"
        var history = (try? String(contentsOfFile: directory + "/" + Self.salvageLog, encoding: .utf8)) ?? ""
        history +=
            "\(ISO8601DateFormatter().string(from: stamp)) salvage: kept \(writer.kept) frames, dropped \(dropped) damaged regions, \(lost) events lost (counted in lost_events), original kept in \(backup)\n"
        try FileIO.writeDurably(Array(history.utf8), to: tmp + "/" + Self.salvageLog)
        try FileIO.fsyncDirectory(tmp + "/segments")
        try FileIO.fsyncDirectory(tmp)
        guard rename(directory, backup) == 0 else { throw FileIO.error("rename", directory) }
        guard rename(tmp, directory) == 0 else { throw FileIO.error("rename", tmp) }
        try FileIO.fsyncDirectory((directory as NSString).deletingLastPathComponent)
        return SalvageResult(kept: writer.kept, dropped: dropped, lost: lost, backup: backup)
    }

    /// The history of salvages of this queue, one line each (empty when never salvaged).
    public var salvageHistory: [String] {
        ((try? String(contentsOfFile: directory + "/" + Self.salvageLog, encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }
}

/// Writes a salvaged queue's segments: frames appended in order, a new segment past 64 MiB.
struct SalvageWriter {
    let directory: String
    var segment: UInt64
    var fd: Int32 = -1
    var offset = 0
    var kept = 0
    var first: (position: QueuePosition, index: UInt64)?
    static let segmentLimit = 64 << 20

    init(directory: String, segment: UInt64) {
        self.directory = directory
        self.segment = segment
    }

    private mutating func startSegment(_ index: UInt64) throws {
        if fd >= 0 {
            try FileIO.fdatasync(fd, path: "salvage")
            close(fd)
            segment += 1
        }
        let p = directory + "/segments/" + DiskQueue.segmentName(segment)
        fd = try FileIO.open(p, O_WRONLY | O_CREAT | O_TRUNC)
        try SegmentHeader(segment: segment, firstIndex: index).encode().withUnsafeBytes {
            try FileIO.pwriteAll(fd, $0, at: 0, path: p)
        }
        offset = FrameFormat.segmentHeaderSize
    }

    mutating func write(_ header: FrameHeader, _ payload: [UInt8]) throws {
        if fd < 0 || offset + header.frameSize > Self.segmentLimit { try startSegment(header.firstIndex) }
        if first == nil { first = (QueuePosition(segment: segment, offset: offset), header.firstIndex) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(header.frameSize)
        header.encode(into: &bytes)
        bytes += payload
        try bytes.withUnsafeBytes { try FileIO.pwriteAll(fd, $0, at: offset, path: "salvage") }
        offset += bytes.count
        kept += 1
    }

    /// Syncs and closes the last segment (an empty one when nothing was kept, starting at
    /// `firstIndex`) and returns where reading starts.
    mutating func finish(firstIndex: UInt64) throws -> (position: QueuePosition, index: UInt64) {
        if fd < 0 { try startSegment(firstIndex) }
        try FileIO.fdatasync(fd, path: "salvage")
        close(fd)
        fd = -1
        return first ?? (QueuePosition(segment: segment, offset: FrameFormat.segmentHeaderSize), firstIndex)
    }
}
