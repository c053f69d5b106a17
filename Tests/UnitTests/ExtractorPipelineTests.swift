import EventModel
import Testing
import Topology

@testable import Extractor

/// The pure stages of the extractor's pipeline: the completeness decision with its gaps, the
/// transform's CONTRACT 5 rules at their edges, and the aggregate deltas.
@Suite("Extractor pipeline")
struct ExtractorPipelineTests {
    static let threshold: Int64 = 60_000

    /// Catches a gap not opened when a source goes stuck, opened twice, or closed without the
    /// discard window Info Mart's rule gives (CONTRACT 6.3).
    @Test func aStuckSourceOpensAGapAndItsReturnClosesItByThePolicy() {
        let stored: [String: CompletenessWatermark.Stored] = [
            "a": .init(availableThrough: 1_000, lastAdvancedAt: 0, state: "current"),
            "b": .init(availableThrough: 5_000, lastAdvancedAt: 200_000, state: "current"),
        ]
        let now: Int64 = 200_000
        let d = CompletenessWatermark.decide(
            sources: ["a", "b"], stored: stored, fresh: ["b": 6_000], now: now, thresholdMs: Self.threshold,
            lateData: .discard)
        #expect(d.states == ["a": .stuck, "b": .current])
        #expect(d.completeThrough == 6_000, "the others go on without a stuck source")
        #expect(d.gapActions == [.open(source: "a", from: 1_000, reason: d.gapActions.first.map(Self.reason) ?? "")])
        #expect(d.reportedThrough("a") == 1_000 && d.reportedThrough("b") == 6_000)

        // Stuck already: no second gap. Back at R = 300 000: discard keeps R − threshold on.
        var stuck = stored
        stuck["a"]?.state = "stuck"
        let back = CompletenessWatermark.decide(
            sources: ["a", "b"], stored: stuck, fresh: ["a": 290_000, "b": 299_000], now: 300_000,
            thresholdMs: Self.threshold, lateData: .discard)
        let window = CompletenessWatermark.DiscardWindow(after: 1_000, before: 240_000)
        #expect(back.gapActions == [.closeDiscarding(source: "a", to: 240_000, discard: window)])
        #expect(back.discardWindows["a"] == window && window.discards(100_000) && !window.discards(240_000))
        let backfilled = CompletenessWatermark.decide(
            sources: ["a", "b"], stored: stuck, fresh: ["a": 290_000, "b": 299_000], now: 300_000,
            thresholdMs: Self.threshold,
            lateData: .backfill)
        #expect(backfilled.gapActions == [.closeBackfilled(source: "a", to: 290_000)])
        #expect(backfilled.discardWindows["a"] == nil)
    }

    static func reason(_ a: CompletenessWatermark.GapAction) -> String {
        if case .open(_, _, let r) = a { return r }
        return ""
    }

    /// Catches availability going back when an IDB that lags is the only one read, and a
    /// completeness reported ahead of what the views hold (CONTRACT 5: never ahead of T).
    @Test func availabilityNeverGoesBackAndCompletenessNeverRunsAheadOfT() {
        let stored: [String: CompletenessWatermark.Stored] = [
            "a": .init(availableThrough: 10_000, lastAdvancedAt: 0, state: "current"),
            "b": .init(availableThrough: 4_000, lastAdvancedAt: 0, state: "current"),
        ]
        let d = CompletenessWatermark.decide(
            sources: ["a", "b"], stored: stored, fresh: ["a": 7_000], now: 1_000, thresholdMs: Self.threshold,
            lateData: .discard)
        #expect(d.availability.map(\.availableThrough) == [10_000, 4_000])
        #expect(d.completeThrough == 4_000)
        #expect(d.reportedThrough("a") == 4_000, "a's events after T are not in the reports yet")
    }

    static func event(_ seq: Int64, _ type: EventType, at ms: Int64, queue: String? = nil, media: Media? = nil)
        -> Event
    {
        Event(
            source: "s", seq: seq, ts: Timestamp(millisecondsSinceEpoch: ms), type: type, interaction: "i",
            media: media, queue: queue, agent: type == .interactionAnswered ? "ann" : nil)
    }

