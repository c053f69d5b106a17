import ArgumentParser
import Foundation
import PostgresClient
import Topology

extension BCPipe {
    /// `bcpipe status`: the deployment as the databases of every site report it.
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show phase, mode, epoch and every site's server as this host sees them.")
        @OptionGroup var topologyOptions: TopologyOptions
        @Flag(help: "Print one JSON document.") var json = false

        struct SiteStatus: Codable {
            var name: String
            var reachable: Bool
            var error: String?
            var phase: String?
            var epoch: Int64?
            var databases: [String]
        }

        struct Report: Codable {
            var deployment: String
            var mode: String
            var sites: [SiteStatus]
        }

        func run() async throws {
            let topology = try topologyOptions.load()
            var sites: [SiteStatus] = []
            for site in topology.sites {
                var config = PostgresConfiguration(conninfo: site.postgres, database: Topology.martDatabase)
                config.connectTimeout = 3
                config.statementTimeoutMilliseconds = 5_000
                var status = SiteStatus(
                    name: site.name, reachable: false, databases: topology.databases(atSite: site.name))
                do {
                    let conn = try await PostgresConnection.connect(config)
                    let rows = try await conn.query("SELECT phase, epoch FROM control.deployment")
                    if let row = rows.first {
                        status.phase = try row.decode(0, as: String.self)
                        status.epoch = try row.decode(1, as: Int64.self)
                    }
                    status.reachable = true
                    await conn.close()
                } catch {
                    status.error = "\(error)"
                }
                sites.append(status)
            }
            let report = Report(
                deployment: topology.deployment.name, mode: topology.deployment.mode.rawValue, sites: sites)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
                return
            }
            print("deployment \(report.deployment): mode \(report.mode)")
            for s in sites {
                if s.reachable {
                    print(
                        "  \(s.name): reachable, phase \(s.phase ?? "?"), epoch \(s.epoch.map(String.init) ?? "?"), databases \(s.databases.joined(separator: ", "))"
                    )
                } else {
                    print("  \(s.name): UNREACHABLE — \(s.error ?? "")")
                }
            }
        }
    }
}
