#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A line of an NDJSON body that was refused, with the reason CONTRACT 1 asks for.
public struct RejectedLine: Sendable, Hashable, CustomStringConvertible {
    /// 1-based line number in the body.
    public var line: Int
    /// The field at fault, when one is (`seq`, `attrs.segment`); nil for a malformed line.
    public var field: String?
    /// What is wrong and, where it helps, what is expected.
    public var reason: String

    public init(line: Int, field: String?, reason: String) {
        self.line = line
        self.field = field
        self.reason = reason
    }

    /// The operator-facing form: `line 3: seq: must be an integer ≥ 0`.
    public var description: String {
        if let field { return "line \(line): \(field): \(reason)" }
        return "line \(line): \(reason)"
    }

    /// The message without the line prefix (`seq: must be an integer ≥ 0`), for per-line JSON answers.
    public var error: String {
        if let field { return "\(field): \(reason)" }
        return reason
    }
}

/// The result of parsing an NDJSON body: the valid events in body order and every rejected line.
public struct ParsedBody: Sendable {
    public var events: [Event] = []
    public var rejected: [RejectedLine] = []
    /// Line numbers of `events`, parallel to it.
    public var lines: [Int] = []
    public init() {}
}

/// A fast parser and validator for the NDJSON events of CONTRACT 1.
///
/// It reads bytes directly (no intermediate JSON tree), validates UTF-8 as it goes, and
/// reports every bad line with the field at fault. Blank lines are skipped.
public struct EventParser: Sendable {
    /// Decides whether a well-formed source name belongs to the topology; nil accepts any.
    public var isKnownSource: (@Sendable (String) -> Bool)?

    public init(isKnownSource: (@Sendable (String) -> Bool)? = nil) {
        self.isKnownSource = isKnownSource
    }

