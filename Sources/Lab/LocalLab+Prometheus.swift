import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `lab up --prometheus`: a real Prometheus (Debian's `prometheus`) scraping every process of the
/// lab every second, with the alert rules an operator deploys (`deploy/prometheus/alerts.yml`)
/// loaded, listening on loopback beside the lab. It stands at the observers' location, like the
/// witness: `lab fail-site` leaves it running, `lab down` stops it.
extension LocalLab {
    var prometheusDirectory: String { directory + "/prometheus" }
    var prometheusPIDPath: String { prometheusDirectory + "/prometheus.pid" }

    /// The Prometheus executable: `/usr/bin/prometheus` (the Debian package) or on `PATH`.
    static func prometheusExecutable() throws -> String {
        let candidates =
            ["/usr/bin/prometheus"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/prometheus" }
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw LabError(
                "--prometheus needs Prometheus: install it with `apt-get install prometheus` (or `scripts/setup --tests`)"
            )
        }
        return found
    }

    /// The scrape configuration of the lab: every collector, extractor and coordinator, and the
    /// witness, each under its job name of `deploy/prometheus/prometheus.example.yml`.
    func prometheusConfiguration(_ state: LabState, rules: String) -> String {
        let topology = state.topology(directory: directory, viewpoint: nil)
        func job(_ name: String, _ ports: [Int]) -> String {
            """
              - job_name: \(name)
                static_configs:
                  - targets: [\(ports.map { "\"127.0.0.1:\($0)\"" }.joined(separator: ", "))]

            """
        }
        return """
            # Written by `bcpipe lab up --prometheus`.
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
              evaluation_interval: 1s
            rule_files:
              - \(rules)
            scrape_configs:

            """
                + job("bcpipe-collector", topology.collectors.map(\.listen.port))
                + job("bcpipe-extractor", state.sites.map(state.extractorMetricsPort))
                + job("bcpipe-coordinator", state.sites.map(state.coordinatorPort))
                + job("bcpipe-witness", [state.witnessPort])
    }

    /// Starts Prometheus unless it runs, with the rules at `rules` (copied into the lab), and
    /// waits until it is ready.
    func startPrometheus(_ state: LabState, rules: String) throws {
        if let pid = readPID(prometheusPIDPath), isLabProcess(pid) { return }
        guard FileManager.default.fileExists(atPath: rules) else {
            throw LabError(
                "--prometheus: no alert rules at \(rules); give --prometheus-rules the path of deploy/prometheus/alerts.yml"
            )
        }
        let executable = try Self.prometheusExecutable()
        try FileManager.default.createDirectory(atPath: prometheusDirectory, withIntermediateDirectories: true)
        let copied = prometheusDirectory + "/alerts.yml"
        try? FileManager.default.removeItem(atPath: copied)
        try FileManager.default.copyItem(atPath: rules, toPath: copied)
        let config = prometheusDirectory + "/prometheus.yml"
        try prometheusConfiguration(state, rules: copied).write(toFile: config, atomically: true, encoding: .utf8)
        let pid = try Processes.spawnDetached(
            [
                executable, "--config.file=\(config)", "--storage.tsdb.path=\(prometheusDirectory)/data",
                "--web.listen-address=127.0.0.1:\(state.prometheusPort)", "--storage.tsdb.retention.time=1d",
            ], log: prometheusDirectory + "/prometheus.log")
        try "\(pid)\n".write(toFile: prometheusPIDPath, atomically: true, encoding: .utf8)
        // Ready, not only listening: until its storage is open it answers 503 to every query.
        try waitUntil(
            "Prometheus is ready on \(state.prometheusPort) (see \(prometheusDirectory)/prometheus.log)", timeout: 60
        ) {
            Processes.httpStatus(port: state.prometheusPort, path: "/-/ready") == 200
        }
    }

    /// Stops the lab's Prometheus, if it runs.
    func stopPrometheus() {
        if let pid = readPID(prometheusPIDPath), isLabProcess(pid) { Processes.stop(pid, grace: 10) }
        try? FileManager.default.removeItem(atPath: prometheusPIDPath)
    }
}
