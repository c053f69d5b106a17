import ArgumentParser
import Foundation
import Schema
import Topology

extension BCPipe {
    /// `bcpipe db …`
    struct DB: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "db", abstract: "Database schema.", subcommands: [Migrate.self])
    }
}

extension BCPipe.DB {
    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create and migrate the IDBs and mart of this host's site (idempotent).")
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "Only this site (default: every site the topology file reaches).") var site: String?

        func run() async throws {
            let topology = try topologyOptions.load()
            let sites =
                try site.map { name in
                    guard let s = topology.site(named: name) else {
                        throw ValidationError(
                            "unknown site \"\(name)\"; the topology's sites are \(topology.sites.map(\.name).joined(separator: ", "))"
                        )
                    }
                    return [s]
                } ?? topology.sites
            let migrator = Migrator(logger: .cli)
            for s in sites {
                for line in try await migrator.migrateSite(s, topology: topology) { print(line) }
            }
        }
    }
}
