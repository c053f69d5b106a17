import Foundation
import Lab
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What operators deploy with (`deploy/`): the systemd units, the alert rules with their unit
/// tests, and what the units rely on from the daemons — readiness (`Type=notify`) and logs a
/// shipper can read (`--log-format json`).
@Suite("Deploy: systemd units, alert rules, readiness, JSON logs", .serialized)
struct DeployTests {
    static let deploy = GenCLITests.repository.appendingPathComponent("deploy").path
    static let units = ["bcpipe-collector@.service", "bcpipe-extractor@.service", "bcpipe-coordinator@.service"]

    /// A tool the test needs: its path, or a failure that says how to install it.
    static func tool(_ path: String, package: String) throws -> String {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw LabError(
                "\(path) is missing: install it with `apt-get install \(package)` (scripts/setup --tests does)")
        }
        return path
    }

    /// Each unit as an operator enables it (an instance, `ExecStart` at the built bcpipe) in a
    /// directory of its own.
    static func instantiated(_ unit: String, instance: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("units-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let text = try String(contentsOfFile: deploy + "/systemd/" + unit, encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/bcpipe", with: TestLab.executable)
        let path = dir + "/" + unit.replacingOccurrences(of: "@.service", with: "@\(instance).service")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Catches a unit systemd would reject or warn about (a misspelt directive, a bad value, an
    /// `ExecStart` that does not resolve).
    @Test(arguments: units)
    func theUnitVerifies(unit: String) async throws {
        let analyze = try Self.tool("/usr/bin/systemd-analyze", package: "systemd")
        let path = try Self.instantiated(unit, instance: "site1")
        let out = try await Processes.output([analyze, "verify", "--man=no", path], timeout: 60)
        #expect(out.status == 0, "\(out.text)")
        #expect(!out.text.contains((path as NSString).lastPathComponent), "no warning about the unit: \(out.text)")
    }

    /// Catches hardening taken away (a unit's exposure growing past "OK"), and a README whose
    /// exposure figures no longer match the units.
    @Test(arguments: units)
    func theUnitIsHardenedAsTheREADMESays(unit: String) async throws {
        let analyze = try Self.tool("/usr/bin/systemd-analyze", package: "systemd")
        let path = try Self.instantiated(unit, instance: "site1")
        let out = try await Processes.output([analyze, "security", "--offline=true", "--no-pager", path], timeout: 60)
        let line = try #require(
            out.text.split(separator: "\n").first { $0.contains("Overall exposure level") }, "\(out.text)")
        let score = try #require(
            line.split(separator: ":").last?.split(separator: " ").compactMap { Double($0) }.first, "\(line)")
        #expect(score <= 2.5, "\(unit): \(line)")
        let readme = try String(
            contentsOf: GenCLITests.repository.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(
            readme.contains("`\(unit)` | \(String(format: "%.1f", score))"),
            "README's exposure table gives \(unit) its score \(score)")
    }

    /// Catches an alert rule that does not load, or that fires (or stays silent) otherwise than
    /// its unit tests in `deploy/prometheus/alerts.test.yml` say — one test per alert, firing
    /// and not firing.
    @Test func theAlertRulesPassTheirUnitTests() async throws {
        let promtool = try Self.tool("/usr/bin/promtool", package: "prometheus")
        let check = try await Processes.output(
            [promtool, "check", "rules", Self.deploy + "/prometheus/alerts.yml"], timeout: 60)
        #expect(check.status == 0, "\(check.text)")
        let test = try await Processes.output(
            ["/bin/sh", "-c", "cd '\(Self.deploy)/prometheus' && '\(promtool)' test rules alerts.test.yml"],
            timeout: 120)
        #expect(test.status == 0, "\(test.text)")
        // Every alert of the rules has a test group that names it.
        let rules = try String(contentsOfFile: Self.deploy + "/prometheus/alerts.yml", encoding: .utf8)
        let tests = try String(contentsOfFile: Self.deploy + "/prometheus/alerts.test.yml", encoding: .utf8)
        let alerts = rules.split(separator: "\n").compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            return t.hasPrefix("- alert: ") ? String(t.dropFirst(9)) : nil
        }
        #expect(alerts.count >= 15)
        for alert in alerts {
            #expect(tests.contains("alertname: \(alert)"), "\(alert) has a unit test")
        }
    }

    /// Catches a daemon that never tells systemd it is ready (a `Type=notify` unit would time
    /// out and be killed), and a `--log-format json` line that is not one JSON object with the
    /// component. No PostgreSQL needed: the collector starts, queues, and says its IDB is away.
    @Test func aCollectorTellsSystemdWhenItIsReadyAndLogsJSON() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = TestLab.basePort + 4500
        let topology = """
            deployment: { name: notify, mode: active-standby }
            sites:
              - { name: site1, postgres: "host=127.0.0.1 port=\(port + 1) user=bcpipe connect_timeout=1", coordinator: "127.0.0.1:\(port + 2)" }
              - { name: site2, postgres: "host=127.0.0.1 port=\(port + 3) user=bcpipe connect_timeout=1", coordinator: "127.0.0.1:\(port + 4)" }
            sources: [{ name: site1/voice, site: site1 }, { name: site2/voice, site: site2 }]
            collectors:
              - { name: site1-a, source: site1/voice, idb: { site: site1, database: idb_site1_a }, listen: "127.0.0.1:\(port + 5)", queue_dir: q1 }
              - { name: site1-b, source: site1/voice, idb: { site: site2, database: idb_site1_b }, listen: "127.0.0.1:\(port + 6)", queue_dir: q2 }
              - { name: site2-a, source: site2/voice, idb: { site: site2, database: idb_site2_a }, listen: "127.0.0.1:\(port + 7)", queue_dir: q3 }
              - { name: site2-b, source: site2/voice, idb: { site: site1, database: idb_site2_b }, listen: "127.0.0.1:\(port + 8)", queue_dir: q4 }
            extractors: [{ site: site1, role: active }, { site: site2, role: standby }]
            """
        try topology.write(toFile: dir + "/bcpipe.yaml", atomically: true, encoding: .utf8)
        let socket = try NotifySocket(path: dir + "/notify")
        let stderr = dir + "/collector.log"
        let pid = try Processes.spawnDetached(
            [
                TestLab.executable, "collector", "run", "--name", "site1-a", "--config", dir + "/bcpipe.yaml",
                "--log-format", "json",
            ],
            log: stderr, environment: ["NOTIFY_SOCKET": dir + "/notify"])
        defer { kill(pid, SIGKILL) }
        let message = try #require(socket.receive(timeout: 30), "READY=1 within 30 s")
        #expect(message.contains("READY=1"), "\(message)")
        #expect(Processes.isListening(port + 5), "ready means listening")
        // Its IDB does not answer: the shipper's warning is logged, as JSON.
        func logged() -> [[String: Any]] {
            let text = (try? String(contentsOfFile: stderr, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
            }
        }
        try await waitUntil("the collector logs that its IDB is unreachable", timeout: 30) {
            logged().contains { $0["level"] as? String == "warning" }
        }
        let lines = logged()
        let text = try String(contentsOfFile: stderr, encoding: .utf8)
        #expect(text.split(separator: "\n").count == lines.count, "every line is one JSON object: \(text)")
        let warning = try #require(lines.first { $0["level"] as? String == "warning" }, "\(text)")
        #expect(warning["component"] as? String == "bcpipe.collector.site1-a")
        #expect(warning["collector"] as? String == "site1-a")
        #expect(warning["site"] as? String == "site1", "the site its source is at")
        #expect((warning["message"] as? String)?.contains("IDB unreachable") == true, "\(warning)")
        #expect(warning["ts"] is String)
        kill(pid, SIGTERM)
        // SIGTERM stops it within TimeoutStopSec.
        try await waitUntil("the collector exits after SIGTERM", timeout: 30, every: 0.1) { !Processes.isAlive(pid) }
    }
}

/// A unix datagram socket standing in for systemd's notification socket.
final class NotifySocket {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sa_family_t>.size + bytes.count))
            }
        }
        guard fd >= 0, bound == 0 else { throw LabError("cannot bind \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    /// The next datagram, or nil after `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : nil
    }
}
