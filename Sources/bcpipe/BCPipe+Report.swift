import ArgumentParser
import Control
import Coordinator
import Foundation
import PostgresClient
import Topology

extension BCPipe {
    /// `bcpipe report …`: the reporting views of the reporting mart.
    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read the reporting mart's views.",
            subcommands: [
                Interactions.self, QueueHourly.self, AgentDaily.self, Completeness.self, DataGaps.self,
                QueueIntervals.self, AgentIntervals.self, AgentSessions.self, AgentNotReady.self,
            ])

        enum Format: String, ExpressibleByArgument { case table, csv, json }

        struct Options: ParsableArguments {
            @OptionGroup var topologyOptions: TopologyOptions
            @Option(help: "From this time (RFC 3339), inclusive.") var from: String?
            @Option(help: "Up to this time (RFC 3339), exclusive.") var to: String?
            @Option(help: "table, csv or json (numbers as numbers, times in RFC 3339).") var format: Format = .table
            @Option(help: "The site whose mart to read (default: the reporting mart's, as the marts say).")
            var site: String?
            @Option(
                help:
                    "The time zone to show times in and, for the interval views, whose periods to read (one of reporting.time_zones; default its first)."
            ) var tz: String?
        }

        /// A view and how it is read.
        struct View {
            var name: String
            /// The column `--from`/`--to` bound (nil: none).
            var timeColumn: String?
            var order: String
            /// The interval views: kept per zone (`time_zone`), and per level with these levels.
            var zoned = false
            var levels: [String] = []
        }

        static func run(_ o: Options, _ view: View, level: String? = nil) async throws {
            let topology = try o.topologyOptions.load()
            let chosen: Topology.Site?
            if let name = o.site {
                chosen = topology.site(named: name)
                if chosen == nil { throw ValidationError("--site \(name): not a site of the topology") }
            } else {
                chosen = await ControlStore.reportingSite(topology)
            }
            guard let site = chosen else { throw ValidationError("no reporting mart answers; pass --site") }
            let zones = topology.reporting.timeZones
            let tz = o.tz ?? (view.zoned ? zones.first ?? "UTC" : "UTC")
            if view.zoned, !zones.contains(tz) {
                throw ValidationError(
                    "--tz \(tz): the mart keeps its interval views in \(zones.joined(separator: ", ")); add \(tz) to reporting.time_zones in the topology file, or pick one of those"
                )
            }
            if let level, !view.levels.contains(level) {
                throw ValidationError(
                    "--level \(level): must be one of \(view.levels.joined(separator: ", ")) for report \(view.name.replacingOccurrences(of: "_", with: "-"))"
                )
            }
            var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
            config.connectTimeout = 5
            config.statementTimeoutMilliseconds = 120_000
            let rows = try await PostgresConnection.with(config) { conn in
                try await query(conn, view, o, tz: tz, level: level)
            }
            print(render(rows, o.format))
        }

        /// The view's rows, its times shown in `tz`.
        static func query(_ conn: PostgresConnection, _ view: View, _ o: Options, tz: String, level: String?)
            async throws -> PostgresRows
        {
            // A zone PostgreSQL does not know is refused by it, by name.
            do {
                _ = try await conn.query("SELECT set_config('TimeZone', $1, false)", [tz])
            } catch {
                throw ValidationError("--tz \(tz): PostgreSQL does not know this zone (see pg_timezone_names)")
            }
            var conditions: [String] = []
            var params: [any PostgresBindable] = []
            func bind(_ value: String, _ condition: (String) -> String) {
                params.append(value)
                conditions.append(condition("$\(params.count)"))
            }
            if let column = view.timeColumn {
                if let from = o.from { bind(from) { "\(column) >= \($0)::timestamptz" } }
                if let to = o.to { bind(to) { "\(column) < \($0)::timestamptz" } }
            }
            if view.zoned { bind(tz) { "time_zone = \($0)" } }
            if let level { bind(level) { "level = \($0)" } }
            let whereClause = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
            return try await conn.query(
                "SELECT * FROM report.\(view.name)\(whereClause) ORDER BY \(view.order)", params)
        }

        static func render(_ rows: PostgresRows, _ format: Format) -> String {
            let cells = rows.map { r in rows.columns.indices.map { r[$0] } }
            switch format {
            case .json:
                let objects = cells.map { row in
                    Dictionary(
                        uniqueKeysWithValues: zip(
                            rows.columns, zip(rows.columnTypes, row).map { JSONValue.of($1, type: $0) }))
                }
                let data =
                    (try? JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys]))
                    ?? Data()
                return String(decoding: data, as: UTF8.self)
            case .csv:
                func q(_ s: String?) -> String {
                    guard let s else { return "" }
                    return s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" })
                        ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
                }
                return ([rows.columns.joined(separator: ",")] + cells.map { $0.map(q).joined(separator: ",") }).joined(
                    separator: "\n")
            case .table:
                let widths = rows.columns.indices.map { i in
                    max(rows.columns[i].count, cells.map { ($0[i] ?? "").count }.max() ?? 0)
                }
                func line(_ values: [String]) -> String {
                    zip(values, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(
                        separator: "  ")
                }
                var out = [line(rows.columns), line(widths.map { String(repeating: "-", count: $0) })]
                out += cells.map { line($0.map { $0 ?? "" }) }
                out.append("(\(cells.count) rows)")
                return out.joined(separator: "\n")
            }
        }
    }
}