    /// Parses a whole NDJSON body.
    public func parse(body: UnsafeRawBufferPointer) -> ParsedBody {
        var result = ParsedBody()
        guard let base = body.baseAddress else { return result }
        var start = 0
        var lineNumber = 0
        let count = body.count
        while start < count {
            lineNumber += 1
            var end = start
            // memchr is the fastest way to the next newline.
            if let p = memchrNewline(base + start, count - start) {
                end = p - base
            } else {
                end = count
            }
            var lineEnd = end
            if lineEnd > start && body[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
            let line = UnsafeRawBufferPointer(rebasing: body[start..<lineEnd])
            start = end + 1
            if isBlank(line) { continue }
            switch parseLine(line) {
            case .success(let event):
                result.events.append(event)
                result.lines.append(lineNumber)
            case .failure(let failure):
                result.rejected.append(RejectedLine(line: lineNumber, field: failure.field, reason: failure.reason))
            }
        }
        return result
    }

    /// Parses a whole NDJSON body held in an array.
    public func parse(body: [UInt8]) -> ParsedBody {
        body.withUnsafeBytes { parse(body: $0) }
    }

    /// Parses one line (without its newline) into an event, or says why it is refused.
    public func parseLine(_ line: UnsafeRawBufferPointer) -> Result<Event, LineFailure> {
        if line.count > EventLimits.maxLineBytes {
            return .failure(
                LineFailure(nil, "line is \(line.count) bytes, longer than the limit of \(EventLimits.maxLineBytes)"))
        }
        var scanner = JSONScanner(line)
        do {
            let fields = try scanner.readEventObject()
            return validate(fields)
        } catch {
            return .failure(error)
        }
    }

    private func isBlank(_ line: UnsafeRawBufferPointer) -> Bool {
        for b in line where b != UInt8(ascii: " ") && b != UInt8(ascii: "\t") { return false }
        return true
    }

    private func validate(_ f: RawFields) -> Result<Event, LineFailure> {
        guard let source = f.source else { return .failure(LineFailure("source", "is required")) }
        guard EventLimits.isValidSourceName(source) else {
            return .failure(
                LineFailure("source", "must be 1–128 characters of A–Z a–z 0–9 . _ / - (got \(quoted(source)))"))
        }
        if let isKnownSource, !isKnownSource(source) {
            return .failure(LineFailure("source", "unknown source \(quoted(source)): not a source of the topology"))
        }
        guard let seq = f.seq else { return .failure(LineFailure("seq", "is required")) }
        guard let ts = f.ts else { return .failure(LineFailure("ts", "is required")) }
        guard let typeName = f.type else { return .failure(LineFailure("type", "is required")) }
        guard let type = EventType(rawValue: typeName) else {
            return .failure(
                LineFailure("type", "unknown event type \(quoted(typeName)); expected one of \(Self.typeList)"))
        }
        if let name = Self.overlong(f) {
            return .failure(LineFailure(name, "must be at most \(EventLimits.maxStringLength) characters"))
        }
        var media: Media?
        if let m = f.media {
            guard let parsed = Media(rawValue: m) else {
                return .failure(LineFailure("media", "must be one of voice, chat, email, callback (got \(quoted(m)))"))
            }
            media = parsed
        }
        var direction: Direction?
        if let d = f.direction {
            guard let parsed = Direction(rawValue: d) else {
                return .failure(
                    LineFailure("direction", "must be one of inbound, outbound, internal (got \(quoted(d)))"))
            }
            direction = parsed
        }
        if type.isInteraction, f.interaction == nil || f.interaction!.isEmpty {
            return .failure(LineFailure("interaction", "is required for \(type.rawValue)"))
        }
        if type == .interactionCreated, media == nil {
            return .failure(LineFailure("media", "is required for interaction.created"))
        }
        if type == .interactionCreated, direction == nil { direction = .inbound }
        if type == .interactionQueued, f.queue == nil || f.queue!.isEmpty {
            return .failure(LineFailure("queue", "is required for interaction.queued"))
        }
        if type.requiresAgent, f.agent == nil || f.agent!.isEmpty {
            return .failure(LineFailure("agent", "is required for \(type.rawValue)"))
        }
        if type == .heartbeat {
            return .success(Event(source: source, seq: seq, ts: ts, type: type))
        }
        return .success(
            Event(
                source: source, seq: seq, ts: ts, type: type, interaction: f.interaction, media: media,
                direction: direction, queue: f.queue, agent: f.agent, reason: f.reason, attrs: f.attrs))
    }

    /// The first string field longer than the limit (checked field by field: no allocation on the hot path).
    private static func overlong(_ f: RawFields) -> String? {
        let limit = EventLimits.maxStringLength
        // A string of at most `limit` bytes cannot have more than `limit` characters.
        if let v = f.interaction, v.utf8.count > limit, scalarCount(v) > limit { return "interaction" }
        if let v = f.queue, v.utf8.count > limit, scalarCount(v) > limit { return "queue" }
        if let v = f.agent, v.utf8.count > limit, scalarCount(v) > limit { return "agent" }
        if let v = f.reason, v.utf8.count > limit, scalarCount(v) > limit { return "reason" }
        return nil
    }

    static let typeList = EventType.allCases.map(\.rawValue).joined(separator: ", ")
}

/// Why one line was refused: the field at fault (if any) and the reason.
public struct LineFailure: Error, Sendable, Hashable {
    public var field: String?
    public var reason: String
    init(_ field: String?, _ reason: String) {
        self.field = field
        self.reason = reason
    }
}

func quoted(_ s: String) -> String {
    let shown = s.unicodeScalars.count > 40 ? String(String.UnicodeScalarView(s.unicodeScalars.prefix(40))) + "…" : s
    var out = "\""
    for scalar in shown.unicodeScalars {
        if scalar.value < 0x20 || scalar == "\"" || scalar == "\\" {
            out += scalar.escaped(asASCII: true)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

@inline(__always)
func scalarCount(_ s: String) -> Int {
    var n = 0
    for b in s.utf8 where b & 0xC0 != 0x80 { n += 1 }
    return n
}

@inline(__always)
func memchrNewline(_ p: UnsafeRawPointer, _ n: Int) -> UnsafeRawPointer? {
    UnsafeRawPointer(memchr(p, 10, n))
}

/// The known fields of one event object before validation.
struct RawFields {
    var source: String?
    var seq: Int64?
    var ts: Timestamp?
    var type: String?
    var interaction: String?
    var media: String?
    var direction: String?
    var queue: String?
    var agent: String?
    var reason: String?
    var attrs = Attributes()
    var seen: UInt16 = 0
}
