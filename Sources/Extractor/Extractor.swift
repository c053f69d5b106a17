import Control
import EventModel
import Foundation
import Logging
import PostgresClient
import Topology

/// Info Mart's role for one site, as a pipeline run once per cycle:
///
/// 1. ``IDBReader`` — each pair's first reachable IDB in full, the second by key;
/// 2. ``PairMerger`` — each `(source, seq)` once;
/// 3. ``CompletenessWatermark`` — availability, source states, gaps and `T` (pure);
/// 4. ``MartWriter`` / ``FactWriter`` — events, facts, aggregates and watermarks in one mart
///    transaction, under the epoch and role the cycle started with.
///
/// A cycle takes at most ``ExtractorSettings/batchRows`` rows per IDB, so memory stays bounded
/// however long the backlog; while one catching up writes, the next batches are read (a
/// ``Prefetch``). The ``InteractionCache`` keeps the events of open interactions between cycles,
/// so touching one again reads nothing back. Between cycles it waits for an IDB's `NOTIFY` (the
/// shippers notify each commit), at most ``ExtractorSettings/interval``. SIGKILL at any point and restart: the
/// watermarks and facts committed together are where it resumes.
public actor Extractor {
    public let settings: ExtractorSettings
    let logger: Logger
    public nonisolated let metrics: ExtractorMetrics
    private var mart: PostgresConnection?
    private var idbConnections: [ExtractorSettings.IDB: PostgresConnection] = [:]
    private var merger = PairMerger()
    private var cache = InteractionCache()
    private var prefetched: Prefetch?
    private var lastIdleLog: (Idle, Date)?
    /// When the mart's partitions were last made ahead and its old ones purged.
    private var lastMaintenance: Date?

    public init(settings: ExtractorSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
        metrics = ExtractorMetrics(site: settings.site, clock: settings.clock)
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
        /// Seconds per phase (read, sources, read back, events, old facts, compute, facts, aggregates, watermarks, commit).
        public var phases: [(String, Double)] = []
    }

    public enum Idle: Sendable, Equatable {
        case standby
        case fenced(String)
    }

    public struct IDBState: Sendable {
        public var site: String
        public var database: String
        public var source: String
        public var reachable: Bool
        public var availableThrough: Int64?
    }

    /// One extraction cycle: read, merge, decide, write.
    public func cycle() async throws -> CycleReport {
        let mart = try await martConnection()
        var report = CycleReport()
        var phases = PhaseClock()
        let writer = MartWriter(settings: settings)
        let control = try await MartWriter.loadControl(mart, defaultRole: settings.role)
        if let idle = Self.idle(control.stamp, idbFence: nil, site: settings.site) { return self.idle(idle, &report) }

        let watermarks = try await writer.watermarks(mart)
        let batches: [IDBReader.Batch]
        if let p = prefetched, p.after == watermarks, p.control == control {
            batches = p.batches
            report.unreachable = p.unreachable
        } else {
            batches = try await read(from: watermarks, control, &report)
        }
        prefetched = nil
        phases.lap("read")
        if let idle = Self.idle(control.stamp, idbFence: batches.map(\.fenceEpoch).max(), site: settings.site) {
            return self.idle(idle, &report)
        }
        let merged = merger.merge(batches)
        let now = settings.clock()
        let started = phases
        // Taken out for the transaction (a failed cycle leaves it forgotten) and put back after,
        // so the only reference is moved, never copied.
        let cache = self.cache
        self.cache = InteractionCache()
        // Catching up: the next batches are read while this one is written (the IDBs' servers
        // and this process's decoding beside the mart's server), used if this cycle commits.
        var after = watermarks
        for b in batches { after[b.idb] = b.lastIngestID }
        async let next = batches.contains(where: \.full) ? prefetch(after: after, control) : nil
        let (outcome, laps) = try await mart.transaction { c in
            var phases = started
            let outcome = try await writer.commit(
                c, control: control, batches: batches, merged: merged, cache: cache, now: now, phases: &phases)
            return (outcome, phases)
        }
        phases = laps
        phases.lap("commit")
        merger.committed(merged)
        var learnt = consume cache
        learnt.committed(outcome.cache)
        self.cache = learnt
        prefetched = await next

        report.extracted = outcome.extracted
        report.transformedInteractions = outcome.interactions
        report.completeThrough = outcome.decision.completeThrough
        report.states = outcome.decision.states
        for a in outcome.decision.availability { report.availability[a.source] = a.availableThrough }
        for idb in settings.idbs {
            let b = batches.first { $0.idb == idb }
            report.idbs.append(
                IDBState(
                    site: idb.site, database: idb.database, source: idb.source, reachable: b != nil,
                    availableThrough: b?.availableThrough))
        }
        report.phases = phases.laps
        log(outcome.transitions)
        if settings.logPhases, report.extracted > 0 {
            logger.notice(
                "cycle",
                metadata: [
                    "extracted": "\(report.extracted)", "cached": "\(self.cache.count)",
                    "phases": "\(report.phases.map { "\($0.0) \(Int($0.1 * 1000)) ms" }.joined(separator: ", "))",
                ])
        }
        metrics.record(report)
        return report
    }

    /// The IDBs' new rows: the first reachable IDB of each pair (this site's own first) in full,
    /// then the others by key, each round concurrently. An IDB that fails is unreachable this cycle.
    func read(
        from watermarks: [ExtractorSettings.IDB: Int64], _ control: MartWriter.Control, _ report: inout CycleReport
    )
        async throws -> [IDBReader.Batch]
    {
        let ordered = settings.idbs.sorted { ($0.site != settings.site ? 1 : 0) < ($1.site != settings.site ? 1 : 0) }
        var firsts: [ExtractorSettings.IDB] = []
        var seconds: [ExtractorSettings.IDB] = []
        for idb in ordered where !control.retiredIDBs.contains("\(idb.site)/\(idb.database)") {
            if firsts.contains(where: { $0.source == idb.source }) { seconds.append(idb) } else { firsts.append(idb) }
        }
        var batches: [IDBReader.Batch] = []
        for (round, idbs) in [firsts, seconds].enumerated() {
            var jobs: [(IDBReader, Int64, Set<Int64>?)] = []
            for idb in idbs {
                do {
                    let reader = IDBReader(idb: idb, connection: try await connection(idb), site: settings.site)
                    let skip = round == 0 ? nil : merger.skipping(idb.source, firstHalves: batches)
                    jobs.append((reader, watermarks[idb] ?? 0, skip))
                } catch {
                    await unreachable(idb, error, &report)
                }
            }
            let limit = settings.batchRows
            let results = await withTaskGroup(of: (ExtractorSettings.IDB, Result<IDBReader.Batch, any Error>).self) {
                group in
                for (reader, after, skip) in jobs {
                    group.addTask {
                        do {
                            return (
                                reader.idb, .success(try await reader.read(after: after, limit: limit, skipping: skip))
                            )
                        } catch {
                            return (reader.idb, .failure(error))
                        }
                    }
                }
                var out: [(ExtractorSettings.IDB, Result<IDBReader.Batch, any Error>)] = []
                for await r in group { out.append(r) }
                return out
            }
            for (idb, result) in results {
                switch result {
                case .success(let b): batches.append(b)
                case .failure(let error): await unreachable(idb, error, &report)
                }
            }
        }
        return batches
    }

    /// The next cycle's batches, read ahead while a cycle catching up writes its own.
    struct Prefetch: Sendable {
        /// The watermarks it read after: used only if the mart holds exactly these when it is.
        var after: [ExtractorSettings.IDB: Int64]
        var control: MartWriter.Control
        var batches: [IDBReader.Batch]
        var unreachable: [String]
    }

    private func prefetch(after: [ExtractorSettings.IDB: Int64], _ control: MartWriter.Control) async -> Prefetch? {
        var report = CycleReport()
        guard let batches = try? await read(from: after, control, &report), !Task.isCancelled else { return nil }
        return Prefetch(after: after, control: control, batches: batches, unreachable: report.unreachable)
    }

    /// Runs cycles until cancelled: at once while a backlog lasts, else when an IDB notifies or
    /// `interval` has passed.
    public func run() async throws {
        while !Task.isCancelled {
            if lastMaintenance.map({ Date().timeIntervalSince($0) >= settings.maintenanceInterval }) ?? true {
                await maintain()
            }
            var busy = false
            do {
                let r = try await cycle()
                if case .fenced = r.idle { metrics.recordFenced() }
                busy = r.extracted >= settings.batchRows / 2 || prefetched != nil
            } catch is CancellationError {
                break
            } catch {
                metrics.recordFailure()
                forget()
                logger.warning("extraction cycle failed; retrying", metadata: ["error": "\(error)"])
                if let m = mart, await !m.isOpen { mart = nil }
            }
            if !busy { await waitForNews() }
        }
    }

    /// The mart's retention, whatever this extractor's role (a standby's mart has partitions of
    /// its own): partitions made months ahead, and with `retention.mart_days` those older dropped
    /// whole — not under a purge hold or during a return to normal, which the mart refuses.
    public func maintain() async {
        do {
            let mart = try await martConnection()
            let made = try await MartRetention.ensurePartitions(mart)
            if made > 0 { logger.notice("mart partitions made ahead", metadata: ["partitions": "\(made)"]) }
            if let days = settings.retention.martDays {
                let dropped = try await MartRetention.purge(mart, martDays: days, dryRun: false)
                for d in dropped {
                    logger.notice(
                        "mart partition purged (retention.mart_days)",
                        metadata: ["partition": "\(d.partition)", "before": "\(d.upperBound)", "days": "\(days)"])
                }
            }
            lastMaintenance = Date()
        } catch let refusal as SafetyRefusal {
            lastMaintenance = Date()
            logger.notice("mart purge put off", metadata: ["reason": "\(refusal.message)"])
        } catch {
            logger.warning("mart maintenance failed; retrying with the next cycle", metadata: ["error": "\(error)"])
        }
    }

    /// Waits until an IDB announces new rows (`LISTEN idb_events`) or `interval` has passed. Each
    /// IDB connection waits on its own thread (not the cooperative pool); the first to hear one wins.
    private func waitForNews() async {
        let deadline = Date().addingTimeInterval(settings.interval)
        let connections = Array(idbConnections.values)
        guard !connections.isEmpty else {
            try? await Task.sleep(for: .seconds(settings.interval))
            return
        }
        await withTaskGroup(of: Bool.self) { group in
            for conn in connections {
                group.addTask {
                    // In slices, so the others stop soon after one has heard.
                    while !Task.isCancelled {
                        let left = deadline.timeIntervalSinceNow
                        if left <= 0 { return false }
                        guard let heard = try? await conn.notifications(timeout: min(left, 0.25)) else {
                            // A connection that broke: the next cycle finds out; wait out the interval.
                            try? await Task.sleep(for: .seconds(left))
                            return false
                        }
                        if !heard.isEmpty { return true }
                    }
                    return false
                }
            }
            _ = await group.next()
            group.cancelAll()
        }
    }

    /// Why a cycle writes nothing, by the machine's rule (``DeploymentMachine/cycle(_:idbFence:site:)``).
    static func idle(_ stamp: CycleStamp, idbFence: Int64?, site: String) -> Idle? {
        switch DeploymentMachine.cycle(stamp, idbFence: idbFence, site: site) {
        case .write: nil
        case .standby: .standby
        case .fenced(let reason): .fenced(reason)
        }
    }

    /// Forgets what the extractor remembers of the mart: it may have changed under it.
    private func forget() {
        merger.forget()
        cache.forget()
        prefetched = nil
    }

    private func idle(_ idle: Idle, _ report: inout CycleReport) -> CycleReport {
        report.idle = idle
        // A standby or fenced mart is written by others (replication, a return to normal's copy).
        forget()
        if let (last, at) = lastIdleLog, last == idle, Date().timeIntervalSince(at) < 60 { return report }
        lastIdleLog = (idle, Date())
        switch idle {
        case .standby:
            logger.notice("this site's mart is the standby: the extractor does not write until it is made active")
        case .fenced(let reason):
            logger.error("fenced: refusing to write to the mart", metadata: ["reason": "\(reason)"])
        }
        return report
    }

    private func log(_ transitions: [(String, String, SourceState)]) {
        for (source, from, to) in transitions {
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
    }

    private func martConnection() async throws -> PostgresConnection {
        if let mart, await mart.isOpen { return mart }
        var config = PostgresConfiguration(conninfo: settings.martConninfo, database: "mart")
        config.user = settings.dbUser
        config.connectTimeout = settings.timeouts.connect
        // A cycle's mart transaction can be large after a backlog.
        config.statementTimeoutMilliseconds = settings.timeouts.martStatementMilliseconds
        config.applicationName = "bcpipe extractor \(settings.site)"
        let conn = try await PostgresConnection.connect(config, logger: logger)
        mart = conn
        forget()
        return conn
    }

    private func connection(_ idb: ExtractorSettings.IDB) async throws -> PostgresConnection {
        if let c = idbConnections[idb], await c.isOpen { return c }
        var config = PostgresConfiguration(conninfo: idb.conninfo, database: idb.database)
        config.user = settings.dbUser
        // A blackholed IDB costs a cycle at most this long; the others are read in the next one.
        config.connectTimeout = settings.timeouts.connect
        config.operationTimeout = settings.timeouts.idbOperation
        config.statementTimeoutMilliseconds = settings.timeouts.idbStatementMilliseconds
        config.applicationName = "bcpipe extractor \(settings.site)"
        let conn = try await PostgresConnection.connect(config, logger: logger)
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

    public func close() async {
        for c in idbConnections.values { await c.close() }
        idbConnections.removeAll()
        await mart?.close()
        mart = nil
    }
}
