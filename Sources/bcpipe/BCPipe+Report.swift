import ArgumentParser
import Coordinator
import Foundation
import PostgresClient
import Topology

extension BCPipe {
    /// `bcpipe report …`: the reporting views of the reporting mart.
    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read the reporting mart's views.",
            subcommands: [Interactions.self, QueueHourly.self, AgentDaily.self, Completeness.self, DataGaps.self])

        enum Format: String, ExpressibleByArgument { case table, csv, json }

        struct Options: ParsableArguments {
            @OptionGroup var topologyOptions: TopologyOptions
            @Option(help: "From this time (RFC 3339), inclusive.") var from: String?
            @Option(help: "Up to this time (RFC 3339), exclusive.") var to: String?
            @Option(help: "table, csv or json.") var format: Format = .table
            @Option(help: "The site whose mart to read (default: the reporting mart's, as the marts say).")
            var site: String?
        }

        static func run(_ o: Options, view: String, timeColumn: String?, order: String) async throws {
            let topology = try o.topologyOptions.load()
            let chosen: Topology.Site?
            if let name = o.site {
                chosen = topology.site(named: name)
                if chosen == nil { throw ValidationError("--site \(name): not a site of the topology") }
            } else {
                chosen = await ControlState.reportingSite(topology)
            }
            guard let site = chosen else { throw ValidationError("no reporting mart answers; pass --site") }
            var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
            config.connectTimeout = 5
            let conn = try await PostgresConnection.connect(config)
            var conditions: [String] = []
            var params: [any PostgresBindable] = []
            if let timeColumn {
                if let from = o.from {
                    params.append(from)
                    conditions.append("\(timeColumn) >= $\(params.count)::timestamptz")
                }
                if let to = o.to {
                    params.append(to)
                    conditions.append("\(timeColumn) < $\(params.count)::timestamptz")
                }
            }
            let whereClause = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
            let rows = try await conn.query("SELECT * FROM report.\(view)\(whereClause) ORDER BY \(order)", params)
            await conn.close()
            print(render(rows, o.format))
        }

        static func render(_ rows: PostgresRows, _ format: Format) -> String {
            let cells = rows.map { r in rows.columns.indices.map { r[$0] } }
            switch format {
            case .json:
                let objects = cells.map { row in
                    Dictionary(uniqueKeysWithValues: zip(rows.columns, row.map { $0 as Any? ?? NSNull() }))
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
                options, view: "interactions", timeColumn: "created_at", order: "created_at, source, interaction")
        }
    }
    struct QueueHourly: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "queue-hourly", abstract: "report.queue_hourly (by hour).")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(options, view: "queue_hourly", timeColumn: "hour", order: "hour, queue, media")
        }
    }
    struct AgentDaily: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "agent-daily", abstract: "report.agent_daily (by day).")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(options, view: "agent_daily", timeColumn: "day", order: "day, agent")
        }
    }
    struct DataGaps: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "data-gaps", abstract: "report.data_gaps: windows the mart knows it is missing or got late.")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(options, view: "data_gaps", timeColumn: "gap_from", order: "source, gap_from")
        }
    }
    struct Completeness: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "report.completeness: what the numbers cover, per source.")
        @OptionGroup var options: BCPipe.Report.Options
        func run() async throws {
            try await BCPipe.Report.run(options, view: "completeness", timeColumn: nil, order: "source")
        }
    }
}
