import DiskQueue
import EventModel
import Foundation
import Lab
import Testing

extension CollectorTests {
    /// A collector upgraded over a queue its older version wrote: the older records (format 1,
    /// the events' NDJSON) and the new ones (format 2, the IDB rows) sit in one queue; after a
    /// restart every event ships and is stored once, even retried in the new format behind its
    /// old record, and `bcpipe queue dump` prints them all as NDJSON.
    ///
    /// Catches: a shipper that reads only its own format (the older events would be skipped as
    /// unreadable and acknowledged — lost); a batch mixing both formats shipped twice or not at
    /// all; a dump that prints raw rows.
    @Test func aQueueWrittenByAnOlderCollectorDrainsAfterTheUpgrade() async throws {
        let lab = try await Self.lab()
        let client = try Self.client(lab, "site1-b")  // its IDB is across the WAN
        let base = Self.freshBase()
        let newer = base..<(base + 60)
        let older = (base + 60)..<(base + 100)

        try lab.setLink("site1", "site2", .refuse)
        #expect(try await client.postUntilAccepted(ndjson("site1/voice", newer)).json["accepted"] as? Int == 60)
        try lab.killCollector("site1-b")

        // What an older collector appended: each event's canonical NDJSON line, one frame.
        let parsed = EventParser().parse(body: [UInt8](ndjson("site1/voice", older)))
        #expect(parsed.rejected.isEmpty)
        let directory = try lab.queueDirectory(collector: "site1-b")
        let queue = try DiskQueue(DiskQueueConfiguration(directory: directory))
        _ = try await queue.append(
            parsed.events.map { e in Array(e.json.utf8) }, oldestTimestamp: parsed.events[0].ts.millisecondsSinceEpoch)
        queue.close()

        let dump = try await Processes.output([TestLab.executable, "queue", "dump", directory], timeout: 120)
        #expect(dump.status == 0, "\(dump.text)")
        let expected = EventParser().parse(body: [UInt8](ndjson("site1/voice", newer.lowerBound..<older.upperBound)))
        let dumped = dump.text.split(separator: "\n").map(String.init).suffix(100)
        #expect(Array(dumped) == expected.events.map(\.json), "the dump prints both formats as the events' NDJSON")

        try await lab.up(try Self.options(lab))
        try lab.setLink("site1", "site2", .up)
        try await Self.waitUntil("the upgraded collector drains both formats") { try await Self.drained(client) }
        let all = (newer.lowerBound..<older.upperBound).map(Int64.init)
        #expect(try await stored(lab, base) == all, "every event of both formats shipped")

        // A source retries the older events: the restarted collector cannot know them (CONTRACT
        // 2), so it queues them again, now as rows; the IDB still holds one copy of each.
        let retry = try await client.postUntilAccepted(ndjson("site1/voice", older))
        #expect(retry.json["accepted"] as? Int == 40, "\(retry.json)")
        try await Self.waitUntil("the retry ships") { try await Self.drained(client) }
        #expect(try await stored(lab, base) == all)
    }

    private func stored(_ lab: LocalLab, _ base: Int) async throws -> [Int64] {
        try await Self.stored(lab, site: "site2", idb: "idb_site1_b", source: "site1/voice").filter {
            $0 >= base && $0 < base + 100_000
        }
    }
}
