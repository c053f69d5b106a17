import EventModel

/// A row of `mart.fact_queue_offer` as the aggregates see it: what it adds to its
/// `agg_queue_hourly` bucket and to its answering agent's `agg_agent_daily` day.
struct OfferRow: Sendable, Equatable {
    /// The UTC hour of the `queued` event (ms).
    var hour: Int64
    /// When it was offered: the `queued` event's time (ms).
    var offeredAt: Int64
    var queueKey: Int64
    /// 0 when the interaction's media is unknown (its `created` event is not in the mart).
    var mediaKey: Int64
    var outcome: OfferFact.Outcome?
    var waitMs: Int64?
    var talkMs: Int64?
    /// Answered within its queue's SLA.
    var withinSLA: Bool
    /// Abandoned within `reporting.short_abandon_seconds`.
    var abandonedShort: Bool
    var agentKey: Int64?
    /// When the offer was answered (ms), for the agent's day.
    var answeredAt: Int64?
    var holdMs: Int64
}

/// A row of `mart.fact_agent_state` as `agg_agent_daily` sees it.
struct StateRow: Sendable, Equatable {
    /// The UTC day it started on (ms at midnight).
    var day: Int64
    /// When it started (ms).
    var startedAt: Int64
    var agentKey: Int64
    var state: EventType
    /// A not-ready interval's reason code.
    var reason: String?
    /// nil while the interval is open (counts nothing yet).
    var durationMs: Int64?
}

/// How a cycle moves the aggregates: the rows it deletes count negatively, the rows it writes
/// positively, so only the buckets and days those rows fall in change (no rescans).
struct AggregateDeltas: Sendable, Equatable {
    struct HourlyKey: Hashable, Sendable {
        var hour: Int64
        var queueKey: Int64
        var mediaKey: Int64
    }

    struct Hourly: Sendable, Equatable {
        var offered: Int64 = 0
        var answered: Int64 = 0
        var abandoned: Int64 = 0
        var withinSLA: Int64 = 0
        var waitSum: Int64 = 0
        var waitCount: Int64 = 0
        var talkSum: Int64 = 0
        var talkCount: Int64 = 0
    }

    struct DailyKey: Hashable, Sendable {
        var day: Int64
        var agentKey: Int64
    }

    struct Daily: Sendable, Equatable {
        var answered: Int64 = 0
        var talkMs: Int64 = 0
        var holdMs: Int64 = 0
        var readyMs: Int64 = 0
        var notReadyMs: Int64 = 0
    }

    var hourly: [HourlyKey: Hourly] = [:]
    var daily: [DailyKey: Daily] = [:]
    /// The same rows by zone and level (CONTRACT 5.1).
    var intervals = IntervalDeltas()

    static let dayMs: Int64 = 86_400_000

    /// Adds (`sign` 1) or removes (`sign` -1) an offer.
    mutating func add(_ o: OfferRow, sign: Int64) {
        intervals.add(o, sign: sign)
        let answered = o.outcome == .answered
        hourly[HourlyKey(hour: o.hour, queueKey: o.queueKey, mediaKey: o.mediaKey), default: Hourly()].apply(
            sign: sign, offered: 1, answered: answered ? 1 : 0, abandoned: o.outcome == .abandoned ? 1 : 0,
            withinSLA: o.withinSLA ? 1 : 0, waitSum: o.waitMs ?? 0, waitCount: o.waitMs == nil ? 0 : 1,
            talkSum: answered ? (o.talkMs ?? 0) : 0, talkCount: answered ? 1 : 0)
        if answered, let agent = o.agentKey, let at = o.answeredAt {
            let key = DailyKey(day: Self.floorDay(at), agentKey: agent)
            daily[key, default: Daily()].answered += sign
            daily[key]!.talkMs += sign * (o.talkMs ?? 0)
            daily[key]!.holdMs += sign * o.holdMs
        }
    }

    /// Adds or removes an agent state interval (ready and not-ready time on the day it started).
    mutating func add(_ s: StateRow, sign: Int64) {
        intervals.add(s, sign: sign)
        guard let d = s.durationMs else { return }
        let key = DailyKey(day: s.day, agentKey: s.agentKey)
        switch s.state {
        case .agentReady: daily[key, default: Daily()].readyMs += sign * d
        case .agentNotReady: daily[key, default: Daily()].notReadyMs += sign * d
        default: break
        }
    }

    /// Midnight UTC of the day `ms` falls on.
    static func floorDay(_ ms: Int64) -> Int64 {
        let r = ms % dayMs
        return ms - (r < 0 ? r + dayMs : r)
    }
}

extension AggregateDeltas.Hourly {
    fileprivate mutating func apply(
        sign: Int64, offered: Int64, answered: Int64, abandoned: Int64, withinSLA: Int64, waitSum: Int64,
        waitCount: Int64, talkSum: Int64, talkCount: Int64
    ) {
        self.offered += sign * offered
        self.answered += sign * answered
        self.abandoned += sign * abandoned
        self.withinSLA += sign * withinSLA
        self.waitSum += sign * waitSum
        self.waitCount += sign * waitCount
        self.talkSum += sign * talkSum
        self.talkCount += sign * talkCount
    }
}
