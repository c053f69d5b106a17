import EventModel

/// What a cycle writes of its interactions' facts, set against what the mart holds of them (pure).
///
/// A row that did not change is not written; a row that changed is updated in place (its keys
/// stay, so PostgreSQL can keep it on its page without touching an index); only a new row is
/// inserted. The aggregates move by the difference of the offer rows that changed.
struct FactChanges: Sendable {
    typealias Key = InteractionCache.Key

    var insertInteractions: [InteractionFact] = []
    var updateInteractions: [InteractionFact] = []
    /// Interactions whose first event changed (an earlier one arrived late): their row belongs in
    /// another partition of `mart.fact_interaction`, so it is deleted and inserted again.
    var movedInteractions: [Key] = []
    var insertOffers: [(OfferFact, OfferRow)] = []
    var updateOffers: [(OfferFact, OfferRow)] = []
    /// Offers the mart holds that the recomputation no longer has (never seen: an offer is a
    /// `queued` event, and events are never taken away — kept for safety).
    var deleteOffers: [(source: String, seq: Int64)] = []
    /// The aggregates' movement: what the caller passed in, plus the offers that changed.
    var deltas: AggregateDeltas
    /// What the mart holds of each interaction once the changes are written.
    var facts: [Key: InteractionCache.Facts] = [:]

    init(deltas: AggregateDeltas = AggregateDeltas()) { self.deltas = deltas }

    /// Adds one interaction: `computed` is its recomputation (nil: no fact), `held` what the
    /// mart holds of it now (empty when the cycle deleted its rows), `row` an offer's row with
    /// its dimension keys.
    mutating func add(
        _ key: Key, computed: (InteractionFact, [OfferFact])?, held: InteractionCache.Facts,
        row: (OfferFact) -> OfferRow
    ) {
        // Without a fact (no event of it complete: never for a touched interaction) the mart's
        // rows stay as they are.
        guard let (fact, offers) = computed else {
            facts[key] = held
            return
        }
        var now = InteractionCache.Facts()
        now.interaction = fact
        if held.interaction == nil {
            insertInteractions.append(fact)
        } else if held.interaction?.firstAt != fact.firstAt {
            movedInteractions.append(key)
            insertInteractions.append(fact)
        } else if held.interaction != fact {
            updateInteractions.append(fact)
        }
        var before: [Int64: Int] = [:]
        for (i, o) in held.offers.enumerated() { before[o.seq] = i }
        for o in offers {
            let r = row(o)
            now.offers.append(o)
            now.rows.append(r)
            guard let i = before.removeValue(forKey: o.seq) else {
                insertOffers.append((o, r))
                deltas.add(r, sign: 1)
                continue
            }
            if held.offers[i] != o || held.rows[i] != r {
                updateOffers.append((o, r))
                deltas.add(held.rows[i], sign: -1)
                deltas.add(r, sign: 1)
            }
        }
        for i in before.values {
            deleteOffers.append((held.offers[i].source, held.offers[i].seq))
            deltas.add(held.rows[i], sign: -1)
        }
        facts[key] = now
    }
}
