import Foundation
import Lab
import PostgresClient
import Testing
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The operator's status page (`GET /` of every coordinator) and `/v1/deployment`: the same data
/// as `bcpipe status --json`, well-formed, live, and rendered by a real browser.
@Suite("Operator status page", .serialized)
struct StatusPageTests {
    static func get(_ url: String) async throws -> (Int, String) {
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 10
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test func theStatusPageShowsWhatStatusShowsAndFollowsTheDeployment() async throws {
        let lab = try TestLab.makeLab(name: "status-page")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3000
        o.stuckThreshold = 3600
        o.traffic = 50
        try await lab.up(o)
        let view = try Topology.load(path: lab.topologyPath(site: "site1"))
        let page = "http://\(view.site(named: "site1")!.coordinator)/"

        // The same data as status --json (from the same view).
        let status = try await DisasterRecoveryTests.bcpipe([
            "status", "--json", "--config", lab.topologyPath(site: "site1"),
        ])
        let json = try JSONSerialization.jsonObject(with: Data(status.text.utf8)) as? [String: Any] ?? [:]
        try await CollectorTests.waitUntil("the standby follows the active mart", timeout: 120) {
            try await Self.get(page).1.contains("following via bcpipe_site2: all 18 tables synchronised")
        }
        // Which zones and levels the reporting mart keeps its interval views in (CONTRACT 5.1).
        try await CollectorTests.waitUntil("the interval views are built", timeout: 60) {
            try await Self.get(page).1.contains("sub-hour (15 min), hour, day, week, month in UTC, America/New_York")
        }
        let (code, html) = try await Self.get(page)
        #expect(code == 200)
        let doc = try HTMLNode.parse(html)
        #expect(doc.all("meta").contains { $0.attributes["http-equiv"] == "refresh" }, "the page reloads itself")
        #expect(doc.element(id: "phase")?.all("dd").first?.allText == json["phase"] as? String)
        #expect(doc.element(id: "epoch")?.all("dd").first?.allText == "\(json["epoch"] as? Int ?? -1)")
        #expect(doc.element(id: "mode")?.all("dd").first?.allText == "active-standby")
        #expect(
            doc.element(id: "reporting-mart")?.all("dd").first?.allText
                == "\(json["reportingSite"] as? String ?? "?")/mart")
        let sites = try #require(doc.element(id: "sites")).rows
        #expect(sites.map { $0[0] } == ["site1", "site2"])
        #expect(sites[0][1] == "local" && sites[1][1] == "up", "\(sites)")
        #expect(sites.map { $0[3] } == ["active", "standby"])
        let collectors = try #require(doc.element(id: "collectors")).rows
        let names = (json["collectors"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(collectors.map { $0[0] } == names && names.count == 4, "\(collectors)")
        #expect(collectors.allSatisfy { $0[2] == "direct" }, "\(collectors)")
        let extractors = try #require(doc.element(id: "extractors")).rows
        #expect(Set(extractors.map { $0[4] }).isSuperset(of: ["site1/voice", "site2/voice"]), "\(extractors)")
        let (jsonCode, deployment) = try await Self.get(
            "http://\(view.site(named: "site1")!.coordinator)/v1/deployment")
        let served = try JSONSerialization.jsonObject(with: Data(deployment.utf8)) as? [String: Any] ?? [:]
        #expect(jsonCode == 200)
        #expect(served["phase"] as? String == json["phase"] as? String)
        #expect((served["collectors"] as? [[String: Any]])?.count == 4)

        // Reporting clients list both servers and land on the reporting mart, as the reporting
        // role, which sees the report schema only; after a switch-over, on the other one.
        let observer = try Topology.load(path: lab.topologyPath)
        let ports = ["site1", "site2"].map { s in
            observer.site(named: s)!.postgres.split(separator: " ").first { $0.hasPrefix("port=") }!.dropFirst(5)
        }
        let reporting =
            "host=127.0.0.1,127.0.0.1 port=\(ports.joined(separator: ",")) user=bcpipe_reporting target_session_attrs=read-write connect_timeout=5"
        func reportingPort() async throws -> String {
            try await PostgresConnection.with(PostgresConfiguration(conninfo: reporting, database: "mart")) { c in
                _ = try await c.query("SELECT count(*) FROM report.interactions")
                await #expect(throws: PostgresError.self) { try await c.query("SELECT count(*) FROM mart.event") }
                return try await c.query("SELECT inet_server_port()::text")[0][0]!
            }
        }
        // (Until a coordinator's round has made the role writable on the reporting mart, both
        // servers refuse: "session is read-only".)
        try await CollectorTests.waitUntil("reporting clients land on site1", timeout: 30) {
            (try? await reportingPort()) == String(ports[0])
        }
        let switched = try await DisasterRecoveryTests.bcpipe([
            "switchover", "--to", "site2", "--config", lab.topologyPath,
        ])
        #expect(switched.status == 0, "\(switched.text)")
        try await CollectorTests.waitUntil("reporting clients land on site2", timeout: 30) {
            (try? await reportingPort()) == String(ports[1])
        }

        // Live: a WAN cut shows on the next load (the -b collectors queue, site2 is unreachable).
        try lab.setLink("site1", "site2", .refuse)
        // The witness tells it apart from a failure of site2: it still reaches site2.
        let witness = "127.0.0.1:\(try lab.requireState().witnessPort)"
        try await CollectorTests.waitUntil("the page shows the cut, and the witness still seeing site2", timeout: 30) {
            let doc = try HTMLNode.parse(try await Self.get(page).1)
            let rows = doc.element(id: "sites")?.rows ?? []
            let witnesses = doc.element(id: "witnesses")?.rows ?? []
            return rows.count == 2 && rows[1][1] == "DOWN" && witnesses.count == 1 && witnesses[0][0] == witness
                && witnesses[0][1] == "yes" && witnesses[0][3] == "coordinator up, PostgreSQL up"
        }
        try lab.setLink("site1", "site2", .up)

        try lab.down(remove: true)
    }

    @Test func aRealBrowserRendersTheStatusPage() async throws {
        // A missing browser is a failure, not a skip.
        guard Browser.available else {
            Issue.record(Comment(rawValue: Browser.missing))
            return
        }
        let lab = try TestLab.makeLab(name: "status-browser")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3100
        o.stuckThreshold = 3600
        try await lab.up(o)
        let view = try Topology.load(path: lab.topologyPath(site: "site2"))
        let dom = try await Browser.dumpDOM("http://\(view.site(named: "site2")!.coordinator)/")
        #expect(dom.contains(#"<meta http-equiv="refresh" content="2">"#), "\(dom.prefix(600))")
        #expect(dom.contains("<dd>active-standby</dd>"))
        #expect(dom.contains("<dd>site1/mart</dd>"))
        #expect(dom.contains("as site2 sees it"))
        for c in view.collectors { #expect(dom.contains("<td>\(c.name)</td>")) }
        try lab.down(remove: true)
    }
}
