/// A source's state for completeness (CONTRACT 5 `report.completeness.state`).
public enum SourceState: String, Sendable, Equatable {
    case current, delayed, stuck, retired
}

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
