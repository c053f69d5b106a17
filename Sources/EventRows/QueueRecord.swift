import EventModel
import PostgresClient

/// One event as the collector's disk queue stores it: parsed and validated once, at ingest, and
/// shipped to the IDB without being parsed again.
///
/// Format 2, written by collectors since it was introduced (all integers little-endian):
///
/// ```
/// tag 0x02 u8 | seq i64 | ts ms since the epoch i64 | flags u8 (bit 0: heartbeat)
///             | the COPY text row of `EventRows.columns`, ending in "\n"
/// ```
///
/// Format 1, what older collectors wrote: the event's canonical NDJSON line (it starts with
/// `{`). It is still read — parsed and encoded then — so a queue left by an older collector
/// drains after an upgrade.
public enum QueueRecord {
    static let rowTag: UInt8 = 2
    static let headerSize = 18
    static let heartbeatFlag: UInt8 = 1
    /// Format 1 records are parsed with no source check: they were checked when accepted.
    static let parser = EventParser()

    /// What the shipper needs of a record besides its row.
    public struct Summary: Sendable, Equatable {
        public var seq: Int64
        public var tsMilliseconds: Int64
        public var isHeartbeat: Bool
    }

    /// Appends the format 2 record of `e` to `out`; `row` is scratch space, reused between calls.
    public static func append(_ e: Event, to out: inout [UInt8], row: inout CopyRow) {
        out.append(rowTag)
        appendLittleEndian(e.seq, to: &out)
        appendLittleEndian(e.ts.millisecondsSinceEpoch, to: &out)
        out.append(e.type == .heartbeat ? heartbeatFlag : 0)
        EventRows.encode(e, into: &row)
        out += row.bytes
    }

    /// The seq, time and kind of the event in `record`.
    public static func summary(of record: [UInt8]) throws(QueueRecordError) -> Summary {
        if record.first == rowTag { return try header(of: record) }
        let e = try legacyEvent(record)
        return Summary(seq: e.seq, tsMilliseconds: e.ts.millisecondsSinceEpoch, isHeartbeat: e.type == .heartbeat)
    }

    /// Appends the record's COPY row to `rows` (nothing for a heartbeat: heartbeats only move the
    /// checkpoint) and returns its summary. A format 2 row is copied as stored; a format 1 record
    /// is parsed and encoded into `scratch` first.
    public static func appendRow(
        of record: [UInt8], to rows: inout [UInt8], scratch: inout CopyRow
    ) throws(QueueRecordError) -> Summary {
        if record.first == rowTag {
            let summary = try header(of: record)
            if !summary.isHeartbeat { rows += record[headerSize...] }
            return summary
        }
        let e = try legacyEvent(record)
        if e.type != .heartbeat {
            EventRows.encode(e, into: &scratch)
            rows += scratch.bytes
        }
        return Summary(seq: e.seq, tsMilliseconds: e.ts.millisecondsSinceEpoch, isHeartbeat: e.type == .heartbeat)
    }

    /// Appends the record as the event's canonical NDJSON line (no newline), for `bcpipe queue
    /// dump`. A record of neither format (a queue that holds other data) is appended as stored.
    public static func appendNDJSON(of record: [UInt8], to out: inout [UInt8]) throws(QueueRecordError) {
        guard record.first == rowTag else {
            out += record
            return
        }
        try event(of: record).appendJSON(to: &out)
    }

