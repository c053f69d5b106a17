import Foundation
import Lab
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `bcpipe lab up --prometheus`: a real Prometheus scrapes every lab process with
/// `deploy/prometheus/alerts.yml` loaded — the rules and the dashboard checked against what the
/// lab really exports, and alerts seen firing and resolving through Prometheus' HTTP API.
@Suite("Prometheus on the lab", .serialized)
struct PrometheusLabTests {
    static let offset = 4400

    /// The suite's lab: active-standby with live traffic (so sources stay current until the WAN is
    /// cut), a 20 s stuck threshold, and Prometheus — started by the command, as an operator would.
    actor Shared {
        static let shared = Shared()
        var lab: LocalLab?
        func get() async throws -> LocalLab {
            if let lab { return lab }
            _ = try DeployTests.tool("/usr/bin/prometheus", package: "prometheus")
            let lab = try TestLab.makeLab(name: "prometheus")
            let out = try await Processes.output(
                [
                    TestLab.executable, "lab", "up", "--dir", lab.directory, "--base-port",
                    "\(TestLab.basePort + PrometheusLabTests.offset)", "--stuck-threshold", "20", "--traffic", "40",
                    "--prometheus", "--prometheus-rules", DeployTests.deploy + "/prometheus/alerts.yml",
                ], timeout: 300)
            TestLab.registerCleanup(lab)
            guard out.status == 0 else { throw LabError("lab up --prometheus failed: \(out.text)") }
            #expect(out.text.contains("Prometheus http://127.0.0.1:"), "lab up says where Prometheus is: \(out.text)")
            self.lab = lab
            return lab
        }
    }

    static func api(_ lab: LocalLab, _ path: String) async throws -> [String: Any] {
        let port = try lab.requireState().prometheusPort
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.timeoutInterval = 5
        let (data, _) = try await URLSession.shared.data(for: request)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    /// The alerts firing now: `(alertname, labels)`.
    static func firing(_ lab: LocalLab) async throws -> [(String, [String: String])] {
        let data = try await api(lab, "/api/v1/alerts")["data"] as? [String: Any]
        return (data?["alerts"] as? [[String: Any]] ?? []).compactMap { a in
            guard a["state"] as? String == "firing", let labels = a["labels"] as? [String: String],
                let name = labels["alertname"]
            else { return nil }
            return (name, labels)
        }
    }

    /// Prometheus is polled every second; an answer it cannot give yet counts as "not yet".
    static func waitUntil(_ what: String, timeout: Double, _ condition: () async throws -> Bool) async throws {
        try await IntegrationTests.waitUntil(what, timeout: timeout, every: 1, retryingErrors: true, condition)
    }

    /// The `bcpipe_*` metric names a file mentions.
    static func metricNames(in file: String) throws -> Set<String> {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let regex = try NSRegularExpression(pattern: "bcpipe_[a-z_]+[a-z]")
        return Set(
            regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
                Range($0.range, in: text).map { String(text[$0]) }
            })
    }

    /// Catches a rule or a dashboard panel written against a metric no process exports (it would
    /// never fire, or stay empty): every `bcpipe_*` name in `alerts.yml` and `bcpipe.json` is in
    /// what Prometheus scraped from the lab, and every lab process is scraped.
    @Test func everyMetricOfTheRulesAndTheDashboardIsExported() async throws {
        let lab = try await Shared.shared.get()
        let wanted = try Self.metricNames(in: DeployTests.deploy + "/prometheus/alerts.yml")
            .union(Self.metricNames(in: DeployTests.deploy + "/grafana/bcpipe.json"))
        #expect(wanted.count >= 20)
        var missing: Set<String> = wanted
        try await Self.waitUntil("Prometheus has scraped every metric the rules and dashboard use", timeout: 90) {
            let names = try await Self.api(lab, "/api/v1/label/__name__/values")["data"] as? [String] ?? []
            missing = wanted.subtracting(names)
            return missing.isEmpty
        }
        #expect(missing.isEmpty, "not exported: \(missing.sorted())")
        let targets = try await Self.api(lab, "/api/v1/targets")["data"] as? [String: Any]
        let active = targets?["activeTargets"] as? [[String: Any]] ?? []
        // 4 collectors, 2 extractors, 2 coordinators, the witness.
        #expect(active.count == 9, "\(active.map { $0["scrapeUrl"] ?? "?" })")
        let jobs = Set(active.compactMap { ($0["labels"] as? [String: String])?["job"] })
        #expect(jobs == ["bcpipe-collector", "bcpipe-extractor", "bcpipe-coordinator", "bcpipe-witness"])
    }

    /// The WAN cut past the stuck threshold: through Prometheus, the collectors across the WAN are
    /// seen queueing and the cut-off source stuck; once the link returns, both alerts resolve.
    /// Catches rules that cannot fire on real metrics (wrong labels, wrong values, a state the
    /// extractor never exports) and alerts that never clear.
    @Test func stuckAndQueueingFireThroughPrometheusAndResolve() async throws {
        let lab = try await Shared.shared.get()
        try await Self.waitUntil("no alert fires on the healthy lab", timeout: 120) {
            try await Self.firing(lab).filter { ["BcpipeCollectorQueueing", "BcpipeSourceStuck"].contains($0.0) }
                .isEmpty
        }
        try lab.setLink("site1", "site2", .refuse)
        var seen: [(String, [String: String])] = []
        try await Self.waitUntil("BcpipeCollectorQueueing and BcpipeSourceStuck fire", timeout: 180) {
            seen = try await Self.firing(lab)
            let queueing = Set(seen.filter { $0.0 == "BcpipeCollectorQueueing" }.compactMap { $0.1["collector"] })
            let stuck = seen.filter { $0.0 == "BcpipeSourceStuck" }
            return queueing.isSuperset(of: ["site1-b", "site2-b"]) && !stuck.isEmpty
        }
        let queueing = Set(seen.filter { $0.0 == "BcpipeCollectorQueueing" }.compactMap { $0.1["collector"] })
        #expect(!queueing.contains("site1-a") && !queueing.contains("site2-a"), "the local IDBs answer: \(queueing)")
        #expect(
            seen.contains { $0.0 == "BcpipeSourceStuck" && $0.1["site"] == "site1" && $0.1["source"] == "site2/voice" },
            "site1's extractor sees site2/voice stuck: \(seen)")
        try lab.setLink("site1", "site2", .up)
        try await Self.waitUntil("both alerts resolve after the link returns", timeout: 180) {
            try await Self.firing(lab).filter { ["BcpipeCollectorQueueing", "BcpipeSourceStuck"].contains($0.0) }
                .isEmpty
        }
    }
}
