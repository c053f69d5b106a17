import CLibPQ
import CivilTime
import Foundation

/// The rows of one result, decoded lazily from libpq's text format.
///
/// Immutable once created, so it may be shared across tasks.
/// `@unchecked Sendable`: the libpq result it wraps is never written after creation.
public final class PostgresRows: @unchecked Sendable, RandomAccessCollection {
    private let result: OpaquePointer
    /// Column names in order.
    public let columns: [String]
    /// Each column's type (its `pg_type` OID), in order.
    public let columnTypes: [UInt32]
    public let count: Int
    /// Rows inserted, updated, deleted or copied by the statement (0 when it reports none).
    public let affectedRows: Int

    init(_ result: OpaquePointer) {
        self.result = result
        count = Int(PQntuples(result))
        columns = (0..<PQnfields(result)).map { String(cString: PQfname(result, $0)) }
        columnTypes = (0..<PQnfields(result)).map { UInt32(PQftype(result, $0)) }
        affectedRows = Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    deinit { PQclear(result) }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(position: Int) -> PostgresRow { PostgresRow(rows: self, index: position) }

    /// The index of a column by name.
    public func column(_ name: String) -> Int? { columns.firstIndex(of: name) }

    fileprivate func text(_ row: Int, _ column: Int) -> UnsafeBufferPointer<UInt8>? {
        guard PQgetisnull(result, Int32(row), Int32(column)) == 0 else { return nil }
        let length = Int(PQgetlength(result, Int32(row), Int32(column)))
        let p = UnsafeRawPointer(PQgetvalue(result, Int32(row), Int32(column))!)
        return UnsafeBufferPointer(start: p.assumingMemoryBound(to: UInt8.self), count: length)
    }
}

/// One row of ``PostgresRows``.
public struct PostgresRow: Sendable {
    public let rows: PostgresRows
    public let index: Int

    /// Decodes column `column` (by position). Use an Optional type for nullable columns.
    public func decode<T: PostgresDecodable>(_ column: Int, as type: T.Type = T.self) throws -> T {
        guard column >= 0, column < rows.columns.count else {
            throw PostgresError(code: .decoding, message: "no column \(column) (the result has \(rows.columns.count))")
        }
        do {
            return try T(postgresText: rows.text(index, column))
        } catch let e as PostgresError {
            throw PostgresError(code: .decoding, message: "column \(rows.columns[column]): \(e.message)")
        }
    }

    /// Decodes the column named `name`.
    public func decode<T: PostgresDecodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let i = rows.column(name) else {
            throw PostgresError(
                code: .decoding, message: "no column named \(name) (columns: \(rows.columns.joined(separator: ", ")))")
        }
        return try decode(i, as: type)
    }

    /// The raw text of a column, nil for NULL.
    public subscript(_ column: Int) -> String? {
        rows.text(index, column).map { String(decoding: $0, as: UTF8.self) }
    }

    public subscript(_ name: String) -> String? {
        rows.column(name).flatMap { self[$0] }
    }
}

/// A Swift type that can be read from PostgreSQL's text format.
public protocol PostgresDecodable {
    /// Decodes `text` (nil for SQL NULL).
    init(postgresText text: UnsafeBufferPointer<UInt8>?) throws
}

extension PostgresDecodable {
    static func nonNull(_ text: UnsafeBufferPointer<UInt8>?) throws -> UnsafeBufferPointer<UInt8> {
        guard let text else {
            throw PostgresError(code: .decoding, message: "is NULL; decode as \(Self.self)? for a nullable column")
        }
        return text
    }
    static func bad(_ text: UnsafeBufferPointer<UInt8>) -> PostgresError {
        PostgresError(
            code: .decoding,
            message: "cannot read \"\(String(decoding: text.prefix(40), as: UTF8.self))\" as \(Self.self)")
    }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public init(postgresText text: UnsafeBufferPointer<UInt8>?) throws {
        self = try text.map { try Wrapped(postgresText: $0) }
    }
}

extension String: PostgresDecodable {
    public init(postgresText text: UnsafeBufferPointer<UInt8>?) throws {
        self = String(decoding: try Self.nonNull(text), as: UTF8.self)
    }
}

extension PostgresDecodable where Self: FixedWidthInteger {
    /// Integers read from their decimal text.
    public init(postgresText text: UnsafeBufferPointer<UInt8>?) throws {
        let t = try Self.nonNull(text)
        guard let v = Self(String(decoding: t, as: UTF8.self)) else { throw Self.bad(t) }
        self = v
    }
}

extension Int64: PostgresDecodable {}
extension Int: PostgresDecodable {}
extension Int32: PostgresDecodable {}

