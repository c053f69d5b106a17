extension Event {
    /// Appends the canonical NDJSON form of the event (no newline): fields in a fixed order,
    /// `ts` in UTC with milliseconds, absent fields omitted, attrs sorted by key.
    /// ``EventParser`` reads it back to an equal event.
    public func appendJSON(to out: inout [UInt8]) {
        out.append(contentsOf: #"{"source":"#.utf8)
        appendString(source, to: &out)
        out.append(contentsOf: #","seq":"#.utf8)
        out.append(contentsOf: String(seq).utf8)
        out.append(contentsOf: #","ts":""#.utf8)
        ts.appendRFC3339(to: &out)
        out.append(contentsOf: #"","type":""#.utf8)
        out.append(contentsOf: type.rawValue.utf8)
        out.append(UInt8(ascii: "\""))
        func field(_ name: String, _ value: String?) {
            guard let value else { return }
            out.append(contentsOf: ",\"\(name)\":".utf8)
            appendString(value, to: &out)
        }
        field("interaction", interaction)
        field("media", media?.rawValue)
        field("direction", direction?.rawValue)
        field("queue", queue)
        field("agent", agent)
        field("reason", reason)
        if !attrs.isEmpty {
            out.append(contentsOf: #","attrs":"#.utf8)
            attrs.appendJSON(to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    /// The canonical NDJSON line of the event, without the newline.
    public var json: String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        appendJSON(to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

/// Appends `s` as a JSON string literal.
func appendString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
        case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
        case 0x0A: out.append(contentsOf: [92, 110])
        case 0x0D: out.append(contentsOf: [92, 114])
        case 0x09: out.append(contentsOf: [92, 116])
        case 0..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            out.append(contentsOf: [92, 117, 48, 48, hex[Int(b >> 4)], hex[Int(b & 15)]])
        default: out.append(b)
        }
    }
    out.append(UInt8(ascii: "\""))
}

extension Attributes {
    /// Appends the attributes as a JSON object, keys in order (what `jsonb` columns receive).
    public func appendJSON(to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        for (i, pair) in enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendString(pair.key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendString(pair.value, to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    /// The attributes as a JSON object.
    public var json: String {
        var out: [UInt8] = []
        appendJSON(to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
