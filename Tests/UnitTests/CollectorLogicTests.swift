import Control
import DiskQueue
import EventModel
import Foundation
import Prometheus
import Synchronization
import Testing
import Topology

@testable import Collector
@testable import GzipCompression
@testable import Traffic

@Suite("Collector logic")
struct CollectorLogicTests {
    /// The reservation of a request that does not collide with one in flight.
    static func reserved(_ w: inout SeqWatermark, _ seqs: [Int64]) -> (ticket: UInt64, isNew: [Bool]) {
        guard case .reserved(let ticket, let isNew) = w.reserve(seqs) else {
            Issue.record("\(seqs) had to wait")
            return (0, [])
        }
        return (ticket, isNew)
    }

    // Catches: a duplicate counted as new (stored twice) or a new seq counted as duplicate
    // (acknowledged, never stored), within and across bodies, and a refusal that keeps its seqs.
    @Test func watermarkSplitsNewFromDuplicates() {
        var w = SeqWatermark()
        let (t1, new1) = Self.reserved(&w, [1, 2, 3])
        #expect(new1 == [true, true, true])
        w.commit(t1)
        let (t2, new2) = Self.reserved(&w, [2, 3, 4, 4, 5])
        #expect(new2 == [false, false, true, false, true], "a repeated seq inside one body is a duplicate too")
        // A refused append gives its seqs back.
        w.release(t2)
        let (t3, new3) = Self.reserved(&w, [4, 5])
        #expect(new3 == [true, true])
        w.commit(t3)
        #expect(w.durable == 5)
    }

    // Catches the in-flight hole of issue 15: a repeat of seqs whose append is still in flight
    // answered "duplicates" at once, then the first append fails and nothing was stored.
    @Test func aRepeatOfSeqsInFlightWaitsForTheirOutcome() {
        var w = SeqWatermark()
        let (first, _) = Self.reserved(&w, [10, 11, 12])
        #expect(w.reserve([12, 13]) == .wait(for: first), "seq 12 is in flight: its outcome decides")
        #expect(w.isPending(first))
        // The first append fails: the repeat now takes the seqs and appends them itself.
        w.release(first)
        #expect(!w.isPending(first))
        let (second, isNew) = Self.reserved(&w, [12, 13])
        #expect(isNew == [true, true])
        #expect(w.reserve([13]) == .wait(for: second))
        // Once durable, a repeat is a duplicate.
        w.commit(second)
        #expect(Self.reserved(&w, [12, 13]).isNew == [false, false])
        // Seqs not in flight are not held up by an unrelated request in flight.
        let (_, other) = Self.reserved(&w, [100, 101])
        #expect(other == [true, true])
        #expect(Self.reserved(&w, [14, 99, 102]).isNew == [true, true, true])
    }

    // Catches a restart that counts every seq up to the restored high as accepted: a seq in a
    // gap below it (its request refused before the crash) would be acknowledged unstored.
    @Test func seqsBeforeARestartAreNeverAnsweredAsDuplicates() {
        var w = SeqWatermark()
        w.restored(through: 100)
        #expect(w.durable == 100)
        #expect(Self.reserved(&w, [50, 101]).isNew == [true, true])
    }

    @Test func concurrentRequestsArrivingOutOfOrderAreNotDuplicates() {
        var w = SeqWatermark()
        let (late, newLate) = Self.reserved(&w, Array(101...200))
        #expect(newLate.allSatisfy { $0 })
        let (early, newEarly) = Self.reserved(&w, Array(1...100))
        #expect(newEarly.allSatisfy { $0 }, "lower seqs that arrive later are new, not duplicates")
        w.commit(early)
        w.commit(late)
        #expect(Self.reserved(&w, Array(1...200)).isNew.allSatisfy { !$0 })
        #expect(Self.reserved(&w, [201]).isNew == [true])
    }

