import EventModel
import EventRows
import Foundation
import Logging
import PostgresClient

/// How events go into an IDB: COPY (straight into `idb.events`, or through a staging table
/// and `INSERT … ON CONFLICT (source, seq) DO NOTHING` when some are already there), the
/// per-source checkpoint (heartbeats included) and the collector's ship position, all in one
/// transaction.
public enum IDBWriter {
    /// The columns of `idb.events` a shipper copies, in COPY order.
    public static let columns = EventRows.columns

    /// Encodes an event as one COPY text row of ``columns``.
    public static func encode(_ e: Event, into row: inout CopyRow) {
        EventRows.encode(e, into: &row)
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
        FROM bcpipe_staging ORDER BY source, seq
        ON CONFLICT (source, seq) DO NOTHING
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

    static let upsertCheckpointValues = """
        INSERT INTO idb.source_checkpoint (source, max_seq, max_ts) VALUES ($1, $2, $3)
        ON CONFLICT (source) DO UPDATE SET
            max_seq = GREATEST(idb.source_checkpoint.max_seq, EXCLUDED.max_seq),
            max_ts = GREATEST(idb.source_checkpoint.max_ts, EXCLUDED.max_ts),
            ingest_id = nextval('idb.ingest_seq'),
            updated_at = now()
        """

    /// A batch encoded for COPY, ready to ship.
    public struct Prepared: Sendable {
        public var source: String
        public var rows: [UInt8]
        public var events: Int
        public var maxSeq: Int64
        public var maxTs: Int64
        /// Where the batch ends in the disk queue, and the index after its last event.
        public var end: (segment: UInt64, offset: Int)

        init(source: String, capacity: Int, end: (segment: UInt64, offset: Int)) {
            self.source = source
            rows = []
            rows.reserveCapacity(capacity * 200)
            events = 0
            maxSeq = .min
            maxTs = .min
            self.end = end
        }

        /// Counts one event of the batch (its row, if any, already in `rows`).
        mutating func count(seq: Int64, tsMilliseconds: Int64) {
            events += 1
            maxSeq = Swift.max(maxSeq, seq)
            maxTs = Swift.max(maxTs, tsMilliseconds)
        }
    }

    /// Encodes one source's events; heartbeats only advance the checkpoint.
    public static func prepare(_ events: [Event], segment: UInt64, offset: Int) -> Prepared? {
        guard let source = events.first?.source else { return nil }
        var p = Prepared(source: source, capacity: events.count, end: (segment, offset))
        var row = CopyRow()
        for e in events {
            p.count(seq: e.seq, tsMilliseconds: e.ts.millisecondsSinceEpoch)
            guard e.type != .heartbeat else { continue }
            encode(e, into: &row)
            p.rows += row.bytes
        }
        return p
    }

    /// Builds a batch of `source` from queued records (``QueueRecord``): format 2 rows are copied
    /// as stored, without parsing the events again. A record that cannot be read is passed to
    /// `unreadable` and left out; nil when no record could be read.
    public static func prepare(
        records: some Collection<[UInt8]>, source: String, segment: UInt64, offset: Int,
        unreadable: (QueueRecordError) -> Void
    ) -> Prepared? {
        var p = Prepared(source: source, capacity: records.count, end: (segment, offset))
        var scratch = CopyRow()
        for record in records {
            do {
                let s = try QueueRecord.appendRow(of: record, to: &p.rows, scratch: &scratch)
                p.count(seq: s.seq, tsMilliseconds: s.tsMilliseconds)
            } catch {
                unreadable(error)
            }
        }
        return p.events == 0 ? nil : p
    }

    /// Ships a prepared batch in one transaction and records its position for `collector`.
    ///
    /// The fast path copies straight into `idb.events`. If any event is already there (a batch
    /// shipped again after a crash between commit and acknowledgement), the transaction rolls
    /// back and the batch goes through the staging table and `ON CONFLICT DO NOTHING` instead.
    public static func ship(_ p: Prepared, on conn: PostgresConnection, collector: String) async throws -> Shipped {
        let checkpoint: [any PostgresBindable] = [
            p.source, p.maxSeq, PostgresTimestamp(millisecondsSinceEpoch: p.maxTs),
        ]
        let position: [any PostgresBindable] = [
            collector, Int64(bitPattern: p.end.segment), p.end.offset, p.maxSeq,
            PostgresTimestamp(millisecondsSinceEpoch: p.maxTs),
        ]
        let bytes = p.rows
        let source = p.source
        do {
            return try await conn.transaction { c in
                let copied = try c.copyIn("COPY idb.events (\(columns)) FROM STDIN") { sink in try sink.write(bytes) }
                try await c.query(upsertCheckpointValues, checkpoint)
                try await c.query(upsertPosition, position)
                try await c.query("SELECT pg_notify('idb_events', $1)", [source])
                return Shipped(copied: copied, inserted: copied)
            }
        } catch let e as PostgresError where e.sqlState == "23505" {
            return try await conn.transaction { c in
                let copied = try c.copyIn("COPY bcpipe_staging (\(columns)) FROM STDIN") { sink in try sink.write(bytes)
                }
                let inserted = try await c.query(insertEvents).affectedRows
                try await c.query(upsertCheckpointValues, checkpoint)
                try await c.query(upsertPosition, position)
                try await c.query("SELECT pg_notify('idb_events', $1)", [source])
                return Shipped(copied: copied, inserted: inserted)
            }
        }
    }

    /// The highest seq of `source` the IDB holds (heartbeats included), if any.
    public static func checkpoint(_ conn: PostgresConnection, source: String) async throws -> Int64? {
        let rows = try await conn.query("SELECT max_seq FROM idb.source_checkpoint WHERE source = $1", [source])
        return try rows.first?.decode(0, as: Int64.self)
    }
}
