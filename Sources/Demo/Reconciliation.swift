import Foundation
import PostgresClient

/// One act's reconciliation: what the ledger says was acknowledged (or, for a failed site's
/// sources, what its surviving IDBs hold) beside what the reporting mart holds, up to a cutoff
/// the mart is complete through.
public struct Reconciliation: Codable, Sendable {
    public struct Gap: Codable, Sendable, Equatable {
        public var source: String
        public var from: String
        public var to: String?
        public var backfilled: Bool
    }

    public var mart: String
    public var cutoff: String
    /// Events expected in the mart (heartbeats aside).
    public var expected = 0
    public var inMart = 0
    /// Expected, not in the mart, and not inside a gap the mart reports: must be 0.
    public var lost = 0
    /// Expected, not in the mart, inside a gap the mart reports (the documented loss).
    public var inKnownGaps = 0
    /// Rows of `queue_hourly`, `agent_daily` and `interactions` that differ from a recount from
    /// the event layer (``ViewRecount``): what an event extracted twice would damage. Must be 0.
    public var miscounted = ViewRecount.Mismatches()
    /// In the mart, never sent.
    public var unexpected = 0
    public var gaps: [Gap] = []
    /// Acknowledged only by a failed site's collectors, not in any surviving IDB: lost with that
    /// site's disks (CONTRACT 6.1 — the one loss it allows).
    public var lostWithFailedSite = 0
    /// When the mart was not complete through the cutoff in time.
    public var incomplete: String?

    public var line: String {
        var parts = [
            "sent \(expected)", "in mart \(inMart)", "lost \(lost)", "miscounted \(miscounted.total)",
            "unexpected \(unexpected)",
        ]
        let open = gaps.filter { !$0.backfilled }
        parts.append(
            gaps.isEmpty
                ? "known gaps none"
                : "known gaps \(gaps.count) (\(open.count) open\(inKnownGaps > 0 ? ", \(inKnownGaps) events inside" : ""), \(gaps.count - open.count) backfilled)"
        )
        if lostWithFailedSite > 0 { parts.append("\(lostWithFailedSite) only on the failed site's disks") }
        if let incomplete { parts.append("INCOMPLETE: \(incomplete)") }
        return parts.joined(separator: " · ")
    }

    /// Reconciles `mart` with the expected events up to `cutoff` (ms), after waiting (at most
    /// `timeout` s) until the mart's extractor is complete through it.
    /// - Parameters:
    ///   - expected: source → seq → event time (ms), heartbeats aside.
    ///   - sentAtAll: every (source, seq) ever sent, acknowledged or not — asked for after the
    ///     mart was read, so that an event sent late (stamped before the cutoff, posted after it)
    ///     and already in the mart is known as sent.
    ///   - writer: the site whose extractor row tells how far the mart is complete.
    ///   - slaMs: the deployment's service level, for the views' recount.
    static func run(
        mart: PostgresConnection, martName: String, writer: String, expected: [String: [Int64: Int64]],
        sentAtAll: () -> [String: Set<Int64>], cutoff: Int64, slaMs: Int64, timeout: Double = 120
    ) async throws -> Reconciliation {
        let cutoffTs = PostgresTimestamp(millisecondsSinceEpoch: cutoff)
        var r = Reconciliation(
            mart: martName,
            cutoff: ISO8601DateFormatter.string(
                from: Date(timeIntervalSince1970: Double(cutoff) / 1000), timeZone: .gmt,
                formatOptions: [.withInternetDateTime, .withFractionalSeconds]))
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let done = try await mart.query(
                "SELECT complete_through >= $1 FROM control.extractor WHERE site = $2", [cutoffTs, writer]
            ).first?.decode(0, as: Bool?.self)
            if done == true { break }
            guard Date() < deadline else {
                r.incomplete = "the mart was not complete through the cutoff within \(Int(timeout)) s"
                break
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        let sources = expected.keys.sorted()
        var inMart: [String: Set<Int64>] = [:]
        for row in try await mart.query(
            "SELECT source, seq FROM mart.event WHERE ts <= $1 AND type <> 'heartbeat' AND source = ANY($2::text[])",
            [cutoffTs, "{" + sources.joined(separator: ",") + "}"])
        {
            inMart[row[0]!, default: []].insert(try row.decode(1, as: Int64.self))
        }
        r.gaps = try await mart.query(
            "SELECT source, gap_from::text, gap_to::text, backfilled_at IS NOT NULL FROM report.data_gaps ORDER BY gap_from"
        ).map { Gap(source: $0[0]!, from: $0[1]!, to: $0[2], backfilled: try $0.decode(3, as: Bool.self)) }
        let openGaps = try await mart.query(
            """
            SELECT source, (extract(epoch FROM gap_from) * 1000)::bigint,
                   (extract(epoch FROM COALESCE(gap_to, 'infinity'::timestamptz)) * 1000)::float8
            FROM control.data_gaps WHERE backfilled_at IS NULL
            """
        ).map {
            (try $0.decode(0, as: String.self), try $0.decode(1, as: Int64.self), try $0.decode(2, as: Double.self))
        }
        let sentAtAll = sentAtAll()
        for source in sources {
            let want = expected[source] ?? [:]
            let have = inMart[source] ?? []
            r.expected += want.count
            r.inMart += have.count
            for (seq, ts) in want where !have.contains(seq) {
                let inGap = openGaps.contains { $0.0 == source && ts >= $0.1 && Double(ts) <= $0.2 }
                if inGap { r.inKnownGaps += 1 } else { r.lost += 1 }
            }
            let sent = sentAtAll[source] ?? []
            r.unexpected += have.filter { want[$0] == nil && !sent.contains($0) }.count
        }
        r.miscounted = try await ViewRecount.mismatches(mart, slaMs: slaMs)
        return r
    }
}
