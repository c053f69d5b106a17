import EventModel
import EventRows
import Foundation
import PostgresClient

extension Extractor {
    struct CommitResult: Sendable {
        var extracted = 0
        var interactions = 0
        var completeThrough: Int64?
        var states: [String: SourceState] = [:]
        /// Sources whose state changed this cycle: (source, before, after).
        var transitions: [(String, String, SourceState)] = []
        /// Every (source, seq) the cycle read: all are in the mart once it commits.
        var merged: [String: Set<Int64>] = [:]
        var availability: [String: Int64?] = [:]
    }

    struct StoredSource {
        var availableThrough: Int64?
        var lastAdvancedAt: Int64?
        var state: String
        var discardAfter: Int64?
        var discardBefore: Int64?
    }

    static func ts(_ ms: Int64?) -> PostgresTimestamp? { ms.map { PostgresTimestamp(millisecondsSinceEpoch: $0) } }

    /// Everything a cycle writes, in the caller's transaction.
    static func commitCycle(
        _ c: isolated PostgresConnection, settings: ExtractorSettings, reads: [IDBRead], now: Int64
    ) async throws -> CommitResult {
        var result = CommitResult()
        // Source states as they were.
        var stored: [String: StoredSource] = [:]
        for row in try await c.query(
            """
            SELECT source, extract(epoch FROM complete_through) * 1000, extract(epoch FROM last_advanced_at) * 1000, state,
                   extract(epoch FROM discard_after) * 1000, extract(epoch FROM discard_before) * 1000
            FROM control.source_state FOR UPDATE
            """)
        {
            stored[try row.decode(0, as: String.self)] = StoredSource(
                availableThrough: try row.decode(1, as: Double?.self).map { Int64($0) },
                lastAdvancedAt: try row.decode(2, as: Double?.self).map { Int64($0) },
                state: try row.decode(3, as: String.self),
                discardAfter: try row.decode(4, as: Double?.self).map { Int64($0) },
                discardBefore: try row.decode(5, as: Double?.self).map { Int64($0) })
        }

        // Availability per source: the best reachable IDB, never going back.
        var availability: [String: SourceAvailability] = [:]
        for source in settings.sources {
            let old = stored[source.name]
            let fresh = reads.filter { $0.idb.source == source.name }.compactMap(\.availableThrough).max()
            let before = old?.availableThrough
            var a = SourceAvailability(
                source: source.name, availableThrough: before, lastAdvancedAt: old?.lastAdvancedAt ?? now,
                retired: old?.state == "retired")
            if let fresh, fresh > (before ?? .min) {
                a.availableThrough = fresh
                a.lastAdvancedAt = now
                if old?.state == "stuck" {
                    // The source is back at R = now: close its gap (CONTRACT 6.3).
                    let gapFrom = before ?? fresh
                    switch settings.lateData {
                    case .discard:
                        let cut = now - settings.thresholdMs
                        try await c.query(
                            "UPDATE control.data_gaps SET gap_to = $2 WHERE source = $1 AND gap_to IS NULL",
                            nullable: [source.name, ts(max(cut, gapFrom))])
                        if cut > gapFrom {
                            try await c.query(
                                "UPDATE control.source_state SET discard_after = $2, discard_before = $3 WHERE source = $1",
                                nullable: [source.name, ts(gapFrom), ts(cut)])
                            stored[source.name]?.discardAfter = gapFrom
                            stored[source.name]?.discardBefore = cut
                        }
                    case .backfill:
                        try await c.query(
                            "UPDATE control.data_gaps SET gap_to = $2, backfilled_at = now() WHERE source = $1 AND gap_to IS NULL",
                            nullable: [source.name, ts(fresh)])
                    }
                }
            }
            availability[source.name] = a
        }

        // Completeness and stuck sources.
        let ordered = settings.sources.map { availability[$0.name]! }
        let (states, t) = CompletenessWatermark.evaluate(ordered, now: now, thresholdMs: settings.thresholdMs)
        result.states = states
        result.completeThrough = t
        for (name, a) in availability { result.availability[name] = a.availableThrough }
        for source in settings.sources {
            let a = availability[source.name]!
            let state = states[source.name]!
            let before = stored[source.name]?.state ?? "new"
            if before != state.rawValue && !(before == "new" && state == .current) {
                result.transitions.append((source.name, before, state))
            }
            if state == .stuck && stored[source.name]?.state != "stuck" {
                try await c.query(
                    "INSERT INTO control.data_gaps (source, gap_from, reason) VALUES ($1, $2, $3)",
                    nullable: [
                        source.name, ts(a.availableThrough ?? now),
                        "stuck: no data for more than \(settings.thresholdMs / 1000) s (extract-data-stuck-threshold)",
                    ])
            }
            try await c.query(
                """
                INSERT INTO control.source_state (source, site, state, complete_through, last_advanced_at, stuck_since)
                VALUES ($1, $2, $3, $4, $5, CASE WHEN $3 = 'stuck' THEN now() END)
                ON CONFLICT (source) DO UPDATE SET state = EXCLUDED.state, complete_through = EXCLUDED.complete_through,
                    last_advanced_at = EXCLUDED.last_advanced_at,
                    stuck_since = CASE WHEN EXCLUDED.state = 'stuck' THEN COALESCE(control.source_state.stuck_since, now()) END,
                    updated_at = now()
                """,
                nullable: [source.name, source.site, state.rawValue, ts(a.availableThrough), ts(a.lastAdvancedAt)])
        }

        // Merge the IDBs' rows into the event layer (HA pairs meet here: the key is (source, seq)).
        try c.execute(
            """
            CREATE TEMP TABLE IF NOT EXISTS extract_staging (
                source text, seq bigint, ts timestamptz, type text, interaction text, media text, direction text,
                queue text, agent text, reason text, attrs jsonb, transformed boolean) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS fresh (source text, interaction text, agent text, type text, ts timestamptz)
                ON COMMIT DELETE ROWS
            """)
        var rows: [UInt8] = []
        var freshRows: [UInt8] = []
        var row = CopyRow()
        // Both halves of a pair usually hold the same rows: send each (source, seq) once.
        var seen: [String: Set<Int64>] = [:]
        for r in reads {
            for (i, e) in r.events.enumerated() {
                guard seen[e.source, default: []].insert(e.seq).inserted else { continue }
                if let s = stored[e.source], let after = s.discardAfter, let before = s.discardBefore,
                    e.ts.millisecondsSinceEpoch > after, e.ts.millisecondsSinceEpoch < before
                {
                    continue  // late_data: discard — this window of the gap stays lost
                }
                // Events already complete (ts ≤ T) are marked transformed as they go in — the
                // transform below handles them from `fresh` — so only the few that wait are ever
                // updated later.
                EventRows.encode(
                    e, attrs: .some(r.attrs[i]), transformed: t.map { e.ts.millisecondsSinceEpoch <= $0 } ?? false,
                    into: &row)
                rows += row.bytes
                row.reset()
                row.append(e.source)
                row.append(e.interaction)
                row.append(e.agent)
                row.append(e.type.rawValue)
                row.append(e.ts.rfc3339)
                row.end()
                freshRows += row.bytes
            }
            result.merged[r.idb.source, default: []].formUnion(r.events.lazy.map(\.seq))
        }
        let timing = ProcessInfo.processInfo.environment["BCPIPE_EXTRACTOR_TIMING"] != nil
        let mergeStart = Date()
        if !rows.isEmpty {
            let bytes = rows
            let count = seen.values.reduce(0) { $0 + $1.count }
            // Straight into mart.event when none of the rows is there yet (the usual case: the
            // caller drops what it merged in recent cycles); when one is — the other half of a pair
            // delivered it before a restart — through a staging table, ON CONFLICT DO NOTHING.
            try c.execute("SAVEPOINT merge")
            do {
                try c.copyIn("COPY mart.event (\(EventRows.columns), transformed) FROM STDIN") { sink in
                    try sink.write(bytes)
                }
                try c.execute("RELEASE SAVEPOINT merge")
                let fresh = freshRows
                try c.copyIn("COPY fresh FROM STDIN") { sink in try sink.write(fresh) }
                result.extracted = count
            } catch let error as PostgresError where error.sqlState == "23505" {
                try c.execute("ROLLBACK TO SAVEPOINT merge")
                try c.copyIn("COPY extract_staging (\(EventRows.columns), transformed) FROM STDIN") { sink in
                    try sink.write(bytes)
                }
                result.extracted = try await c.query(
                    """
                    WITH ins AS (
                        INSERT INTO mart.event (\(EventRows.columns), transformed)
                        SELECT \(EventRows.columns), transformed FROM extract_staging
                        ON CONFLICT (source, seq) DO NOTHING
                        RETURNING source, interaction, agent, type, ts)
                    INSERT INTO fresh SELECT * FROM ins
                    """
                ).affectedRows
            }
        }
        if timing {
            FileHandle.standardError.write(
                Data("  merge into mart.event: \(Int(Date().timeIntervalSince(mergeStart) * 1000)) ms\n".utf8))
        }
        // Watermarks, in the same transaction as the events they produced.
        for r in reads {
            try await c.query(
                """
                INSERT INTO control.watermark (idb_site, idb_database, source, last_ingest_id, max_seq, available_through)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (idb_site, idb_database, source) DO UPDATE SET last_ingest_id = EXCLUDED.last_ingest_id,
                    max_seq = COALESCE(EXCLUDED.max_seq, control.watermark.max_seq),
                    available_through = COALESCE(EXCLUDED.available_through, control.watermark.available_through),
                    updated_at = now()
                """,
                nullable: [r.idb.site, r.idb.database, r.idb.source, r.lastIngestID, r.maxSeq, ts(r.availableThrough)])
        }

        // Transform what is complete.
        if let t {
            result.interactions = try await transform(c, through: t, slaMs: settings.slaMs, site: settings.site)
        }
        try await c.query(
            """
            INSERT INTO control.extractor (site, epoch, complete_through, cycles) VALUES ($1, (SELECT epoch FROM control.deployment), $2, 1)
            ON CONFLICT (site) DO UPDATE SET epoch = EXCLUDED.epoch, complete_through = EXCLUDED.complete_through,
                cycles = control.extractor.cycles + 1, updated_at = now()
            """, nullable: [settings.site, ts(t)])
        return result
    }
}
