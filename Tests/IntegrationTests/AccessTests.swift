import Foundation
import Lab
import PostgresClient
import Testing
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The coordinator API behind its token, the operator's identity in the procedure journal, and
/// no secret in status, errors or logs.
@Suite("Tokens and identities", .serialized)
struct AccessTests {
    static func get(_ url: String, authorization: String? = nil, accept: String? = nil) async throws -> (
        Int, String, String?
    ) {
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 10
        if let authorization { request.setValue(authorization, forHTTPHeaderField: "Authorization") }
        if let accept { request.setValue(accept, forHTTPHeaderField: "Accept") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as? HTTPURLResponse
        return (
            http?.statusCode ?? 0, String(decoding: data, as: UTF8.self),
            http?.value(forHTTPHeaderField: "WWW-Authenticate")
        )
    }

    @Test func theCoordinatorAPINeedsItsTokenAndTheJournalNamesTheOperator() async throws {
        let token = "coord-\(UInt64.random(in: 1...UInt64.max))"
        let ingest = "ingest-\(UInt64.random(in: 1...UInt64.max))"
        let lab = try TestLab.makeLab(name: "access")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3500
        o.stuckThreshold = 3600
        o.collectorEnvironment = ["BCPIPE_COORDINATOR_TOKEN": token, "BCPIPE_INGEST_TOKEN": ingest]
        try await lab.up(o)
        let t = try Topology.load(path: lab.topologyPath)
        let base = "http://\(t.site(named: "site1")!.coordinator)"

        let (open, _, _) = try await Self.get(base + "/healthz")
        #expect(open == 200, "health checks need no token")
        for path in ["/", "/v1/status", "/v1/deployment"] {
            let (code, body, challenge) = try await Self.get(base + path)
            #expect(code == 401, "\(path)")
            #expect(body.contains("BCPIPE_COORDINATOR_TOKEN") && !body.contains(token))
            #expect(challenge?.hasPrefix("Bearer") == true, "an API client is told the scheme")
            #expect(try await Self.get(base + path, authorization: "Bearer wrong-\(token)").0 == 401)
            #expect(try await Self.get(base + path, authorization: "Bearer \(token)").0 == 200, "\(path)")
        }
        // A browser is asked for it (Basic: any user, the token as the password). (URLSession
        // does not return from a Basic challenge without credentials: curl plays the browser.)
        let page = try await Processes.output(
            ["/usr/bin/curl", "-s", "-i", "-H", "Accept: text/html", "--max-time", "10", base + "/"])
        #expect(
            page.text.hasPrefix("HTTP/1.1 401") && page.text.contains(#"WWW-Authenticate: Basic realm="#),
            "\(page.text)")
        let basic = "Basic " + Data("operator:\(token)".utf8).base64EncodedString()
        #expect(try await Self.get(base + "/", authorization: basic).0 == 200, "a browser's Basic authentication")
        // The coordinators reach each other with it.
        try await CollectorTests.waitUntil("site1's coordinator sees site2's", timeout: 30) {
            let body = try await Self.get(base + "/v1/status", authorization: "Bearer \(token)").1
            let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            return (json?["peers"] as? [[String: Any]])?.first?["reachable"] as? Bool == true
        }

        // The witness is behind the same token (health and metrics open, for supervisors and
        // Prometheus), and status, sending it, sees what the witness sees.
        let witness = "http://127.0.0.1:\(try lab.requireState().witnessPort)"
        #expect(try await Self.get(witness + "/healthz").0 == 200)
        #expect(try await Self.get(witness + "/metrics").1.contains("bcpipe_witness_reaches"))
        let (refused, refusedBody, _) = try await Self.get(witness + "/v1/reach/site1")
        #expect(refused == 401 && refusedBody.contains("BCPIPE_COORDINATOR_TOKEN"), "\(refusedBody)")
        let (reached, reach, _) = try await Self.get(witness + "/v1/reach/site1", authorization: "Bearer \(token)")
        #expect(reached == 200 && reach.contains(#""coordinator":true"#), "\(reach)")
        let withToken = try await Processes.output(
            [TestLab.executable, "status", "--config", lab.topologyPath],
            environment: ["BCPIPE_COORDINATOR_TOKEN": token])
        #expect(withToken.text.contains("1 of 1 witness answering"), "\(withToken.text)")
        let without = try await DisasterRecoveryTests.bcpipe(["status", "--config", lab.topologyPath])
        #expect(without.text.contains("refused the token"), "status says why the witness does not answer")

        // The operator who ran a procedure is in the journal.
        // (Refused, changing nothing, until the standby is synchronised.)
        try await CollectorTests.waitUntil("the switch-over is done", timeout: 120) {
            try await DisasterRecoveryTests.bcpipe(
                ["switchover", "--to", "site2", "--config", lab.topologyPath],
                environment: ["BCPIPE_OPERATOR": "alice"]
            ).status == 0
        }
        let status = try await DisasterRecoveryTests.bcpipe(["status", "--json", "--config", lab.topologyPath])
        #expect(status.text.contains("\"alice@"), "\(status.text)")

        // No secret in status, in the processes' logs, or in what they print.
        #expect(!status.text.contains(token) && !status.text.contains(ingest))
        let logs = try FileManager.default.subpathsOfDirectory(atPath: lab.directory).filter { $0.hasSuffix(".log") }
        #expect(!logs.isEmpty)
        for log in logs {
            let text = (try? String(contentsOfFile: lab.directory + "/" + log, encoding: .utf8)) ?? ""
            #expect(!text.contains(token) && !text.contains(ingest), "\(log)")
        }
        try lab.down(remove: true)
    }

    /// TLS to PostgreSQL is libpq's: `sslmode` (and `sslrootcert`) in a site's conninfo.
    @Test func postgresTLSThroughSslmodeInTheConninfo() async throws {
        let lab = try TestLab.makeLab(name: "tls")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3600
        o.stuckThreshold = 3600
        o.startExtractors = false
        try await lab.up(o)
        let site = try #require(try Topology.load(path: lab.topologyPath).site(named: "site1"))
        let data = lab.directory + "/sites/site1/pgdata"
        func certificate(_ name: String, in dir: String) async throws {
            let out = try await Processes.output([
                "/usr/bin/openssl", "req", "-new", "-x509", "-days", "1", "-nodes", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "\(dir)/\(name).key", "-out",
                "\(dir)/\(name).crt",
            ])
            #expect(out.status == 0, "\(out.text)")
        }
        try await certificate("server", in: data)
        try await certificate("other", in: lab.directory)
        chmod(data + "/server.key", 0o600)
        _ = try await Processes.output([
            "/bin/chown", "--reference=\(data)", data + "/server.key", data + "/server.crt",
        ])
        let owner = try await PostgresConnection.connect(
            PostgresConfiguration(conninfo: site.postgres, database: "mart"))
        try await owner.execute("ALTER SYSTEM SET ssl = on")
        _ = try await owner.query("SELECT pg_reload_conf()")
        await owner.close()

        // The server's certificate verified, the session encrypted.
        try await CollectorTests.waitUntil("the server takes TLS", timeout: 30) {
            try await PostgresConnection.with(
                PostgresConfiguration(
                    conninfo: site.postgres + " sslmode=verify-full sslrootcert=\(data)/server.crt", database: "mart")
            ) { try await $0.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0][0] == "t" }
        }
        // A server whose certificate the client does not trust is refused, saying why.
        do {
            let c = try await PostgresConnection.connect(
                PostgresConfiguration(
                    conninfo: site.postgres + " sslmode=verify-full sslrootcert=\(lab.directory)/other.crt",
                    database: "mart"))
            await c.close()
            Issue.record("connected with a certificate it does not trust")
        } catch let e as PostgresError {
            #expect(e.code == .connectionFailed && e.description.contains("certificate"), "\(e)")
        }
        try lab.down(remove: true)
    }
}
