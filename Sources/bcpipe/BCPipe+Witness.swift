import ArgumentParser
import Coordinator
import Foundation
import Logging
import Topology

extension BCPipe {
    /// `bcpipe witness run`
    struct WitnessCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "witness",
            abstract: "A witness at a third location: tells dr declare a site failure from a network partition.",
            subcommands: [Run.self])
    }
}

extension BCPipe.WitnessCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Serve GET /v1/reach/SITE: whether that site's coordinator and PostgreSQL server answer from here.",
            discussion: """
                Run it outside both sites (a cloud VM, the operations office) with a topology file whose \\
                addresses reach each site's server and coordinator directly from there, and list its address \\
                under `witnesses:` in every site's topology file. It keeps no state. /healthz and /metrics are \\
                open; /v1/reach needs BCPIPE_COORDINATOR_TOKEN when that is set.
                """)
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "host:port to listen on (default: the topology's first witness).") var listen: String?
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let topology = try topologyOptions.load()
            let address: HostPort
            if let listen {
                guard let a = HostPort(listen) else {
                    throw ValidationError("--listen must be host:port, e.g. 127.0.0.1:7909 (got \"\(listen)\")")
                }
                address = a
            } else if let first = topology.witnesses.first {
                address = first
            } else {
                throw ValidationError(
                    "give --listen host:port, or list the witness's address under `witnesses:` in the topology file")
            }
            var logger = Logger(label: "bcpipe.witness")
            logger.logLevel =
                ProcessInfo.processInfo.environment["BCPIPE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            let witness = WitnessServer(
                topology: topology,
                settings: .init(listen: address, token: AccessToken.fromEnvironment("BCPIPE_COORDINATOR_TOKEN")),
                logger: logger)
            logger.info(
                "witness starting",
                metadata: ["listen": "\(address)", "sites": "\(topology.sites.map(\.name).joined(separator: ","))"])
            try await witness.run()
        }
    }
}
