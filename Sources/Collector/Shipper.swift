import DiskQueue
import EventModel
import Foundation
import Logging
import PostgresClient
import ServiceLifecycle

/// Drains the disk queue into the collector's IDB, in order, idempotently, through outages.
///
/// Reads frames from the ack cursor, ships them in one transaction, and acknowledges them only
/// after the commit. A lost connection (refused, reset, blackholed: every wait has a deadline)
/// switches the collector to `queueing`; reconnection backs off exponentially with jitter, and
/// reading restarts at the ack cursor so nothing uncommitted is skipped.
struct Shipper: Service {
    let settings: CollectorSettings
    let queue: DiskQueue
    let state: CollectorState
    let logger: Logger

    func run() async throws {
        var backoff = settings.retryInitial
        // Attempts come every second or so while the IDB is away: the warning says so once a minute.
        var lastWarned: ContinuousClock.Instant?
        var failedSinceWarned = 0
        while !(Task.isCancelled || Task.isShuttingDownGracefully) {
            do {
                try await shipWhileConnected()
            } catch is CancellationError {
                break
            } catch {
                state.metrics.shipErrors.increment()
                state.setLink(up: false, error: "\(error)")
                failedSinceWarned += 1
                if lastWarned.map({ ContinuousClock.now - $0 >= .seconds(60) }) ?? true {
                    logger.warning(
                        "IDB unreachable; events wait in the disk queue",
                        metadata: [
                            "idb": "\(settings.idbSite)/\(settings.idbDatabase)", "error": "\(error)",
                            "retry_in": "\(String(format: "%.1f", backoff)) s",
                            "failed_attempts": "\(failedSinceWarned)",
                        ])
                    lastWarned = .now
                    failedSinceWarned = 0
                }
                let jitter = Double.random(in: 0.8...1.2)
                try? await Task.sleep(for: .seconds(backoff * jitter))
                backoff = min(settings.retryMax, backoff * 2)
                continue
            }
        }
        state.setLink(up: false)
    }

    /// Connects, then ships until the connection fails or shutdown is requested.
    private func shipWhileConnected() async throws {
        var config = PostgresConfiguration(conninfo: settings.idbConninfo, database: settings.idbDatabase)
        config.user = settings.idbUser
        config.connectTimeout = settings.connectTimeout
        config.operationTimeout = settings.operationTimeout
        config.statementTimeoutMilliseconds = Int(settings.operationTimeout * 1000) - 2000
        config.applicationName = "bcpipe collector \(settings.name)"
        let conn = try await PostgresConnection.connect(config, logger: logger)
        do {
            try await ship(on: conn)
            await conn.close()
        } catch {
            await conn.close()
            throw error
        }
    }

    private func ship(on conn: PostgresConnection) async throws {
        guard try await IDBWriter.prepare(conn) else {
            throw ShipperError("another shipper holds IDB \(settings.idbDatabase); retrying")
        }
        if let seq = try await IDBWriter.checkpoint(conn, source: settings.source) { state.restored(through: seq) }
        state.setLink(up: true)
        logger.info("shipping to the IDB", metadata: ["idb": "\(settings.idbSite)/\(settings.idbDatabase)"])
        let reader = queue.makeReader()
        let parser = EventParser()
        // Reading and encoding the next batch overlaps the transaction of the current one.
        var next = try prepareNext(reader, parser)
        while !(Task.isCancelled || Task.isShuttingDownGracefully) {
            guard let (batch, ackIndex) = next else {
                updateQueueMetrics()
                _ = await queue.waitForData(after: reader.position, timeout: 1)
                // Keep the link checked while idle.
                if queue.stats.events == 0 { try await conn.query("SELECT 1") }
                next = try prepareNext(reader, parser)
                continue
            }
            let collector = settings.name
            async let shipping = IDBWriter.ship(batch, on: conn, collector: collector)
            let following = try prepareNext(reader, parser)
            let shipped = try await shipping
            try queue.ack(
                through: QueuePosition(segment: batch.end.segment, offset: batch.end.offset), nextIndex: ackIndex)
            state.metrics.shipBatches.increment()
            state.metrics.shipEvents.increment(by: Int64(shipped.inserted))
            state.shipped(seq: batch.maxSeq, ts: batch.maxTs)
            updateQueueMetrics()
            next = following
        }
    }

    /// Reads up to one ship batch from the queue and encodes it; nil when the queue is empty.
    private func prepareNext(_ reader: QueueReader, _ parser: EventParser) throws -> (IDBWriter.Prepared, UInt64)? {
        let batches = try reader.next(maxFrames: 1024, maxBytes: settings.shipBatchEvents * 256)
        guard let last = batches.last else { return nil }
        var events: [Event] = []
        events.reserveCapacity(batches.reduce(0) { $0 + $1.records.count })
        for batch in batches {
            for record in batch.records {
                switch record.withUnsafeBytes({ parser.parseLine($0) }) {
                case .success(let e): events.append(e)
                case .failure(let f):
                    logger.error(
                        "a queued record no longer parses; skipped",
                        metadata: ["position": "\(batch.start)", "reason": "\(f.reason)"])
                }
            }
        }
        guard let prepared = IDBWriter.prepare(events, segment: last.end.segment, offset: last.end.offset) else {
            // Nothing usable in these frames: acknowledge them so they are not read again.
            try queue.ack(through: last.end, nextIndex: last.endIndex)
            return try prepareNext(reader, parser)
        }
        return (prepared, last.endIndex)
    }

    func updateQueueMetrics() {
        let s = queue.stats
        state.metrics.queueEvents.set(Double(s.events))
        state.metrics.queueBytes.set(Double(s.bytes))
        state.metrics.lostEvents.set(Double(s.lostEvents))
        let age = s.oldestEventTimestamp.map { max(0, Date().timeIntervalSince1970 - Double($0) / 1000) } ?? 0
        state.metrics.oldestAge.set(age)
    }
}

struct ShipperError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
