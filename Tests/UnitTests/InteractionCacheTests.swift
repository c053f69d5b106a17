import EventModel
import Testing

@testable import Extractor

/// The extractor's cache of open interactions' events. Its one promise: an entry, when present,
/// holds exactly the mart's events of its interaction — else a cycle computes a fact from too
/// few or too many events, and no SQL constraint would notice.
@Suite("Interaction cache")
struct InteractionCacheTests {
    static func event(_ seq: Int64, _ type: EventType, _ ts: Int64, interaction: String = "i1") -> Event {
        Event(source: "s", seq: seq, ts: Timestamp(millisecondsSinceEpoch: ts), type: type, interaction: interaction)
    }
    static let key = InteractionCache.Key(source: "s", interaction: "i1")

    /// Catches an entry made from a cycle's events alone (without a read-back the mart may hold
    /// earlier events the cache never saw), or a read-back entry missing the cycle's own events.
    @Test func anEntryIsMadeOnlyFromAFullReadBackAndGainsTheCyclesEvents() {
        var cache = InteractionCache()
        cache.committed(.init(inserted: [Self.event(5, .interactionQueued, 500)], through: 1_000))
        #expect(cache.events(Self.key) == nil, "never read back: its earlier events may be in the mart")

        cache.committed(
            .init(
                readBack: [
                    Self.key: [Self.event(1, .interactionCreated, 100), Self.event(5, .interactionQueued, 500)]
                ],
                inserted: [Self.event(5, .interactionQueued, 500), Self.event(7, .interactionAnswered, 700)],
                touched: [Self.key], through: 1_000))
        #expect(cache.events(Self.key)?.map(\.seq) == [1, 5, 7], "seq 5 was in the mart already: held once")

        // A later cycle: its events join the entry, including one beyond T (pending in the mart).
        cache.committed(
            .init(
                inserted: [Self.event(9, .interactionHeld, 900), Self.event(11, .interactionRetrieved, 2_000)],
                touched: [Self.key], through: 1_000))
        #expect(cache.events(Self.key)?.map(\.seq) == [1, 5, 7, 9, 11])
    }

    /// Catches an ended interaction kept for ever (memory growing with the backlog), or one
    /// dropped while its end is still beyond T (its pending events then missing at the next cycle).
    @Test func anInteractionLeavesOnceItsEndIsComplete() {
        var cache = InteractionCache()
        let created = Self.event(1, .interactionCreated, 100)
        let ended = Self.event(3, .interactionEnded, 2_000)
        cache.committed(.init(readBack: [Self.key: [created]], inserted: [ended], touched: [Self.key], through: 1_000))
        #expect(cache.events(Self.key)?.count == 2, "ended after T: still open as far as the reports go")
        // The next cycle's T passes the end; the interaction is touched by its pending event only.
        cache.committed(.init(touched: [Self.key], through: 2_000))
        #expect(cache.events(Self.key) == nil)
        #expect(cache.count == 0)
    }

    /// Catches a cache that keeps growing past its bound while a backlog is caught up.
    @Test func itHoldsAtMostItsCapacity() {
        var cache = InteractionCache(capacity: 10)
        var readBack: [InteractionCache.Key: [Event]] = [:]
        for i in 0..<25 {
            readBack[.init(source: "s", interaction: "i\(i)")] = [
                Self.event(Int64(i), .interactionCreated, 1, interaction: "i\(i)")
            ]
        }
        cache.committed(.init(readBack: readBack, touched: Set(readBack.keys), through: 1_000))
        #expect(cache.count == 10)
        cache.forget()
        #expect(cache.count == 0)
    }
}
