import Foundation
import Lab
import PostgresClient
import Testing
import Topology
import Traffic
import ZstdCompression

/// Bad input everywhere changes nothing: hostile request bodies at a real collector, and operator
/// commands with wrong sites and in wrong phases.
@Suite("Bad input", .serialized)
struct BadInputTests {
    /// Seeded hostile bodies — random bytes, deep nesting, invalid UTF-8, SQL-looking values, a
    /// zstd bomb, a huge line — each answered with a 4xx that says what is wrong (never a 5xx,
    /// never a hang); what was accepted before is still stored once, the collector still ingests.
    @Test func hostileBodiesAreAnsweredAndLoseNothing() async throws {
        let lab = try TestLab.makeLab(name: "bad-bodies")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3700
        o.stuckThreshold = 3600
        o.startExtractors = false
        try await lab.up(o)
        let topology = try Topology.load(path: lab.topologyPath)
        let client = IngestClient(url: "http://\(topology.collector(named: "site1-a")!.listen)", token: nil)
        let base = Int64(CollectorTests.freshBase())
        func events(_ from: Int64, _ n: Int) -> Data {
            Data(
                (0..<Int64(n)).map {
                    #"{"source":"site1/voice","seq":\#(from + $0),"ts":"2026-11-29T10:00:00Z","type":"agent.login","agent":"a\#($0)"}"#
                }.joined(separator: "\n").utf8)
        }
        #expect(try await client.post(events(base, 100)).status == 200)

        var rng = SplitMix(seed: 8)
        var bodies: [(String, Data, String?)] = []
        for i in 0..<60 {
            let n = Int(rng.next() % 4096) + 1
            bodies.append(("random bytes \(i)", Data((0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }), nil))
        }
        bodies.append(("deep nesting", Data((String(repeating: "[", count: 200_000) + "\n").utf8), nil))
        bodies.append(
            (
                "deep attrs",
                Data(
                    (#"{"source":"site1/voice","seq":1,"ts":"2026-11-29T10:00:00Z","type":"agent.login","attrs":"#
                        + String(repeating: #"{"a":"#, count: 50_000) + "1" + String(repeating: "}", count: 50_001))
                        .utf8), nil
            ))
        bodies.append(("invalid UTF-8", Data([0x7B, 0x22, 0xC3, 0x28, 0xFF, 0xFE, 0x22, 0x7D, 0x0A]), nil))
        bodies.append(
            (
                "SQL-looking fields",
                Data(
                    #"{"source":"site1/voice'; DROP TABLE idb.events; --","seq":1,"ts":"x","type":"agent.login"}"#.utf8),
                nil
            ))
        bodies.append(("a huge line", Data(String(repeating: "x", count: 3 << 20).utf8), nil))
        let bomb = try Zstd.compress(Array(repeating: UInt8(ascii: "a"), count: 64 << 20), level: 3)
        bodies.append(("a zstd bomb (64 MiB of 'a')", Data(bomb), "zstd"))
        bodies.append(("gzip that is not gzip", Data("plain".utf8), "gzip"))

        for (what, body, encoding) in bodies {
            let a = try await client.post(body, encoding: encoding)
            #expect((400..<500).contains(a.status), "\(what): \(a.status)")
            let said =
                (a.json["error"] as? String) ?? ((a.json["rejected"] as? [[String: Any]])?.first?["error"] as? String)
            #expect(said?.isEmpty == false, "\(what): says what is wrong")
        }
        // The SQL-looking value was data, and the table is still there with what was accepted.
        #expect(try await client.post(events(base + 100, 10)).status == 200, "still ingests")
        try await CollectorTests.waitUntil("shipped", timeout: 30) {
            try await CollectorTests.stored(lab, site: "site1", idb: "idb_site1_a", source: "site1/voice").filter {
                $0 >= base
            }.count == 110
        }
        let stored = try await CollectorTests.stored(lab, site: "site1", idb: "idb_site1_a", source: "site1/voice")
        #expect(stored.filter { $0 >= base } == (base..<(base + 110)).map { $0 }, "everything accepted, once")
        try lab.down(remove: true)
    }

    /// Wrong sites, wrong phases: a clear refusal naming the rule or the site, and the
    /// deployment's state (phase, epoch, journal) exactly as before.
    @Test func operatorCommandsInTheWrongPhaseOrWithWrongSitesChangeNothing() async throws {
        let lab = try TestLab.makeLab(name: "bad-commands")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3800
        o.stuckThreshold = 3600
        try await lab.up(o)
        let config = lab.topologyPath
        func state() async throws -> String {
            let out = try await DisasterRecoveryTests.bcpipe(["status", "--json", "--config", config])
            let json = try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any] ?? [:]
            let sites = (json["sites"] as? [[String: Any]] ?? []).map { s in
                "\(s["name"] ?? "?") \(s["epoch"] ?? "?") \(s["phase"] ?? "?") \(s["role"] ?? "?") \((s["journal"] as? [Any])?.count ?? -1)"
            }
            return "\(json["phase"] ?? "?") \(json["epoch"] ?? "?") \(sites)"
        }
        let before = try await state()
        let cases: [([String], Int32, String)] = [
            (["dr", "declare", "--failed-site", "site9", "--confirm-site-down"], 2, "site9"),
            (["dr", "declare", "--failed-site", "site1"], 3, "confirm-site-down"),
            // Both servers answer: a WAN cut, not a site failure.
            (["dr", "declare", "--failed-site", "site1", "--confirm-site-down"], 3, "failed-site-unreachable"),
            (["rtn", "start", "--site", "site2", "--active", "site1"], 3, "phase"),
            (["rtn", "start", "--site", "site9", "--active", "site1"], 2, "site9"),
            (["switchover", "--to", "site9"], 2, "site9"),
            // To where it already is: nothing to do, said so.
            (["switchover", "--to", "site1"], 0, "already done"),
        ]
        for (args, code, says) in cases {
            let out = try await DisasterRecoveryTests.bcpipe(args + ["--config", config])
            #expect(out.status == code, "\(args): \(out.status) \(out.text)")
            #expect(says.isEmpty || out.text.contains(says), "\(args): \(out.text)")
            #expect(try await state() == before, "\(args) changed the deployment")
        }
        try lab.down(remove: true)
    }
}