    // Catches the old bound, which merged the two oldest ranges and so answered the seqs
    // between them as duplicates though they were never stored.
    @Test func seqRangesMergeAndStayBoundedWithoutInventingSeqs() {
        var r = SeqRanges()
        for s in stride(from: 0 as Int64, to: 1000, by: 1) { r.insert(s...s) }
        #expect(r.ranges == [0...999])
        r.insert(2000...2010)
        r.insert(1500...1500)
        #expect(r.ranges == [0...999, 1500...1500, 2000...2010])
        r.insert(1000...1999)
        #expect(r.ranges == [0...2010])
        #expect(r.contains(2010) && !r.contains(2011))
        var sparse = SeqRanges()
        sparse.maxRanges = 10
        for s in stride(from: 0 as Int64, to: 100, by: 2) { sparse.insert(s...s) }
        #expect(sparse.ranges.count <= 10)
        #expect(sparse.contains(98) && !sparse.contains(97))
        for s in stride(from: 1 as Int64, to: 100, by: 2) {
            #expect(!sparse.contains(s), "odd seq \(s) was never inserted")
        }
        #expect(!sparse.contains(0), "a forgotten seq is not claimed")
        #expect(sparse.forgottenThrough == 78)
        #expect(SeqRanges.runs([5, 1, 2, 3, 7, 6]) == [1...3, 5...7])
    }

    /// A collector's ingest as a model: requests reserve, wait, append (or fail), answer; the
    /// store is what reached the disk. Restarts lose what was in flight and start a new
    /// watermark restored through the highest stored seq.
    struct IngestModel {
        struct Request {
            var seqs: [Int64]
            var ticket: UInt64? = nil
            var isNew: [Bool] = []
        }
        var watermark = SeqWatermark(maxRanges: 8)
        var stored: Set<Int64> = []
        var acknowledged: Set<Int64> = []
        var inFlight: [Request] = []
        var answered200 = 0
        var answered503 = 0

        mutating func arrive(_ seqs: [Int64]) { inFlight.append(Request(seqs: seqs)) }

        /// Moves request `i` one step: reserve (or keep waiting), then append or fail.
        mutating func step(_ i: Int, appendFails: Bool) {
            var r = inFlight[i]
            guard let ticket = r.ticket else {
                switch watermark.reserve(r.seqs) {
                case .reserved(let t, let isNew):
                    r.ticket = t
                    r.isNew = isNew
                    inFlight[i] = r
                case .wait(let other):
                    #expect(inFlight.contains { $0.ticket == other }, "waits only for a request in flight")
                }
                return
            }
            inFlight.remove(at: i)
            let fresh = zip(r.seqs, r.isNew).filter(\.1).map(\.0)
            if appendFails && !fresh.isEmpty {
                watermark.release(ticket)
                answered503 += 1
            } else {
                stored.formUnion(fresh)
                watermark.commit(ticket)
                acknowledged.formUnion(r.seqs)
                answered200 += 1
            }
        }

        mutating func restart() {
            inFlight.removeAll()
            watermark = SeqWatermark(maxRanges: 8)
            if let high = stored.max() { watermark.restored(through: high) }
        }
    }

