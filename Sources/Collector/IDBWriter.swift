import EventModel
import Foundation
import Logging
import PostgresClient

/// How events go into an IDB: COPY into a session staging table, then one
/// `INSERT … ON CONFLICT (source, seq) DO NOTHING`, the per-source checkpoint (heartbeats
/// included) and the collector's ship position, all in one transaction.
public enum IDBWriter {
    /// The columns of `idb.events` a shipper copies, in COPY order.
    public static let columns = "source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs"

    /// Encodes an event as one COPY text row of ``columns``.
    public static func encode(_ e: Event, into row: inout CopyRow) {
        row.reset()
        row.append(e.source)
        row.append(e.seq)
        row.append(e.ts.rfc3339)
        row.append(e.type.rawValue)
        row.append(e.interaction)
        row.append(e.media?.rawValue)
        row.append(e.direction?.rawValue)
        row.append(e.queue)
        row.append(e.agent)
        row.append(e.reason)
        row.append(e.attrs.isEmpty ? nil : e.attrs.json)
        row.end()
    }

    static let createStaging = """
        CREATE TEMP TABLE IF NOT EXISTS bcpipe_staging (
            source text, seq bigint, ts timestamptz, type text, interaction text, media text,
            direction text, queue text, agent text, reason text, attrs jsonb
        ) ON COMMIT DELETE ROWS
        """
    static let insertEvents = """
        INSERT INTO idb.events (source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs)
        SELECT source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs
        FROM bcpipe_staging WHERE type <> 'heartbeat' ORDER BY source, seq
        ON CONFLICT (source, seq) DO NOTHING
        """
    static let upsertCheckpoint = """
        INSERT INTO idb.source_checkpoint (source, max_seq, max_ts)
        SELECT source, max(seq), max(ts) FROM bcpipe_staging GROUP BY source
        ON CONFLICT (source) DO UPDATE SET
            max_seq = GREATEST(idb.source_checkpoint.max_seq, EXCLUDED.max_seq),
            max_ts = GREATEST(idb.source_checkpoint.max_ts, EXCLUDED.max_ts),
            ingest_id = nextval('idb.ingest_seq'),
            updated_at = now()
        """
    static let upsertPosition = """
        INSERT INTO idb.ship_position (collector, segment, frame_offset, shipped_seq, shipped_ts)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (collector) DO UPDATE SET segment = $2, frame_offset = $3,
            shipped_seq = GREATEST(idb.ship_position.shipped_seq, $4),
            shipped_ts = GREATEST(idb.ship_position.shipped_ts, $5), updated_at = now()
        """
    /// One shipper per IDB: the ingest sequence is then the commit order the extractor relies on.
    static let tryLock = "SELECT pg_try_advisory_lock(hashtext('bcpipe.shipper.' || current_database()))"

    /// Prepares a session: takes the IDB's shipper lock (false if another shipper holds it) and
    /// creates the staging table.
    public static func prepare(_ conn: PostgresConnection) async throws -> Bool {
        guard try await conn.query(tryLock)[0].decode(0, as: Bool.self) else { return false }
        try await conn.execute(createStaging)
        return true
    }

    /// What one shipped transaction did.
    public struct Shipped: Sendable {
        public var copied: Int
        public var inserted: Int
    }

    /// Ships `events` in one transaction and records `position` for `collector`.
    public static func ship(
        _ events: [Event], on conn: PostgresConnection, collector: String, segment: UInt64, offset: Int
    ) async throws -> Shipped {
        guard let last = events.max(by: { $0.seq < $1.seq }) else { return Shipped(copied: 0, inserted: 0) }
        let maxTs = events.map(\.ts.millisecondsSinceEpoch).max()!
        let source = events[0].source
        return try await conn.transaction { c in
            let copied = try c.copyIn("COPY bcpipe_staging (\(columns)) FROM STDIN") { sink in
                var row = CopyRow()
                for e in events {
                    encode(e, into: &row)
                    try sink.write(row)
                }
            }
            let inserted = try await c.query(insertEvents).affectedRows
            try await c.query(upsertCheckpoint)
            try await c.query(
                upsertPosition,
                [
                    collector, Int64(bitPattern: segment), offset, last.seq,
                    PostgresTimestamp(millisecondsSinceEpoch: maxTs),
                ])
            try await c.query("SELECT pg_notify('idb_events', $1)", [source])
            return Shipped(copied: copied, inserted: inserted)
        }
    }

    /// The highest seq of `source` the IDB holds (heartbeats included), if any.
    public static func checkpoint(_ conn: PostgresConnection, source: String) async throws -> Int64? {
        let rows = try await conn.query("SELECT max_seq FROM idb.source_checkpoint WHERE source = $1", [source])
        return try rows.first?.decode(0, as: Int64.self)
    }
}
