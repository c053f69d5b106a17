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
    public let metrics: ExtractorMetrics
    private var mart: PostgresConnection?
    private var idbConnections: [ExtractorSettings.IDB: PostgresConnection] = [:]
    private let parser = EventParser()
    /// The (source, seq)s merged into the mart by the last few committed cycles: a half of a pair
    /// that lags the other re-reads them, and they are dropped here rather than sent again.
    private var recentlyMerged: [[String: Set<Int64>]] = []

    public init(settings: ExtractorSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
        metrics = ExtractorMetrics(site: settings.site, clock: settings.clock)
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
        /// The latest unreleased fence a surviving site wrote into this IDB against our site.
        var fenceEpoch: Int64 = 0
    }

    /// What one cycle did.
    public struct CycleReport: Sendable {
        /// Why this cycle wrote nothing on purpose: the mart is a standby, or this site is fenced.
        public var idle: Idle?
        public var extracted = 0
        public var transformedInteractions = 0
        public var completeThrough: Int64?
        public var states: [String: SourceState] = [:]
        public var unreachable: [String] = []
        /// Each source's availability (ms) as the cycle decided it.
        public var availability: [String: Int64?] = [:]
        /// What each IDB gave: reachable, and the time through which it holds its source's data.
        public var idbs: [IDBState] = []
    }

    public enum Idle: Sendable, Equatable {
        case standby
        case fenced(String)
    }

    /// The mart's control row as a cycle starts: whether and at which epoch it may write.
    struct Control: Sendable, Equatable {
        var epoch: Int64
        var role: String
        var fencedReason: String?
        var retiredIDBs: Set<String>
    }

    /// A cycle that found the mart's epoch or role changed under it (a procedure step ran): it
    /// rolls back, and the next cycle starts from the new state.
    struct Superseded: Error, CustomStringConvertible {
        var description: String
    }

    private var lastIdleLog: (Idle, Date)?

    private func logIdle(_ idle: Idle) {
        if let (last, at) = lastIdleLog, last == idle, Date().timeIntervalSince(at) < 60 { return }
        lastIdleLog = (idle, Date())
        switch idle {
        case .standby:
            logger.notice("this site's mart is the standby: the extractor does not write until it is made active")
        case .fenced(let reason):
            logger.error("fenced: refusing to write to the mart", metadata: ["reason": "\(reason)"])
        }
    }

    func loadControl(_ mart: PostgresConnection) async throws -> Control {
        let d = try await mart.query("SELECT epoch, role, fenced_reason FROM control.deployment")
        guard let row = d.first else {
            throw Superseded(description: "control.deployment is empty; run bcpipe db migrate")
        }
        var retired: Set<String> = []
        for r in try await mart.query("SELECT name FROM control.retired WHERE kind = 'idb'") {
            retired.insert(r[0] ?? "")
        }
        return Control(
            epoch: try row.decode(0, as: Int64.self), role: row[1] ?? settings.role.rawValue, fencedReason: row[2],
            retiredIDBs: retired)
    }

    public struct IDBState: Sendable {
        public var site: String
        public var database: String
        public var source: String
        public var reachable: Bool
        public var availableThrough: Int64?
    }

    private func connect(_ conninfo: String, _ database: String) async throws -> PostgresConnection {
        var config = PostgresConfiguration(conninfo: conninfo, database: database)
        config.user = settings.dbUser
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
                if case .fenced = r.idle { metrics.recordFenced() }
                if r.extracted > 0 {
                    logger.debug(
                        "cycle",
                        metadata: ["extracted": "\(r.extracted)", "interactions": "\(r.transformedInteractions)"])
                }
            } catch is CancellationError {
                break
            } catch {
                metrics.recordFailure()
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
        let control = try await loadControl(mart)
        if let reason = control.fencedReason {
            report.idle = .fenced(reason)
            logIdle(.fenced(reason))
            return report
        }
        if control.role != "active" {
            report.idle = .standby
            logIdle(.standby)
            return report
        }
        let watermarks = try await loadWatermarks(mart)
        var reads: [IDBRead] = []
        // The first reachable IDB of each pair (this site's own first) is read in full; the other
        // by key only, with full rows fetched just for the seqs the first did not have — both
        // halves usually hold the same rows, and reading them twice was a third of a cycle.
        var known: [String: Set<Int64>] = [:]
        for cycle in recentlyMerged { for (source, seqs) in cycle { known[source, default: []].formUnion(seqs) } }
        var readInFull: [String: Set<Int64>] = [:]
        // Two rounds, each reading its IDBs concurrently: the first of each pair, then the rest.
        let ordered = settings.idbs.sorted { ($0.site != settings.site ? 1 : 0) < ($1.site != settings.site ? 1 : 0) }
        var firsts: [ExtractorSettings.IDB] = []
        var seconds: [ExtractorSettings.IDB] = []
        for idb in ordered where !control.retiredIDBs.contains("\(idb.site)/\(idb.database)") {
            if firsts.contains(where: { $0.source == idb.source }) { seconds.append(idb) } else { firsts.append(idb) }
        }
        for round in [firsts, seconds] {
            var jobs: [(ExtractorSettings.IDB, PostgresConnection, Int64, Set<Int64>?)] = []
            for idb in round {
                do {
                    jobs.append(
                        (
                            idb, try await connection(idb), watermarks[idb] ?? 0,
                            readInFull[idb.source].map { $0.union(known[idb.source] ?? []) }
                        ))
                } catch {
                    await unreachable(idb, error, &report)
                }
            }
            let limit = settings.batchRows
            let site = settings.site
            let results = await withTaskGroup(of: (ExtractorSettings.IDB, Result<IDBRead, any Error>).self) { group in
                for (idb, conn, after, skipping) in jobs {
                    group.addTask {
                        do {
                            return (
                                idb,
                                .success(
                                    try await Self.read(
                                        conn, idb, after: after, skipping: skipping, limit: limit, mySite: site))
                            )
                        } catch {
                            return (idb, .failure(error))
                        }
                    }
                }
                var out: [(ExtractorSettings.IDB, Result<IDBRead, any Error>)] = []
                for await r in group { out.append(r) }
                return out
            }
            for (idb, result) in results {
                switch result {
                case .failure(let error):
                    await unreachable(idb, error, &report)
                case .success(var r):
                    readInFull[idb.source, default: []].formUnion(r.events.lazy.map(\.seq))
                    if let k = known[idb.source], !k.isEmpty {
                        let keep = r.events.indices.filter { !k.contains(r.events[$0].seq) }
                        if keep.count < r.events.count {
                            r.events = keep.map { r.events[$0] }
                            r.attrs = keep.map { r.attrs[$0] }
                        }
                    }
                    reads.append(r)
                }
            }
        }
        let readDone = Date()
        if ProcessInfo.processInfo.environment["BCPIPE_EXTRACTOR_TIMING"] != nil {
            FileHandle.standardError.write(
                Data(
                    "cycle: read \(reads.reduce(0) { $0 + $1.events.count }) rows in \(Int(readDone.timeIntervalSince(cycleStart) * 1000)) ms\n"
                        .utf8))
        }
        if let fence = reads.map(\.fenceEpoch).max(), fence > control.epoch {
            let reason =
                "a surviving site declared \(settings.site) failed at epoch \(fence) (this mart holds epoch \(control.epoch)); return to normal re-admits it"
            report.idle = .fenced(reason)
            logIdle(.fenced(reason))
            return report
        }
        let now = settings.clock()
        let s = settings
        let readsCopy = reads
        let result = try await mart.transaction { c in
            // Fencing inside the transaction: the control row is held FOR SHARE until commit, so
            // a procedure step that changes it waits for this cycle, and a cycle that started
            // under another epoch or role does not commit.
            let current = try await c.query("SELECT epoch, role, fenced_reason FROM control.deployment FOR SHARE")
            guard let row = current.first, row[0] == String(control.epoch), (row[1] ?? s.role.rawValue) == control.role,
                row[2] == nil
            else {
                throw Superseded(description: "the mart's epoch or role changed during the cycle; starting over")
            }
            return try await Extractor.commitCycle(c, settings: s, reads: readsCopy, now: now)
        }
        recentlyMerged.append(result.merged)
        if recentlyMerged.count > 4 { recentlyMerged.removeFirst() }
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
        report.availability = result.availability
        for idb in settings.idbs {
            let r = reads.first { $0.idb == idb }
            report.idbs.append(
                IDBState(
                    site: idb.site, database: idb.database, source: idb.source, reachable: r != nil,
                    availableThrough: r?.availableThrough))
        }
        metrics.record(report)
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

    /// Reads an IDB's new rows and checkpoint in one snapshot. With `skipping`, only the keys of
    /// the new rows are read first, and full rows only for seqs not in `skipping`.
    private func connection(_ idb: ExtractorSettings.IDB) async throws -> PostgresConnection {
        if let c = idbConnections[idb], await c.isOpen { return c }
        let conn = try await connect(idb.conninfo, idb.database)
        try await conn.listen("idb_events")  // the shipper notifies each commit
        idbConnections[idb] = conn
        return conn
    }

    private func unreachable(_ idb: ExtractorSettings.IDB, _ error: any Error, _ report: inout CycleReport) async {
        report.unreachable.append("\(idb.site)/\(idb.database)")
        if let c = idbConnections.removeValue(forKey: idb) { await c.close() }
        logger.info(
            "IDB unreachable this cycle", metadata: ["idb": "\(idb.site)/\(idb.database)", "error": "\(error)"])
    }

    private static func read(
        _ conn: PostgresConnection, _ idb: ExtractorSettings.IDB, after: Int64, skipping: Set<Int64>?, limit: Int,
        mySite: String
    ) async throws -> IDBRead {
        let source = idb.source
        let site = mySite
        let columns =
            "ingest_id, source, seq, ts, type, interaction, media, direction, queue, agent, reason, attrs::text"
        // (rows in full, keys scanned (ingest_id, seq, ts) or nil when read in full, checkpoint)
        let (rows, keys, checkpoint) = try await conn.run { c -> (PostgresRows?, PostgresRows?, PostgresRows) in
            try c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            do {
                let cp = try await c.query(
                    """
                    SELECT max_seq, max_ts, (SELECT COALESCE(max(epoch), 0) FROM idb.fence WHERE failed_site = $2 AND released_at IS NULL)
                    FROM (SELECT 1) one LEFT JOIN idb.source_checkpoint ON source = $1
                    """, [source, site])
                guard let skipping else {
                    let rows = try await c.query(
                        "SELECT \(columns) FROM idb.events WHERE ingest_id > $1 AND source = $2 ORDER BY ingest_id LIMIT \(limit)",
                        [after, source])
                    try c.execute("COMMIT")
                    return (rows, nil, cp)
                }
                let keys = try await c.query(
                    "SELECT ingest_id, seq, ts FROM idb.events WHERE ingest_id > $1 AND source = $2 ORDER BY ingest_id LIMIT \(limit)",
                    [after, source])
                var wanted: [Int64] = []
                for k in keys where !skipping.contains(try k.decode(1, as: Int64.self)) {
                    wanted.append(try k.decode(0, as: Int64.self))
                }
                var rows: PostgresRows? = nil
                if !wanted.isEmpty {
                    rows = try await c.query(
                        "SELECT \(columns) FROM idb.events WHERE ingest_id = ANY($1::bigint[]) ORDER BY ingest_id",
                        ["{" + wanted.map(String.init).joined(separator: ",") + "}"])
                }
                try c.execute("COMMIT")
                return (rows, keys, cp)
            } catch {
                try? c.execute("ROLLBACK")
                throw error
            }
        }
        var read = IDBRead(idb: idb, lastIngestID: after)
        if let rows {
            for row in rows {
                read.lastIngestID = try row.decode(0, as: Int64.self)
                guard let e = try Self.event(row, from: 1) else { continue }
                read.events.append(e)
                read.attrs.append(row[11])
            }
        }
        let scanned = keys?.count ?? rows?.count ?? 0
        if let keys, let last = keys.last { read.lastIngestID = try last.decode(0, as: Int64.self) }
        read.fenceEpoch = try checkpoint.first?.decode(2, as: Int64.self) ?? 0
        if scanned < limit, let cp = checkpoint.first, let maxTs = try cp.decode(1, as: PostgresTimestamp?.self) {
            // Caught up: everything the checkpoint covers has been read.
            read.maxSeq = try cp.decode(0, as: Int64?.self)
            read.availableThrough = maxTs.millisecondsSinceEpoch
        } else if let keys {
            read.availableThrough = try keys.map { try $0.decode(2, as: PostgresTimestamp.self).millisecondsSinceEpoch }
                .max()
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
