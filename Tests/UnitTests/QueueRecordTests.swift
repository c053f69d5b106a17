import Collector
import EventModel
import EventRows
import PostgresClient
import Testing
import Traffic

/// The disk queue's event record (format 2: the IDB row behind a small header) and the format 1
/// records (canonical NDJSON) that queues written by older collectors hold.
@Suite struct QueueRecordTests {
    /// Valid events (the queue holds only accepted ones) with every optional field, attrs, and
    /// the bytes COPY and JSON escape differently.
    static let awkward: [Event] = [
        Event(
            source: "site1/voice", seq: 7, ts: Timestamp(millisecondsSinceEpoch: 1_764_000_000_123),
            type: .interactionQueued, interaction: "i\t1", media: .voice, direction: .inbound,
            queue: "sales\\north\n", agent: nil, reason: nil,
            attrs: ["note": "tab\there \"quoted\" back\\slash\r\nline", "ünï": "☎︎ \u{1}", "\\N": "\\N"]),
        Event(
            source: "site1/voice", seq: 0, ts: Timestamp(millisecondsSinceEpoch: 0), type: .agentNotReady,
            agent: "a 1", reason: "\\N"),
        Event(source: "s", seq: Int64.max, ts: Timestamp(millisecondsSinceEpoch: 1), type: .heartbeat),
        Event(
            source: "s", seq: 3, ts: Timestamp(millisecondsSinceEpoch: 5), type: .interactionCreated,
            interaction: "x", media: .chat, direction: .internal, reason: "", attrs: ["": ""]),
    ]

    /// The format 2 record of `e`, as the collector queues it.
    static func record(_ e: Event) -> [UInt8] {
        var row = CopyRow()
        var record: [UInt8] = []
        QueueRecord.append(e, to: &record, row: &row)
        return record
    }

    static func events() -> [Event] {
        awkward
            + Array(
                TrafficGenerator(source: "site1/voice", seed: 9, start: 0, profile: .staffed(arrivalsPerSecond: 50))
                    .prefix(2000))
    }

    /// Catches a record whose row is not what the shipper would have encoded from the event: the
    /// IDB would then hold other values than the ones acknowledged.
    @Test func theRowIsTheEventsIDBRow() throws {
        var rows: [UInt8] = []
        var expected: [UInt8] = []
        var scratch = CopyRow()
        var row = CopyRow()
        for e in Self.events() {
            let record = Self.record(e)
            let summary = try QueueRecord.appendRow(of: record, to: &rows, scratch: &scratch)
            #expect(summary.seq == e.seq)
            #expect(summary.tsMilliseconds == e.ts.millisecondsSinceEpoch)
            #expect(summary.isHeartbeat == (e.type == .heartbeat))
            #expect(try QueueRecord.summary(of: record) == summary)
            if e.type != .heartbeat {
                EventRows.encode(e, into: &row)
                expected += row.bytes
            }
        }
        #expect(rows == expected)
    }

    /// Catches `bcpipe queue dump` printing anything but the event that was accepted: every
    /// field, escape and attr read back from the row equals the event's canonical NDJSON.
    @Test func dumpReadsTheEventBackFromItsRow() throws {
        for e in Self.events() {
            let record = Self.record(e)
            #expect(try QueueRecord.event(of: record) == e)
            var line: [UInt8] = []
            try QueueRecord.appendNDJSON(of: record, to: &line)
            #expect(String(decoding: line, as: UTF8.self) == e.json)
        }
    }

    /// Catches a queue written by an older collector (format 1, NDJSON) no longer draining:
    /// its records give the same rows and summaries as format 2 records of the same events.
    @Test func formatOneRecordsStillShip() throws {
        var legacyRows: [UInt8] = []
        var rows: [UInt8] = []
        var scratch = CopyRow()
        for e in Self.events() {
            var legacy: [UInt8] = []
            e.appendJSON(to: &legacy)
            let record = Self.record(e)
            let a = try QueueRecord.appendRow(of: legacy, to: &legacyRows, scratch: &scratch)
            let b = try QueueRecord.appendRow(of: record, to: &rows, scratch: &scratch)
            #expect(a == b)
            var dumped: [UInt8] = []
            try QueueRecord.appendNDJSON(of: legacy, to: &dumped)
            #expect(dumped == legacy)
        }
        #expect(legacyRows == rows)
    }

    /// Catches a damaged or foreign record being shipped as a row: the batch builder leaves it
    /// out, reports it, and keeps the readable records around it.
    @Test func unreadableRecordsAreReportedAndLeftOut() throws {
        let good = Self.record(Self.awkward[0])
        var badAttrs = good
        badAttrs[badAttrs.count - 2] = UInt8(ascii: "x")  // the attrs' closing brace
        let cut = Array(good.prefix(12))
        let foreign = Array("0 0 0 0 not an event".utf8)
        #expect(throws: QueueRecordError.self) { try QueueRecord.summary(of: cut) }
        #expect(throws: QueueRecordError.self) { try QueueRecord.event(of: badAttrs) }
        #expect(throws: QueueRecordError.self) { try QueueRecord.summary(of: foreign) }

        var reasons: [String] = []
        let batch = IDBWriter.prepare(
            records: [cut, good, foreign], source: "site1/voice", segment: 1, offset: 2
        ) { reasons.append($0.reason) }
        #expect(batch?.events == 1)
        #expect(batch?.maxSeq == 7)
        #expect(reasons.count == 2, "\(reasons)")
        #expect(reasons.first?.contains("cut short") == true)
        #expect(IDBWriter.prepare(records: [foreign], source: "s", segment: 1, offset: 2) { _ in } == nil)
    }
}
