import CivilTime

/// An instant in UTC with millisecond precision, as events carry and the IDB stores it.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) {
        self.millisecondsSinceEpoch = millisecondsSinceEpoch
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        a.millisecondsSinceEpoch < b.millisecondsSinceEpoch
    }

    /// Parses RFC 3339 (`2026-11-21T10:00:00.123Z`, `…+02:00`); digits past milliseconds are truncated.
    public init?(rfc3339 text: String) {
        var text = text
        guard let value = text.withUTF8({ Timestamp.parse(UnsafeRawBufferPointer($0)) }) else { return nil }
        self = value
    }

    /// The UTC RFC 3339 form with milliseconds, e.g. `2026-11-21T10:00:00.123Z`.
    public var rfc3339: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        appendRFC3339(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    public var description: String { rfc3339 }

    /// Appends the UTC RFC 3339 form to `out`.
    public func appendRFC3339(to out: inout [UInt8]) {
        let (days, msOfDay) = CivilTime.split(milliseconds: millisecondsSinceEpoch)
        let (y, m, d) = CivilTime.date(fromDays: days)
        func two(_ v: Int64) {
            out.append(UInt8(48 + v / 10))
            out.append(UInt8(48 + v % 10))
        }
        two(y / 100)
        two(y % 100)
        out.append(UInt8(ascii: "-"))
        two(m)
        out.append(UInt8(ascii: "-"))
        two(d)
        out.append(UInt8(ascii: "T"))
        two(msOfDay / 3_600_000)
        out.append(UInt8(ascii: ":"))
        two(msOfDay / 60_000 % 60)
        out.append(UInt8(ascii: ":"))
        two(msOfDay / 1000 % 60)
        out.append(UInt8(ascii: "."))
        let frac = msOfDay % 1000
        out.append(UInt8(48 + frac / 100))
        two(frac % 100)
        out.append(UInt8(ascii: "Z"))
    }

    static func daysInMonth(_ year: Int64, _ month: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Parses RFC 3339 from raw bytes. Years 0001–9999; seconds 00–59 (a leap second is refused).
    static func parse(_ b: UnsafeRawBufferPointer) -> Timestamp? {
        let n = b.count
        guard n >= 20 else { return nil }
        func digits(_ at: Int, _ count: Int) -> Int64? {
            var v: Int64 = 0
            for i in at..<(at + count) {
                let c = b[i] &- 48
                guard c < 10 else { return nil }
                v = v * 10 + Int64(c)
            }
            return v
        }
        guard let year = digits(0, 4), b[4] == UInt8(ascii: "-"), let month = digits(5, 2),
            b[7] == UInt8(ascii: "-"), let day = digits(8, 2),
            b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
            let hour = digits(11, 2), b[13] == UInt8(ascii: ":"), let minute = digits(14, 2),
            b[16] == UInt8(ascii: ":"), let second = digits(17, 2)
        else { return nil }
        guard year >= 1, (1...12).contains(month), day >= 1, day <= daysInMonth(year, month), hour < 24,
            minute < 60, second < 60
        else { return nil }
        var i = 19
        var millis: Int64 = 0
        if i < n && b[i] == UInt8(ascii: ".") {
            i += 1
            var count = 0
            while i < n, b[i] &- 48 < 10 {
                if count < 3 { millis = millis * 10 + Int64(b[i] - 48) }
                count += 1
                i += 1
            }
            guard count > 0 else { return nil }
            for _ in count..<max(count, 3) { millis *= 10 }
        }
        guard i < n else { return nil }
        var offsetMinutes: Int64 = 0
        switch b[i] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            i += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            let sign: Int64 = b[i] == UInt8(ascii: "-") ? -1 : 1
            guard n - i == 6, let oh = digits(i + 1, 2), b[i + 3] == UInt8(ascii: ":"), let om = digits(i + 4, 2),
                oh < 24, om < 60
            else { return nil }
            offsetMinutes = sign * (oh * 60 + om)
            i += 6
        default:
            return nil
        }
        guard i == n else { return nil }
        let days = CivilTime.days(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetMinutes * 60
        return Timestamp(millisecondsSinceEpoch: seconds * 1000 + millis)
    }
}