    /// The event a format 2 record holds, read back from its COPY row.
    public static func event(of record: [UInt8]) throws(QueueRecordError) -> Event {
        let summary = try header(of: record)
        let f = try CopyText.fields(of: record[headerSize...])
        guard f.count == 11, let source = f[0], let seqText = f[1], let seq = Int64(seqText), seq == summary.seq,
            let tsText = f[2], let ts = Timestamp(rfc3339: tsText), ts.millisecondsSinceEpoch == summary.tsMilliseconds,
            let typeText = f[3], let type = EventType(rawValue: typeText), (type == .heartbeat) == summary.isHeartbeat
        else {
            throw QueueRecordError("its row does not hold the event its header describes (seq \(summary.seq))")
        }
        var e = Event(source: source, seq: seq, ts: ts, type: type, interaction: f[4])
        e.media = try f[5].map { v throws(QueueRecordError) in try known(Media(rawValue: v), "media", v) }
        e.direction = try f[6].map { v throws(QueueRecordError) in try known(Direction(rawValue: v), "direction", v) }
        e.queue = f[7]
        e.agent = f[8]
        e.reason = f[9]
        if let attrs = f[10] {
            let parsed = Array(attrs.utf8).withUnsafeBytes { bytes in
                Result { () throws(LineFailure) in try Attributes(json: bytes) }
            }
            switch parsed {
            case .success(let a): e.attrs = a
            case .failure(let f): throw QueueRecordError("its attrs do not parse: \(f.reason)")
            }
        }
        return e
    }

    private static func known<T>(_ value: T?, _ field: String, _ text: String) throws(QueueRecordError) -> T {
        guard let value else { throw QueueRecordError("its \(field) \"\(text)\" is not one CONTRACT 1 knows") }
        return value
    }

    private static func header(of record: [UInt8]) throws(QueueRecordError) -> Summary {
        guard record.count > headerSize, record.last == 10 else {
            throw QueueRecordError("a format 2 record of \(record.count) bytes is cut short")
        }
        return Summary(
            seq: littleEndian(record, at: 1), tsMilliseconds: littleEndian(record, at: 9),
            isHeartbeat: record[17] & heartbeatFlag != 0)
    }

    private static func legacyEvent(_ record: [UInt8]) throws(QueueRecordError) -> Event {
        switch record.withUnsafeBytes({ parser.parseLine($0) }) {
        case .success(let e): return e
        case .failure(let f): throw QueueRecordError("a format 1 record no longer parses: \(f.reason)")
        }
    }

    private static func appendLittleEndian(_ v: Int64, to out: inout [UInt8]) {
        var u = UInt64(bitPattern: v)
        for _ in 0..<8 {
            out.append(UInt8(truncatingIfNeeded: u))
            u >>= 8
        }
    }

    private static func littleEndian(_ bytes: [UInt8], at offset: Int) -> Int64 {
        var u: UInt64 = 0
        for k in (0..<8).reversed() { u = u << 8 | UInt64(bytes[offset + k]) }
        return Int64(bitPattern: u)
    }
}

/// Why a queued record cannot be read as an event.
public struct QueueRecordError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Reading back one row of PostgreSQL's COPY text format as ``CopyRow`` writes it.
enum CopyText {
    /// The row's columns (nil for `\N`); the row must end in its newline.
    static func fields(of row: ArraySlice<UInt8>) throws(QueueRecordError) -> [String?] {
        var fields: [String?] = []
        var field: [UInt8] = []
        var isNull = false
        var i = row.startIndex
        let end = row.endIndex - 1  // the newline
        guard row.last == 10 else { throw QueueRecordError("its row has no end") }
        while i < end {
            let b = row[i]
            i += 1
            switch b {
            case 9:
                fields.append(isNull ? nil : String(decoding: field, as: UTF8.self))
                field.removeAll(keepingCapacity: true)
                isNull = false
            case 92:
                guard i < end else { throw QueueRecordError("its row ends inside an escape") }
                let next = row[i]
                i += 1
                switch next {
                case UInt8(ascii: "N") where field.isEmpty && (i == end || row[i] == 9): isNull = true
                case 92: field.append(92)
                case UInt8(ascii: "t"): field.append(9)
                case UInt8(ascii: "n"): field.append(10)
                case UInt8(ascii: "r"): field.append(13)
                default: throw QueueRecordError("its row holds an unknown escape \\\(Character(Unicode.Scalar(next)))")
                }
            default: field.append(b)
            }
        }
        fields.append(isNull ? nil : String(decoding: field, as: UTF8.self))
        return fields
    }
}
