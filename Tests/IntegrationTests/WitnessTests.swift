import Foundation
import Lab
import PostgresClient
import Testing
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A partition is not a disaster (CONTRACT 6.4): driven as an operator would, through the
/// command line and HTTP only, on a lab whose witness sits at the observers' location.
@Suite("Witnesses", .serialized)
struct WitnessTests {
    static func bcpipe(_ args: [String]) async throws -> Processes.Output {
        try await Processes.output([TestLab.executable] + args, timeout: 120)
    }

    /// What a declaration would change, per site as an observer sees it: phase, epoch, role,
    /// reporting site, fence, the procedure and the journal's length.
    static func controlSnapshot(_ lab: LocalLab) async throws -> [String] {
        let out = try await bcpipe(["status", "--json", "--config", lab.topologyPath])
        let json = try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any] ?? [:]
        return (json["sites"] as? [[String: Any]] ?? []).map { s in
            let fields: [Any?] = [
                s["name"], s["phase"], s["epoch"], s["role"], s["reportingSite"], s["fenced"],
                (s["procedure"] as? [String: Any])?["id"], (s["journal"] as? [Any])?.count,
            ]
            return fields.map { $0.map { "\($0)" } ?? "-" }.joined(separator: " ")
        }
    }

    /// NDJSON lines of `bcpipe gen` for a seed.
    static func generated(count: Int, seed: Int, start: String) async throws -> [String] {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("witness-\(getpid())-\(seed).ndjson")
        defer { try? FileManager.default.removeItem(at: file) }
        let gen = try await bcpipe([
            "gen", "--count", "\(count)", "--seed", "\(seed)", "--rate", "200", "--start", start, "--out", file.path,
        ])
        #expect(gen.status == 0, "\(gen.text)")
        return try String(contentsOf: file, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// Posts each source's lines to both collectors of its pair; every request must be acknowledged.
    static func post(_ lines: [String], _ topology: Topology) async throws {
        for source in topology.sources {
            let body = lines.filter { $0.contains(#""source":"\#(source.name)""#) }.joined(separator: "\n") + "\n"
            for c in topology.collectors where c.source == source.name {
                var request = URLRequest(url: URL(string: "http://\(c.listen)/v1/events")!)
                request.httpMethod = "POST"
                request.timeoutInterval = 30
                request.setValue("application/x-ndjson", forHTTPHeaderField: "Content-Type")
                request.httpBody = Data(body.utf8)
                let (data, response) = try await URLSession.shared.data(for: request)
                #expect(
                    (response as? HTTPURLResponse)?.statusCode == 200,
                    "\(c.name): \(String(decoding: data, as: UTF8.self))")
            }
        }
    }

    /// `source seq` of every event (not heartbeat) among `lines`.
    static func keys(_ lines: [String]) throws -> Set<String> {
        Set(
            try lines.filter { !$0.contains(#""type":"heartbeat""#) }.map { line in
                let j = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
                return "\(j["source"]!) \(j["seq"]!)"
            })
    }

    /// Catches: `dr declare` promoting the survivor during a WAN cut (either kind) because the
    /// failed site does not answer from the survivor; a refusal that changes something anyway;
    /// events acknowledged during the cut missing from the mart after the link returns; a
    /// declaration with the witness down going on without `--without-witness`, or the journal
    /// not saying that it did.
    @Test func aPartitionIsRefusedAndAFailureWithoutWitnessNeedsTheOperatorsWord() async throws {
        let lab = try TestLab.makeLab(name: "witness")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 3900
        o.stuckThreshold = 3600
        try await lab.up(o)
        let observer = try Topology.load(path: lab.topologyPath)
        let witness = "127.0.0.1:\(try lab.requireState().witnessPort)"
        #expect(observer.witnesses.map(\.description) == [witness], "the lab lists its witness")
        for view in ["site1", "site2"] {
            #expect(
                try Topology.load(path: lab.topologyPath(site: view)).witnesses.map(\.description) == [witness],
                "\(view).yaml lists the witness too")
        }
        let unknown = try await StatusPageTests.get("http://\(witness)/v1/reach/site9")
        #expect(unknown.0 == 404 && unknown.1.contains("site1, site2"), "\(unknown)")

        let lines = try await Self.generated(count: 1200, seed: 31, start: "2026-11-21T09:00:00Z")
        try await Self.post(Array(lines[0..<400]), observer)
        let before = try await Self.controlSnapshot(lab)
        #expect(before.count == 2 && before.allSatisfy { $0.contains(" normal 1 ") }, "\(before)")

        for (i, cut) in ["refuse", "blackhole"].enumerated() {
            let down = try await Self.bcpipe([
                "lab", "link", "site1", "site2", "down", "--mode", cut, "--dir", lab.directory,
            ])
            #expect(down.status == 0, "\(down.text)")
            // From each side the other is unreachable; the witness still reaches it.
            for (failed, survivor) in [("site1", "site2"), ("site2", "site1")] {
                let reach = try await StatusPageTests.get("http://\(witness)/v1/reach/\(failed)")
                #expect(reach.1.contains(#""coordinator":true"#) && reach.1.contains(#""postgres":true"#), "\(reach)")
                let out = try await Self.bcpipe([
                    "dr", "declare", "--failed-site", failed, "--confirm-site-down",
                    "--config", lab.topologyPath(site: survivor),
                ])
                #expect(out.status == 3, "\(cut): declaring \(failed) failed from \(survivor): \(out.text)")
                #expect(out.text.contains("witness-reaches-failed-site") && out.text.contains(witness), "\(out.text)")
            }
            #expect(try await Self.controlSnapshot(lab) == before, "a refused declaration changes nothing (\(cut))")
            // The pipeline goes on during the cut: acknowledged events queue at the -b collectors.
            try await Self.post(Array(lines[(400 + 400 * i)..<(800 + 400 * i)]), observer)
            let up = try await Self.bcpipe(["lab", "link", "site1", "site2", "up", "--dir", lab.directory])
            #expect(up.status == 0, "\(up.text)")
        }

        // Once the link is back, every event is in the active mart once: heartbeats after the
        // last event let the watermark pass it.
        var heartbeats: [String] = []
        for source in observer.sources {
            let seqs = lines.filter { $0.contains(#""source":"\#(source.name)""#) }.compactMap { line in
                ((try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["seq"] as? NSNumber)?
                    .int64Value
            }
            heartbeats.append(
                #"{"source":"\#(source.name)","seq":\#(seqs.max()! + 1),"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#
            )
        }
        try await Self.post(heartbeats, observer)
        let expected = try Self.keys(lines)
        try await CollectorTests.waitUntil("site1's mart holds every acknowledged event", timeout: 120) {
            let c = try await TestLab.connect(lab, site: "site1", database: "mart")
            let held = try await c.query("SELECT source, seq FROM mart.event").map { "\($0[0]!) \($0[1]!)" }
            await c.close()
            return Set(held) == expected && held.count == expected.count
        }
        try await TestLab.expectViewsMatchTheirEvents(lab, site: "site1")

        // Site 1 fails while the witness is down: refused, nothing changed, until the operator
        // gives their word; the journal records it.
        try lab.stopWitness()
        #expect(try await Self.bcpipe(["lab", "fail-site", "site1", "--dir", lab.directory]).status == 0)
        let declare = ["dr", "declare", "--failed-site", "site1", "--confirm-site-down"]
        let site2View = ["--config", lab.topologyPath(site: "site2")]
        let refused = try await Self.bcpipe(declare + site2View)
        #expect(refused.status == 3 && refused.text.contains("witness-must-answer"), "\(refused.text)")
        #expect(refused.text.contains("--without-witness"), "the refusal says what would make it pass")
        let status = try await Self.bcpipe(["status", "--json"] + site2View)
        let json = try JSONSerialization.jsonObject(with: Data(status.text.utf8)) as? [String: Any] ?? [:]
        #expect(json["phase"] as? String == "normal" && json["epoch"] as? Int == 1, "\(status.text)")
        #expect((json["partitionGuard"] as? String)?.contains("0 of 1") == true, "\(status.text)")
        let done = try await Self.bcpipe(declare + ["--without-witness"] + site2View)
        #expect(done.status == 0 && done.text.contains("disaster recovery done: epoch 2"), "\(done.text)")
        let after = try await Self.bcpipe(["status", "--json"] + site2View)
        let j = try JSONSerialization.jsonObject(with: Data(after.text.utf8)) as? [String: Any] ?? [:]
        let site2 = (j["sites"] as? [[String: Any]])?.first { $0["name"] as? String == "site2" }
        let journal = site2?["journal"] as? [[String: Any]] ?? []
        #expect(journal.first?["step"] as? String == "safety-check", "\(journal)")
        #expect(journal.first?["status"] as? String == "without-witness", "\(journal)")
        try lab.down(remove: true)
    }
}
