/// Which events of a source a collector has accepted, by seq.
///
/// A source's seq is strictly increasing (CONTRACT 1), so an event whose seq is not above the
/// highest accepted is a duplicate. Requests in flight reserve their highest seq until their
/// append is durable (kept) or refused (released), so a refused request takes nothing with it.
public struct SeqWatermark: Sendable, Equatable {
    /// The highest seq known durable (in the queue or the IDB).
    public private(set) var durable: Int64 = -1
    private var inFlight: [UInt64: Int64] = [:]
    private var nextTicket: UInt64 = 0

    public init(durable: Int64 = -1) { self.durable = durable }

    /// The highest seq accepted or being accepted.
    public var highest: Int64 { max(durable, inFlight.values.max() ?? -1) }

    /// Splits `seqs` (in body order) into new ones (by position) and duplicates, and reserves the new ones.
    public mutating func reserve(_ seqs: [Int64]) -> (ticket: UInt64, isNew: [Bool]) {
        var top = highest
        var isNew: [Bool] = []
        isNew.reserveCapacity(seqs.count)
        for s in seqs {
            if s > top {
                isNew.append(true)
                top = s
            } else {
                isNew.append(false)
            }
        }
        nextTicket += 1
        if top > highest { inFlight[nextTicket] = top }
        return (nextTicket, isNew)
    }

    /// The reservation's events are durable.
    public mutating func commit(_ ticket: UInt64) {
        if let top = inFlight.removeValue(forKey: ticket) { durable = max(durable, top) }
    }

    /// The reservation's append was refused: its seqs may be sent again.
    public mutating func release(_ ticket: UInt64) {
        inFlight.removeValue(forKey: ticket)
    }

    /// Raises the durable mark (from the IDB's checkpoint or the queue's last frame).
    public mutating func raise(to seq: Int64) {
        durable = max(durable, seq)
    }
}

/// How a collector is delivering to its IDB (CONTRACT 2 `mode`).
public enum DeliveryMode: String, Sendable, Equatable {
    /// The IDB is reachable and the queue is (nearly) empty.
    case direct
    /// The IDB is unreachable: events wait in the disk queue.
    case queueing
    /// The IDB is reachable again and the backlog is shipping.
    case draining

    /// The mode for a link state and a backlog. `threshold` is the backlog (events) a single ship
    /// batch clears: below it the queue is "near empty".
    public static func of(linkUp: Bool, backlog: UInt64, threshold: UInt64) -> DeliveryMode {
        guard linkUp else { return .queueing }
        return backlog > threshold ? .draining : .direct
    }
}
