import Control
import Topology

/// What the extractor knows about one source at a cycle.
public struct SourceAvailability: Sendable, Equatable {
    public var source: String
    /// The time through which the source's data is available in at least one reachable IDB (ms).
    public var availableThrough: Int64?
    /// When (extractor clock, ms) the availability last advanced.
    public var lastAdvancedAt: Int64?
    public var retired: Bool = false

    public init(source: String, availableThrough: Int64?, lastAdvancedAt: Int64?, retired: Bool = false) {
        self.source = source
        self.availableThrough = availableThrough
        self.lastAdvancedAt = lastAdvancedAt
        self.retired = retired
    }
}

/// The completeness watermark and Info Mart's `extract-data-stuck-threshold` (CONTRACT 6.3), as a pure function.
public enum CompletenessWatermark {
    /// After how long without progress a source is `delayed`: a quarter of the stuck threshold, at least 5 s.
    public static func delayAfter(threshold: Int64) -> Int64 { max(5_000, threshold / 4) }

    /// Each source's state and the mart's completeness `T`: the lowest availability over the
    /// sources that are neither stuck nor retired (nil while one of them has no data yet).
    public static func evaluate(_ sources: [SourceAvailability], now: Int64, thresholdMs: Int64)
        -> (states: [String: SourceState], completeThrough: Int64?)
    {
        var states: [String: SourceState] = [:]
        var t: Int64?
        var blocked = false
        for s in sources {
            let state: SourceState
            if s.retired {
                state = .retired
            } else {
                let idle = now - (s.lastAdvancedAt ?? now)
                state = idle > thresholdMs ? .stuck : idle > delayAfter(threshold: thresholdMs) ? .delayed : .current
            }
            states[s.source] = state
            guard state == .current || state == .delayed else { continue }
            guard let a = s.availableThrough else {
                blocked = true
                continue
            }
            t = min(t ?? a, a)
        }
        if blocked { return (states, nil) }
        if t == nil {
            // Every source is stuck or retired: what is there is as complete as it will get.
            t = sources.compactMap(\.availableThrough).max()
        }
        return (states, t)
    }
}

extension CompletenessWatermark {
    /// A source as the mart recorded it after the last cycle.
    public struct Stored: Sendable, Equatable {
        /// The time through which its data was available (ms).
        public var availableThrough: Int64?
        public var lastAdvancedAt: Int64?
        public var state: String
        /// With `late_data: discard`: events with `ts` in (after, before) are dropped.
        public var discardWindow: DiscardWindow?

        public init(
            availableThrough: Int64?, lastAdvancedAt: Int64?, state: String, discardWindow: DiscardWindow? = nil
        ) {
            self.availableThrough = availableThrough
            self.lastAdvancedAt = lastAdvancedAt
            self.state = state
            self.discardWindow = discardWindow
        }
    }

    /// Events of a source with `ts` strictly inside (after, before) are never extracted.
    public struct DiscardWindow: Sendable, Equatable {
        public var after: Int64
        public var before: Int64

        public init(after: Int64, before: Int64) {
            self.after = after
            self.before = before
        }

        public func discards(_ ts: Int64) -> Bool { ts > after && ts < before }
    }

    /// What happens to `control.data_gaps` this cycle.
    public enum GapAction: Sendable, Equatable {
        /// The source just became stuck: its gap opens at its last available time.
        case open(source: String, from: Int64, reason: String)
        /// A stuck source is back (`late_data: discard`): its gap closes at `to`, and what it
        /// sends inside `discard` (if any) stays lost.
        case closeDiscarding(source: String, to: Int64, discard: DiscardWindow?)
        /// A stuck source is back (`late_data: backfill`): its gap closes at `to`, backfilled.
        case closeBackfilled(source: String, to: Int64)
    }

    /// One cycle's decision for every source (CONTRACT 6.3).
    public struct Decision: Sendable, Equatable {
        public var availability: [SourceAvailability]
        public var states: [String: SourceState]
        /// The mart's `T`: what is complete through it is transformed this cycle.
        public var completeThrough: Int64?
        public var gapActions: [GapAction]
        /// Each source's discard window after this cycle.
        public var discardWindows: [String: DiscardWindow]

        /// What a source's events in the reports are complete through: the lower of its
        /// availability and `T` (CONTRACT 5, never ahead of the views).
        public func reportedThrough(_ source: String) -> Int64? {
            guard let a = availability.first(where: { $0.source == source })?.availableThrough,
                let t = completeThrough
            else { return nil }
            return min(a, t)
        }
    }

    /// Decides each source's availability (the best reachable IDB's, never going back), state,
    /// gap openings and closings, and `T`. Pure: `stored` is the mart's record, `fresh` what this
    /// cycle's reads found (a source missing from it was unreachable).
    public static func decide(
        sources: [String], stored: [String: Stored], fresh: [String: Int64], now: Int64, thresholdMs: Int64,
        lateData: Topology.LateDataPolicy
    ) -> Decision {
        var availability: [SourceAvailability] = []
        var actions: [GapAction] = []
        var windows: [String: DiscardWindow] = [:]
        for source in sources {
            let old = stored[source]
            windows[source] = old?.discardWindow
            var a = SourceAvailability(
                source: source, availableThrough: old?.availableThrough, lastAdvancedAt: old?.lastAdvancedAt ?? now,
                retired: old?.state == SourceState.retired.rawValue)
            if let f = fresh[source], f > (old?.availableThrough ?? .min) {
                a.availableThrough = f
                a.lastAdvancedAt = now
                if old?.state == SourceState.stuck.rawValue {
                    // Back at R = now: the gap closes (Info Mart keeps what is within the threshold).
                    let gapFrom = old?.availableThrough ?? f
                    switch lateData {
                    case .discard:
                        let cut = now - thresholdMs
                        let window = cut > gapFrom ? DiscardWindow(after: gapFrom, before: cut) : nil
                        if let window { windows[source] = window }
                        actions.append(.closeDiscarding(source: source, to: max(cut, gapFrom), discard: window))
                    case .backfill:
                        actions.append(.closeBackfilled(source: source, to: f))
                    }
                }
            }
            availability.append(a)
        }
        let (states, t) = evaluate(availability, now: now, thresholdMs: thresholdMs)
        for a in availability where states[a.source] == .stuck && stored[a.source]?.state != SourceState.stuck.rawValue
        {
            actions.append(
                .open(
                    source: a.source, from: a.availableThrough ?? now,
                    reason: "stuck: no data for more than \(thresholdMs / 1000) s (extract-data-stuck-threshold)"))
        }
        return Decision(
            availability: availability, states: states, completeThrough: t, gapActions: actions,
            discardWindows: windows)
    }
}
