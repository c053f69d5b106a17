/// The seqs of a source a collector has accepted: a sorted list of disjoint ranges. A feed's
/// seqs are mostly consecutive, so a handful of ranges describe millions of events.
///
/// Bounded without lying: past ``maxRanges`` the oldest range is forgotten, never merged with
/// its neighbour. A forgotten seq no longer counts as accepted, so a repeat of it is appended
/// again (the IDB keeps one copy, by `(source, seq)`), and a seq in a gap is never answered as
/// a duplicate of something that was not stored.
public struct SeqRanges: Sendable, Equatable {
    public private(set) var ranges: [ClosedRange<Int64>] = []
    /// Past this many ranges the oldest is forgotten.
    public var maxRanges = 4096
    /// The highest seq of a range forgotten to keep the bound, or -1.
    public private(set) var forgottenThrough: Int64 = -1

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

    /// Whether any seq of `r` is in a range.
    public func overlaps(_ r: ClosedRange<Int64>) -> Bool {
        let i = lowerIndex(r.lowerBound)
        return i < ranges.count && ranges[i].lowerBound <= r.upperBound
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
            forgottenThrough = Swift.max(forgottenThrough, ranges.removeFirst().upperBound)
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

/// Which events of a source a collector has accepted, by seq (CONTRACT 2 `duplicates`): a pure
/// state machine, inputs in and decisions out; ``CollectorState`` holds it under a lock.
///
/// A seq is answered as a duplicate only when this process saw it made durable. A request that
/// repeats seqs another request has in flight waits for that append's outcome
/// (``Reservation/wait(for:)``): once it is durable the repeat's seqs are duplicates; if it was
/// refused they are free again and the repeat appends them itself (or is refused too). So a `200`
/// never covers an event stored nowhere, whatever the arrival order.
///
/// What this process cannot know counts as new and is appended again: seqs accepted before a
/// restart, and ranges forgotten past ``SeqRanges/maxRanges``. The shipper's
/// `ON CONFLICT (source, seq) DO NOTHING` keeps one copy in the IDB.
public struct SeqWatermark: Sendable, Equatable {
    /// The decision for one request's seqs.
    public enum Reservation: Sendable, Equatable {
        /// The seqs marked new (in body order) are reserved under `ticket` until
        /// ``SeqWatermark/commit(_:)`` or ``SeqWatermark/release(_:)``.
        case reserved(ticket: UInt64, isNew: [Bool])
        /// Some seq is reserved by another request's append still in flight: ask again once
        /// `ticket` is settled (committed or released).
        case wait(for: UInt64)
    }

    private var accepted = SeqRanges()
    private var inFlight: [UInt64: [ClosedRange<Int64>]] = [:]
    private var nextTicket: UInt64 = 0
    private var restoredThrough: Int64 = -1

    public init(maxRanges: Int = 4096) {
        accepted.maxRanges = maxRanges
    }

    /// The highest seq known durable (accepted here, or restored from the queue or the IDB), or -1.
    public var durable: Int64 { Swift.max(accepted.ranges.last?.upperBound ?? -1, restoredThrough) }

    /// Whether `ticket`'s append is still in flight.
    public func isPending(_ ticket: UInt64) -> Bool { inFlight[ticket] != nil }

    /// The in-flight request holding any of `seqs`, if one does.
    private func holder(of seqs: [Int64]) -> UInt64? {
        guard !inFlight.isEmpty, let lo = seqs.min(), let hi = seqs.max() else { return nil }
        for (ticket, ranges) in inFlight where ranges.contains(where: { $0.overlaps(lo...hi) }) {
            for s in seqs where ranges.contains(where: { $0.contains(s) }) { return ticket }
        }
        return nil
    }

    /// Marks which of `seqs` (in body order) are new and reserves them, or says which in-flight
    /// append to wait for first.
    public mutating func reserve(_ seqs: [Int64]) -> Reservation {
        if let ticket = holder(of: seqs) { return .wait(for: ticket) }
        var seen = Set<Int64>(minimumCapacity: seqs.count)
        var isNew: [Bool] = []
        isNew.reserveCapacity(seqs.count)
        var fresh: [Int64] = []
        for s in seqs {
            let new = !accepted.contains(s) && seen.insert(s).inserted
            isNew.append(new)
            if new { fresh.append(s) }
        }
        nextTicket += 1
        if !fresh.isEmpty { inFlight[nextTicket] = SeqRanges.runs(fresh) }
        return .reserved(ticket: nextTicket, isNew: isNew)
    }

    /// The reservation's events are durable.
    public mutating func commit(_ ticket: UInt64) {
        for r in inFlight.removeValue(forKey: ticket) ?? [] { accepted.insert(r) }
    }

    /// The reservation's append was refused: its seqs may be sent again.
    public mutating func release(_ ticket: UInt64) {
        inFlight.removeValue(forKey: ticket)
    }

    /// Seqs up to `seq` were made durable before (the queue's last frame, the IDB's checkpoint).
    /// Only ``durable`` moves: which of them were stored is not known here, so none of them is
    /// answered as a duplicate.
    public mutating func restored(through seq: Int64) {
        restoredThrough = Swift.max(restoredThrough, seq)
    }
}
