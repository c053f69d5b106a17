import Foundation
import Prometheus
import Synchronization

/// The collector's shared, changing state: the seq watermark, the link, what was shipped, and
/// its metrics. Behind a `Mutex`; every method is short (continuations are resumed outside it).
public final class CollectorState: Sendable {
    private struct State {
        var watermark = SeqWatermark()
        /// Requests waiting for an in-flight append of their seqs to settle, by its ticket.
        var waiters: [UInt64: [CheckedContinuation<Void, Never>]] = [:]
        var linkUp = false
        var shippedSeq: Int64?
        var shippedTs: Int64?
        var lastShipError: String?
        var requestsInFlight = 0
    }

    private let state = Mutex(State())

    let metrics: CollectorMetrics

    init(registry: PrometheusCollectorRegistry, collector: String) {
        metrics = CollectorMetrics(registry: registry, collector: collector)
    }

    /// Reserves `seqs` for one request's append (which are new, in body order). When another
    /// request's append of some of them is in flight, waits for its outcome first: its seqs are
    /// duplicates only once they are durable, and free again if it was refused.
    func reserve(_ seqs: [Int64]) async -> (ticket: UInt64, isNew: [Bool]) {
        while true {
            switch state.withLock({ $0.watermark.reserve(seqs) }) {
            case .reserved(let ticket, let isNew): return (ticket, isNew)
            case .wait(let ticket):
                metrics.repeatWaits.increment()
                await settled(ticket)
            }
        }
    }

    /// Returns once `ticket` is committed or released.
    private func settled(_ ticket: UInt64) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let pending = state.withLock { s in
                guard s.watermark.isPending(ticket) else { return false }
                s.waiters[ticket, default: []].append(c)
                return true
            }
            if !pending { c.resume() }
        }
    }

    func commit(_ ticket: UInt64) {
        let woken = state.withLock { s in
            s.watermark.commit(ticket)
            return s.waiters.removeValue(forKey: ticket) ?? []
        }
        for c in woken { c.resume() }
    }

    func release(_ ticket: UInt64) {
        let woken = state.withLock { s in
            s.watermark.release(ticket)
            return s.waiters.removeValue(forKey: ticket) ?? []
        }
        for c in woken { c.resume() }
    }

    /// Seqs up to `seq` were made durable before this process (see ``SeqWatermark/restored(through:)``).
    func restored(through seq: Int64) {
        state.withLock { $0.watermark.restored(through: seq) }
    }

    /// Counts a request in if fewer than `limit` are in flight.
    func admitRequest(limit: Int) -> Bool {
        state.withLock { s in
            guard s.requestsInFlight < limit else { return false }
            s.requestsInFlight += 1
            return true
        }
    }

    func requestDone() {
        state.withLock { $0.requestsInFlight -= 1 }
    }

    func setLink(up: Bool, error: String? = nil) {
        state.withLock { s in
            s.linkUp = up
            if let error { s.lastShipError = error }
        }
        metrics.linkUp.set(Double(up ? 1 : 0))
    }

    func shipped(seq: Int64, ts: Int64) {
        state.withLock { s in
            s.shippedSeq = max(s.shippedSeq ?? seq, seq)
            s.shippedTs = max(s.shippedTs ?? ts, ts)
        }
    }

    struct Snapshot {
        var linkUp: Bool
        var shippedSeq: Int64?
        var shippedTs: Int64?
        var lastShipError: String?
        var highestSeq: Int64
    }

    var snapshot: Snapshot {
        state.withLock { s in
            Snapshot(
                linkUp: s.linkUp, shippedSeq: s.shippedSeq, shippedTs: s.shippedTs, lastShipError: s.lastShipError,
                highestSeq: s.watermark.durable)
        }
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
    let repeatWaits: Counter
    let overload: Counter
    let queueMaxBytes: Gauge

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
        repeatWaits = registry.makeCounter(
            name: "bcpipe_collector_repeat_waits_total", labels: l,
            help: "Times a request waited for another request's in-flight append of the same seqs.")
        overload = registry.makeCounter(
            name: "bcpipe_collector_overload_total", labels: l,
            help: "Requests answered 503 because too many were in flight.")
        queueMaxBytes = registry.makeGauge(
            name: "bcpipe_collector_queue_max_bytes", labels: l,
            help: "The disk queue's bound (queue.max_bytes): past it appends are answered 503.")
    }
}