extension Double: PostgresDecodable {
    public init(postgresText text: UnsafeBufferPointer<UInt8>?) throws {
        let t = try Self.nonNull(text)
        guard let v = Double(String(decoding: t, as: UTF8.self)) else { throw Self.bad(t) }
        self = v
    }
}

extension Bool: PostgresDecodable {
    public init(postgresText text: UnsafeBufferPointer<UInt8>?) throws {
        let t = try Self.nonNull(text)
        switch t.first {
        case UInt8(ascii: "t"): self = true
        case UInt8(ascii: "f"): self = false
        default: throw Self.bad(t)
        }
    }
}

extension Date: PostgresDecodable {
    /// Reads `timestamptz` as the session prints it (ISO, UTC): `2026-11-21 10:00:00.123+00`.
    public init(postgresText text: UnsafeBufferPointer<UInt8>?) throws {
        let t = try Self.nonNull(text)
        guard let ms = PostgresTimestamp.parseMilliseconds(t) else { throw Self.bad(t) }
        self = Date(timeIntervalSince1970: Double(ms) / 1000)
    }
}

/// Milliseconds since the epoch, read from and bound as `timestamptz`, with no rounding through `Double`.
public struct PostgresTimestamp: Sendable, Hashable, Comparable, PostgresDecodable, PostgresBindable {
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) { self.millisecondsSinceEpoch = millisecondsSinceEpoch }

    public static func < (a: Self, b: Self) -> Bool { a.millisecondsSinceEpoch < b.millisecondsSinceEpoch }

    public init(postgresText text: UnsafeBufferPointer<UInt8>?) throws {
        let t = try Self.nonNull(text)
        guard let ms = Self.parseMilliseconds(t) else { throw Self.bad(t) }
        millisecondsSinceEpoch = ms
    }

    public var postgresText: String? { isoText }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]`.
    static func parseMilliseconds(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard b.count >= 19 else { return nil }
        func num(_ from: Int, _ n: Int) -> Int64? {
            var v: Int64 = 0
            for i in from..<(from + n) {
                let d = b[i] &- 48
                guard d < 10 else { return nil }
                v = v * 10 + Int64(d)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2),
            let s = num(17, 2)
        else { return nil }
        var i = 19
        var ms: Int64 = 0
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < b.count, b[i] &- 48 < 10 {
                if digits < 3 { ms = ms * 10 + Int64(b[i] - 48) }
                digits += 1
                i += 1
            }
            for _ in digits..<max(digits, 3) { ms *= 10 }
        }
        var offset: Int64 = 0
        if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            let sign: Int64 = b[i] == UInt8(ascii: "-") ? -1 : 1
            guard let oh = num(i + 1, 2) else { return nil }
            var om: Int64 = 0
            if i + 5 < b.count + 1, i + 3 < b.count, b[i + 3] == UInt8(ascii: ":"), let m = num(i + 4, 2) { om = m }
            offset = sign * (oh * 3600 + om * 60)
        }
        let days = CivilTime.days(year: y, month: mo, day: d)
        return (days * 86_400 + h * 3600 + mi * 60 + s - offset) * 1000 + ms
    }
}

extension String: PostgresBindable { public var postgresText: String? { self } }
extension Int: PostgresBindable { public var postgresText: String? { String(self) } }
extension Int64: PostgresBindable { public var postgresText: String? { String(self) } }
extension Int32: PostgresBindable { public var postgresText: String? { String(self) } }
extension Double: PostgresBindable { public var postgresText: String? { String(self) } }
extension Bool: PostgresBindable { public var postgresText: String? { self ? "true" : "false" } }
extension Optional: PostgresBindable where Wrapped: PostgresBindable {
    public var postgresText: String? { self?.postgresText }
}
extension Date: PostgresBindable {
    /// ISO 8601 in UTC with milliseconds, which `timestamptz` parses.
    public var postgresText: String? {
        PostgresTimestamp(millisecondsSinceEpoch: Int64((timeIntervalSince1970 * 1000).rounded(.down))).isoText
    }
}

extension PostgresTimestamp {
    /// `2026-11-21 10:00:00.123+00`.
    public var isoText: String {
        let (days, ms) = CivilTime.split(milliseconds: millisecondsSinceEpoch)
        let (y, m, d) = CivilTime.date(fromDays: days)
        func p(_ v: Int64, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return
            "\(p(y, 4))-\(p(m, 2))-\(p(d, 2)) \(p(ms / 3_600_000, 2)):\(p(ms / 60_000 % 60, 2)):\(p(ms / 1000 % 60, 2)).\(p(ms % 1000, 3))+00"
    }
}
