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
        while !(Task.isCancelled || Task.isShuttingDownGracefully) {
            do {
                try await shipWhileConnected()
            } catch is CancellationError {
                break
            } catch {
                state.metrics.shipErrors.increment()
                state.setLink(up: false, error: "\(error)")
                logger.warning(
                    "IDB unreachable; events wait in the disk queue",
                    metadata: [
                        "idb": "\(settings.idbSite)/\(settings.idbDatabase)", "error": "\(error)",
                        "retry_in": "\(String(format: "%.1f", backoff)) s",
                    ])
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
        if let seq = try await IDBWriter.checkpoint(conn, source: settings.source) { state.raiseWatermark(to: seq) }
        state.setLink(up: true)
        logger.info("shipping to the IDB", metadata: ["idb": "\(settings.idbSite)/\(settings.idbDatabase)"])
        let reader = queue.makeReader()
        let parser = EventParser()
        while !(Task.isCancelled || Task.isShuttingDownGracefully) {
            let batches = try reader.next(maxFrames: 1024, maxBytes: settings.shipBatchEvents * 256)
            guard let last = batches.last else {
                updateQueueMetrics()
                _ = await queue.waitForData(after: reader.position, timeout: 1)
                // Keep the link checked while idle.
                if queue.stats.events == 0 { try await conn.query("SELECT 1") }
                continue
            }
            var events: [Event] = []
            events.reserveCapacity(batches.reduce(0) { $0 + $1.records.count })
            for batch in batches {
                for record in batch.records {
                    let parsed = record.withUnsafeBytes { parser.parseLine($0) }
                    if case .success(let e) = parsed {
                        events.append(e)
                    } else {
                        logger.error(
                            "a queued record no longer parses; skipped", metadata: ["position": "\(batch.start)"])
                    }
                }
            }
            let shipped = try await IDBWriter.ship(
                events, on: conn, collector: settings.name, segment: last.end.segment, offset: last.end.offset)
            try queue.ack(through: last.end, nextIndex: last.endIndex)
            state.metrics.shipBatches.increment()
            state.metrics.shipEvents.increment(by: Int64(shipped.inserted))
            if let top = events.max(by: { $0.seq < $1.seq }) {
                state.shipped(seq: top.seq, ts: events.map(\.ts.millisecondsSinceEpoch).max()!)
            }
            updateQueueMetrics()
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

struct ShipperError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
