/// How a collector delivers to its IDB (CONTRACT 2, `mode` of its `GET /v1/status`).
public enum DeliveryMode: String, Codable, Sendable, Equatable, CaseIterable {
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

/// A collector's `GET /v1/status` document (CONTRACT 2): what the collector serves and what
/// `bcpipe status`, the coordinators and the tools read — one type for both sides. Absent values
/// are written as `null`, as the contract shows them.
public struct CollectorReport: Codable, Sendable, Equatable {
    public struct IDB: Codable, Sendable, Equatable {
        public var site: String
        public var database: String
        public var reachable: Bool

        public init(site: String, database: String, reachable: Bool) {
            self.site = site
            self.database = database
            self.reachable = reachable
        }
    }

    public struct Queue: Codable, Sendable, Equatable {
        public var events: UInt64
        public var bytes: Int
        /// RFC 3339 with milliseconds.
        public var oldestEventTs: String?
        public var segments: Int
        public var lostEvents: UInt64
        public var writable: Bool

        public init(
            events: UInt64, bytes: Int, oldestEventTs: String?, segments: Int, lostEvents: UInt64, writable: Bool
        ) {
            self.events = events
            self.bytes = bytes
            self.oldestEventTs = oldestEventTs
            self.segments = segments
            self.lostEvents = lostEvents
            self.writable = writable
        }

        enum CodingKeys: String, CodingKey {
            case events, bytes, segments, writable
            case oldestEventTs = "oldest_event_ts"
            case lostEvents = "lost_events"
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(events, forKey: .events)
            try c.encode(bytes, forKey: .bytes)
            try c.encode(oldestEventTs, forKey: .oldestEventTs)
            try c.encode(segments, forKey: .segments)
            try c.encode(lostEvents, forKey: .lostEvents)
            try c.encode(writable, forKey: .writable)
        }
    }

    public struct Shipped: Codable, Sendable, Equatable {
        public var seq: Int64?
        /// RFC 3339 with milliseconds.
        public var ts: String?

        public init(seq: Int64?, ts: String?) {
            self.seq = seq
            self.ts = ts
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(seq, forKey: .seq)
            try c.encode(ts, forKey: .ts)
        }
    }

    public var name: String
    public var source: String
    public var idb: IDB
    public var mode: DeliveryMode
    public var queue: Queue
    public var shipped: Shipped

    public init(name: String, source: String, idb: IDB, mode: DeliveryMode, queue: Queue, shipped: Shipped) {
        self.name = name
        self.source = source
        self.idb = idb
        self.mode = mode
        self.queue = queue
        self.shipped = shipped
    }
}
