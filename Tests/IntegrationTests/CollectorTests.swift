import Collector
import EventModel
import Foundation
import Lab
import PostgresClient
import Schema
import Testing
import Topology

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// A minimal ingest client for the tests: posts NDJSON and remembers which seqs were answered 200.
struct IngestClient {
    let url: String
    let token: String?

    struct Answer {
        var status: Int
        var json: [String: Any]
        var retryAfter: String?
    }

    func post(
        _ body: Data, contentType: String = "application/x-ndjson", encoding: String? = nil, token: String?? = nil
    )
        async throws -> Answer
    {
        var request = URLRequest(url: URL(string: url + "/v1/events")!)
        request.httpMethod = "POST"
        request.timeoutInterval = 20
        request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        if let encoding { request.setValue(encoding, forHTTPHeaderField: "Content-Encoding") }
        if let t = token ?? self.token { request.setValue("Bearer \(t)", forHTTPHeaderField: "Authorization") }
        request.httpBody = body
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return Answer(status: http.statusCode, json: json, retryAfter: http.value(forHTTPHeaderField: "Retry-After"))
    }

    func status() async throws -> [String: Any] {
        let (data, _) = try await URLSession.shared.data(from: URL(string: url + "/v1/status")!)
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    /// Posts until answered 200 (retrying 503 and connection errors for up to `patience` seconds).
    func postUntilAccepted(_ body: Data, patience: Double = 60) async throws -> Answer {
        let deadline = Date().addingTimeInterval(patience)
        while true {
            do {
                let a = try await post(body)
                if a.status == 200 { return a }
                guard a.status == 503 else { return a }
            } catch {
                // The collector is restarting or unreachable: try again.
            }
            guard Date() < deadline else { throw LabError("not accepted within \(patience) s") }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// NDJSON lines for seqs `range` of a source, one interaction per 4 events, heartbeats mixed in.
func ndjson(_ source: String, _ range: Range<Int>) -> Data {
    var out = ""
    for seq in range {
        let ts = Timestamp(1_795_255_200_000 + Int64(seq % 1_000_000) * 250)
        let call = "c\(seq / 4)"
        switch seq % 4 {
        case 0:
            out +=
                #"{"source":"\#(source)","seq":\#(seq),"ts":"\#(ts)","type":"interaction.created","interaction":"\#(call)","media":"voice"}"#
        case 1:
            out +=
                #"{"source":"\#(source)","seq":\#(seq),"ts":"\#(ts)","type":"interaction.queued","interaction":"\#(call)","queue":"sales"}"#
        case 2:
            out +=
                #"{"source":"\#(source)","seq":\#(seq),"ts":"\#(ts)","type":"interaction.answered","interaction":"\#(call)","agent":"a1"}"#
        default:
            out +=
                #"{"source":"\#(source)","seq":\#(seq),"ts":"\#(ts)","type":"interaction.ended","interaction":"\#(call)"}"#
        }
        out += "\n"
    }
    return Data(out.utf8)
}

struct Timestamp: CustomStringConvertible {
    let ms: Int64
    init(_ ms: Int64) { self.ms = ms }
    var description: String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
    }
}

@Suite("Collector on the lab", .serialized)
struct CollectorTests {
    static let token = "test-token-\(getpid())"
    /// The suite's collectors: a token, a small queue bound, and at most 4 requests in hand.
    static let environment = [
        "BCPIPE_INGEST_TOKEN": token, "BCPIPE_QUEUE_MAX_BYTES": "400000", "BCPIPE_MAX_CONCURRENT_REQUESTS": "4",
    ]

    /// The suite's own lab: collectors with a token and a small queue bound.
    static func lab() async throws -> LocalLab {
        try await CollectorLab.shared.get()
    }

    static func options(_ lab: LocalLab) throws -> LocalLab.Options {
        var o = LocalLab.Options()
        o.basePort = try lab.requireState().basePort
        o.collectorEnvironment = environment
        return o
    }

    /// A seq range start above every seq a previous test sent: a collector treats lower seqs of a
    /// source as duplicates, so each test starts higher than the last.
    static func freshBase() -> Int {
        Int(Date().timeIntervalSince1970 * 1000) * 1000
    }

    static func client(_ lab: LocalLab, _ collector: String) throws -> IngestClient {
        let topology = try Topology.load(path: lab.topologyPath)
        let c = try #require(topology.collector(named: collector))
        return IngestClient(url: "http://\(c.listen)", token: token)
    }

    /// The seqs of `source` stored in an IDB.
    static func stored(_ lab: LocalLab, site: String, idb: String, source: String) async throws -> [Int64] {
        let conn = try await TestLab.connect(lab, site: site, database: idb)
        let rows = try await conn.query("SELECT seq FROM idb.events WHERE source = $1 ORDER BY seq", [source])
        await conn.close()
        return try rows.map { try $0.decode(0, as: Int64.self) }
    }

    static func waitUntil(_ what: String, timeout: Double = 60, _ condition: () async throws -> Bool) async throws {
        try await IntegrationTests.waitUntil(what, timeout: timeout, condition)
    }

    static func drained(_ client: IngestClient) async throws -> Bool {
        let s = try await client.status()
        return (s["queue"] as? [String: Any])?["events"] as? Int == 0 && s["mode"] as? String == "direct"
    }

    @Test(arguments: [LinkState.refuse, .blackhole])
    func aLinkCutWhilePostingLosesAndDoublesNothing(cut: LinkState) async throws {
        let lab = try await Self.lab()
        let client = try Self.client(lab, "site1-b")  // site1 → IDB at site2, across the WAN
        let base = Self.freshBase()
        var acked: [Int64] = []
        for batch in 0..<30 {
            if batch == 8 { try lab.setLink("site1", "site2", cut) }
            if batch == 12 {
                try await Self.waitUntil("site1-b notices the cut") {
                    try await client.status()["mode"] as? String == "queueing"
                }
            }
            if batch == 24 { try lab.setLink("site1", "site2", .up) }
            let range = (base + batch * 40)..<(base + batch * 40 + 40)
            let answer = try await client.postUntilAccepted(ndjson("site1/voice", range))
            #expect(answer.status == 200)
            #expect(answer.json["accepted"] as? Int == 40, "\(answer.json)")
            acked += range.map(Int64.init)
        }
        try await Self.waitUntil("the queue drains after the link returns") { try await Self.drained(client) }
        let stored = try await Self.stored(lab, site: "site2", idb: "idb_site1_b", source: "site1/voice").filter {
            $0 >= base && $0 < base + 100_000
        }
        #expect(stored == acked, "every acknowledged event reached the IDB exactly once")
    }

    @Test func sigkillOfTheCollectorMidStreamLosesNothing() async throws {
        let lab = try await Self.lab()
        let base = Self.freshBase()
        let client = try Self.client(lab, "site1-a")
        var acked: [Int64] = []
        for batch in 0..<20 {
            if batch == 7 || batch == 14 {
                try lab.killCollector("site1-a")
                try await lab.up(try Self.options(lab))  // restarts it from its queue
            }
            let range = (base + batch * 50)..<(base + batch * 50 + 50)
            let answer = try await client.postUntilAccepted(ndjson("site1/voice", range))
            #expect(answer.status == 200)
            acked += range.map(Int64.init)
        }
        try await Self.waitUntil("the queue drains") { try await Self.drained(client) }
        let stored = try await Self.stored(lab, site: "site1", idb: "idb_site1_a", source: "site1/voice").filter {
            $0 >= base && $0 < base + 100_000
        }
        #expect(stored == acked)
        // A replay after the restart is recognised as duplicates.
        let replay = try await client.post(ndjson("site1/voice", (base + 950)..<(base + 1000)))
        #expect(replay.status == 200)
        #expect(replay.json["duplicates"] as? Int == 50)
        #expect(replay.json["accepted"] as? Int == 0)
    }

    @Test func sigtermStopsGracefullyAndLosesNothing() async throws {
        let lab = try await Self.lab()
        let base = Self.freshBase()
        let client = try Self.client(lab, "site2-a")
        let pidFile = try lab.collectorPIDFile("site2-a")
        var acked: [Int64] = []
        for batch in 0..<6 {
            let range = (base + batch * 50)..<(base + batch * 50 + 50)
            #expect(try await client.postUntilAccepted(ndjson("site2/voice", range)).status == 200)
            acked += range.map(Int64.init)
        }
        let pid = try #require(
            pid_t(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        kill(pid, SIGTERM)
        try await Self.waitUntil("the collector exits after SIGTERM", timeout: 15) { !Processes.isAlive(pid) }
        let log = try String(contentsOfFile: lab.directory + "/sites/site2/collector-site2-a.log", encoding: .utf8)
        #expect(log.contains("collector stopped; the disk queue is closed"))
        try await lab.up(try Self.options(lab))
        try await Self.waitUntil("the queue drains") { try await Self.drained(client) }
        let stored = try await Self.stored(lab, site: "site2", idb: "idb_site2_a", source: "site2/voice").filter {
            $0 >= base && $0 < base + 100_000
        }
        #expect(stored == acked)
    }

    @Test func aPostgreSQLRestartUnderLoadLosesNothing() async throws {
        let lab = try await Self.lab()
        let base = Self.freshBase()
        let client = try Self.client(lab, "site2-a")  // IDB at site2
        let state = try lab.requireState()
        let server = PostgresServer(directory: lab.directory + "/sites/site2", port: state.postgresPort(state.sites[1]))
        var acked: [Int64] = []
        for batch in 0..<20 {
            if batch == 6 { try server.stop(immediate: true) }
            if batch == 10 { try server.start() }
            let range = (base + batch * 50)..<(base + batch * 50 + 50)
            let answer = try await client.postUntilAccepted(ndjson("site2/voice", range))
            #expect(answer.status == 200)
            acked += range.map(Int64.init)
        }
        try await Self.waitUntil("the queue drains after PostgreSQL is back") { try await Self.drained(client) }
        let stored = try await Self.stored(lab, site: "site2", idb: "idb_site2_a", source: "site2/voice").filter {
            $0 >= base && $0 < base + 100_000
        }
        #expect(stored == acked)
    }

    @Test func duplicatesAndReplayedBatchesAreStoredOnce() async throws {
        let lab = try await Self.lab()
        let base = Self.freshBase()
        let client = try Self.client(lab, "site2-b")
        let body = ndjson("site2/voice", base..<(base + 100))
        let first = try await client.post(body)
        #expect(first.json["accepted"] as? Int == 100)
        let again = try await client.post(body)
        #expect(again.json["accepted"] as? Int == 0)
        #expect(again.json["duplicates"] as? Int == 100)
        // Half old, half new.
        let mixed = try await client.post(ndjson("site2/voice", (base + 50)..<(base + 150)))
        #expect(mixed.json["accepted"] as? Int == 50)
        #expect(mixed.json["duplicates"] as? Int == 50)
        try await Self.waitUntil("shipped") { try await Self.drained(client) }
        let stored = try await Self.stored(lab, site: "site1", idb: "idb_site2_b", source: "site2/voice").filter {
            $0 >= base && $0 < base + 100_000
        }
        #expect(stored == (base..<(base + 150)).map(Int64.init))
    }

    @Test func everyBadRequestGetsItsStatusAndDisturbsNothing() async throws {
        let lab = try await Self.lab()
        let base = Self.freshBase()
        let client = try Self.client(lab, "site2-b")
        let good = ndjson("site2/voice", base..<(base + 10))

        let noToken = try await client.post(good, token: .some(nil))
        #expect(noToken.status == 401)
        let wrongToken = try await client.post(good, token: "nope")
        #expect(wrongToken.status == 401)
        let type = try await client.post(good, contentType: "text/plain")
        #expect(type.status == 415)
        #expect((type.json["error"] as? String)?.contains("application/x-ndjson") == true)
        let encoding = try await client.post(good, encoding: "br")
        #expect(encoding.status == 415)
        let badZstd = try await client.post(good, encoding: "zstd")
        #expect(badZstd.status == 415)
        let huge = try await client.post(Data(count: 17 << 20))
        #expect(huge.status == 413)

        var lines = String(decoding: good, as: UTF8.self).split(separator: "\n").map(String.init)
        lines.insert(#"{"source":"site2/voice","seq":"x"}"#, at: 2)
        lines.insert("not json", at: 5)
        lines.insert(
            #"{"source":"site2/voice","seq":\#(base + 99),"ts":"2026-11-21T10:00:00Z","type":"heartbeat","pad":""#
                + String(repeating: "p", count: 70_000) + #""}"#, at: 7)
        lines.insert(#"{"source":"site1/voice","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#, at: 8)
        let mixed = try await client.post(Data(lines.joined(separator: "\n").utf8))
        #expect(mixed.status == 200)
        #expect(mixed.json["accepted"] as? Int == 10)
        let rejected = mixed.json["rejected"] as? [[String: Any]] ?? []
        #expect(rejected.map { $0["line"] as? Int } == [3, 6, 8, 9])
        #expect((rejected.first?["error"] as? String) == "seq: must be an integer ≥ 0")
        #expect((rejected.last?["error"] as? String)?.contains("takes events of site2/voice only") == true)

        let allBad = try await client.post(Data("nope\n{}\n".utf8))
        #expect(allBad.status == 400)
        #expect((allBad.json["rejected"] as? [[String: Any]])?.count == 2)

        try await Self.waitUntil("shipped") { try await Self.drained(client) }
        let stored = try await Self.stored(lab, site: "site1", idb: "idb_site2_b", source: "site2/voice").filter {
            $0 >= base && $0 < base + 100_000
        }
        #expect(stored == (base..<(base + 10)).map(Int64.init), "only the valid lines, once")
    }

    /// Events with incompressible attrs, so a few batches fill the suite's 400 kB queue bound.
    static func bulkyEvents(_ range: Range<Int>) -> Data {
        var body = ""
        for s in range {
            let noise = (0..<20).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined()
            body +=
                #"{"source":"site1/voice","seq":\#(s),"ts":"2026-11-21T10:00:00Z","type":"interaction.created","interaction":"bulk\#(s)","media":"voice","attrs":{"n":"\#(noise.prefix(240))"}}"#
                + "\n"
        }
        return Data(body.utf8)
    }

    // Catches issue 15's hole as a source sees it: each batch posted twice at the same moment (a
    // retry while the first attempt is in flight) to a collector whose IDB is unreachable, until
    // its queue is full. A 200 for events its twin failed to store (the old "duplicates" answer)
    // leaves acknowledged events out of the IDB once the link returns; /readyz must say 503
    // while the queue is full.
    @Test func aRetryInFlightAtAFullQueueIsAcknowledgedOnlyForStoredEvents() async throws {
        let lab = try await Self.lab()
        let client = try Self.client(lab, "site1-b")
        let base = Self.freshBase()
        try lab.setLink("site1", "site2", .refuse)
        try await Self.waitUntil("site1-b queues") { try await client.status()["mode"] as? String == "queueing" }
        var acked = Set<Int64>()
        var pairsWith503 = 0
        var readyWhileFull: Int?
        for batch in 0..<400 where pairsWith503 < 5 {
            let range = (base + batch * 50)..<(base + batch * 50 + 50)
            let body = Self.bulkyEvents(range)
            async let first = client.post(body)
            async let second = client.post(body)
            let answers = try await [first, second]
            for a in answers {
                #expect(a.status == 200 || a.status == 503, "\(a.status) \(a.json)")
                if a.status == 200 {
                    #expect(
                        (a.json["accepted"] as? Int ?? 0) + (a.json["duplicates"] as? Int ?? 0) == 50, "\(a.json)")
                    acked.formUnion(range.map(Int64.init))
                }
            }
            if answers.contains(where: { $0.status == 503 }) {
                pairsWith503 += 1
                readyWhileFull = try await Self.readyz(client)
            }
        }
        #expect(pairsWith503 == 5, "the queue filled up")
        #expect(readyWhileFull == 503, "not ready while the queue is full")
        try lab.setLink("site1", "site2", .up)
        try await Self.waitUntil("the queue drains") { try await Self.drained(client) }
        #expect(try await Self.readyz(client) == 200)
        let stored = Set(
            try await Self.stored(lab, site: "site2", idb: "idb_site1_b", source: "site1/voice").filter {
                $0 >= base && $0 < base + 100_000
            })
        let missing = acked.subtracting(stored)
        #expect(missing.isEmpty, "\(missing.count) of \(acked.count) acknowledged events are not in the IDB")
        #expect(stored.isSubset(of: acked), "only what was acknowledged was stored")
    }

    static func readyz(_ client: IngestClient) async throws -> Int {
        let (_, response) = try await URLSession.shared.data(from: URL(string: client.url + "/readyz")!)
        return (response as! HTTPURLResponse).statusCode
    }

    // Catches a collector that takes any number of requests into memory at once (each up to
    // max_request_bytes): past BCPIPE_MAX_CONCURRENT_REQUESTS (4 here) it answers 503 with
    // Retry-After before reading the body, and takes requests again once they finish.
    @Test func requestsPastTheCapAreRefusedBeforeTheirBodyIsRead() async throws {
        let lab = try await Self.lab()
        let client = try Self.client(lab, "site2-a")
        let body = FileManager.default.temporaryDirectory.appendingPathComponent("slow-\(getpid()).ndjson").path
        defer { try? FileManager.default.removeItem(atPath: body) }
        try ndjson("site2/voice", Self.freshBase()..<(Self.freshBase() + 2000)).write(to: URL(fileURLWithPath: body))
        // Four uploads at 1 kB/s: each holds a request slot for minutes.
        func slowUpload() throws -> pid_t {
            try Processes.spawnDetached(
                [
                    "/usr/bin/curl", "-s", "-o", "/dev/null", "--limit-rate", "1k", "-H",
                    "Content-Type: application/x-ndjson", "-H", "Authorization: Bearer \(Self.token)",
                    "--data-binary", "@" + body, client.url + "/v1/events",
                ], log: "/dev/null")
        }
        var slow = try (0..<4).map { _ in try slowUpload() }
        defer { for pid in slow { kill(pid, SIGKILL) } }
        var refused: IngestClient.Answer?
        let probe = Self.freshBase()
        try await Self.waitUntil("a fifth request is refused while four are in hand", timeout: 30) {
            // A probe that reaches the collector before the fourth upload takes the last slot,
            // and that upload is refused and ends: start it again, and probe once all four hold on.
            for (i, pid) in slow.enumerated() where !Processes.isAlive(pid) { slow[i] = try slowUpload() }
            let a = try await client.post(ndjson("site2/voice", probe..<(probe + 1)))
            if a.status == 503 { refused = a }
            return a.status == 503
        }
        #expect(refused?.retryAfter == "1")
        #expect((refused?.json["error"] as? String)?.contains("too many requests in flight (4)") == true)
        for pid in slow { kill(pid, SIGKILL) }
        try await Self.waitUntil("requests are taken again once the slow ones are gone", timeout: 30) {
            try await client.post(ndjson("site2/voice", probe..<(probe + 1))).status == 200
        }
    }

    @Test func aFullQueueAnswers503AndRecovers() async throws {
        let lab = try await Self.lab()
        let base = Self.freshBase()
        let client = try Self.client(lab, "site1-b")
        try lab.setLink("site1", "site2", .refuse)
        defer { try? lab.setLink("site1", "site2", .up) }
        var acked: [Int64] = []
        var refused: IngestClient.Answer?
        var seq = base
        // Incompressible attrs fill the 400 kB queue bound quickly.
        while refused == nil && seq < base + 100_000 {
            var body = ""
            for s in seq..<(seq + 20) {
                let noise = (0..<40).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 36) }.joined()
                body +=
                    #"{"source":"site1/voice","seq":\#(s),"ts":"2026-11-21T10:00:00Z","type":"heartbeat","attrs":{"n":"\#(noise.prefix(900))"}}"#
                    + "\n"
            }
            let a = try await client.post(Data(body.utf8))
            if a.status == 503 {
                refused = a
            } else {
                #expect(a.status == 200)
                acked += (seq..<(seq + 20)).map(Int64.init)
                seq += 20
            }
        }
        #expect(refused?.status == 503)
        #expect(refused?.retryAfter == "1")
        #expect((refused?.json["error"] as? String)?.contains("full") == true)
        try lab.setLink("site1", "site2", .up)
        try await Self.waitUntil("the queue drains") { try await Self.drained(client) }
        let retry = try await client.postUntilAccepted(ndjson("site1/voice", seq..<(seq + 4)))
        #expect(retry.status == 200)
        #expect(retry.json["accepted"] as? Int == 4, "after the refusal the same seqs are accepted, not duplicates")
        try await Self.waitUntil("the retried batch is shipped") { try await Self.drained(client) }
        // Heartbeats are not stored as events, but they advance the checkpoint.
        let conn = try await TestLab.connect(lab, site: "site2", database: "idb_site1_b")
        let max = try await conn.query("SELECT max_seq FROM idb.source_checkpoint WHERE source = 'site1/voice'")[0]
            .decode(0, as: Int64.self)
        await conn.close()
        #expect(max >= Int64(seq + 3))
        #expect(!acked.isEmpty)
    }
}

/// The collector suite's lab (its own ports), started once.
actor CollectorLab {
    static let shared = CollectorLab()
    private var starting: Task<LocalLab, Error>?

    func get() async throws -> LocalLab {
        if let starting { return try await starting.value }
        let task = Task<LocalLab, Error> {
            let lab = try TestLab.makeLab(name: "collectors")
            TestLab.registerCleanup(lab)
            var o = LocalLab.Options()
            o.basePort = TestLab.basePort + 400
            o.collectorEnvironment = CollectorTests.environment
            try await lab.up(o)
            return lab
        }
        starting = task
        return try await task.value
    }
}

@Suite("IDB writer")
struct IDBWriterTests {
    @Test func aBatchShippedTwiceIsStoredOnceAndTheCheckpointCountsHeartbeats() async throws {
        let lab = try await TestLab.shared.get()
        // An IDB of the test's own: the lab's collectors hold the shipper lock of theirs.
        let site = try Topology.load(path: lab.topologyPath).site(named: "site1")!
        let migrator = Migrator(logger: lab.logger)
        try await migrator.ensureDatabase("idb_writer_test", conninfo: site.postgres)
        let setup = try await TestLab.connect(lab, site: "site1", database: "idb_writer_test")
        try await migrator.migrate(setup, component: .idb)
        await setup.close()
        let conn = try await TestLab.connect(lab, site: "site1", database: "idb_writer_test")
        #expect(try await IDBWriter.prepare(conn))
        let other = try await TestLab.connect(lab, site: "site1", database: "idb_writer_test")
        #expect(try await IDBWriter.prepare(other) == false, "one shipper per IDB")
        await other.close()
        let source = "site1/voice"
        let base = Int64(Date().timeIntervalSince1970 * 1000) * 1000
        var events = (0..<100).map { i in
            EventModel.Event(
                source: source, seq: base + Int64(i), ts: .init(millisecondsSinceEpoch: 1_795_255_200_000 + Int64(i)),
                type: .agentReady, agent: "a\(i)")
        }
        events.append(
            EventModel.Event(
                source: source, seq: base + 100, ts: .init(millisecondsSinceEpoch: 1_795_255_300_000), type: .heartbeat)
        )
        let batch = try #require(IDBWriter.prepare(events, segment: 1, offset: 100))
        let first = try await IDBWriter.ship(batch, on: conn, collector: "test")
        #expect(first.inserted == 100)
        // Shipped again (a crash between commit and acknowledgement): the fast path conflicts and
        // the batch goes through ON CONFLICT DO NOTHING.
        let again = try await IDBWriter.ship(batch, on: conn, collector: "test")
        #expect(again.inserted == 0)
        let count = try await conn.query(
            "SELECT count(*) FROM idb.events WHERE source = $1 AND seq >= $2", [source, base])
        #expect(try count[0].decode(0, as: Int.self) == 100, "heartbeats are not stored as events")
        let cp = try await conn.query("SELECT max_seq FROM idb.source_checkpoint WHERE source = $1", [source])
        #expect(try cp[0].decode(0, as: Int64.self) >= base + 100, "the heartbeat advanced the checkpoint")
        await conn.close()
    }
}
