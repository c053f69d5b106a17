import Control
import Coordinator
import Extractor
import Foundation
import Lab
import PostgresClient
import Testing
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Disaster recovery on the lab (CONTRACT 6.4), in both modes: the safety rules, a site failure
/// declared by two operators at once, reporting on the survivor with every event its IDBs hold,
/// and the failed site fenced when it comes back.
@Suite("Disaster recovery", .serialized)
struct DisasterRecoveryTests {
    static func bcpipe(_ args: [String], environment: [String: String] = [:]) async throws -> Processes.Output {
        try await Processes.output([TestLab.executable] + args, environment: environment, timeout: 120)
    }

    /// Events the survivor's IDBs hold, by (source, seq).
    static func survivorIDBEvents(_ lab: LocalLab, site: String, topology: Topology) async throws -> Set<String> {
        var all: Set<String> = []
        for c in topology.collectors where c.idb.site == site {
            let conn = try await TestLab.connect(lab, site: site, database: c.idb.database)
            for r in try await conn.query("SELECT source, seq FROM idb.events") { all.insert("\(r[0]!) \(r[1]!)") }
            await conn.close()
        }
        return all
    }

    static func martEvents(_ lab: LocalLab, site: String) async throws -> (events: [String], interactions: Int) {
        let conn = try await TestLab.connect(lab, site: site, database: "mart")
        let events = try await conn.query("SELECT source, seq FROM mart.event").map { "\($0[0]!) \($0[1]!)" }
        let interactions = try await conn.query("SELECT count(*) FROM report.interactions")[0].decode(0, as: Int.self)
        await conn.close()
        return (events, interactions)
    }

