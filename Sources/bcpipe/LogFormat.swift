import ArgumentParser
import EventModel
import Foundation
import Logging

/// How the daemons write their log to stderr: human text (the default) or one JSON object per
/// line for a log shipper (journald, Vector, Loki).
enum LogFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text
    case json

    /// The format asked for on the command line, read before the arguments are parsed: the
    /// logging system is set up once, before any command runs. `--log-format` itself is declared
    /// by each daemon (``LoggingOptions``), so it is validated and shown in `--help`.
    static func requested(in arguments: [String]) -> LogFormat {
        for (i, a) in arguments.enumerated() {
            if a == "--log-format", i + 1 < arguments.count { return LogFormat(rawValue: arguments[i + 1]) ?? .text }
            if a.hasPrefix("--log-format=") { return LogFormat(rawValue: String(a.dropFirst(13))) ?? .text }
        }
        return .text
    }
}

/// `--log-format text|json`, for every daemon.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log to stderr as text, or as one JSON object per line (json).")
    var logFormat: LogFormat = .text
}

/// One JSON object per line: `ts` (RFC 3339, milliseconds, UTC), `level`, `component` (the
/// logger's label, e.g. `bcpipe.collector.site1-a`), `message`, then every metadata key at the
/// top level (`site`, `collector`, a procedure's `step`, `error`, …; a key that would shadow one of
/// the four is prefixed with `meta_`). Lines are written whole with one `write(2)`.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [String: Any] = [
            "ts": Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)).rfc3339,
            "level": event.level.rawValue, "component": label,
            "message": event.message.description,
        ]
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        for (key, value) in all {
            fields[fields[key] == nil ? key : "meta_" + key] = Self.json(value)
        }
        guard
            var data = try? JSONSerialization.data(
                withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        data.append(10)
        data.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
    }

    private static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let s): s
        case .stringConvertible(let c): c.description
        case .array(let a): a.map(json)
        case .dictionary(let d): d.mapValues(json)
        }
    }
}
