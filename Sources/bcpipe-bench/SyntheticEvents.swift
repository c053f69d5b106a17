import EventModel
import Traffic

/// Deterministic contact-center-shaped events for benchmarks: interaction life cycles
/// (created, queued, answered or abandoned, held, ended) with attached data, about 230 bytes
/// a line, interleaved with agent state changes.
struct SyntheticEvents: Sequence, IteratorProtocol {
    private var rng: SplitMix
    private var seq: Int64 = 0
    private var clock: Int64 = 1_795_255_200_000  // 2026-11-21T10:00:00Z
    private var pending: [Event] = []
    private var interaction = 0
    let source: String

    init(seed: UInt64, source: String = "site1/voice") {
        rng = SplitMix(seed: seed)
        self.source = source
    }

    private mutating func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

    static let queues = ["sales", "support", "billing", "retention", "vip"]
    static let segments = ["gold", "silver", "bronze"]
    static let languages = ["en", "fr", "de", "es"]

    mutating func next() -> Event? {
        if pending.isEmpty { refill() }
        var e = pending.removeFirst()
        seq += 1
        e.seq = seq
        return e
    }

    private mutating func refill() {
        interaction += 1
        let id = "call-\(String(interaction, radix: 16))-\(random(1_000_000))"
        let queue = Self.queues[random(Self.queues.count)]
        let agent = "agent\(random(400))"
        let attrs: Attributes = [
            "segment": Self.segments[random(3)], "language": Self.languages[random(4)],
            "ani": "+1555\(1_000_000 + random(8_999_999))",
        ]
        func at(_ delta: Int) -> Timestamp {
            clock += Int64(delta)
            return Timestamp(millisecondsSinceEpoch: clock)
        }
        func make(_ type: EventType, _ delta: Int, agent: String? = nil, queue: String? = nil) -> Event {
            Event(
                source: source, seq: 0, ts: at(delta), type: type, interaction: id,
                media: type == .interactionCreated ? .voice : nil,
                direction: type == .interactionCreated ? .inbound : nil,
                queue: queue, agent: agent, attrs: attrs)
        }
        pending.append(make(.interactionCreated, random(500)))
        pending.append(make(.interactionQueued, random(300), queue: queue))
        if random(10) < 8 {
            pending.append(make(.interactionAnswered, random(40_000), agent: agent, queue: queue))
            if random(4) == 0 {
                pending.append(make(.interactionHeld, random(60_000), agent: agent))
                pending.append(make(.interactionRetrieved, random(30_000), agent: agent))
            }
            pending.append(make(.interactionEnded, random(300_000), agent: agent))
        } else {
            pending.append(make(.interactionAbandoned, random(60_000), queue: queue))
            pending.append(make(.interactionEnded, 10))
        }
        if random(3) == 0 {
            pending.append(
                Event(
                    source: source, seq: 0, ts: at(random(100)), type: random(2) == 0 ? .agentReady : .agentNotReady,
                    agent: agent,
                    reason: nil))
        }
    }
}
