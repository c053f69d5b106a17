import Control
import Foundation
import Prometheus

/// The coordinator's Prometheus metrics, rendered from its last round (``CoordinatorStatus``)
/// when scraped: what an operator alerts on at the control plane — the site's epoch and phase,
/// fencing, a procedure left running, purge holds, the standby's replication lag, and whether
/// the own mart and the peers answer.
enum CoordinatorMetrics {
    static func emit(_ s: CoordinatorStatus, now: Date = Date()) -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        let site = ("site", s.site)
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = [], _ value: Double) {
            registry.makeGauge(name: name, labels: [site] + labels, help: help).set(value)
        }
        gauge(
            "bcpipe_coordinator_mart_reachable", "1 when the last round read this site's mart.", [],
            s.martReachable ? 1 : 0)
        for peer in s.peers {
            gauge(
                "bcpipe_coordinator_peer_reachable", "1 when the last round reached the peer site's coordinator.",
                [("peer", peer.site)], peer.reachable ? 1 : 0)
        }
        if let c = s.control {
            gauge("bcpipe_coordinator_epoch", "The site's epoch (raised by each procedure).", [], Double(c.epoch))
            for phase in Phase.allCases {
                gauge(
                    "bcpipe_coordinator_phase", "1 for the deployment's phase as this site's mart holds it.",
                    [("phase", phase.rawValue)], c.phase == phase ? 1 : 0)
            }
            gauge(
                "bcpipe_coordinator_fenced", "1 while this site is fenced (a peer retired it at a later epoch).", [],
                c.fencedReason == nil ? 0 : 1)
            let running = c.running
            gauge(
                "bcpipe_coordinator_procedure_running_seconds",
                "How long the procedure still running here has run (0: none running).",
                [("kind", running?.kind.rawValue ?? "none")],
                running.flatMap { ISO8601DateFormatter.lenient($0.startedAt) }.map { max(0, now.timeIntervalSince($0)) }
                    ?? 0)
        }
        if let holds = s.purgeHolds {
            gauge(
                "bcpipe_coordinator_purge_holds", "Purge holds set and not released (IDB and mart purges refused).", [],
                Double(holds))
        }
        for r in s.replication {
            let l = [("subscription", r.subscription)]
            gauge(
                "bcpipe_coordinator_replication_lag_bytes",
                "WAL of the active mart its standby's subscription has not confirmed applied.", l,
                Double(r.bytesBehind ?? 0))
            gauge(
                "bcpipe_coordinator_replication_connected", "1 while the standby's subscription is streaming.", l,
                r.state == "streaming" ? 1 : 0)
        }
        var out: [UInt8] = []
        registry.emit(into: &out)
        return out
    }
}

extension ISO8601DateFormatter {
    /// PostgreSQL's `timestamptz::text` (`2026-12-02 18:35:17.123456+00`) or RFC 3339; the
    /// fraction is cut to milliseconds.
    static func lenient(_ text: String) -> Date? {
        var t = text.replacingOccurrences(of: " ", with: "T")
        if let dot = t.firstIndex(of: "."),
            let zone = t[dot...].firstIndex(where: { $0 == "+" || $0 == "-" || $0 == "Z" })
        {
            let digits = t[t.index(after: dot)..<zone].prefix(3)
            t = String(t[..<dot]) + "." + digits.padding(toLength: 3, withPad: "0", startingAt: 0) + t[zone...]
        }
        if let sign = t.suffix(3).first, sign == "+" || sign == "-", t.suffix(2).allSatisfy(\.isNumber) { t += ":00" }
        return parse(t)
    }
}
