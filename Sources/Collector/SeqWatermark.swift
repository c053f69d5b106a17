/// The seqs of a source a collector has accepted: a sorted list of disjoint ranges. A feed's
/// seqs are mostly consecutive, so a handful of ranges describe millions of events.
public struct SeqRanges: Sendable, Equatable {
    public private(set) var ranges: [ClosedRange<Int64>] = []
    /// Past this many ranges the oldest are merged (their gaps then count as accepted).
    public var maxRanges = 4096

    public init() {}

    /// The index of the first range whose upper bound is ≥ `seq`.
    private func lowerIndex(_ seq: Int64) -> Int {
        var lo = 0
        var hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func contains(_ seq: Int64) -> Bool {
        let i = lowerIndex(seq)
        return i < ranges.count && ranges[i].contains(seq)
    }

    public mutating func insert(_ r: ClosedRange<Int64>) {
        var lo = r.lowerBound
        var hi = r.upperBound
        // Every range overlapping or adjacent to r merges into it.
        var i = lowerIndex(lo == .min ? lo : lo - 1)
        let start = i
        while i < ranges.count && ranges[i].lowerBound <= (hi == .max ? hi : hi + 1) {
            lo = Swift.min(lo, ranges[i].lowerBound)
            hi = Swift.max(hi, ranges[i].upperBound)
            i += 1
        }
        ranges.replaceSubrange(start..<i, with: [lo...hi])
        if ranges.count > maxRanges {
            ranges.replaceSubrange(0..<2, with: [ranges[0].lowerBound...ranges[1].upperBound])
        }
    }

    /// Compresses seqs into ranges (consecutive runs).
    public static func runs(_ seqs: [Int64]) -> [ClosedRange<Int64>] {
        var out: [ClosedRange<Int64>] = []
        for s in seqs.sorted() {
            if let last = out.last, s <= last.upperBound + 1 {
                if s > last.upperBound { out[out.count - 1] = last.lowerBound...s }
            } else {
                out.append(s...s)
            }
        }
        return out
    }
}

/// Which events of a source a collector has accepted, by seq (CONTRACT 2 `duplicates`).
///
/// Exact for any arrival order: a request's seqs are reserved while its append is in flight
/// (a concurrent request with the same seqs sees them as duplicates), kept when the append is
/// durable, released when it is refused, so a refused request takes nothing with it. After a
/// restart, everything up to the highest seq the collector had made durable counts as accepted.
public struct SeqWatermark: Sendable, Equatable {
    private var accepted = SeqRanges()
    private var inFlight: [UInt64: [ClosedRange<Int64>]] = [:]
    private var nextTicket: UInt64 = 0

    public init() {}

    /// The highest seq accepted (durable), or -1.
    public var durable: Int64 { accepted.ranges.last?.upperBound ?? -1 }

    private func isTaken(_ seq: Int64) -> Bool {
        accepted.contains(seq) || inFlight.values.contains { $0.contains { $0.contains(seq) } }
    }

    /// Marks which of `seqs` (in body order) are new, and reserves them.
    public mutating func reserve(_ seqs: [Int64]) -> (ticket: UInt64, isNew: [Bool]) {
        var seen = Set<Int64>()
        var isNew: [Bool] = []
        isNew.reserveCapacity(seqs.count)
        var fresh: [Int64] = []
        for s in seqs {
            let new = !isTaken(s) && seen.insert(s).inserted
            isNew.append(new)
            if new { fresh.append(s) }
        }
        nextTicket += 1
        if !fresh.isEmpty { inFlight[nextTicket] = SeqRanges.runs(fresh) }
        return (nextTicket, isNew)
    }

    /// The reservation's events are durable.
    public mutating func commit(_ ticket: UInt64) {
        for r in inFlight.removeValue(forKey: ticket) ?? [] { accepted.insert(r) }
    }

    /// The reservation's append was refused: its seqs may be sent again.
    public mutating func release(_ ticket: UInt64) {
        inFlight.removeValue(forKey: ticket)
    }

    /// Everything up to `seq` is known accepted (from the IDB's checkpoint or the queue's last frame).
    public mutating func raise(to seq: Int64) {
        guard seq >= 0 else { return }
        accepted.insert(0...seq)
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