    // Catches any interleaving in which a 200 covers a seq that is stored nowhere: requests and
    // their repeats in flight together, appends that fail, restarts, the range bound reached.
    @Test(arguments: 0..<200)
    func everyAcknowledgedSeqIsStored(seed: UInt64) {
        var rng = SplitMix(seed: seed)
        var model = IngestModel()
        var batches: [[Int64]] = []
        for _ in 0..<400 {
            switch rng.next() % 10 {
            case 0...2:
                // A new batch: mostly the next seqs, sometimes with gaps.
                let start = (batches.last?.last ?? 0) + 1 + Int64(rng.next() % 3)
                let batch = (0..<Int64(1 + rng.next() % 6)).map { start + $0 * Int64(1 + rng.next() % 2) }
                batches.append(batch)
                model.arrive(batch)
            case 3...4 where !batches.isEmpty:
                // A retry of an earlier batch, possibly while it is still in flight.
                model.arrive(batches[Int(rng.next() % UInt64(batches.count))])
            case 5...8 where !model.inFlight.isEmpty:
                model.step(Int(rng.next() % UInt64(model.inFlight.count)), appendFails: rng.next() % 4 == 0)
            case 9 where rng.next() % 8 == 0:
                model.restart()
            default:
                break
            }
        }
        #expect(
            model.acknowledged.isSubset(of: model.stored),
            "seed \(seed): acknowledged but stored nowhere: \(model.acknowledged.subtracting(model.stored).sorted())")
        #expect(model.answered200 > 0 && model.answered503 > 0, "seed \(seed): the run exercised both outcomes")
    }

    @Test func deliveryMode() {
        #expect(DeliveryMode.of(linkUp: false, backlog: 0, threshold: 10) == .queueing)
        #expect(DeliveryMode.of(linkUp: true, backlog: 5, threshold: 10) == .direct)
        #expect(DeliveryMode.of(linkUp: true, backlog: 50, threshold: 10) == .draining)
    }

    @Test func tokenComparisonIsExact() {
        #expect(AccessToken.constantTimeEquals("secret", "secret"))
        #expect(!AccessToken.constantTimeEquals("secret", "secreT"))
        #expect(!AccessToken.constantTimeEquals("secret", "secret2"))
        #expect(!AccessToken.constantTimeEquals("", "x"))
        #expect(AccessToken.authorizes("Bearer secret", token: "secret"))
        #expect(AccessToken.authorizes("bearer  secret ", token: "secret"))
        #expect(!AccessToken.authorizes("Bearer secre", token: "secret"))
        #expect(!AccessToken.authorizes(nil, token: "secret"))
        #expect(!AccessToken.authorizes("secret", token: "secret"))
        // A browser's Basic authentication: any user, the token as the password.
        let basic = Data("operator:secret".utf8).base64EncodedString()
        #expect(AccessToken.authorizes("Basic \(basic)", token: "secret"))
        #expect(!AccessToken.authorizes("Basic \(Data("operator:nope".utf8).base64EncodedString())", token: "secret"))
        #expect(!AccessToken.authorizes("Basic %%%", token: "secret"))
    }

    @Test func gzipRoundTripsAndRefusesBombsAndGarbage() throws {
        let text = Array(String(repeating: "{\"source\":\"s\"}\n", count: 10_000).utf8)
        let gz = try Gzip.compress(text)
        #expect(gz.count < text.count / 10)
        #expect(try Gzip.decompress(gz, maxOutput: text.count) == text)
        #expect(try Gzip.decompress(gz + gz, maxOutput: 2 * text.count) == text + text, "concatenated members")
        #expect(throws: GzipError.self) { try Gzip.decompress(gz, maxOutput: 1000) }
        #expect(throws: GzipError.self) { try Gzip.decompress(Array(gz.prefix(gz.count / 2)), maxOutput: 1 << 20) }
        #expect(throws: GzipError.self) { try Gzip.decompress(Array("plain text".utf8), maxOutput: 1 << 20) }
    }

    @Test func generatedTrafficIsValidDeterministicAndConsistent() throws {
        let start: Int64 = 1_795_248_000_000
        func stream(_ seed: UInt64) -> [Event] {
            Array(
                TrafficGenerator(
                    source: "site1/voice", seed: seed, start: start, profile: .staffed(arrivalsPerSecond: 2)
                ).prefix(20_000))
        }
        let a = stream(7)
        #expect(a == stream(7), "the same seed gives the same traffic")
        #expect(a != stream(8))
        let parser = EventParser(isKnownSource: { $0 == "site1/voice" })
        var lastSeq: Int64 = 0
        var lastTs: Int64 = 0
        var open = Set<String>()
        var types: [EventType: Int] = [:]
        var heartbeatGaps = 0
        for e in a {
            #expect(
                parser.parse(body: Array(e.json.utf8)).events == [e], "every event passes the contract's validation")
            #expect(e.seq == lastSeq + 1)
            #expect(e.ts.millisecondsSinceEpoch >= lastTs)
            if e.type == .heartbeat { heartbeatGaps += 1 }
            lastSeq = e.seq
            lastTs = e.ts.millisecondsSinceEpoch
            types[e.type, default: 0] += 1
            if let i = e.interaction {
                if e.type == .interactionCreated {
                    open.insert(i)
                } else {
                    #expect(open.contains(i), "\(e.type) before created")
                }
                if e.type == .interactionEnded { open.remove(i) }
            }
        }
        for t in [
            EventType.interactionCreated, .interactionQueued, .interactionAnswered, .interactionHeld,
            .interactionRetrieved,
            .interactionTransferred, .interactionAbandoned, .interactionEnded, .agentLogin, .agentReady, .agentNotReady,
        ] {
            #expect((types[t] ?? 0) > 0, "the traffic includes \(t.rawValue)")
        }
        let answered = Double(types[.interactionAnswered] ?? 0)
        let abandoned = Double(types[.interactionAbandoned] ?? 0)
        #expect(abandoned / (answered + abandoned) < 0.2, "a staffed center answers most offers")
    }

    @Test func idleSourcesSendHeartbeats() {
        var p = TrafficGenerator.Profile.staffed(arrivalsPerSecond: 0.01)
        p.heartbeatEvery = 5
        let events = Array(TrafficGenerator(source: "s", seed: 1, start: 0, profile: p).prefix(400))
        #expect(events.contains { $0.type == .heartbeat })
    }
}