extension BCPipe.Report {
    struct Interactions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "report.interactions (by created_at).")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(
                options, .init(name: "interactions", timeColumn: "created_at", order: "created_at, source, interaction")
            )
        }
    }
    struct QueueHourly: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "queue-hourly", abstract: "report.queue_hourly (by hour).")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(
                options, .init(name: "queue_hourly", timeColumn: "hour", order: "hour, queue, media"))
        }
    }
    struct AgentDaily: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent-daily", abstract: "report.agent_daily (by day).")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(options, .init(name: "agent_daily", timeColumn: "day", order: "day, agent"))
        }
    }
    struct DataGaps: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "data-gaps", abstract: "report.data_gaps: windows the mart knows it is missing or got late.")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(
                options, .init(name: "data_gaps", timeColumn: "gap_from", order: "source, gap_from"))
        }
    }
    struct Completeness: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "report.completeness: what the numbers cover, per source.")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(options, .init(name: "completeness", timeColumn: nil, order: "source"))
        }
    }
}

extension BCPipe.Report {
    struct QueueIntervals: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "queue-intervals",
            abstract: "report.queue_intervals: offers per queue by sub-hour, hour, day, week or month in a zone.")
        @OptionGroup var options: BCPipe.Report.Options
        @Option(help: "sub_hour, hour, day, week or month.") var level = "hour"
        func run() async throws {
            try await BCPipe.Report.run(
                options,
                .init(
                    name: "queue_intervals", timeColumn: "period_start", order: "period_start, queue, media",
                    zoned: true, levels: ["sub_hour", "hour", "day", "week", "month"]), level: level)
        }
    }
    struct AgentIntervals: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent-intervals", abstract: "report.agent_intervals: agents by day, week or month in a zone.")
        @OptionGroup var options: BCPipe.Report.Options
        @Option(help: "day, week or month.") var level = "day"
        func run() async throws {
            try await BCPipe.Report.run(
                options,
                .init(
                    name: "agent_intervals", timeColumn: "period_start", order: "period_start, agent", zoned: true,
                    levels: ["day", "week", "month"]), level: level)
        }
    }
    struct AgentSessions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent-sessions", abstract: "report.agent_sessions: login sessions (by login_at).")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(
                options, .init(name: "agent_sessions", timeColumn: "login_at", order: "login_at, agent"))
        }
    }
    struct AgentNotReady: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent-not-ready", abstract: "report.agent_not_ready: not-ready time by reason, per local day."
        )
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(
                options,
                .init(
                    name: "agent_not_ready", timeColumn: "day", order: "day, agent, reason", zoned: true,
                    levels: []))
        }
    }
}

/// A column's text as JSON: numbers as numbers, booleans as booleans, times in RFC 3339 (the
/// session's zone as the offset), everything else as a string.
enum JSONValue {
    static func of(_ text: String?, type oid: UInt32) -> Any {
        guard let text else { return NSNull() }
        switch oid {
        case 20, 21, 23: return Int64(text).map { $0 as Any } ?? text
        case 700, 701, 1700: return Double(text).map { $0 as Any } ?? text
        case 16: return text == "t"
        case 1184: return rfc3339(text)
        default: return text
        }
    }

    /// `2026-11-01 00:00:00.5-04` → `2026-11-01T00:00:00.5-04:00` (`Z` for UTC).
    static func rfc3339(_ text: String) -> String {
        guard text.count > 19 else { return text }
        let date = text.prefix(10)
        var rest = text.dropFirst(11)
        guard let sign = rest.lastIndex(where: { $0 == "+" || $0 == "-" }) else { return text }
        let time = rest[..<sign]
        rest = rest[sign...]
        var offset = String(rest)
        if offset.count == 3 { offset += ":00" }
        if offset == "+00:00" { offset = "Z" }
        return "\(date)T\(time)\(offset)"
    }
}
