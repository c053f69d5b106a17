import ArgumentParser
import Coordinator
import Foundation
import Logging
import Topology

extension BCPipe {
    /// `bcpipe coordinator run`
    struct CoordinatorCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "coordinator", abstract: "The site's coordinator (phase, epoch, fencing, status).",
            subcommands: [Run.self])
    }

    /// `bcpipe dr declare`
    struct DR: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "dr", abstract: "Disaster recovery (CONTRACT 6.4).", subcommands: [Declare.self])
    }
}

extension BCPipe.CoordinatorCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the coordinator of a site: serves /healthz and /v1/status at the site's coordinator address."
        )
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The site this coordinator runs for.") var site: String

        func run() async throws {
            let topology = try topologyOptions.load()
            var logger = Logger(label: "bcpipe.coordinator.\(site)")
            logger.logLevel =
                ProcessInfo.processInfo.environment["BCPIPE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            let server = try CoordinatorServer(topology: topology, site: site, logger: logger)
            logger.info("coordinator starting", metadata: ["site": "\(site)", "listen": "\(server.site.coordinator)"])
            try await server.run()
        }
    }
}

extension BCPipe.DR {
    struct Declare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Declare a site failed and recover onto the surviving site; resumable, each step journaled.",
            discussion: """
                Refused (exit 3) without --confirm-site-down, and while the failed site's PostgreSQL server or \
                coordinator still answers from here (that is a network outage). Run it with the topology file \
                of the surviving site (or an observer's that reaches every server).
                """)
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The site that failed.") var failedSite: String
        @Flag(help: "Confirm that the failed site is down, not merely unreachable.") var confirmSiteDown = false
        @Flag(help: "Check the safety rules and print the steps without changing anything.") var dryRun = false

        func run() async throws {
            let topology = try topologyOptions.load()
            let dr = DisasterRecovery(
                topology: topology, failedSite: failedSite, confirmSiteDown: confirmSiteDown, dryRun: dryRun,
                // Each step as it happens, unbuffered even through a pipe or a file.
                say: { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) })
            _ = try await dr.run()
        }
    }
}
