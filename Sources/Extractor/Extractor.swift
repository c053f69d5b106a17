import EventModel
import Foundation
import Logging
import PostgresClient

/// Info Mart's role for one site: each cycle reads what is new in every reachable IDB, merges
/// each HA pair by `(source, seq)` into the mart's event layer, decides completeness and stuck
/// sources, transforms what is complete into the facts and aggregates, and commits it all —
/// with the watermarks — in one mart transaction. SIGKILL at any point and restart: the
/// watermarks and facts committed together are where it resumes.
public final class Extractor: @unchecked Sendable {
    public let settings: ExtractorSettings
    let logger: Logger
    private var mart: PostgresConnection?
    private var idbConnections: [ExtractorSettings.IDB: PostgresConnection] = [:]
    private let parser = EventParser()

    public init(settings: ExtractorSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// What one IDB gave in a cycle.
    struct IDBRead {
        var idb: ExtractorSettings.IDB
        var events: [Event] = []
        /// Each event's attrs as the IDB's jsonb text, passed through to the mart unparsed.
        var attrs: [String?] = []
        var lastIngestID: Int64
        var availableThrough: Int64?
        var maxSeq: Int64?
    }

    /// What one cycle did.
    public struct CycleReport: Sendable {
        public var extracted = 0
        public var transformedInteractions = 0
        public var completeThrough: Int64?
        public var states: [String: SourceState] = [:]
        public var unreachable: [String] = []
    }

    private func connect(_ conninfo: String, _ database: String) async throws -> PostgresConnection {
        var config = PostgresConfiguration(conninfo: conninfo, database: database)
        if database == "mart" {
            // A cycle's mart transaction can be large after a backlog.
            config.connectTimeout = 3
            config.statementTimeoutMilliseconds = 120_000
            config.applicationName = "bcpipe extractor \(settings.site)"
            return try await PostgresConnection.connect(config, logger: logger)
        }
        // A blackholed IDB costs a cycle at most this long; the others are read in the next one.
        config.connectTimeout = 3
        config.operationTimeout = 8
        config.statementTimeoutMilliseconds = 6_000
        config.applicationName = "bcpipe extractor \(settings.site)"
        return try await PostgresConnection.connect(config, logger: logger)
    }

    /// Runs cycles until cancelled: every `interval`, sooner when an IDB notifies.
    public func run() async throws {
        while !Task.isCancelled {
            do {
                let r = try await cycle()
                if r.extracted > 0 {
                    logger.debug(
                        "cycle",
                        metadata: ["extracted": "\(r.extracted)", "interactions": "\(r.transformedInteractions)"])
                }
            } catch is CancellationError {
                break
            } catch {
                logger.warning("extraction cycle failed; retrying", metadata: ["error": "\(error)"])
                if let m = mart, await !m.isOpen { mart = nil }
            }
            await waitForNews()
        }
    }

    /// Waits up to `interval`, returning early when an IDB announces new rows (LISTEN idb_events).
    private func waitForNews() async {
        let deadline = Date().addingTimeInterval(settings.interval)
        while Date() < deadline && !Task.isCancelled {
            for conn in idbConnections.values {
                if let n = try? await conn.notifications(timeout: 0), !n.isEmpty { return }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// One extraction cycle.
    public func cycle() async throws -> CycleReport {
        if mart == nil { mart = try await connect(settings.martConninfo, "mart") }
        let mart = mart!
        var report = CycleReport()
        let cycleStart = Date()
        let watermarks = try await loadWatermarks(mart)
        var reads: [IDBRead] = []
        for idb in settings.idbs {
            do {
                reads.append(try await read(idb, after: watermarks[idb] ?? 0))
            } catch {
                report.unreachable.append("\(idb.site)/\(idb.database)")
                if let c = idbConnections.removeValue(forKey: idb) { await c.close() }
                logger.info(
                    "IDB unreachable this cycle", metadata: ["idb": "\(idb.site)/\(idb.database)", "error": "\(error)"])
            }
        }
        let readDone = Date()
        if ProcessInfo.processInfo.environment["BCPIPE_EXTRACTOR_TIMING"] != nil {
            FileHandle.standardError.write(
                Data(
                    "cycle: read \(reads.reduce(0) { $0 + $1.events.count }) rows in \(Int(readDone.timeIntervalSince(cycleStart) * 1000)) ms\n"
                        .utf8))
        }
        let now = settings.clock()
        let s = settings
        let readsCopy = reads
        let result = try await mart.transaction { c in
            try await Extractor.commitCycle(c, settings: s, reads: readsCopy, now: now)
        }
        report.extracted = result.extracted
        report.transformedInteractions = result.interactions
        for (source, from, to) in result.transitions {
            let meta: Logger.Metadata = ["source": "\(source)", "from": "\(from)", "to": "\(to.rawValue)"]
            switch to {
            case .delayed:
                logger.warning(
                    "source delayed: no new data; the mart waits for it (Info Mart's delayed-data alarm)",
                    metadata: meta)
            case .stuck:
                logger.error(
                    "source stuck past the data stuck threshold: extraction goes on without it; gap recorded",
                    metadata: meta)
            case .current: logger.notice("source current again", metadata: meta)
            case .retired: logger.notice("source retired", metadata: meta)
            }
        }
        report.completeThrough = result.completeThrough
        report.states = result.states
        return report
    }

    private func loadWatermarks(_ mart: PostgresConnection) async throws -> [ExtractorSettings.IDB: Int64] {
        let rows = try await mart.query("SELECT idb_site, idb_database, source, last_ingest_id FROM control.watermark")
        var out: [ExtractorSettings.IDB: Int64] = [:]
        for row in rows {
            let site = try row.decode(0, as: String.self)
            let db = try row.decode(1, as: String.self)
            let source = try row.decode(2, as: String.self)
            if let idb = settings.idbs.first(where: { $0.site == site && $0.database == db && $0.source == source }) {
                out[idb] = try row.decode(3, as: Int64.self)
            }
        }
        return out
    }

    /// Reads an IDB's new rows and checkpoint in one snapshot.
    private func read(_ idb: ExtractorSettings.IDB, after: Int64) async throws -> IDBRead {
        let conn: PostgresConnection
        if let c = idbConnections[idb], await c.isOpen {
            conn = c
        } else {
            conn = try await connect(idb.conninfo, idb.database)
            try await conn.listen("idb_events")  // the shipper notifies each commit
            idbConnections[idb] = conn
        }
        let limit = settings.batchRows
        let source = idb.source
        let (rows, checkpoint) = try await conn.run { c -> (PostgresRows, PostgresRows) in
            try c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            do {
                let cp = try await c.query(
                    "SELECT max_seq, max_ts FROM idb.source_checkpoint WHERE source = $1", [source])
                let rows = try await c.query(
                    """
                    SELECT ingest_id, source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs::text
                    FROM idb.events WHERE ingest_id > $1 AND source = $2 ORDER BY ingest_id LIMIT \(limit)
                    """, [after, source])
                try c.execute("COMMIT")
                return (rows, cp)
            } catch {
                try? c.execute("ROLLBACK")
                throw error
            }
        }
        var read = IDBRead(idb: idb, lastIngestID: after)
        for row in rows {
            read.lastIngestID = try row.decode(0, as: Int64.self)
            guard let e = try Self.event(row, from: 1) else { continue }
            read.events.append(e)
            read.attrs.append(row[11])
        }
        if rows.count < limit, let cp = checkpoint.first {
            // Caught up: everything the checkpoint covers has been read.
            read.maxSeq = try cp.decode(0, as: Int64.self)
            read.availableThrough = try cp.decode(1, as: PostgresTimestamp.self).millisecondsSinceEpoch
        } else {
            read.availableThrough = read.events.map(\.ts.millisecondsSinceEpoch).max()
        }
        return read
    }

    /// Decodes an event from a row whose columns from `base` on are source, seq, ts, type,
    /// interaction, media, direction, queue, agent, reason (attrs are handled by the caller).
    static func event(_ row: PostgresRow, from base: Int = 0) throws -> Event? {
        guard let type = EventType(rawValue: try row.decode(base + 3, as: String.self)) else { return nil }
        return Event(
            source: try row.decode(base, as: String.self), seq: try row.decode(base + 1, as: Int64.self),
            ts: Timestamp(
                millisecondsSinceEpoch: try row.decode(base + 2, as: PostgresTimestamp.self).millisecondsSinceEpoch),
            type: type, interaction: try row.decode(base + 4, as: String?.self),
            media: try row.decode(base + 5, as: String?.self).flatMap(Media.init(rawValue:)),
            direction: try row.decode(base + 6, as: String?.self).flatMap(Direction.init(rawValue:)),
            queue: try row.decode(base + 7, as: String?.self), agent: try row.decode(base + 8, as: String?.self),
            reason: try row.decode(base + 9, as: String?.self))
    }

    public func close() async {
        for c in idbConnections.values { await c.close() }
        idbConnections.removeAll()
        await mart?.close()
        mart = nil
    }
}
