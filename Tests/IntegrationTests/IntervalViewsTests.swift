import Demo
import EventModel
import Extractor
import Foundation
import Lab
import PostgresClient
import Testing
import Topology

/// CONTRACT 5.1's views, kept by the extractor cycle by cycle, against recounts from the raw
/// events (``ViewRecount``'s, which find periods another way than the mart does) in three zones:
/// UTC, America/New_York across its 2026 fall-back (a 25-hour day, the repeated 01:00 hour) and
/// Asia/Kolkata (half-hour offset: its own sub-hour, hour and day boundaries); plus an ISO week
/// and a month across a year boundary.
@Suite(.serialized)
struct IntervalViewsTests {
    static let zones = ["UTC", "America/New_York", "Asia/Kolkata"]

    /// Catches a period computed from a fixed offset (the fall-back day, Kolkata's half hours), a
    /// week that starts on Sunday or a month in UTC, an aggregate that drifts from its facts as
    /// out-of-order batches are recomputed (a longest wait that outlives the offer that held it),
    /// the per-queue SLA or the short abandons miscounted, not-ready time under the wrong reason, a
    /// session that runs past a logout or a second login, and a rebuild for other zones that
    /// disagrees with what the cycles kept; and an extractor that starts with a zone PostgreSQL
    /// does not know.
    @Test func everyIntervalViewMatchesARecountInEachZone() async throws {
        let rig = try await ExtractorRig.start(offset: 4100, name: "interval-views", lateData: .backfill)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("intervals-\(getpid()).ndjson").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        // 00:30 EDT on the day New York falls back (06:00 UTC), for about three hours.
        let gen = try await Processes.output([
            TestLab.executable, "gen", "--count", "5000", "--seed", "31", "--rate", "0.5", "--start",
            "2026-11-01T04:30:00Z", "--out", file,
        ])
        #expect(gen.status == 0, "\(gen.text)")
        var lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
        var seq = lines.compactMap { Int64(RawEvents.field($0, "seq") ?? "") }.max()!
        func event(_ ts: String, _ type: String, _ extra: String) -> String {
            seq += 1
            return #"{"source":"site1/voice","seq":\#(seq),"ts":"\#(ts)","type":"\#(type)"\#(extra)}"#
        }
        func call(_ id: String, queue: String, at: String, wait: Int, answered: Bool) -> [String] {
            let t0 = EventModel.Timestamp(rfc3339: at)!.millisecondsSinceEpoch
            func ts(_ s: Int) -> String { EventModel.Timestamp(millisecondsSinceEpoch: t0 + Int64(s) * 1000).rfc3339 }
            return [
                event(ts(0), "interaction.created", #","interaction":"\#(id)","media":"voice""#),
                event(ts(1), "interaction.queued", #","interaction":"\#(id)","queue":"\#(queue)""#),
                answered
                    ? event(ts(1 + wait), "interaction.answered", #","interaction":"\#(id)","agent":"edge-agent""#)
                    : event(ts(1 + wait), "interaction.abandoned", #","interaction":"\#(id)""#),
                event(ts(2 + wait + (answered ? 60 : 0)), "interaction.ended", #","interaction":"\#(id)""#),
            ]
        }
        func agent(_ ts: String, _ type: String, reason: String? = nil) -> String {
            event(ts, "agent.\(type)", #","agent":"edge-agent""# + (reason.map { #","reason":"\#($0)""# } ?? ""))
        }
        // At the edges: 23:30 EST on the 25-hour Sunday (UTC: Monday, another ISO week); just
        // after midnight in Kolkata; a week and a month across the new year. Short abandons and
        // billing's own SLA (30 s; the global one is 20 s) at 3, 25 and 25 s.
        lines += [agent("2026-11-02T04:20:00Z", "login"), agent("2026-11-02T04:21:00Z", "ready")]
        lines += call("edge-ny", queue: "edge-ny", at: "2026-11-02T04:30:00Z", wait: 25, answered: true)
        lines += call("edge-short", queue: "billing", at: "2026-11-02T04:35:00Z", wait: 3, answered: false)
        lines += [
            agent("2026-11-02T04:40:00Z", "not_ready", reason: "break"), agent("2026-11-02T04:50:00Z", "not_ready"),
            agent("2026-11-02T05:00:00Z", "ready"), agent("2026-11-02T05:10:00Z", "logout"),
            agent("2026-11-02T18:20:00Z", "login"), agent("2026-11-02T18:25:00Z", "not_ready", reason: "training"),
        ]
        lines += call("edge-kolkata", queue: "billing", at: "2026-11-02T18:35:00Z", wait: 25, answered: true)
        lines += [agent("2026-11-02T18:45:00Z", "login"), agent("2026-11-02T18:46:00Z", "ready")]
        lines += call("edge-year", queue: "edge-year", at: "2027-01-01T00:05:00Z", wait: 40, answered: false)
        lines += [agent("2027-01-01T00:10:00Z", "logout")]
        let end = "2027-01-01T00:20:00Z"
        for source in ["site1/voice", "site2/voice"] {
            let top = lines.filter { RawEvents.field($0, "source") == source }
                .compactMap { Int64(RawEvents.field($0, "seq") ?? "") }.max()!
            lines.append(#"{"source":"\#(source)","seq":\#(top + 1),"ts":"\#(end)","type":"heartbeat"}"#)
            seq = Swift.max(seq, top + 1)
        }

        let clock = TestClock(start: 1_798_000_000_000)
        var settings = rig.settings
        settings.clock = { clock.now }
        settings.reporting.timeZones = Self.zones
        settings.reporting.queueSLASeconds = ["billing": 30]
        settings.reporting.shortAbandonSeconds = 5
        // In shuffled chunks, cycles between: interactions recomputed as their events come in
        // out of order, the aggregates moved by each difference.
        var rng = SystemRandomNumberGenerator()
        let extractor = Extractor(settings: settings, logger: rig.lab.logger)
        for pair in ["site1", "site2"] {
            let part = lines.filter { RawEvents.field($0, "source") == "\(pair)/voice" }
            let chunks = stride(from: 0, to: part.count, by: 400).map { Array(part[$0..<min($0 + 400, part.count)]) }
            for chunk in chunks.shuffled(using: &rng) {
                try await rig.post(chunk, to: ["\(pair)-a", "\(pair)-b"])
                _ = try await extractor.cycle()
            }
        }
        for _ in 0..<20 where try await extractor.cycle().extracted > 0 {}
        // A longest wait taken back: an offer resolved first by a late answer (500 s) and then,
        // once the events between arrive, by the earlier one (10 s). Its period's longest wait is
        // then another offer's (30 s), which neither the old nor the new row says.
        let t0 = EventModel.Timestamp(rfc3339: "2026-11-02T06:00:00Z")!.millisecondsSinceEpoch
        func at(_ s: Int) -> String { EventModel.Timestamp(millisecondsSinceEpoch: t0 + Int64(s) * 1000).rfc3339 }
        let other = call("edge-max-other", queue: "edge-max", at: at(0), wait: 30, answered: true)
        let m = (1...7).map { _ in
            seq += 1; return seq
        }
        func max(_ i: Int, _ s: Int, _ type: String, _ extra: String) -> String {
            #"{"source":"site1/voice","seq":\#(m[i]),"ts":"\#(at(s))","type":"interaction.\#(type)","interaction":"edge-max"\#(extra)}"#
        }
        let first = [
            max(0, 0, "created", #","media":"voice""#), max(1, 1, "queued", #","queue":"edge-max""#),
            max(5, 501, "answered", #","agent":"edge-agent""#), max(6, 600, "ended", ""),
        ]
        let between = [
            max(2, 11, "answered", #","agent":"edge-agent""#), max(3, 15, "transferred", #","agent":"edge-agent""#),
            max(4, 21, "queued", #","queue":"edge-max-2""#),
        ]
        for part in [other + first, between] {
            try await rig.post(part, to: ["site1-a", "site1-b"])
            for _ in 0..<5 where try await extractor.cycle().extracted > 0 {}
        }
        lines += other + first + between
        await extractor.close()

        let conn = try await rig.mart()
        let raw = try await RawEvents.load(lines, into: conn)
        try await Self.compare(conn, raw: raw, settings.reporting, end: end)

        // The edges, said directly.
        func periods(_ zone: String, _ level: String, _ queue: String) async throws -> [String] {
            try await RawEvents.dump(
                conn,
                """
                SELECT to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI') FROM report.queue_intervals
                WHERE time_zone = $1 AND level = $2 AND queue = $3
                """, [zone, level, queue])
        }
        #expect(try await periods("America/New_York", "day", "edge-ny") == ["2026-11-01T04:00"])
        #expect(try await periods("America/New_York", "week", "edge-ny") == ["2026-10-26T04:00"])
        #expect(try await periods("UTC", "week", "edge-ny") == ["2026-11-02T00:00"])
        #expect(try await periods("Asia/Kolkata", "day", "billing").contains("2026-11-02T18:30"))
        #expect(try await periods("Asia/Kolkata", "hour", "edge-ny") == ["2026-11-02T04:30"])
        #expect(try await periods("UTC", "week", "edge-year") == ["2026-12-28T00:00"])
        #expect(try await periods("America/New_York", "month", "edge-year") == ["2026-12-01T05:00"])
        // The fall-back night: two local hours called 01:00, each its own row.
        let repeated = try await RawEvents.dump(
            conn,
            """
            SELECT count(DISTINCT period_start) FROM report.queue_intervals WHERE time_zone = 'America/New_York'
              AND level = 'hour' AND period_start IN ('2026-11-01T05:00Z', '2026-11-01T06:00Z')
            """)
        #expect(repeated == ["2"])
        // UTC hours are queue_hourly's rows (CONTRACT 5.1).
        let hourly = try await RawEvents.dump(conn, "SELECT * FROM report.queue_hourly ORDER BY 1, 2, 3")
        let utcHours = try await RawEvents.dump(
            conn,
            """
            SELECT period_start, queue, media, offered, answered, abandoned, answered_within_sla, avg_wait_ms,
                   avg_talk_ms FROM report.queue_intervals WHERE time_zone = 'UTC' AND level = 'hour' ORDER BY 1, 2, 3
            """)
        #expect(hourly == utcHours)
        let sessions = try await RawEvents.dump(
            conn,
            """
            SELECT to_char(login_at AT TIME ZONE 'UTC', 'MM-DD"T"HH24:MI'), to_char(logout_at AT TIME ZONE 'UTC', 'MM-DD"T"HH24:MI'),
                   ready_ms, not_ready_ms, answered FROM report.agent_sessions WHERE agent = 'edge-agent' ORDER BY login_at
            """)
        #expect(
            sessions == [
                "11-02T04:20|11-02T05:10|1740000|1200000|1", "11-02T18:20|11-02T18:45|0|1200000|1",
                "11-02T18:45|01-01T00:10|5117040000|0|0",
            ], "\(sessions)")

        // The command line, as a reporting team runs it: numbers as numbers, times in RFC 3339
        // with the zone's offset; a level or a zone the mart does not keep refused by name.
        var topology = try Topology.load(path: rig.lab.topologyPath(site: "site1"))
        topology.reporting = settings.reporting
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("intervals-\(getpid()).yaml").path
        defer { try? FileManager.default.removeItem(atPath: config) }
        try topology.yaml().write(toFile: config, atomically: true, encoding: .utf8)
        let report = [TestLab.executable, "report", "queue-intervals", "--config", config, "--site", "site1"]
        let out = try await Processes.output(
            report + [
                "--tz", "America/New_York", "--level", "day", "--format", "json", "--from", "2026-11-01T00:00:00-04:00",
                "--to", "2026-11-02T00:00:00-05:00",
            ])
        #expect(out.status == 0, "\(out.text)")
        let rows = try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [[String: Any]] ?? []
        let ny = rows.first { $0["queue"] as? String == "edge-ny" }
        #expect(ny?["period_start"] as? String == "2026-11-01T00:00:00-04:00", "\(String(describing: ny))")
        #expect(ny?["offered"] as? Int == 1 && ny?["avg_wait_ms"] as? Int == 25_000, "\(String(describing: ny))")
        #expect(ny?["media"] as? String == "voice" && rows.allSatisfy { $0["level"] as? String == "day" })
        let badLevel = try await Processes.output(report + ["--level", "minute"])
        #expect(badLevel.status == 2 && badLevel.text.contains("--level minute: must be one of sub_hour, hour, day"))
        let badZone = try await Processes.output(report + ["--tz", "Europe/Paris"])
        #expect(
            badZone.status == 2 && badZone.text.contains("add Europe/Paris to reporting.time_zones"), "\(badZone.text)")

        // A zone PostgreSQL does not know: the extractor refuses to start (exit 2), naming it.
        var mars = topology
        mars.reporting.timeZones = ["UTC", "Mars/Olympus_Mons"]
        try mars.yaml().write(toFile: config, atomically: true, encoding: .utf8)
        let refused = try await Processes.output(
            [TestLab.executable, "extractor", "run", "--config", config, "--site", "site1"], timeout: 60)
        #expect(
            refused.status == 2 && refused.text.contains("reporting.time_zones")
                && refused.text.contains("no zone Mars/Olympus_Mons"), "\(refused.text)")

        // Other zones and a 30-minute sub-hour: the extractor rebuilds the aggregates from the
        // facts, and they agree with the recount as the cycles' did.
        settings.reporting.timeZones = ["UTC", "Asia/Kathmandu"]
        settings.reporting.subHourMinutes = 30
        let rebuilt = Extractor(settings: settings, logger: rig.lab.logger)
        for (pair, source) in [("site1", "site1/voice"), ("site2", "site2/voice")] {
            let top = lines.filter { RawEvents.field($0, "source") == source }
                .compactMap { Int64(RawEvents.field($0, "seq") ?? "") }.max()!
            try await rig.post(
                [#"{"source":"\#(source)","seq":\#(top + 1),"ts":"2027-01-01T00:21:00Z","type":"heartbeat"}"#],
                to: ["\(pair)-a", "\(pair)-b"])
        }
        _ = try await rebuilt.cycle()
        await rebuilt.close()
        let stored = try await RawEvents.dump(conn, "SELECT DISTINCT time_zone FROM mart.agg_queue_interval ORDER BY 1")
        #expect(stored == ["Asia/Kathmandu", "UTC"])
        try await Self.compare(conn, raw: raw, settings.reporting, end: "2027-01-01T00:21:00Z")

        try await conn.execute("DROP SCHEMA raw CASCADE")
        await conn.close()
        try rig.lab.down(remove: true)
    }

    /// Every row of the four views against its recount.
    static func compare(
        _ conn: PostgresConnection, raw: String, _ reporting: Topology.ReportingSettings, end: String
    ) async throws {
        let zones = "{" + reporting.timeZones.joined(separator: ",") + "}"
        let sub = reporting.subHourMinutes
        let queueSLA = ViewRecount.slaJSON(reporting.queueSLASeconds.mapValues { Int64($0) * 1000 })
        let checks: [(String, String, String, [any PostgresBindable])] = [
            (
                "queue_intervals", ViewRecount.queueIntervals(over: raw) + " ORDER BY 1, 2, 3, 4, 5",
                "SELECT * FROM report.queue_intervals ORDER BY 1, 2, 3, 4, 5",
                [zones, sub, Int64(reporting.slaSeconds) * 1000, queueSLA, Int64(reporting.shortAbandonSeconds) * 1000]
            ),
            (
                "agent_intervals", ViewRecount.agentIntervals(over: raw) + " ORDER BY 1, 2, 3, 4",
                "SELECT * FROM report.agent_intervals ORDER BY 1, 2, 3, 4", [zones, sub]
            ),
            (
                "agent_not_ready", ViewRecount.agentNotReady(over: raw) + " ORDER BY 1, 2, 3, 4",
                "SELECT * FROM report.agent_not_ready ORDER BY 1, 2, 3, 4", [zones]
            ),
            (
                "agent_sessions", ViewRecount.agentSessions(over: raw) + " ORDER BY 1, 3",
                "SELECT * FROM report.agent_sessions ORDER BY 1, 3", [end]
            ),
        ]
        for (name, recount, view, binds) in checks {
            let expected = try await RawEvents.dump(conn, recount, binds)
            let actual = try await RawEvents.dump(conn, view)
            #expect(expected.count > 2, "\(name): a recount with rows")
            let missing = Set(expected).subtracting(actual).sorted().prefix(3)
            let extra = Set(actual).subtracting(expected).sorted().prefix(3)
            let same = expected == actual
            #expect(
                same,
                "\(name): \(expected.count) recounted, \(actual.count) in the view; only recounted \(missing), only in the view \(extra)"
            )
        }
    }
}
