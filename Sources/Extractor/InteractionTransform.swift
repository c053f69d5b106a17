import EventModel

/// One row of `report.interactions` (CONTRACT 5), computed from all of an interaction's events.
public struct InteractionFact: Sendable, Equatable {
    public var source: String
    public var interaction: String
    public var media: Media?
    public var direction: Direction?
    public var firstQueue: String?
    public var lastQueue: String?
    /// The last answering agent.
    public var agent: String?
    public var createdAt: Timestamp?
    /// The first answer.
    public var answeredAt: Timestamp?
    public var endedAt: Timestamp?
    public var outcome: Outcome
    public var waitMs: Int64?
    public var talkMs: Int64
    public var holdMs: Int64
    public var transfers: Int
    /// When its first event (by seq) happened: the row's partition of `mart.fact_interaction`.
    public var firstAt: Timestamp

    public enum Outcome: String, Sendable, Equatable {
        case answered, abandoned, unanswered, open
    }
}

/// One offer to a queue (one `interaction.queued` event) and how it ended.
public struct OfferFact: Sendable, Equatable {
    public var source: String
    public var seq: Int64
    public var interaction: String
    public var queue: String
    public var media: Media?
    public var offeredAt: Timestamp
    public var outcome: Outcome?
    /// Queued → the answer or abandon that ended the offer.
    public var waitMs: Int64?
    /// Time connected to agents from the offer's answer to the interaction's next offer or end.
    public var talkMs: Int64?
    /// The agent who answered the offer.
    public var agent: String?
    /// Hold time during the offer.
    public var holdMs: Int64

    public enum Outcome: String, Sendable, Equatable {
        case answered, abandoned
    }

    /// The UTC hour the offer counts in.
    public var hour: Int64 { offeredAt.millisecondsSinceEpoch / 3_600_000 * 3_600_000 }
}

