import Foundation
import Prometheus

/// The collector's shared, changing state: the seq watermark, the link, what was shipped, and
/// its metrics. Guarded by a lock; every method is short.
public final class CollectorState: @unchecked Sendable {
    private let lock = NSLock()
    private var watermark = SeqWatermark()
    private var linkUp = false
    private var shippedSeq: Int64?
    private var shippedTs: Int64?
    private var lastShipError: String?

    let metrics: CollectorMetrics

    init(registry: PrometheusCollectorRegistry, collector: String) {
        metrics = CollectorMetrics(registry: registry, collector: collector)
    }

    func reserve(_ seqs: [Int64]) -> (ticket: UInt64, isNew: [Bool]) {
        lock.lock()
        defer { lock.unlock() }
        return watermark.reserve(seqs)
    }

    func commit(_ ticket: UInt64) {
        lock.lock()
        watermark.commit(ticket)
        lock.unlock()
    }

    func release(_ ticket: UInt64) {
        lock.lock()
        watermark.release(ticket)
        lock.unlock()
    }

    func raiseWatermark(to seq: Int64) {
        lock.lock()
        watermark.raise(to: seq)
        lock.unlock()
    }

    func setLink(up: Bool, error: String? = nil) {
        lock.lock()
        linkUp = up
        if let error { lastShipError = error }
        lock.unlock()
        metrics.linkUp.set(Double(up ? 1 : 0))
    }

    func shipped(seq: Int64, ts: Int64) {
        lock.lock()
        shippedSeq = max(shippedSeq ?? seq, seq)
        shippedTs = max(shippedTs ?? ts, ts)
        lock.unlock()
    }

    struct Snapshot {
        var linkUp: Bool
        var shippedSeq: Int64?
        var shippedTs: Int64?
        var lastShipError: String?
        var highestSeq: Int64
    }

    var snapshot: Snapshot {
        lock.lock()
        defer { lock.unlock() }
        return Snapshot(
            linkUp: linkUp, shippedSeq: shippedSeq, shippedTs: shippedTs, lastShipError: lastShipError,
            highestSeq: watermark.durable)
    }
}

/// The collector's Prometheus metrics.
struct CollectorMetrics: Sendable {
    let accepted: Counter
    let rejected: Counter
    let duplicates: Counter
    let queueEvents: Gauge
    let queueBytes: Gauge
    let oldestAge: Gauge
    let lostEvents: Gauge
    let shipBatches: Counter
    let shipEvents: Counter
    let shipErrors: Counter
    let linkUp: Gauge
    let requests: Counter
    let backpressure: Counter

    init(registry: PrometheusCollectorRegistry, collector: String) {
        let l = [("collector", collector)]
        accepted = registry.makeCounter(
            name: "bcpipe_collector_events_accepted_total", labels: l,
            help: "Events accepted (durable in the disk queue).")
        rejected = registry.makeCounter(
            name: "bcpipe_collector_events_rejected_total", labels: l, help: "Lines rejected as invalid.")
        duplicates = registry.makeCounter(
            name: "bcpipe_collector_events_duplicate_total", labels: l, help: "Events already accepted before.")
        queueEvents = registry.makeGauge(
            name: "bcpipe_collector_queue_events", labels: l, help: "Events in the disk queue not yet shipped.")
        queueBytes = registry.makeGauge(
            name: "bcpipe_collector_queue_bytes", labels: l, help: "Bytes of the disk queue not yet shipped.")
        oldestAge = registry.makeGauge(
            name: "bcpipe_collector_queue_oldest_age_seconds", labels: l, help: "Age of the oldest queued event.")
        lostEvents = registry.makeGauge(
            name: "bcpipe_collector_queue_lost_events", labels: l, help: "Events lost to disk damage, counted exactly.")
        shipBatches = registry.makeCounter(
            name: "bcpipe_collector_ship_batches_total", labels: l, help: "Transactions committed to the IDB.")
        shipEvents = registry.makeCounter(
            name: "bcpipe_collector_ship_events_total", labels: l, help: "Events shipped to the IDB.")
        shipErrors = registry.makeCounter(
            name: "bcpipe_collector_ship_errors_total", labels: l, help: "Failed attempts to ship or connect.")
        linkUp = registry.makeGauge(
            name: "bcpipe_collector_idb_link_up", labels: l, help: "1 while the IDB is reachable.")
        requests = registry.makeCounter(name: "bcpipe_collector_requests_total", labels: l, help: "Ingest requests.")
        backpressure = registry.makeCounter(
            name: "bcpipe_collector_backpressure_total", labels: l, help: "Requests answered 503 (queue full).")
    }
}
