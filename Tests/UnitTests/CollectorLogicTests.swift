import EventModel
import Foundation
import Testing
import Topology

@testable import Collector
@testable import GzipCompression
@testable import Traffic

@Suite("Collector logic")
struct CollectorLogicTests {
    @Test func watermarkSplitsNewFromDuplicates() {
        var w = SeqWatermark()
        let (t1, new1) = w.reserve([1, 2, 3])
        #expect(new1 == [true, true, true])
        w.commit(t1)
        let (t2, new2) = w.reserve([2, 3, 4, 4, 5])
        #expect(new2 == [false, false, true, false, true], "a repeated seq inside one body is a duplicate too")
        // A refused append gives its seqs back.
        w.release(t2)
        let (t3, new3) = w.reserve([4, 5])
        #expect(new3 == [true, true])
        // While t3 is in flight, another request cannot take the same seqs.
        let (_, new4) = w.reserve([5, 6])
        #expect(new4 == [false, true])
        w.commit(t3)
        #expect(w.durable == 5)
        w.raise(to: 100)
        #expect(w.reserve([50, 101]).isNew == [false, true])
    }

    @Test func concurrentRequestsArrivingOutOfOrderAreNotDuplicates() {
        var w = SeqWatermark()
        let (late, newLate) = w.reserve(Array(101...200))
        #expect(newLate.allSatisfy { $0 })
        let (early, newEarly) = w.reserve(Array(1...100))
        #expect(newEarly.allSatisfy { $0 }, "lower seqs that arrive later are new, not duplicates")
        w.commit(early)
        w.commit(late)
        #expect(w.reserve(Array(1...200)).isNew.allSatisfy { !$0 })
        #expect(w.reserve([201]).isNew == [true])
    }

    @Test func seqRangesMergeAndStayBounded() {
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
        #expect(SeqRanges.runs([5, 1, 2, 3, 7, 6]) == [1...3, 5...7])
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
