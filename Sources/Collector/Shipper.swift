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
                            "code": "\((error as? ShipperError)?.code.rawValue ?? ShipperError.Code.ship.rawValue)",
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
        let conn: PostgresConnection
        do {
            conn = try await PostgresConnection.connect(config, logger: logger)
        } catch {
            throw ShipperError(
                .connect, "cannot connect to IDB \(settings.idbSite)/\(settings.idbDatabase)", cause: error)
        }
        try await conn.closing { try await ship(on: $0) }
    }

    private func ship(on conn: PostgresConnection) async throws {
        guard try await IDBWriter.prepare(conn) else {
            throw ShipperError(.lockHeld, "another shipper holds IDB \(settings.idbDatabase); retrying")
        }
        if let seq = try await IDBWriter.checkpoint(conn, source: settings.source) { state.restored(through: seq) }
        state.setLink(up: true)
        logger.info("shipping to the IDB", metadata: ["idb": "\(settings.idbSite)/\(settings.idbDatabase)"])
        let reader = queue.makeReader()
        // Reading and encoding the next batch overlaps the transaction of the current one.
        var next = try await prepareNext(reader)
        while !(Task.isCancelled || Task.isShuttingDownGracefully) {
            guard let (batch, ackIndex) = next else {
                updateQueueMetrics()
                _ = await queue.waitForData(after: reader.position, timeout: 1)
                // Keep the link checked while idle.
                if queue.stats.events == 0 { try await conn.query("SELECT 1") }
                next = try await prepareNext(reader)
                continue
            }
            let collector = settings.name
            async let shipping = IDBWriter.ship(batch, on: conn, collector: collector)
            let following = try await prepareNext(reader)
            let shipped: IDBWriter.Shipped
            do {
                shipped = try await shipping
            } catch {
                throw ShipperError(.ship, "shipping \(batch.events) events to the IDB failed", cause: error)
            }
            try await acknowledge(
                through: QueuePosition(segment: batch.end.segment, offset: batch.end.offset), nextIndex: ackIndex)
            state.metrics.shipBatches.increment()
            state.metrics.shipEvents.increment(by: Int64(shipped.inserted))
            state.shipped(seq: batch.maxSeq, ts: batch.maxTs)
            updateQueueMetrics()
            next = following
        }
    }

    /// Reads up to one ship batch from the queue (on its I/O thread) and takes its COPY rows as
    /// the records hold them; nil when the queue is empty.
    private func prepareNext(_ reader: QueueReader) async throws -> (IDBWriter.Prepared, UInt64)? {
        let batches: [QueueBatch]
        do {
            batches = try await reader.read(maxFrames: 1024, maxBytes: settings.shipBatchEvents * 256)
        } catch {
            throw ShipperError(.queue, "reading the disk queue at \(reader.position) failed", cause: error)
        }
        guard let first = batches.first, let last = batches.last else { return nil }
        let prepared = IDBWriter.prepare(
            records: batches.flatMap(\.records), source: settings.source, segment: last.end.segment,
            offset: last.end.offset
        ) { failure in
            logger.error(
                "a queued record cannot be read; skipped",
                metadata: ["frames": "\(first.start) to \(last.end)", "reason": "\(failure.reason)"])
        }
        guard let prepared else {
            // Nothing usable in these frames: acknowledge them so they are not read again.
            try await acknowledge(through: last.end, nextIndex: last.endIndex)
            return try await prepareNext(reader)
        }
        return (prepared, last.endIndex)
    }

    /// Acknowledges shipped frames (on the queue's I/O thread).
    private func acknowledge(through position: QueuePosition, nextIndex: UInt64) async throws {
        do {
            try await queue.acknowledge(through: position, nextIndex: nextIndex)
        } catch {
            throw ShipperError(.queue, "acknowledging the disk queue through \(position) failed", cause: error)
        }
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

/// Why the shipper stopped shipping for now; it reconnects and goes on from the ack cursor
/// (nothing acknowledged is lost). `cause` is the error underneath, if any.
struct ShipperError: Error, CustomStringConvertible {
    enum Code: String {
        /// The IDB did not take the connection.
        case connect
        /// Another shipper (a second collector process on the same IDB) holds its lock.
        case lockHeld = "lock-held"
        /// A batch's transaction failed (the link broke, the server refused).
        case ship
        /// The disk queue could not be read or acknowledged.
        case queue
    }

    var code: Code
    var message: String
    var cause: (any Error)?

    init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    var description: String { cause.map { "\(message): \($0)" } ?? message }
}
