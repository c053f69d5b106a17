import EventModel
import EventRows
import PostgresClient

/// The one place HA pairs meet (CONTRACT 6.2): every `(source, seq)` goes into the mart's event
/// layer once, whichever half of its pair delivered it, and however often.
///
/// Within a cycle the first half of a pair is read in full and the second by key, skipping what
/// the first gave and what recent cycles merged (``skipping(_:firstHalves:)``); ``merge(_:)`` then
/// takes each seq once. Across restarts and lagging halves the mart itself decides:
/// ``insert(_:into:completeThrough:)`` copies straight into `mart.event` and, only when a row is
/// already there, goes again through `ON CONFLICT DO NOTHING`.
struct PairMerger: Sendable {
    /// The (source, seq)s merged by the last few committed cycles: a half of a pair that lags
    /// the other re-reads them, and they are dropped here rather than sent again.
    private var recent: [[String: Set<Int64>]] = []
    let memory = 4

    /// One cycle's events, each `(source, seq)` once.
    struct Merged: Sendable {
        var events: [Event] = []
        var attrs: [String?] = []
        /// Every seq the cycle read, per source (merged now or before).
        var seqs: [String: Set<Int64>] = [:]
    }

    /// What a second half's read can skip: the seqs of `source` that this cycle's first halves
    /// gave and that recent cycles merged.
    func skipping(_ source: String, firstHalves: [IDBReader.Batch]) -> Set<Int64> {
        var skip = Set<Int64>()
        for cycle in recent { skip.formUnion(cycle[source] ?? []) }
        for b in firstHalves where b.idb.source == source { skip.formUnion(b.events.lazy.map(\.seq)) }
        return skip
    }

    /// Each `(source, seq)` of `batches` once, less what recent cycles merged.
    func merge(_ batches: [IDBReader.Batch]) -> Merged {
        var known: [String: Set<Int64>] = [:]
        for cycle in recent { for (source, seqs) in cycle { known[source, default: []].formUnion(seqs) } }
        var out = Merged()
        for b in batches {
            for (i, e) in b.events.enumerated() {
                out.seqs[e.source, default: []].insert(e.seq)
                guard known[e.source, default: []].insert(e.seq).inserted else { continue }
                out.events.append(e)
                out.attrs.append(b.attrs[i])
            }
        }
        return out
    }

    /// Remembers what a committed cycle merged (never what a rolled-back one did).
    mutating func committed(_ merged: Merged) {
        recent.append(merged.seqs)
        if recent.count > memory { recent.removeFirst() }
    }

    /// Forgets everything (the mart changed under the extractor: a promotion, a rebuild).
    mutating func forget() { recent.removeAll() }

    static let staging = """
        CREATE TEMP TABLE IF NOT EXISTS event_staging (LIKE mart.event INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
        """
    static let copyEvents = "COPY mart.event (\(EventRows.columns), transformed) FROM STDIN"
    static let copyStaging = "COPY event_staging (\(EventRows.columns), transformed) FROM STDIN"
    static let insertNew = """
        INSERT INTO mart.event (\(EventRows.columns), transformed)
        SELECT \(EventRows.columns), transformed FROM event_staging
        ON CONFLICT (source, seq, ts) DO NOTHING
        """

    /// Writes `merged` into `mart.event` in the caller's transaction, each event marked
    /// transformed when it is complete (`ts ≤ completeThrough`: the cycle transforms it).
    /// Returns how many rows were new.
    static func insert(_ merged: Merged, into c: isolated PostgresConnection, completeThrough t: Int64?) throws -> Int {
        guard !merged.events.isEmpty else { return 0 }
        // Encoded as it is sent: the server parses one chunk while the next is encoded.
        let encode = { (sink: inout CopySink) throws in
            var row = CopyRow()
            for (i, e) in merged.events.enumerated() {
                EventRows.encode(
                    e, attrs: .some(merged.attrs[i]), transformed: t.map { e.ts.millisecondsSinceEpoch <= $0 } ?? false,
                    into: &row)
                try sink.write(row)
            }
        }
        try c.execute("SAVEPOINT merge")
        do {
            let n = try c.copyIn(copyEvents, encode)
            try c.execute("RELEASE SAVEPOINT merge")
            return n
        } catch let error as PostgresError where error.sqlState == "23505" {
            // Some are there already (the other half delivered them before a restart).
            try c.execute("ROLLBACK TO SAVEPOINT merge")
            try c.execute(staging)
            _ = try c.copyIn(copyStaging, encode)
            return try c.execute(insertNew).affectedRows
        }
    }
}