/// The ingest path with a real disk queue and a failpoint in its append.
@Suite("Collector ingest failpoints")
struct IngestFailpointTests {
    static func body(_ seqs: ClosedRange<Int>) -> [UInt8] {
        Array(
            seqs.map {
                #"{"source":"s1/voice","seq":\#($0),"ts":"2026-11-21T10:00:00.000Z","type":"heartbeat"}"# + "\n"
            }.joined().utf8)
    }

    static func counts(_ a: IngestAnswer) -> (accepted: Int, duplicates: Int) {
        let json = (try? JSONSerialization.jsonObject(with: Data(a.body.utf8))) as? [String: Any] ?? [:]
        return (json["accepted"] as? Int ?? -1, json["duplicates"] as? Int ?? -1)
    }

    // Catches the in-flight duplicate hole of issue 15 deterministically: the first append is
    // made to fail only once the repeat is known to be waiting for it; the repeat must then store
    // the events itself and answer them as accepted, and the queue must hold them.
    @Test func aRepeatWaitingOnAFailedAppendStoresTheEventsItself() async throws {
        let dir = TempDir("failpoint")
        let queue = try DiskQueue(DiskQueueConfiguration(directory: dir.path))
        defer { queue.close() }
        let settings = CollectorSettings(
            name: "c1", source: "s1/voice", sourceNames: ["s1/voice"], listen: HostPort("127.0.0.1:1")!,
            idbConninfo: "", idbDatabase: "idb", idbSite: "site1", queue: DiskQueueConfiguration(directory: dir.path))
        let registry = PrometheusCollectorRegistry()
        let state = CollectorState(registry: registry, collector: "c1")
        let calls = Mutex(0)
        let ingest = Ingest(settings: settings, queue: queue, state: state) { records, oldest in
            let call = calls.withLock {
                $0 += 1
                return $0
            }
            if call == 1 {
                // The failpoint: hold the first append until the repeat waits on it, then fail it.
                let deadline = ContinuousClock.now + .seconds(10)
                while Self.waits(registry) == 0 && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(5))
                }
                throw DiskQueueError(code: .writeFailed, message: "failpoint: the first append fails")
            }
            _ = try await queue.append(records, oldestTimestamp: oldest)
        }
        // Whichever of the two reserves first makes the failing append; the other is the repeat
        // that waits (the failpoint holds the append until it does), so no order is assumed.
        async let first = ingest.handle(body: Self.body(1...100), contentEncoding: nil)
        async let repeated = ingest.handle(body: Self.body(1...100), contentEncoding: nil)
        let answers = await [first, repeated].sorted { $0.status < $1.status }
        #expect(Self.waits(registry) >= 1, "the repeat waited for the first append")
        #expect(answers.map(\.status) == [200, 503])
        #expect(Self.counts(answers[0]) == (100, 0), "\(answers[0].body)")
        #expect(queue.stats.events == 100, "the acknowledged events are in the queue")
        // And now they are duplicates.
        let again = await ingest.handle(body: Self.body(1...100), contentEncoding: nil)
        #expect(Self.counts(again) == (0, 100))
    }

    static func waits(_ registry: PrometheusCollectorRegistry) -> Int {
        var out: [UInt8] = []
        registry.emit(into: &out)
        let text = String(decoding: out, as: UTF8.self)
        guard
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("bcpipe_collector_repeat_waits_total") })
        else { return 0 }
        return Int(line.split(separator: " ").last ?? "") ?? 0
    }
}
