import EventModel

/// The mart's events of the interactions still open, kept between cycles so that a cycle
/// recomputes an interaction it touches again without reading its earlier events back.
///
/// An entry, when present, holds exactly the `mart.event` rows of its interaction as of the last
/// committed cycle — it is made only from a full read-back, and moved only by what a committed
/// cycle inserted. Anything the cache does not hold is read from the mart, so forgetting is
/// always safe: the extractor forgets everything whenever the mart may have changed under it (a
/// new connection, a failed or superseded cycle, a standby or fenced mart). An interaction that
/// ended at or before the cycle's `T` leaves the cache; a late event for it is read back.
struct InteractionCache: Sendable {
    struct Key: Hashable, Sendable {
        var source: String
        var interaction: String
    }

    /// At most this many interactions (well above the open interactions of a large contact
    /// center); beyond it some are dropped, to be read back when next touched.
    let capacity: Int
    private var entries: [Key: Entry] = [:]

    struct Entry: Sendable {
        var events: [Event]
        var facts: Facts
    }

    /// The fact rows the mart holds of an interaction (none: `interaction` nil, no offers).
    struct Facts: Sendable, Equatable {
        var interaction: InteractionFact?
        var offers: [OfferFact] = []
        /// Each offer's row as the aggregates count it (same order as `offers`).
        var rows: [OfferRow] = []
    }

    init(capacity: Int = 200_000) { self.capacity = capacity }

    var count: Int { entries.count }

    /// Whether the cache holds `key` (its events and its fact rows).
    func holds(_ key: Key) -> Bool { entries[key] != nil }

    /// The mart's events of `key`, or nil when they must be read back.
    func events(_ key: Key) -> [Event]? { entries[key]?.events }

    /// The mart's fact rows of `key`, or nil when the cache does not hold it.
    func facts(_ key: Key) -> Facts? { entries[key]?.facts }

    /// What a cycle learnt, applied only once it committed.
    struct Update: Sendable {
        /// Interactions read back in full this cycle (possibly with no events before it).
        var readBack: [Key: [Event]] = [:]
        /// The events the cycle inserted into `mart.event`.
        var inserted: [Event] = []
        /// The interactions the cycle recomputed.
        var touched: Set<Key> = []
        /// What the mart holds of the touched interactions' facts after the cycle.
        var facts: [Key: Facts] = [:]
        /// The cycle's completeness `T` (ms): interactions ended by then leave the cache.
        var through: Int64 = .min
    }

    /// Applies a committed cycle: read-back entries join, every entry gains the cycle's events
    /// of its interaction, finished interactions leave.
    mutating func committed(_ update: Update) {
        for (key, events) in update.readBack { entries[key] = Entry(events: events, facts: Facts()) }
        for (key, facts) in update.facts where entries[key] != nil { entries[key]!.facts = facts }
        var grown = update.touched.union(update.readBack.keys)
        for e in update.inserted {
            guard let interaction = e.interaction else { continue }
            let key = Key(source: e.source, interaction: interaction)
            // In place (no copy of the array); a seq already there was in the mart before.
            guard entries[key]?.events.contains(where: { $0.seq == e.seq }) == false else { continue }
            entries[key]!.events.append(e)
            grown.insert(key)
        }
        for key in grown {
            if entries[key]?.events.contains(where: {
                $0.type == .interactionEnded && $0.ts.millisecondsSinceEpoch <= update.through
            })
                == true
            {
                entries[key] = nil
            }
        }
        if entries.count > capacity { evict(entries.count - capacity) }
    }

    /// Forgets everything: the mart may have changed under the extractor.
    mutating func forget() { entries.removeAll(keepingCapacity: false) }

    private mutating func evict(_ n: Int) {
        for key in entries.keys.prefix(n) { entries[key] = nil }
    }
}
