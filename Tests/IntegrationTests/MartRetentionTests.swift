import EventModel
import Extractor
import Foundation
import Lab
import PostgresClient
import Testing
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `bcpipe mart purge` as an operator runs it, on an active-standby lab with traffic and the
/// standby following: old events backfilled into the oldest monthly partition, then purged from
/// both marts by dropping that partition.
@Suite(.serialized)
struct MartRetentionTests {
    /// Catches a purge that deletes rows instead of dropping partitions, drops data still inside
    /// retention, purges only the mart it was pointed at (the standby keeps the old rows), drops
    /// anything under a purge hold or after one mart refused, or leaves the standby no longer
    /// following (a dropped partition breaking replication of new rows).
    @Test func purgeDropsOldPartitionsFromEveryMartAndNeverUnderAHold() async throws {
        let lab = try TestLab.makeLab(name: "mart-retention")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 4200
        o.stuckThreshold = 3600
        o.traffic = 20
        try await lab.up(o)
        let active = try await TestLab.connect(lab, site: "site1", database: "mart")
        let standby = try await TestLab.connect(lab, site: "site2", database: "mart")

        // The oldest partition the migration made (two months back) and a retention that
        // reaches just past its end: it, and nothing newer, is older than retention.
        let bounds = try await active.query(
            """
            SELECT to_char(m + interval '5 days 10 hours', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   floor(extract(epoch FROM now() - (m + interval '1 month')) / 86400)::int,
                   'event' || to_char(m, '"_p"YYYY_MM')
            FROM (SELECT date_trunc('month', (now() - interval '2 months') AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m) x
            """)
        let oldAt = try #require(bounds.first?[0])
        let martDays = try bounds[0].decode(1, as: Int.self)
        let oldPartition = try #require(bounds.first?[2])
        let t0 = EventModel.Timestamp(rfc3339: oldAt)!.millisecondsSinceEpoch
        func ts(_ s: Int64) -> String { EventModel.Timestamp(millisecondsSinceEpoch: t0 + s * 1000).rfc3339 }
        let old = [
            #"{"source":"site1/voice","seq":1001,"ts":"\#(ts(0))","type":"interaction.created","interaction":"old-1","media":"voice"}"#,
            #"{"source":"site1/voice","seq":1002,"ts":"\#(ts(1))","type":"interaction.queued","interaction":"old-1","queue":"sales"}"#,
            #"{"source":"site1/voice","seq":1003,"ts":"\#(ts(9))","type":"interaction.answered","interaction":"old-1","agent":"old-agent"}"#,
            #"{"source":"site1/voice","seq":1004,"ts":"\#(ts(99))","type":"interaction.ended","interaction":"old-1"}"#,
        ]
        let view = try Topology.load(path: lab.topologyPath(site: "site1"))
        for name in ["site1-a", "site1-b"] {
            var request = URLRequest(url: URL(string: "http://\(view.collector(named: name)!.listen)/v1/events")!)
            request.httpMethod = "POST"
            request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
            request.httpBody = Data((old.joined(separator: "\n") + "\n").utf8)
            let (_, response) = try await URLSession.shared.data(for: request)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
        }
        let oldRows = "SELECT count(*) FROM mart.event WHERE source = 'site1/voice' AND seq BETWEEN 1001 AND 1004"
        func count(_ c: PostgresConnection, _ sql: String) async throws -> Int {
            try await c.query(sql)[0].decode(0, as: Int.self)
        }
        try await CollectorTests.waitUntil("the backfill is in both marts", timeout: 90) {
            let (a, b) = (try await count(active, oldRows), try await count(standby, oldRows))
            return a == 4 && b == 4
        }
        let inPartition = try await count(active, "SELECT count(*) FROM mart.\(oldPartition)")
        #expect(inPartition == 4, "the old events are in their month's partition, not the default one")

        // The operator's topology file, with retention.
        var topology = try Topology.load(path: lab.topologyPath)
        topology.retention.martDays = martDays
        let config = lab.directory + "/retention.yaml"
        try topology.yaml().write(toFile: config, atomically: true, encoding: .utf8)
        let purge = ["mart", "purge", "--config", config]

        let dry = try await DisasterRecoveryTests.bcpipe(purge + ["--dry-run"])
        #expect(dry.status == 0, "\(dry.text)")
        for site in ["site1", "site2"] {
            #expect(dry.text.contains("\(site)/mart: would drop mart.\(oldPartition) "), "\(dry.text)")
        }
        #expect(!dry.text.contains("default"), "the default partition is never dropped: \(dry.text)")
        #expect(try await count(standby, oldRows) == 4, "a dry run drops nothing")

        // Under a purge hold (set on the active mart, replicated to the standby): refused, exit
        // 3, and nothing dropped on either mart.
        try await active.execute("INSERT INTO control.purge_hold (reason, set_by) VALUES ('audit', 'retention test')")
        try await CollectorTests.waitUntil("the hold reaches the standby", timeout: 60) {
            try await count(standby, "SELECT count(*) FROM control.purge_hold WHERE released_at IS NULL") == 1
        }
        let held = try await DisasterRecoveryTests.bcpipe(purge)
        #expect(held.status == 3 && held.text.contains("purge hold") && held.text.contains("audit"), "\(held.text)")
        let (a, b) = (try await count(active, oldRows), try await count(standby, oldRows))
        #expect(a == 4 && b == 4, "nothing dropped under the hold")
        try await active.execute("UPDATE control.purge_hold SET released_at = now() WHERE released_at IS NULL")
        try await CollectorTests.waitUntil("the release reaches the standby", timeout: 60) {
            try await count(standby, "SELECT count(*) FROM control.purge_hold WHERE released_at IS NULL") == 0
        }

        let purged = try await DisasterRecoveryTests.bcpipe(purge)
        #expect(purged.status == 0, "\(purged.text)")
        #expect(purged.text.contains("site1/mart: dropped mart.\(oldPartition) "), "\(purged.text)")
        for c in [active, standby] {
            #expect(try await count(c, oldRows) == 0)
            #expect(try await count(c, "SELECT count(*) FROM pg_class WHERE relname = '\(oldPartition)'") == 0)
            #expect(try await count(c, "SELECT count(*) FROM mart.event") > 0, "the events inside retention stay")
        }
        // The aggregates keep the old hour (events and facts leave; report rows stay).
        #expect(
            try await count(active, "SELECT count(*) FROM report.queue_hourly WHERE hour < now() - interval '1 month'")
                > 0)
        // Replication goes on: the standby catches up with what the active writes after.
        let after = try await active.query("SELECT max(seq) FROM mart.event WHERE source = 'site2/voice'")[0].decode(
            0, as: Int64.self)
        try await CollectorTests.waitUntil("the standby follows after the purge", timeout: 90) {
            try await standby.query("SELECT max(seq) FROM mart.event WHERE source = 'site2/voice'")[0].decode(
                0, as: Int64?.self) ?? 0 > after
        }
        let again = try await DisasterRecoveryTests.bcpipe(purge)
        #expect(again.status == 0 && again.text.contains("nothing older than \(martDays) days"), "\(again.text)")
        await active.close()
        await standby.close()
        try lab.down(remove: true)
    }

    /// Catches an extractor that never purges (retention left to the operator alone), one that
    /// purges under a purge hold or during a return to normal, and one that purges partitions
    /// still inside retention.
    @Test func theExtractorPurgesOnItsOwnByTheSameRules() async throws {
        let rig = try await ExtractorRig.start(offset: 4300, name: "extractor-retention")
        let mart = try await rig.mart()
        let bounds = try await mart.query(
            """
            SELECT to_char(m + interval '3 days', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   floor(extract(epoch FROM now() - (m + interval '1 month')) / 86400)::int,
                   'event' || to_char(m, '"_p"YYYY_MM'), 'fact_interaction' || to_char(m, '"_p"YYYY_MM')
            FROM (SELECT date_trunc('month', (now() - interval '2 months') AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m) x
            """)
        let (oldAt, martDays) = (bounds[0][0]!, try bounds[0].decode(1, as: Int.self))
        let (events, facts) = (bounds[0][2]!, bounds[0][3]!)
        let now = EventModel.Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)).rfc3339
        var lines: [String] = []
        for (i, source) in ["site1/voice", "site2/voice"].enumerated() {
            lines = [
                #"{"source":"\#(source)","seq":1,"ts":"\#(oldAt)","type":"interaction.created","interaction":"old-\#(i)","media":"chat"}"#,
                #"{"source":"\#(source)","seq":2,"ts":"\#(now)","type":"heartbeat"}"#,
            ]
            let pair = String(source.prefix(5))
            try await rig.post(lines, to: ["\(pair)-a", "\(pair)-b"])
        }
        var settings = rig.settings
        settings.retention.martDays = martDays
        let extractor = Extractor(settings: settings, logger: rig.lab.logger)
        for _ in 0..<10 where try await extractor.cycle().extracted > 0 {}
        func exists(_ table: String) async throws -> Bool {
            try await mart.query("SELECT to_regclass('mart.' || $1) IS NOT NULL", [table])[0].decode(0, as: Bool.self)
        }
        func oldRows() async throws -> Int {
            try await mart.query("SELECT count(*) FROM mart.event WHERE interaction LIKE 'old-%'")[0].decode(
                0, as: Int.self)
        }
        let (before, eventsThere, factsThere) = (try await oldRows(), try await exists(events), try await exists(facts))
        #expect(before == 2 && eventsThere && factsThere)

        try await mart.execute("INSERT INTO control.purge_hold (reason, set_by) VALUES ('audit', 'retention test')")
        await extractor.maintain()
        #expect(try await oldRows() == 2, "nothing purged under the hold")
        try await mart.execute("UPDATE control.purge_hold SET released_at = now()")
        // During a return to normal (its copy may be reading this mart): refused too.
        try await mart.execute("UPDATE control.deployment SET phase = 'return-to-normal'")
        await #expect(throws: SafetyRefusal.self) {
            try await MartRetention.purge(mart, martDays: martDays, dryRun: false)
        }
        await extractor.maintain()
        #expect(try await oldRows() == 2, "nothing purged during a return to normal")
        try await mart.execute("UPDATE control.deployment SET phase = 'normal'")
        await extractor.maintain()
        let (eventsLeft, factsLeft) = (try await exists(events), try await exists(facts))
        #expect(!eventsLeft && !factsLeft, "the old month's partitions dropped")
        #expect(try await oldRows() == 0)
        let kept = try await mart.query(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'mart.event'::regclass")[0].decode(0, as: Int.self)
        #expect(kept >= 5, "this month's, last month's and the months ahead stay (\(kept) partitions)")
        await extractor.close()
        await mart.close()
        try rig.lab.down(remove: true)
    }
}
