import Foundation

/// An error from PostgreSQL or from the link to it.
///
/// `description` is safe to log and show: it never contains a password or a bound value.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure, in categories a caller acts on.
    public enum Code: String, Sendable, Equatable {
        /// The connection could not be established (refused, unreachable, authentication, timeout).
        case connectionFailed
        /// An established connection broke; the connection is unusable.
        case connectionLost
        /// The server did not answer within the client-side deadline; the connection was closed.
        case timeout
        /// The operation was cancelled (task cancellation or an explicit cancel).
        case cancelled
        /// The server refused the statement; see ``PostgresError/sqlState``.
        case server
        /// A value could not be decoded into the requested Swift type.
        case decoding
        /// The connection was already closed.
        case closed
    }

    public var code: Code
    /// The five-character SQLSTATE for server errors (`23505` unique violation, `57014` cancelled, …).
    public var sqlState: String?
    /// The primary message, operator-readable.
    public var message: String
    public var detail: String?
    public var hint: String?
    /// Which server and database the error came from (`127.0.0.1:25411/mart`), when known.
    public var target: String?
    public var file: String
    public var line: Int

    public init(
        code: Code, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil,
        target: String? = nil, file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.sqlState = sqlState
        self.message = PostgresError.redact(message)
        self.detail = detail.map(PostgresError.redact)
        self.hint = hint
        self.target = target
        self.file = file
        self.line = line
    }

    /// True when the connection must be discarded and a new one opened (the link, not the statement, failed).
    public var isConnectionProblem: Bool {
        switch code {
        case .connectionFailed, .connectionLost, .timeout, .closed: return true
        case .server:
            // 08xxx connection exceptions, 57P01-57P03 admin shutdown / crash / cannot connect now.
            guard let s = sqlState else { return false }
            return s.hasPrefix("08") || s == "57P01" || s == "57P02" || s == "57P03"
        case .cancelled, .decoding: return false
        }
    }

    public var description: String {
        var out = "PostgreSQL"
        if let target { out += " \(target)" }
        out += ": \(message)"
        if let sqlState { out += " (SQLSTATE \(sqlState))" }
        if let detail, !detail.isEmpty { out += "; \(detail)" }
        if let hint, !hint.isEmpty { out += "; hint: \(hint)" }
        return out
    }

    /// Removes anything that looks like a password from a libpq message.
    static func redact(_ text: String) -> String {
        var out = ""
        var rest = Substring(text)
        while let r = rest.range(of: "password=") {
            out += rest[..<r.upperBound]
            out += "***"
            rest = rest[r.upperBound...]
            if let end = rest.firstIndex(where: { $0 == " " || $0 == "\n" || $0 == "&" }) {
                rest = rest[end...]
            } else {
                rest = ""
            }
        }
        out += rest
        // libpq messages span lines ("…failed: Connection refused\n\tIs the server running…"): keep one line.
        return out.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: " ")
    }
}
