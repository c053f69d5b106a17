/// A byte-level reader for one event object. It decodes the known fields into ``RawFields``
/// and skips unknown ones (bounded nesting), validating JSON syntax and UTF-8 throughout.
struct JSONScanner {
    let b: UnsafeRawBufferPointer
    var i = 0

    init(_ bytes: UnsafeRawBufferPointer) { b = bytes }

    private enum Field: UInt16 {
        case source = 1, seq = 2, ts = 4, type = 8, interaction = 16, media = 32, direction = 64, queue = 128,
            agent = 256, reason = 512, attrs = 1024
    }

    // MARK: structure

    mutating func readEventObject() throws(LineFailure) -> RawFields {
        var fields = RawFields()
        skipSpace()
        guard i < b.count, b[i] == UInt8(ascii: "{") else {
            throw LineFailure(nil, i < b.count ? "not a JSON object: a line must be one {…} event" : "empty line")
        }
        i += 1
        skipSpace()
        if peek() == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                guard peek() == UInt8(ascii: "\"") else { throw syntax("expected a field name in double quotes") }
                let key = try readKeyBytes()
                skipSpace()
                guard peek() == UInt8(ascii: ":") else { throw syntax("expected ':' after a field name") }
                i += 1
                skipSpace()
                try readValue(forKey: key, into: &fields)
                skipSpace()
                guard let c = peek() else { throw syntax("unterminated object") }
                i += 1
                if c == UInt8(ascii: "}") { break }
                guard c == UInt8(ascii: ",") else { throw syntax("expected ',' or '}'", at: i - 1) }
            }
        }
        skipSpace()
        if i != b.count { throw syntax("unexpected characters after the event object") }
        return fields
    }

    private mutating func readValue(forKey key: KeyBytes, into f: inout RawFields) throws(LineFailure) {
        guard let field = field(key) else {
            try skipValue(depth: 0)
            return
        }
        let name = Self.name(field)
        if f.seen & field.rawValue != 0 { throw LineFailure(name, "appears more than once") }
        f.seen |= field.rawValue
        if peek() == UInt8(ascii: "n") {  // null: the same as an absent optional field
            try expectLiteral("null")
            return
        }
        switch field {
        case .seq:
            f.seq = try readSeq()
        case .ts:
            guard peek() == UInt8(ascii: "\"") else { throw LineFailure("ts", Self.tsReason) }
            let (start, end, simple) = try scanString(field: "ts")
            guard simple, let t = Timestamp.parse(UnsafeRawBufferPointer(rebasing: b[start..<end])) else {
                throw LineFailure("ts", Self.tsReason)
            }
            f.ts = t
        case .attrs:
            f.attrs = try readAttrs()
        default:
            guard peek() == UInt8(ascii: "\"") else { throw LineFailure(name, "must be a string") }
            let s = try readString(field: name)
            switch field {
            case .source: f.source = s
            case .type: f.type = s
            case .interaction: f.interaction = s
            case .media: f.media = s
            case .direction: f.direction = s
            case .queue: f.queue = s
            case .agent: f.agent = s
            case .reason: f.reason = s
            default: break
            }
        }
    }

    static let tsReason = "must be an RFC 3339 time with offset, e.g. 2026-11-21T10:00:00.123Z"

    private mutating func readSeq() throws(LineFailure) -> Int64 {
        let start = i
        guard let c = peek() else { throw syntax("missing value") }
        if c == UInt8(ascii: "-") || c == UInt8(ascii: "\"") || c &- 48 >= 10 {
            if c == UInt8(ascii: "-") || c &- 48 < 10 || c == UInt8(ascii: "\"") {
                // A negative number or a string: a wrong value, not broken JSON.
                try skipValue(depth: 0)
            }
            throw LineFailure("seq", "must be an integer ≥ 0")
        }
        var v: UInt64 = 0
        var overflow = false
        while let d = peek(), d &- 48 < 10 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(d - 48))
            overflow = overflow || o1 || o2
            v = a
            i += 1
        }
        if b[start] == UInt8(ascii: "0") && i - start > 1 {
            throw syntax("a number must not have leading zeros", at: start)
        }
        if let d = peek(), d == UInt8(ascii: ".") || d == UInt8(ascii: "e") || d == UInt8(ascii: "E") {
            i = start
            try skipValue(depth: 0)
            throw LineFailure("seq", "must be an integer ≥ 0 (got a fraction or exponent)")
        }
        if overflow || v >= 1 << 63 { throw LineFailure("seq", "must be less than 2^63") }
        return Int64(v)
    }

    /// Reads a whole buffer that holds one `attrs` object (as a `jsonb` column or a queue record
    /// carries it), with the same checks as inside an event.
    mutating func readAttributesObject() throws(LineFailure) -> Attributes {
        skipSpace()
        let attrs = try readAttrs()
        skipSpace()
        if i != b.count { throw syntax("unexpected characters after the attrs object") }
        return attrs
    }

    private mutating func readAttrs() throws(LineFailure) -> Attributes {
        guard peek() == UInt8(ascii: "{") else { throw LineFailure("attrs", "must be an object of string values") }
        i += 1
        var attrs = Attributes()
        skipSpace()
        if peek() == UInt8(ascii: "}") {
            i += 1
            return attrs
        }
        while true {
            skipSpace()
            guard peek() == UInt8(ascii: "\"") else { throw syntax("expected a key in double quotes in attrs") }
            let key = try readString(field: "attrs")
            if scalarCount(key) > EventLimits.maxAttrKeyLength {
                throw LineFailure("attrs", "key longer than \(EventLimits.maxAttrKeyLength) characters")
            }
            skipSpace()
            guard peek() == UInt8(ascii: ":") else { throw syntax("expected ':' after a key in attrs") }
            i += 1
            skipSpace()
            // The field name ("attrs.KEY") is only built on the error paths.
            guard peek() == UInt8(ascii: "\"") else { throw LineFailure("attrs.\(key)", "must be a string") }
            let value: String
            do {
                value = try readString(field: "attrs")
            } catch {
                throw LineFailure("attrs.\(key)", error.reason)
            }
            if value.utf8.count > EventLimits.maxAttrValueLength && scalarCount(value) > EventLimits.maxAttrValueLength
            {
                throw LineFailure("attrs.\(key)", "must be at most \(EventLimits.maxAttrValueLength) characters")
            }
            if !attrs.insertNew(key, value) { throw LineFailure("attrs.\(key)", "appears more than once") }
            if attrs.count > EventLimits.maxAttrs {
                throw LineFailure("attrs", "must have at most \(EventLimits.maxAttrs) keys")
            }
            skipSpace()
            guard let c = peek() else { throw syntax("unterminated attrs object") }
            i += 1
            if c == UInt8(ascii: "}") { return attrs }
            guard c == UInt8(ascii: ",") else { throw syntax("expected ',' or '}' in attrs", at: i - 1) }
        }
    }

    // MARK: unknown values

    private mutating func skipValue(depth: Int) throws(LineFailure) {
        if depth > EventLimits.maxNesting {
            throw syntax("nesting deeper than \(EventLimits.maxNesting) levels")
        }
        skipSpace()
        guard let c = peek() else { throw syntax("missing value") }
        switch c {
        case UInt8(ascii: "\""):
            _ = try scanString(field: nil)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let close = c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            i += 1
            skipSpace()
            if peek() == close {
                i += 1
                return
            }
            while true {
                skipSpace()
                if c == UInt8(ascii: "{") {
                    guard peek() == UInt8(ascii: "\"") else { throw syntax("expected a field name in double quotes") }
                    _ = try scanString(field: nil)
                    skipSpace()
                    guard peek() == UInt8(ascii: ":") else { throw syntax("expected ':' after a field name") }
                    i += 1
                }
                try skipValue(depth: depth + 1)
                skipSpace()
                guard let d = peek() else {
                    throw syntax("unterminated \(c == UInt8(ascii: "{") ? "object" : "array")")
                }
                i += 1
                if d == close { return }
                guard d == UInt8(ascii: ",") else {
                    throw syntax("expected ',' or '\(Character(UnicodeScalar(close)))'", at: i - 1)
                }
            }
        case UInt8(ascii: "t"): try expectLiteral("true")
        case UInt8(ascii: "f"): try expectLiteral("false")
        case UInt8(ascii: "n"): try expectLiteral("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try skipNumber()
        default:
            throw syntax("unexpected character")
        }
    }

    private mutating func skipNumber() throws(LineFailure) {
        let start = i
        if peek() == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        while let d = peek(), d &- 48 < 10 { i += 1 }
        guard i > intStart else { throw syntax("malformed number", at: start) }
        if b[intStart] == UInt8(ascii: "0") && i - intStart > 1 {
            throw syntax("a number must not have leading zeros", at: start)
        }
        if peek() == UInt8(ascii: ".") {
            i += 1
            let s = i
            while let d = peek(), d &- 48 < 10 { i += 1 }
            guard i > s else { throw syntax("malformed number", at: start) }
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            i += 1
            if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { i += 1 }
            let s = i
            while let d = peek(), d &- 48 < 10 { i += 1 }
            guard i > s else { throw syntax("malformed number", at: start) }
        }
    }

    private mutating func expectLiteral(_ word: StaticString) throws(LineFailure) {
        let n = word.utf8CodeUnitCount
        guard b.count - i >= n else { throw syntax("unexpected end of line") }
        let w = word.utf8Start
        for k in 0..<n where b[i + k] != w[k] { throw syntax("unexpected character", at: i + k) }
        i += n
    }

    // MARK: strings

    typealias KeyBytes = (start: Int, end: Int, simple: Bool)

    private mutating func readKeyBytes() throws(LineFailure) -> KeyBytes {
        try scanString(field: nil)
    }

    /// Scans a string starting at the opening quote; returns the content range and whether it
    /// has no escapes. Validates UTF-8, control characters and escape syntax.
    private mutating func scanString(field: String?) throws(LineFailure) -> KeyBytes {
        i += 1  // opening quote
        let start = i
        var simple = true
        let n = b.count
        while i < n {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                let end = i
                i += 1
                return (start, end, simple)
            } else if c == UInt8(ascii: "\\") {
                simple = false
                i += 1
                guard i < n else { break }
                switch b[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    guard n - i >= 5, hex4(i + 1) != nil else { throw failure(field, "invalid \\u escape") }
                    i += 5
                default:
                    throw failure(field, "invalid escape sequence")
                }
            } else if c < 0x20 {
                throw failure(field, "control character U+\(hex2(c)) must be escaped")
            } else if c < 0x80 {
                i += 1
            } else {
                guard let len = utf8SequenceLength(at: i) else { throw failure(field, "invalid UTF-8") }
                i += len
            }
        }
        throw failure(field, "unterminated string")
    }

    private mutating func readString(field: String) throws(LineFailure) -> String {
        let (start, end, simple) = try scanString(field: field)
        if simple {
            return String(decoding: UnsafeRawBufferPointer(rebasing: b[start..<end]), as: UTF8.self)
        }
        return try unescape(start, end, field: field)
    }

    private func unescape(_ start: Int, _ end: Int, field: String) throws(LineFailure) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(end - start)
        var k = start
        while k < end {
            let c = b[k]
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                k += 1
                continue
            }
            let e = b[k + 1]
            k += 2
            switch e {
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "u"):
                var scalar = UInt32(hex4(k)!)
                k += 4
                if (0xD800...0xDBFF).contains(scalar) {
                    guard k + 6 <= end, b[k] == UInt8(ascii: "\\"), b[k + 1] == UInt8(ascii: "u"),
                        let low = hex4(k + 2), (0xDC00...0xDFFF).contains(low)
                    else { throw LineFailure(field, "unpaired UTF-16 surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                    k += 6
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw LineFailure(field, "unpaired UTF-16 surrogate in \\u escape")
                }
                if scalar == 0 { throw LineFailure(field, "must not contain the NUL character (U+0000)") }
                UTF8.encode(Unicode.Scalar(scalar)!) { out.append($0) }
            default: out.append(e)  // \" \\ \/
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private func hex4(_ at: Int) -> UInt16? {
        var v: UInt16 = 0
        for k in at..<(at + 4) {
            let c = b[k]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - 48
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - 87
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - 55
            default: return nil
            }
            v = v << 4 | UInt16(d)
        }
        return v
    }

    /// The length of the valid UTF-8 sequence at `at` (lead byte ≥ 0x80), or nil if it is invalid
    /// (overlong, surrogate, beyond U+10FFFF, truncated).
    private func utf8SequenceLength(at k: Int) -> Int? {
        let n = b.count
        let c0 = b[k]
        func cont(_ j: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
            j < n && b[j] >= lo && b[j] <= hi
        }
        switch c0 {
        case 0xC2...0xDF: return cont(k + 1) ? 2 : nil
        case 0xE0: return cont(k + 1, 0xA0) && cont(k + 2) ? 3 : nil
        case 0xE1...0xEC, 0xEE...0xEF: return cont(k + 1) && cont(k + 2) ? 3 : nil
        case 0xED: return cont(k + 1, 0x80, 0x9F) && cont(k + 2) ? 3 : nil
        case 0xF0: return cont(k + 1, 0x90) && cont(k + 2) && cont(k + 3) ? 4 : nil
        case 0xF1...0xF3: return cont(k + 1) && cont(k + 2) && cont(k + 3) ? 4 : nil
        case 0xF4: return cont(k + 1, 0x80, 0x8F) && cont(k + 2) && cont(k + 3) ? 4 : nil
        default: return nil
        }
    }

    // MARK: helpers

    @inline(__always) private func peek() -> UInt8? { i < b.count ? b[i] : nil }

    @inline(__always) private mutating func skipSpace() {
        while i < b.count {
            let c = b[i]
            guard c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A else { return }
            i += 1
        }
    }

    private func syntax(_ what: String, at position: Int? = nil) -> LineFailure {
        LineFailure(nil, "invalid JSON at byte \((position ?? i) + 1): \(what)")
    }

    private func failure(_ field: String?, _ what: String) -> LineFailure {
        field.map { LineFailure($0, what) } ?? syntax(what)
    }

    private func hex2(_ c: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return "00" + String(digits[Int(c >> 4)]) + String(digits[Int(c & 15)])
    }

    /// The known field a key names, or nil for an unknown (ignored) key.
    private func field(_ key: KeyBytes) -> Field? {
        let keyBytes: UnsafeRawBufferPointer
        var decoded: [UInt8] = []
        if key.simple {
            keyBytes = UnsafeRawBufferPointer(rebasing: b[key.start..<key.end])
        } else {
            // A key spelled with escapes ("se\u0071") still names the field.
            guard let s = try? unescape(key.start, key.end, field: "") else { return nil }
            decoded = Array(s.utf8)
            return decoded.withUnsafeBytes { raw in Self.match(raw) }
        }
        return Self.match(keyBytes)
    }

    private static func match(_ key: UnsafeRawBufferPointer) -> Field? {
        // Length and first byte pick at most one candidate; then one comparison.
        let candidate: Field
        switch (key.count, key.first ?? 0) {
        case (6, UInt8(ascii: "s")): candidate = .source
        case (3, UInt8(ascii: "s")): candidate = .seq
        case (2, UInt8(ascii: "t")): candidate = .ts
        case (4, UInt8(ascii: "t")): candidate = .type
        case (11, UInt8(ascii: "i")): candidate = .interaction
        case (5, UInt8(ascii: "m")): candidate = .media
        case (9, UInt8(ascii: "d")): candidate = .direction
        case (5, UInt8(ascii: "q")): candidate = .queue
        case (5, UInt8(ascii: "a")):
            candidate = key.count > 1 && key[1] == UInt8(ascii: "g") ? .agent : .attrs
        case (6, UInt8(ascii: "r")): candidate = .reason
        default: return nil
        }
        var expected = name(candidate)
        return expected.withUTF8 { UnsafeRawBufferPointer($0).elementsEqual(key) } ? candidate : nil
    }

    private static func name(_ f: Field) -> String {
        switch f {
        case .source: "source"
        case .seq: "seq"
        case .ts: "ts"
        case .type: "type"
        case .interaction: "interaction"
        case .media: "media"
        case .direction: "direction"
        case .queue: "queue"
        case .agent: "agent"
        case .reason: "reason"
        case .attrs: "attrs"
        }
    }
}