/// Turns an interaction's events into its accumulating-snapshot row and its offers.
///
/// Events are taken in seq order (the source's order), whatever order they arrived in, so a
/// late event recomputes the whole interaction correctly.
public enum InteractionTransform {
    public static func compute(_ input: [Event]) -> (InteractionFact, [OfferFact])? {
        let events = input.sorted { $0.seq < $1.seq }
        guard let first = events.first, let id = first.interaction else { return nil }
        var fact = InteractionFact(
            source: first.source, interaction: id, media: nil, direction: nil, firstQueue: nil, lastQueue: nil,
            agent: nil, createdAt: nil, answeredAt: nil, endedAt: nil, outcome: .open, waitMs: nil, talkMs: 0,
            holdMs: 0, transfers: 0, firstAt: first.ts)
        var offers: [OfferFact] = []
        var firstQueuedAt: Timestamp?
        var firstResolution: Timestamp?
        var abandoned = false
        // The open talk and hold segments: since when, and in which offer they started.
        var talking: (since: Timestamp, offer: Int?)?
        var holding: (since: Timestamp, offer: Int?)?
        var current: Int?  // index of the open offer (no later queued yet)

        // Talk: answered/retrieved → the next held/transferred/ended (CONTRACT 5); it counts for
        // the offer it started in once that offer is answered.
        func stopTalk(_ at: Timestamp) {
            guard let t = talking else { return }
            let d = at.millisecondsSinceEpoch - t.since.millisecondsSinceEpoch
            fact.talkMs += d
            if let o = t.offer, offers[o].outcome == .answered { offers[o].talkMs = (offers[o].talkMs ?? 0) + d }
            talking = nil
        }
        // Hold: held → the next retrieved/ended; it counts for the offer it started in.
        func stopHold(_ at: Timestamp) {
            guard let h = holding else { return }
            let d = at.millisecondsSinceEpoch - h.since.millisecondsSinceEpoch
            fact.holdMs += d
            if let o = h.offer { offers[o].holdMs += d }
            holding = nil
        }

        for e in events {
            switch e.type {
            case .interactionCreated:
                fact.createdAt = e.ts
                fact.media = e.media
                fact.direction = e.direction ?? .inbound
            case .interactionQueued:
                guard let q = e.queue else { break }
                if fact.firstQueue == nil { fact.firstQueue = q }
                fact.lastQueue = q
                if firstQueuedAt == nil { firstQueuedAt = e.ts }
                offers.append(
                    OfferFact(
                        source: e.source, seq: e.seq, interaction: id, queue: q, media: nil, offeredAt: e.ts,
                        outcome: nil, waitMs: nil, talkMs: nil, agent: nil, holdMs: 0))
                current = offers.count - 1
            case .interactionAnswered:
                if fact.answeredAt == nil { fact.answeredAt = e.ts }
                if firstResolution == nil { firstResolution = e.ts }
                fact.agent = e.agent
                if let c = current, offers[c].outcome == nil {
                    offers[c].outcome = .answered
                    offers[c].agent = e.agent
                    offers[c].waitMs = e.ts.millisecondsSinceEpoch - offers[c].offeredAt.millisecondsSinceEpoch
                    offers[c].talkMs = 0
                }
                if talking == nil { talking = (e.ts, current) }
            case .interactionHeld:
                stopTalk(e.ts)
                if holding == nil { holding = (e.ts, current) }
            case .interactionRetrieved:
                stopHold(e.ts)
                if talking == nil { talking = (e.ts, current) }
            case .interactionTransferred:
                stopTalk(e.ts)
                fact.transfers += 1
            case .interactionAbandoned:
                abandoned = true
                if firstResolution == nil { firstResolution = e.ts }
                if let c = current, offers[c].outcome == nil {
                    offers[c].outcome = .abandoned
                    offers[c].waitMs = e.ts.millisecondsSinceEpoch - offers[c].offeredAt.millisecondsSinceEpoch
                }
            case .interactionEnded:
                stopTalk(e.ts)
                stopHold(e.ts)
                fact.endedAt = e.ts
            default:
                break
            }
        }
        // An offer's media is the interaction's (from its created event), NULL without one.
        for i in offers.indices { offers[i].media = fact.media }
        if fact.answeredAt != nil {
            fact.outcome = .answered
        } else if abandoned {
            fact.outcome = .abandoned
        } else if fact.endedAt != nil {
            fact.outcome = .unanswered
        }
        if let resolved = firstResolution, let start = firstQueuedAt ?? fact.createdAt {
            fact.waitMs = resolved.millisecondsSinceEpoch - start.millisecondsSinceEpoch
        }
        return (fact, offers)
    }
}

/// An agent's state interval: from one `agent.*` event to that agent's next.
public struct AgentStateFact: Sendable, Equatable {
    public var source: String
    public var seq: Int64
    public var agent: String
    public var state: EventType
    public var reason: String?
    public var startedAt: Timestamp
    public var endedAt: Timestamp?

    /// Milliseconds in the state (0 while it is still open).
    public var durationMs: Int64 { endedAt.map { $0.millisecondsSinceEpoch - startedAt.millisecondsSinceEpoch } ?? 0 }
    /// The UTC day (ms at midnight) the interval counts on: the day it started.
    public var day: Int64 { startedAt.millisecondsSinceEpoch / 86_400_000 * 86_400_000 }
}

public enum AgentStateTransform {
    /// The intervals of one agent's `agent.*` events (any order in, time order out).
    public static func compute(_ input: [Event]) -> [AgentStateFact] {
        let events = input.filter { $0.type.rawValue.hasPrefix("agent.") }
            .sorted { ($0.ts, $0.source, $0.seq) < ($1.ts, $1.source, $1.seq) }
        var out: [AgentStateFact] = []
        for (i, e) in events.enumerated() {
            guard let agent = e.agent else { continue }
            out.append(
                AgentStateFact(
                    source: e.source, seq: e.seq, agent: agent, state: e.type, reason: e.reason, startedAt: e.ts,
                    endedAt: i + 1 < events.count ? events[i + 1].ts : nil))
        }
        return out
    }
}
