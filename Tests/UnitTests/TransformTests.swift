import EventModel
import Foundation
import Testing
import Traffic

@testable import Extractor

@Suite("Transform on the hand-worked fixture")
struct TransformTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func fixture() throws -> ([Event], [String: Any]) {
        let body = try Data(contentsOf: repository.appendingPathComponent("Fixtures/basic-day.ndjson"))
        let events = EventParser().parse(body: Array(body)).events
        let expected =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: repository.appendingPathComponent("Fixtures/basic-day.expected.json")))
            as! [String: Any]
        return (events, expected)
    }

    static func iso(_ t: Timestamp?) -> Any { t.map { $0.rfc3339 } ?? NSNull() }
    static func num(_ v: Int64?) -> Any { v.map { Int($0) } ?? NSNull() }

    /// The report rows in the fixture's JSON shape, computed from the pure transforms.
    static func reports(_ events: [Event], sla: Int64 = 20_000) -> (
        interactions: [[String: Any]], hourly: [[String: Any]], daily: [[String: Any]]
    ) {
        var byInteraction: [String: [Event]] = [:]
        for e in events { if let i = e.interaction { byInteraction[i, default: []].append(e) } }
        var interactions: [[String: Any]] = []
        var offers: [OfferFact] = []
        for (_, evs) in byInteraction {
            let (f, o) = InteractionTransform.compute(evs)!
            offers += o
            interactions.append([
                "source": f.source, "site": "site1", "interaction": f.interaction,
                "media": f.media?.rawValue ?? NSNull(),
                "direction": f.direction?.rawValue ?? NSNull(), "first_queue": f.firstQueue ?? NSNull(),
                "last_queue": f.lastQueue ?? NSNull(),
                "agent": f.agent ?? NSNull(), "created_at": iso(f.createdAt), "answered_at": iso(f.answeredAt),
                "ended_at": iso(f.endedAt),
                "outcome": f.outcome.rawValue, "wait_ms": num(f.waitMs), "talk_ms": Int(f.talkMs),
                "hold_ms": Int(f.holdMs),
                "transfers": f.transfers,
            ])
        }
        interactions.sort { ($0["interaction"] as! String) < ($1["interaction"] as! String) }
        struct Key: Hashable { var hour: Int64; var queue: String; var media: String }
        var groups: [Key: [OfferFact]] = [:]
        for o in offers {
            groups[Key(hour: o.hour, queue: o.queue, media: o.media?.rawValue ?? ""), default: []].append(o)
        }
        let hourly = groups.map { key, os -> [String: Any] in
            let answered = os.filter { $0.outcome == .answered }
            let waits = os.compactMap(\.waitMs)
            let talks = answered.compactMap(\.talkMs)
            func avg(_ xs: [Int64]) -> Any {
                xs.isEmpty ? NSNull() : Int((Double(xs.reduce(0, +)) / Double(xs.count)).rounded())
            }
            return [
                "hour": Timestamp(millisecondsSinceEpoch: key.hour).rfc3339, "queue": key.queue, "media": key.media,
                "offered": os.count, "answered": answered.count,
                "abandoned": os.filter { $0.outcome == .abandoned }.count,
                "answered_within_sla": answered.filter { ($0.waitMs ?? .max) <= sla }.count, "avg_wait_ms": avg(waits),
                "avg_talk_ms": avg(talks),
            ]
        }.sorted {
            ($0["hour"] as! String, $0["queue"] as! String, $0["media"] as! String) < (
                $1["hour"] as! String, $1["queue"] as! String, $1["media"] as! String
            )
        }
        var byAgent: [String: [Event]] = [:]
        for e in events where e.type.rawValue.hasPrefix("agent.") { byAgent[e.agent!, default: []].append(e) }
        var daily: [[String: Any]] = []
        for (agent, evs) in byAgent.sorted(by: { $0.key < $1.key }) {
            let states = AgentStateTransform.compute(evs)
            let mine = offers.filter { $0.agent == agent && $0.outcome == .answered }
            daily.append([
                "day": String(Timestamp(millisecondsSinceEpoch: states[0].day).rfc3339.prefix(10)), "agent": agent,
                "answered": mine.count, "talk_ms": Int(mine.compactMap(\.talkMs).reduce(0, +)),
                "hold_ms": Int(mine.map(\.holdMs).reduce(0, +)),
                "ready_ms": Int(states.filter { $0.state == .agentReady }.map(\.durationMs).reduce(0, +)),
                "not_ready_ms": Int(states.filter { $0.state == .agentNotReady }.map(\.durationMs).reduce(0, +)),
            ])
        }
        return (interactions, hourly, daily)
    }

    static func same(_ a: [[String: Any]], _ b: [[String: Any]]) -> Bool {
        NSArray(array: a).isEqual(to: b)
    }

    @Test func reportsMatchTheHandWorkedFigures() throws {
        let (events, expected) = try Self.fixture()
        let r = Self.reports(events)
        let want = expected["interactions"] as! [[String: Any]]
        for (got, exp) in zip(r.interactions, want) {
            #expect(NSDictionary(dictionary: got).isEqual(to: exp), "\(got["interaction"]!): got \(got) want \(exp)")
        }
        #expect(r.interactions.count == want.count)
        let wantHourly = expected["queue_hourly"] as! [[String: Any]]
        #expect(Self.same(r.hourly, wantHourly), "got \(r.hourly)")
        let wantDaily = expected["agent_daily"] as! [[String: Any]]
        #expect(Self.same(r.daily, wantDaily), "got \(r.daily)")
    }

    @Test func arrivalOrderDoesNotMatter() throws {
        let (events, _) = try Self.fixture()
        var rng = SplitMix(seed: 5)
        for _ in 0..<20 {
            let shuffled = events.shuffled(using: &rng)
            let a = Self.reports(events)
            let b = Self.reports(shuffled)
            #expect(Self.same(a.interactions, b.interactions))
            #expect(Self.same(a.hourly, b.hourly))
            #expect(Self.same(a.daily, b.daily))
        }
    }
}