    /// Catches hold ended by anything but retrieved/ended, talk ended by a queued or abandoned,
    /// and an offer's media guessed (CONTRACT 5).
    @Test func holdAndTalkRunAsTheContractSays() {
        let (f, offers) = InteractionTransform.compute([
            Self.event(1, .interactionQueued, at: 0, queue: "q1"),
            Self.event(2, .interactionAnswered, at: 1_000),
            Self.event(3, .interactionHeld, at: 3_000),
            // Held across a transfer and a new offer: the hold runs until retrieved.
            Self.event(4, .interactionTransferred, at: 4_000),
            Self.event(5, .interactionQueued, at: 4_000, queue: "q2"),
            Self.event(6, .interactionRetrieved, at: 9_000),
            Self.event(7, .interactionEnded, at: 10_000),
        ])!
        #expect(f.holdMs == 6_000)
        #expect(f.talkMs == 2_000 + 1_000, "answered → held, then retrieved → ended")
        #expect(offers.map(\.holdMs) == [6_000, 0], "a hold counts for the offer it started in")
        #expect(offers.allSatisfy { $0.media == nil }, "no created event: no media")
        #expect(f.media == nil)
    }

    /// Catches an offer's media taken from the events before it only (a created event later in
    /// seq order still gives the interaction, and so its offers, their media).
    @Test func offersTakeTheInteractionsMedia() {
        let (_, offers) = InteractionTransform.compute([
            Self.event(2, .interactionQueued, at: 1_000, queue: "q"),
            Self.event(1, .interactionCreated, at: 0, media: .chat),
        ])!
        #expect(offers.map(\.media) == [.chat])
    }

    /// Catches aggregate deltas that do not cancel: a fact deleted and written again unchanged
    /// must move nothing.
    @Test func deltasOfTheSameRowsCancel() {
        let o = OfferRow(
            hour: 3_600_000, offeredAt: 3_600_000, queueKey: 1, mediaKey: 0, outcome: .answered, waitMs: 5, talkMs: 7,
            withinSLA: true, abandonedShort: false, agentKey: 3, answeredAt: 3_600_005, holdMs: 2)
        let s = StateRow(day: 0, startedAt: 10, agentKey: 3, state: .agentReady, durationMs: 100)
        var d = AggregateDeltas()
        d.add(o, sign: 1)
        d.add(s, sign: 1)
        #expect(d.hourly.values.first?.offered == 1 && d.daily.values.first?.readyMs == 100)
        d.add(o, sign: -1)
        d.add(s, sign: -1)
        #expect(d.hourly.values.allSatisfy { $0 == .init() } && d.daily.values.allSatisfy { $0 == .init() })
        #expect(AggregateDeltas.floorDay(86_400_000 + 5) == 86_400_000)
    }

    /// Catches interval deltas in the wrong quarter (a period boundary off by one), a longest
    /// wait taken back that is not reported as lost, logged-in time that counts logged-out
    /// intervals, and not-ready time under another reason.
    @Test func intervalDeltasKeepQuartersMaximaAndReasons() {
        var d = IntervalDeltas()
        let q = IntervalDeltas.quarter(1_800_000 + 899_999)
        #expect(q == 1_800_000 && IntervalDeltas.quarter(-1) == -900_000)
        let held = OfferRow(
            hour: 0, offeredAt: 1_800_000 + 10, queueKey: 1, mediaKey: 1, outcome: .answered, waitMs: 500, talkMs: 7,
            withinSLA: false, abandonedShort: false, agentKey: 3, answeredAt: 1_800_510, holdMs: 0)
        var now = held
        now.waitMs = 10
        now.answeredAt = 1_800_020
        d.add(held, sign: -1)
        d.add(now, sign: 1)
        let key = IntervalDeltas.QueueKey(quarter: 1_800_000, queueKey: 1, mediaKey: 1)
        #expect(d.queues[key]?.removedMaxWait == 500 && d.queues[key]?.addedMaxWait == 10)
        #expect(d.queues[key]?.offered == 0 && d.queues[key]?.waitSum == -490)
        for (state, reason) in [(EventType.agentNotReady, "break"), (.agentNotReady, nil), (.agentLogout, nil)] {
            d.add(
                StateRow(day: 0, startedAt: 1_800_100, agentKey: 3, state: state, reason: reason, durationMs: 1_000),
                sign: 1)
        }
        let agent = d.agents[IntervalDeltas.AgentKey(quarter: 1_800_000, agentKey: 3)]
        #expect(agent?.notReadyMs == 2_000 && agent?.loggedInMs == 2_000 && agent?.answered == 0)
        #expect(d.notReady[.init(quarter: 1_800_000, agentKey: 3, reason: "break")] == .init(intervals: 1, ms: 1_000))
        #expect(d.notReady[.init(quarter: 1_800_000, agentKey: 3, reason: "")] == .init(intervals: 1, ms: 1_000))
    }

