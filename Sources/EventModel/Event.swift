/// One interaction event of CONTRACT 1. Identity is `(source, seq)`.
public struct Event: Sendable, Hashable {
    public var source: String
    public var seq: Int64
    public var ts: Timestamp
    public var type: EventType
    public var interaction: String?
    public var media: Media?
    public var direction: Direction?
    public var queue: String?
    public var agent: String?
    public var reason: String?
    /// Attached user data; empty when the event had none.
    public var attrs: Attributes

    public init(
        source: String, seq: Int64, ts: Timestamp, type: EventType, interaction: String? = nil,
        media: Media? = nil, direction: Direction? = nil, queue: String? = nil, agent: String? = nil,
        reason: String? = nil, attrs: Attributes = Attributes()
    ) {
        self.source = source
        self.seq = seq
        self.ts = ts
        self.type = type
        self.interaction = interaction
        self.media = media
        self.direction = direction
        self.queue = queue
        self.agent = agent
        self.reason = reason
        self.attrs = attrs
    }
}

/// The event types of CONTRACT 1.
public enum EventType: String, Sendable, CaseIterable, Hashable {
    case interactionCreated = "interaction.created"
    case interactionQueued = "interaction.queued"
    case interactionAnswered = "interaction.answered"
    case interactionHeld = "interaction.held"
    case interactionRetrieved = "interaction.retrieved"
    case interactionTransferred = "interaction.transferred"
    case interactionAbandoned = "interaction.abandoned"
    case interactionEnded = "interaction.ended"
    case agentLogin = "agent.login"
    case agentReady = "agent.ready"
    case agentNotReady = "agent.not_ready"
    case agentLogout = "agent.logout"
    case heartbeat = "heartbeat"

    /// True for the `interaction.*` types, which require `interaction`.
    public var isInteraction: Bool {
        switch self {
        case .interactionCreated, .interactionQueued, .interactionAnswered, .interactionHeld,
            .interactionRetrieved, .interactionTransferred, .interactionAbandoned, .interactionEnded:
            return true
        default: return false
        }
    }

    /// True for the types that require `agent`.
    public var requiresAgent: Bool {
        switch self {
        case .interactionAnswered, .interactionHeld, .interactionRetrieved, .interactionTransferred,
            .agentLogin, .agentReady, .agentNotReady, .agentLogout:
            return true
        default: return false
        }
    }
}

/// The media of an interaction.
public enum Media: String, Sendable, CaseIterable, Hashable {
    case voice, chat, email, callback
}

/// The direction of an interaction.
public enum Direction: String, Sendable, CaseIterable, Hashable {
    case inbound, outbound, `internal`
}

/// The limits of CONTRACT 1.
public enum EventLimits {
    public static let maxLineBytes = 64 * 1024
    public static let maxSourceLength = 128
    public static let maxStringLength = 128
    public static let maxAttrs = 64
    public static let maxAttrValueLength = 1024
    public static let maxAttrKeyLength = 1024
    /// How deep an ignored (unknown) field's value may nest.
    public static let maxNesting = 64

    /// Whether `name` is a well-formed source name: 1–128 characters of `[A-Za-z0-9._/-]`.
    public static func isValidSourceName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= maxSourceLength else { return false }
        return utf8.allSatisfy(isSourceByte)
    }

    @inline(__always)
    static func isSourceByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "/"),
            UInt8(ascii: "-"):
            return true
        default: return false
        }
    }
}
