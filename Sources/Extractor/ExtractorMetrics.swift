import Control
import Foundation
import Prometheus

/// The extractor's Prometheus metrics: Info Mart's "delayed data" alarm as numbers — each source's
/// lag and state, and each IDB's lag, so an operator sees a source falling behind long before it
/// becomes stuck. Lags are computed when scraped, from the last cycle's availability.
///
/// `@unchecked Sendable`: what changes is behind `lock`; the Prometheus metrics are thread-safe.
public final class ExtractorMetrics: @unchecked Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let lock = NSLock()
    private let site: String
    private let cycles: Counter
    private let failures: Counter
    private let fenced: Counter
    private let events: Counter
    private let completeLag: Gauge
    private var completeThrough: Int64?
    private var sources: [String: (availableThrough: Int64?, state: SourceState)] = [:]
    private var idbs: [String: (source: String, availableThrough: Int64?, reachable: Bool)] = [:]
    private let clock: @Sendable () -> Int64

    public init(site: String, clock: @escaping @Sendable () -> Int64) {
        self.site = site
        self.clock = clock
        let l = [("site", site)]
        cycles = registry.makeCounter(name: "bcpipe_extractor_cycles_total", labels: l, help: "Cycles committed.")
        failures = registry.makeCounter(
            name: "bcpipe_extractor_cycle_failures_total", labels: l, help: "Cycles that failed and were retried.")
        fenced = registry.makeCounter(
            name: "bcpipe_extractor_fenced_cycles_total", labels: l,
            help: "Cycles that found this site fenced (an older epoch) and wrote nothing.")
        events = registry.makeCounter(
            name: "bcpipe_extractor_events_total", labels: l, help: "Events merged into the mart.")
        completeLag = registry.makeGauge(
            name: "bcpipe_extractor_complete_through_lag_seconds", labels: l,
            help: "Now minus the mart's completeness watermark T.")
    }

    func recordFailure() { failures.increment() }

    func recordFenced() { fenced.increment() }

    func record(_ report: Extractor.CycleReport) {
        cycles.increment()
        events.increment(by: Int64(report.extracted))
        lock.lock()
        defer { lock.unlock() }
        completeThrough = report.completeThrough
        for (source, state) in report.states {
            sources[source] = (report.availability[source] ?? nil, state)
        }
        for idb in report.idbs {
            let key = idb.site + "/" + idb.database
            let before = idbs[key]?.availableThrough
            idbs[key] = (idb.source, idb.availableThrough ?? before, idb.reachable)
        }
    }

    /// The metrics in Prometheus text format, lags as of now.
    public func emit() -> [UInt8] {
        let now = clock()
        func lag(_ t: Int64?) -> Double { t.map { Double(max(0, now - $0)) / 1000 } ?? -1 }
        lock.lock()
        completeLag.set(lag(completeThrough))
        for (source, s) in sources {
            registry.makeGauge(
                name: "bcpipe_extractor_source_lag_seconds", labels: [("site", site), ("source", source)],
                help:
                    "Now minus the time through which the source's data is available in a reachable IDB (-1: none yet)."
            ).set(lag(s.availableThrough))
            for state in [SourceState.current, .delayed, .stuck, .retired] {
                registry.makeGauge(
                    name: "bcpipe_extractor_source_state",
                    labels: [("site", site), ("source", source), ("state", state.rawValue)],
                    help: "1 for the source's completeness state (delayed: Info Mart's delayed-data alarm)."
                ).set(Double(s.state == state ? 1 : 0))
            }
        }
        for (idb, s) in idbs {
            let l = [("site", site), ("source", s.source), ("idb", idb)]
            registry.makeGauge(
                name: "bcpipe_extractor_idb_lag_seconds", labels: l,
                help: "Now minus the time through which this IDB holds the source's data (-1: none yet)."
            ).set(lag(s.availableThrough))
            registry.makeGauge(
                name: "bcpipe_extractor_idb_reachable", labels: l, help: "1 when the last cycle read this IDB."
            ).set(Double(s.reachable ? 1 : 0))
        }
        lock.unlock()
        var out: [UInt8] = []
        registry.emit(into: &out)
        return out
    }
}