    /// Catches a cycle that rewrites rows that did not change, inserts a row the mart already
    /// holds (a duplicate offer), or updates an offer without moving the aggregates by the
    /// difference (an answered offer counted as still waiting, or twice).
    @Test func factChangesWriteOnlyWhatChangedAndMoveTheAggregatesByTheDifference() {
        let key = InteractionCache.Key(source: "s", interaction: "i")
        let row = { (o: OfferFact) in
            OfferRow(
                hour: o.hour, offeredAt: o.offeredAt.millisecondsSinceEpoch, queueKey: 1, mediaKey: 1,
                outcome: o.outcome, waitMs: o.waitMs, talkMs: o.talkMs, withinSLA: false, abandonedShort: false,
                agentKey: o.agent == nil ? nil : 9,
                answeredAt: o.outcome == .answered ? o.offeredAt.millisecondsSinceEpoch + (o.waitMs ?? 0) : nil,
                holdMs: o.holdMs)
        }
        let before = [
            Self.event(1, .interactionCreated, at: 0, media: .voice),
            Self.event(2, .interactionQueued, at: 10, queue: "q"),
        ]
        let (f0, o0) = InteractionTransform.compute(before)!
        var first = FactChanges()
        first.add(key, computed: (f0, o0), held: .init(), row: row)
        #expect(first.insertInteractions.count == 1 && first.insertOffers.count == 1 && first.updateOffers.isEmpty)
        let held = first.facts[key]!

        // The same events again: nothing to write, nothing moves.
        var same = FactChanges()
        same.add(key, computed: (f0, o0), held: held, row: row)
        #expect(same.insertInteractions.isEmpty && same.updateInteractions.isEmpty)
        #expect(same.insertOffers.isEmpty && same.updateOffers.isEmpty && same.deleteOffers.isEmpty)
        #expect(same.deltas == AggregateDeltas())

        // Answered: the interaction and its one offer are updated in place; the hour's bucket
        // gains an answer and no offer.
        let (f1, o1) = InteractionTransform.compute(before + [Self.event(3, .interactionAnswered, at: 30)])!
        var answered = FactChanges()
        answered.add(key, computed: (f1, o1), held: held, row: row)
        #expect(answered.updateInteractions.map(\.interaction) == ["i"] && answered.insertInteractions.isEmpty)
        #expect(answered.updateOffers.map(\.0.seq) == [2] && answered.insertOffers.isEmpty)
        let bucket = answered.deltas.hourly.values.first
        #expect(answered.deltas.hourly.count == 1 && bucket?.offered == 0 && bucket?.answered == 1)
        #expect(bucket?.waitSum == 20 && bucket?.waitCount == 1)
        #expect(answered.deltas.daily.values.first?.answered == 1)

        // An earlier event arrives late: the interaction's first event, and so its partition of
        // mart.fact_interaction, changes; an update in place would look for it in the new one.
        let (f2, o2) = InteractionTransform.compute(
            [Self.event(0, .interactionCreated, at: -5, media: .voice)] + before)!
        var moved = FactChanges()
        moved.add(key, computed: (f2, o2), held: held, row: row)
        #expect(moved.movedInteractions == [key] && moved.insertInteractions.map(\.firstAt) == [f2.firstAt])
        #expect(moved.updateInteractions.isEmpty && f2.firstAt != f0.firstAt)
    }
}