    func traffic(_ lab: LocalLab, count: Int, seed: Int, start: String) async throws -> [String] {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("dr-\(getpid())-\(seed).ndjson").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let gen = try await Self.bcpipe([
            "gen", "--count", "\(count)", "--seed", "\(seed)", "--rate", "200", "--start", start, "--out", file,
        ])
        #expect(gen.status == 0, "\(gen.text)")
        return try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    @Test(arguments: [Topology.Mode.activeStandby, .activeActive])
    func siteFailureDeclaredTwiceAtOnceThenTheFailedSiteIsFenced(mode: Topology.Mode) async throws {
        let lab = try TestLab.makeLab(name: "dr-\(mode.rawValue)")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + (mode == .activeStandby ? 1200 : 1300)
        o.mode = mode
        o.stuckThreshold = 3600
        try await lab.up(o)
        let topology = try Topology.load(path: lab.topologyPath(site: "site2"))
        let rig = ExtractorRig(
            lab: lab, topology: topology, settings: try ExtractorSettings.from(topology: topology, site: "site1"))
        let lines = try await traffic(lab, count: 3000, seed: 11, start: "2026-11-21T09:00:00Z")
        for (source, pair) in [("site1/voice", ["site1-a", "site1-b"]), ("site2/voice", ["site2-a", "site2-b"])] {
            try await rig.post(lines.filter { $0.contains(#""source":"\#(source)""#) }, to: pair)
        }
        try await CollectorTests.waitUntil("site1's mart has the traffic") {
            try await Self.martEvents(lab, site: "site1").events.count >= 2900
        }
        let survivorView = lab.topologyPath(site: "site2")
        if mode == .activeStandby {
            // The standby mart replicates the active one (logical replication, set up by site2's coordinator).
            try await CollectorTests.waitUntil("site2's standby mart matches site1's", timeout: 60) {
                let (e1, i1) = try await Self.martEvents(lab, site: "site1")
                let (e2, i2) = try await Self.martEvents(lab, site: "site2")
                return e1.count == e2.count && i1 == i2 && e1.count >= 2900
            }
            let s = try await Self.bcpipe(["status", "--json", "--config", lab.topologyPath])
            let j = try JSONSerialization.jsonObject(with: Data(s.text.utf8)) as? [String: Any]
            let site1 = (j?["sites"] as? [[String: Any]])?.first { $0["name"] as? String == "site1" }
            let replication = site1?["replication"] as? [[String: Any]] ?? []
            #expect(replication.first?["subscription"] as? String == "bcpipe_site2", "\(s.text)")
            #expect(replication.first?["state"] as? String == "streaming")
        }

        // The safety rules, each refused with exit 3 and the rule named; nothing changes.
        var out = try await Self.bcpipe(["dr", "declare", "--failed-site", "site1", "--config", survivorView])
        #expect(out.status == 3, "\(out.text)")
        #expect(out.text.contains("confirm-site-down"))
        out = try await Self.bcpipe([
            "dr", "declare", "--failed-site", "site1", "--confirm-site-down", "--config", lab.topologyPath,
        ])
        #expect(out.status == 3, "site1 is alive: \(out.text)")
        #expect(out.text.contains("failed-site-unreachable"))
        // A WAN cut is not a site failure: an observer that reaches both servers is refused.
        try lab.setLink("site1", "site2", .refuse)
        out = try await Self.bcpipe([
            "dr", "declare", "--failed-site", "site1", "--confirm-site-down", "--config", lab.topologyPath,
        ])
        #expect(out.status == 3, "a WAN cut: \(out.text)")
        try lab.setLink("site1", "site2", .up)
        out = try await Self.bcpipe(["status", "--json", "--config", lab.topologyPath])
        let before = try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any]
        #expect(before?["phase"] as? String == "normal")
        #expect(before?["epoch"] as? Int == 1)

        // Site 1 fails; two operators declare at once from site 2.
        try lab.failSite("site1")
        let args = ["dr", "declare", "--failed-site", "site1", "--confirm-site-down", "--config", survivorView]
        async let first = Task.detached { try await Self.bcpipe(args, environment: ["BCPIPE_OPERATOR": "alice"]) }.value
        async let second = Task.detached { try await Self.bcpipe(args, environment: ["BCPIPE_OPERATOR": "bob"]) }.value
        let (a, b) = try await (first, second)
        #expect(a.status == 0 && b.status == 0, "\(a.text)\n\(b.text)")
        let texts = [a.text, b.text]
        #expect(texts.filter { $0.contains("disaster recovery done: epoch 2") }.count == 1, "\(texts)")
        // The lab's witness was asked, and it does not reach the failed site either.
        let witness = "127.0.0.1:\(try lab.requireState().witnessPort)"
        #expect(texts.allSatisfy { $0.contains("witness \(witness) does not reach site1") }, "\(texts)")
        #expect(texts.filter { $0.contains("already done") }.count == 1, "\(texts)")

        // Reporting goes on at site 2 with every event its IDBs hold, exactly once.
        let held = try await Self.survivorIDBEvents(lab, site: "site2", topology: topology)
        #expect(held.count >= 2900)
        try await CollectorTests.waitUntil("site2's mart holds every event site2's IDBs hold", timeout: 90) {
            Set(try await Self.martEvents(lab, site: "site2").events) == held
        }
        let mart2 = try await Self.martEvents(lab, site: "site2")
        // Catches an event extracted twice (mart.event's key keeps it once; the views would not).
        try await TestLab.expectViewsMatchTheirEvents(lab, site: "site2")
        #expect(mart2.interactions > 0)
        out = try await Self.bcpipe(["status", "--json", "--config", survivorView])
        let after = try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any]
        #expect(after?["phase"] as? String == "emergency", "\(out.text)")
        #expect(after?["epoch"] as? Int == 2)
        #expect(after?["reportingSite"] as? String == "site2")
        let site2 = (after?["sites"] as? [[String: Any]])?.first { $0["name"] as? String == "site2" }
        let journal = site2?["journal"] as? [[String: Any]] ?? []
        #expect(
            journal.map { $0["step"] as? String } == [
                "safety-check", "raise-epoch", "fence", "retire", "promote", "emergency",
            ])
        #expect(journal.first?["status"] as? String == "witnessed", "what guarded the declaration is journaled")
        #expect(Set(journal.compactMap { $0["actor"] as? String }).count == 1, "one operator carried it out")

        // Emergency operation: site2's traffic keeps flowing into the reports.
        let more = try await traffic(lab, count: 600, seed: 12, start: "2026-11-21T11:00:00Z").filter {
            $0.contains(#""source":"site2/voice""#)
        }
        let moreSeqs = more.map { line -> String in
            let seq = line.split(separator: ",").first { $0.hasPrefix(#""seq":"#) }!.dropFirst(6)
            return "site2/voice \(seq)"
        }
        try await rig.post(more, to: ["site2-a"])
        try await CollectorTests.waitUntil("site2's new traffic is in site2's mart", timeout: 60) {
            Set(try await Self.martEvents(lab, site: "site2").events).isSuperset(of: moreSeqs)
        }

        // Site 1 comes back: fenced by its old epoch; its extractor writes nothing.
        try await lab.up(o)
        try await CollectorTests.waitUntil("site1's coordinator reports the fence", timeout: 30) {
            let s = try await Self.bcpipe(["status", "--json", "--config", lab.topologyPath])
            let j = try JSONSerialization.jsonObject(with: Data(s.text.utf8)) as? [String: Any]
            let site1 = (j?["sites"] as? [[String: Any]])?.first { $0["name"] as? String == "site1" }
            return (site1?["fenced"] as? String)?.contains("epoch 2") == true
        }
        let frozen = try await Self.martEvents(lab, site: "site1").events.count
        let late = try await traffic(lab, count: 400, seed: 13, start: "2026-11-21T12:00:00Z").filter {
            $0.contains(#""source":"site1/voice""#)
        }
        // Once the late events are in site1's IDB, two fenced cycles (each reads the IDBs, sees
        // the fence and writes nothing) mean one started after they were there: only then is
        // "nothing written" a finding. Cycles run every extract.interval (1 s); 60 s is ample.
        let metrics =
            "http://127.0.0.1:\(try lab.requireState().extractorMetricsPort(try #require(lab.requireState().site("site1"))))/metrics"
        func fencedCycles() async throws -> Int {
            let (data, _) = try await URLSession.shared.data(from: URL(string: metrics)!)
            let line = String(decoding: data, as: UTF8.self).split(separator: "\n").first {
                $0.hasPrefix("bcpipe_extractor_fenced_cycles_total")
            }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }
        try await rig.post(late, to: ["site1-a"])
        let fencedBefore = try await fencedCycles()
        let waited = Date()
        try await CollectorTests.waitUntil("site1's extractor runs two fenced cycles", timeout: 60) {
            try await fencedCycles() >= fencedBefore + 2
        }
        #expect(
            try await Self.martEvents(lab, site: "site1").events.count == frozen,
            "a fenced site writes nothing (checked after \(Int(Date().timeIntervalSince(waited) * 1000)) ms of fenced cycles)"
        )
        let log = try String(contentsOfFile: lab.directory + "/sites/site1/extractor.log", encoding: .utf8)
        #expect(log.contains("fenced: refusing to write"))
        try await TestLab.expectViewsMatchTheirEvents(lab, site: "site2")
        try lab.down(remove: true)
    }

    /// `dr declare` killed after a step resumes where it stopped when run again.
    @Test func killedMidProcedureThenRerunCompletes() async throws {
        let lab = try TestLab.makeLab(name: "dr-resume")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 1400
        try await lab.up(o)
        try lab.failSite("site2")
        let args = [
            "dr", "declare", "--failed-site", "site2", "--confirm-site-down", "--config",
            lab.topologyPath(site: "site1"),
        ]
        let killed = try await Self.bcpipe(args, environment: ["BCPIPE_FAILPOINT": "dr-declare:after:fence"])
        #expect(killed.status != 0)
        #expect(killed.text.contains("2/5 fence"))
        #expect(!killed.text.contains("3/5"))
        let rerun = try await Self.bcpipe(args)
        #expect(rerun.status == 0, "\(rerun.text)")
        #expect(rerun.text.contains("resuming dr declare"))
        #expect(rerun.text.contains("1/5 raise-epoch: already done"))
        #expect(rerun.text.contains("2/5 fence: already done"))
        // site1 raises the epochs it owns: 1 → 3.
        #expect(rerun.text.contains("disaster recovery done: epoch 3"))
        let conn = try await TestLab.connect(lab, site: "site1", database: "mart")
        let steps = try await conn.query("SELECT step FROM control.journal ORDER BY id").map { $0[0]! }
        #expect(
            steps == ["safety-check", "raise-epoch", "fence", "retire", "promote", "emergency"],
            "each step once (the safety check journaled when the procedure began, not again on resuming)")
        let d = try await conn.query("SELECT epoch, phase, role, reporting_site FROM control.deployment")[0]
        #expect([d[0], d[1], d[2], d[3]] == ["3", "emergency", "active", "site1"])
        await conn.close()
        // Declaring again from another phase of the same failure is answered, not repeated.
        let again = try await Self.bcpipe(args)
        #expect(again.status == 0)
        #expect(again.text.contains("already done"))
        try lab.down(remove: true)
    }

    /// After a site failure and DR, return to normal with the failed site rebuilt (same name) or a
    /// replacement site, while traffic flows: the new mart matches the reporting mart row for row
    /// once caught up, nothing lost or doubled, then phase normal with the new site as standby.
    /// With `site1+switch`, the rebuilt site1 becomes the active site (a switch-over).
    @Test(arguments: ["site1", "site3", "site1+switch"])
    func returnToNormalWhileTrafficFlows(argument: String) async throws {
        let newSite = String(argument.prefix { $0 != "+" })
        let switchOver = argument.hasSuffix("+switch")
        let active = switchOver ? newSite : "site2"
        let standby = switchOver ? "site2" : newSite
        let lab = try TestLab.makeLab(name: "rtn-\(newSite)\(switchOver ? "-switch" : "")")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + (switchOver ? 2800 : newSite == "site1" ? 1500 : 1600)
        o.stuckThreshold = 3600
        try await lab.up(o)
        var topology = try Topology.load(path: lab.topologyPath(site: "site2"))
        var rig = ExtractorRig(
            lab: lab, topology: topology, settings: try ExtractorSettings.from(topology: topology, site: "site2"))
        let lines = try await traffic(lab, count: 2000, seed: 21, start: "2026-11-21T09:00:00Z")
        for (source, pair) in [("site1/voice", ["site1-a", "site1-b"]), ("site2/voice", ["site2-a", "site2-b"])] {
            try await rig.post(lines.filter { $0.contains(#""source":"\#(source)""#) }, to: pair)
        }
        try lab.failSite("site1")
        let survivorView = lab.topologyPath(site: "site2")
        #expect(
            try await Self.bcpipe([
                "dr", "declare", "--failed-site", "site1", "--confirm-site-down", "--config", survivorView,
            ])
            .status == 0)
        try await lab.addSite(newSite, options: o)
        topology = try Topology.load(path: survivorView)
        rig = ExtractorRig(lab: lab, topology: topology, settings: rig.settings)

        // Traffic keeps flowing into site2 while the mart is copied and the new site catches up.
        let flowing = try await traffic(lab, count: 3000, seed: 22, start: "2026-11-21T10:00:00Z").filter {
            $0.contains(#""source":"site2/voice""#)
        }
        let feeder = Task {
            for chunk in stride(from: 0, to: flowing.count, by: 100) {
                try await rig.post(
                    Array(flowing[chunk..<min(chunk + 100, flowing.count)]), to: ["site2-a"], wait: false)
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let dry = try await Self.bcpipe([
            "rtn", "start", "--site", newSite, "--active", active, "--dry-run", "--config", survivorView,
        ])
        #expect(dry.status == 0 && dry.text.contains("dry run"), "\(dry.text)")
        let rtn = try await Self.bcpipe([
            "rtn", "start", "--site", newSite, "--active", active, "--config", survivorView,
        ])
        #expect(rtn.status == 0, "\(rtn.text)")
        #expect(rtn.text.contains("return to normal done"))
        try await feeder.value
        try await rig.post([], to: ["site2-a"])  // waits until site2-a has shipped everything

        // Caught up: the new mart matches the reporting mart row for row.
        let digest = """
            SELECT (SELECT count(*) FROM mart.event),
                   (SELECT md5(string_agg(source || seq, ',' ORDER BY source, seq)) FROM mart.event),
                   (SELECT md5(string_agg(i::text, ',' ORDER BY source, interaction)) FROM report.interactions i),
                   (SELECT md5(string_agg(q::text, ',' ORDER BY hour, queue, media)) FROM report.queue_hourly q)
            """
        func digestOf(_ site: String) async throws -> [String?] {
            let c = try await TestLab.connect(lab, site: site, database: "mart")
            let r = try await c.query(digest)[0]
            await c.close()
            return (0..<4).map { r[$0] }
        }
        let held = try await Self.survivorIDBEvents(lab, site: "site2", topology: topology)
        do {
            try await CollectorTests.waitUntil("site2's mart has all the traffic", timeout: 180) {
                Set(try await Self.martEvents(lab, site: "site2").events).isSuperset(of: held)
            }
        } catch {
            let missing = held.subtracting(try await Self.martEvents(lab, site: "site2").events)
            let log = (try? String(contentsOfFile: lab.directory + "/sites/site2/extractor.log", encoding: .utf8)) ?? ""
            Issue.record(
                "\(missing.count) events missing from site2's mart, e.g. \(missing.sorted().prefix(5)); site2's extractor log ends:\n\(log.split(separator: "\n").suffix(40).joined(separator: "\n"))"
            )
            throw error
        }
        try await CollectorTests.waitUntil("\(newSite)'s mart matches site2's", timeout: 180) {
            try await digestOf(newSite) == digestOf("site2")
        }
        // Catches an event extracted twice on the way (the digests would agree on a wrong count).
        try await TestLab.expectViewsMatchTheirEvents(lab, site: "site2")

        let status = try await Self.bcpipe(["status", "--json", "--config", lab.topologyPath])
        let j = try JSONSerialization.jsonObject(with: Data(status.text.utf8)) as? [String: Any]
        #expect(j?["phase"] as? String == "normal", "\(status.text)")
        // site2 journals it and raises epochs it owns (of 2 sites 2, 4, 6…; of 3 sites 2, 5, 8…); a
        // switch-over moves the writer under one more.
        let names = topology.sites.map(\.name)
        let admitted = Epochs.next(after: 2, at: "site2", sites: names)
        #expect(admitted == (newSite == "site3" ? 5 : 4))
        #expect(
            j?["epoch"] as? Int == Int(switchOver ? Epochs.next(after: admitted, at: "site2", sites: names) : admitted))
        #expect(j?["reportingSite"] as? String == active)
        let sites = j?["sites"] as? [[String: Any]] ?? []
        let new = sites.first { $0["name"] as? String == newSite }
        #expect(new?["role"] as? String == (switchOver ? "active" : "standby"))
        #expect(new?["fenced"] == nil)
        let publisher = sites.first { $0["name"] as? String == active }
        #expect(
            (publisher?["replication"] as? [[String: Any]])?.first?["subscription"] as? String == "bcpipe_\(standby)",
            "\(status.text)")
        let c = try await TestLab.connect(lab, site: active, database: "mart")
        #expect(try await c.query("SELECT 1 FROM control.purge_hold WHERE released_at IS NULL").isEmpty)
        let retired = try await c.query("SELECT name FROM control.retired WHERE kind = 'site'").map { $0[0]! }
        // A rebuilt site1 is re-admitted; with a replacement, site1 stays retired.
        #expect(retired == (newSite == "site1" ? [] : ["site1"]))
        await c.close()
        let again = try await Self.bcpipe([
            "rtn", "start", "--site", newSite, "--active", active, "--config", survivorView,
        ])
        #expect(again.status == 0 && again.text.contains("already done"), "\(again.text)")
        let rs = try await Self.bcpipe(["rtn", "status", "--config", lab.topologyPath])
        let steps = switchOver ? "7/7" : "6/6"
        #expect(rs.text.contains("rtn start \(newSite): done, \(steps) steps"), "\(rs.text)")
        try lab.down(remove: true)
    }
}

extension DisasterRecoveryTests {
    /// A planned switch-over in active-active (the active-standby one is rehearsed by
    /// `Runbooks/planned-switch-over.md`): the reporting mart moves under the reporting site's next
    /// epoch, reports follow it, both marts keep every event; unknown sites and the wrong phase are
    /// refused and change nothing.
    @Test func plannedSwitchOverActiveActive() async throws {
        let lab = try TestLab.makeLab(name: "switchover-aa")
        TestLab.registerCleanup(lab)
        var o = LocalLab.Options()
        o.basePort = TestLab.basePort + 2900
        o.mode = .activeActive
        o.stuckThreshold = 3600
        try await lab.up(o)
        let topology = try Topology.load(path: lab.topologyPath)
        let rig = ExtractorRig(
            lab: lab, topology: topology, settings: try ExtractorSettings.from(topology: topology, site: "site1"))
        let lines = try await traffic(lab, count: 2000, seed: 31, start: "2026-11-21T09:00:00Z")
        let pairs = [("site1/voice", ["site1-a", "site1-b"]), ("site2/voice", ["site2-a", "site2-b"])]
        let (first, second) = (lines.prefix(1000), lines.dropFirst(1000))
        for (source, pair) in pairs {
            try await rig.post(first.filter { $0.contains(#""source":"\#(source)""#) }, to: pair)
        }
        var out = try await Self.bcpipe(["switchover", "--to", "site9", "--config", lab.topologyPath])
        #expect(out.status == 2 && out.text.contains("unknown site \"site9\""), "\(out.text)")
        out = try await Self.bcpipe(["switchover", "--to", "site2", "--dry-run", "--config", lab.topologyPath])
        #expect(out.status == 0 && out.text.contains("epoch 1 → 3"), "\(out.text)")
        out = try await Self.bcpipe(["switchover", "--to", "site2", "--config", lab.topologyPath])
        #expect(out.status == 0, "\(out.text)")
        #expect(out.text.contains("1/1 move-reporting: done"))
        #expect(out.text.contains("switch-over done: site2/mart is the reporting mart, site1 follows it; epoch 3"))
        let status = try await Self.bcpipe(["status", "--json", "--config", lab.topologyPath])
        let j = try JSONSerialization.jsonObject(with: Data(status.text.utf8)) as? [String: Any]
        #expect(j?["reportingSite"] as? String == "site2", "\(status.text)")
        #expect(j?["epoch"] as? Int == 3)
        for site in ["site1", "site2"] {
            let c = try await TestLab.connect(lab, site: site, database: "mart")
            let d = try await c.query("SELECT epoch, role, reporting_site FROM control.deployment")[0]
            #expect([d[0], d[1], d[2]] == ["3", "active", "site2"], "\(site)")
            await c.close()
        }
        out = try await Self.bcpipe(["switchover", "--to", "site2", "--config", lab.topologyPath])
        #expect(out.status == 0 && out.text.contains("already done"), "\(out.text)")

        // Both extractors go on under the new epoch: every event reaches both marts once.
        for (source, pair) in pairs {
            try await rig.post(second.filter { $0.contains(#""source":"\#(source)""#) }, to: pair)
        }
        let sent = Set(
            try lines.filter { !$0.contains(#""type":"heartbeat""#) }.map { line -> String in
                let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return "\(o["source"]!) \(o["seq"]!)"
            })
        try await CollectorTests.waitUntil("both marts have every event, once", timeout: 120) {
            let (e1, e2) = (
                try await Self.martEvents(lab, site: "site1"), try await Self.martEvents(lab, site: "site2")
            )
            return Set(e1.events) == Set(e2.events) && sent.isSubset(of: Set(e1.events))
        }
        // Each active mart's views match its own events (catches an event counted twice).
        for site in ["site1", "site2"] {
            try await TestLab.expectViewsMatchTheirEvents(lab, site: site)
        }

        // Not from another phase: after a disaster the way back is rtn start.
        try lab.failSite("site1")
        out = try await Self.bcpipe([
            "dr", "declare", "--failed-site", "site1", "--confirm-site-down", "--config",
            lab.topologyPath(site: "site2"),
        ])
        #expect(out.status == 0, "\(out.text)")
        out = try await Self.bcpipe(["switchover", "--to", "site1", "--config", lab.topologyPath(site: "site2")])
        #expect(out.status == 3 && out.text.contains("\"phase\""), "\(out.text)")
    }
}
