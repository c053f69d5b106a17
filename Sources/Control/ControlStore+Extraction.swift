import PostgresClient

/// The extractor's bookkeeping of each cycle (`control.watermark`, `control.source_state`,
/// `control.data_gaps`, `control.extractor`), written in the cycle's own transaction: use a
/// store on that transaction's connection.
extension ControlStore {
    /// An IDB's watermark for one source: the last ingest id extracted.
    public struct Watermark: Sendable, Equatable {
        public var site: String
        public var database: String
        public var source: String
        public var lastIngestID: Int64
    }

    public func watermarks() async throws -> [Watermark] {
        try await connection.query(
            "SELECT idb_site, idb_database, source, last_ingest_id FROM control.watermark"
        ).map {
            Watermark(
                site: $0[0] ?? "", database: $0[1] ?? "", source: $0[2] ?? "",
                lastIngestID: try $0.decode(3, as: Int64.self))
        }
    }

    /// A source as the mart recorded it (times in ms since the epoch).
    public struct RecordedSource: Sendable, Equatable {
        public var source: String
        public var availableThrough: Int64?
        public var lastAdvancedAt: Int64?
        /// A ``SourceState`` raw value.
        public var state: String
        public var discardAfter: Int64?
        public var discardBefore: Int64?
    }

    /// Every source's row, locked (`FOR UPDATE`) until the cycle's transaction ends.
    public func sourcesForUpdate() async throws -> [RecordedSource] {
        try await connection.query(
            """
            SELECT source, extract(epoch FROM COALESCE(available_through, complete_through)) * 1000,
                   extract(epoch FROM last_advanced_at) * 1000, state,
                   extract(epoch FROM discard_after) * 1000, extract(epoch FROM discard_before) * 1000
            FROM control.source_state FOR UPDATE
            """
        ).map { row in
            let ms = { (i: Int) throws -> Int64? in try row.decode(i, as: Double?.self).map { Int64($0) } }
            return RecordedSource(
                source: try row.decode(0, as: String.self), availableThrough: try ms(1), lastAdvancedAt: try ms(2),
                state: try row.decode(3, as: String.self), discardAfter: try ms(4), discardBefore: try ms(5))
        }
    }

    public func openGap(source: String, from: Int64?, reason: String) async throws {
        try await connection.query(
            "INSERT INTO control.data_gaps (source, gap_from, reason) VALUES ($1, $2, $3)",
            nullable: [source, Self.ts(from), reason])
    }

    /// Closes a source's open gap at `to`; `backfilled`: its events were extracted after all.
    public func closeGap(source: String, to: Int64?, backfilled: Bool) async throws {
        try await connection.query(
            backfilled
                ? "UPDATE control.data_gaps SET gap_to = $2, backfilled_at = now() WHERE source = $1 AND gap_to IS NULL"
                : "UPDATE control.data_gaps SET gap_to = $2 WHERE source = $1 AND gap_to IS NULL",
            nullable: [source, Self.ts(to)])
    }

    /// With `late_data: discard`: the source's events with `ts` in (after, before) are dropped.
    public func setDiscardWindow(source: String, after: Int64?, before: Int64?) async throws {
        try await connection.query(
            "UPDATE control.source_state SET discard_after = $2, discard_before = $3 WHERE source = $1",
            nullable: [source, Self.ts(after), Self.ts(before)])
    }

    /// A source's state, reported completeness and availability after a cycle.
    public func recordSource(
        _ source: String, site: String, state: SourceState, completeThrough: Int64?, lastAdvancedAt: Int64?,
        availableThrough: Int64?
    ) async throws {
        try await connection.query(
            """
            INSERT INTO control.source_state
                (source, site, state, complete_through, last_advanced_at, available_through, stuck_since)
            VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $3 = $7 THEN now() END)
            ON CONFLICT (source) DO UPDATE SET state = EXCLUDED.state, complete_through = EXCLUDED.complete_through,
                last_advanced_at = EXCLUDED.last_advanced_at, available_through = EXCLUDED.available_through,
                stuck_since = CASE WHEN EXCLUDED.state = $7
                                   THEN COALESCE(control.source_state.stuck_since, now()) END,
                updated_at = now()
            """,
            nullable: [
                source, site, state.rawValue, Self.ts(completeThrough), Self.ts(lastAdvancedAt),
                Self.ts(availableThrough), SourceState.stuck.rawValue,
            ])
    }

    /// An IDB's watermark for one source after a cycle read it.
    public func recordWatermark(
        site: String, database: String, source: String, lastIngestID: Int64, maxSeq: Int64?, availableThrough: Int64?
    ) async throws {
        try await connection.query(
            """
            INSERT INTO control.watermark (idb_site, idb_database, source, last_ingest_id, max_seq, available_through)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (idb_site, idb_database, source) DO UPDATE SET last_ingest_id = EXCLUDED.last_ingest_id,
                max_seq = COALESCE(EXCLUDED.max_seq, control.watermark.max_seq),
                available_through = COALESCE(EXCLUDED.available_through, control.watermark.available_through),
                updated_at = now()
            """, nullable: [site, database, source, lastIngestID, maxSeq, Self.ts(availableThrough)])
    }

    /// The extractor's row: one more cycle, under the mart's epoch, complete through `completeThrough`.
    public func recordCycle(site: String, completeThrough: Int64?) async throws {
        try await connection.query(
            """
            INSERT INTO control.extractor (site, epoch, complete_through, cycles)
            VALUES ($1, (SELECT epoch FROM control.deployment), $2, 1)
            ON CONFLICT (site) DO UPDATE SET epoch = EXCLUDED.epoch, complete_through = EXCLUDED.complete_through,
                cycles = control.extractor.cycles + 1, updated_at = now()
            """, nullable: [site, Self.ts(completeThrough)])
    }

    static func ts(_ ms: Int64?) -> PostgresTimestamp? { ms.map { PostgresTimestamp(millisecondsSinceEpoch: $0) } }
}
