import ArgumentParser
import Collector
import Foundation
import Logging

extension BCPipe {
    /// `bcpipe collector run`
    struct CollectorCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "collector", abstract: "The per-site collector.", subcommands: [Run.self])
    }
}

extension BCPipe.CollectorCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run one collector: HTTP ingest into its disk queue, shipping to its IDB (SIGTERM stops it gracefully)."
        )
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The collector's name in the topology.") var name: String
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let topology = try topologyOptions.load()
            let settings = try CollectorSettings.from(topology: topology, name: name)
            var logger = Logger(label: "bcpipe.collector.\(name)")
            logger[metadataKey: "collector"] = "\(name)"
            logger[metadataKey: "source"] = "\(settings.source)"
            if let site = topology.sources.first(where: { $0.name == settings.source })?.site {
                logger[metadataKey: "site"] = "\(site)"
            }
            logger.logLevel =
                ProcessInfo.processInfo.environment["BCPIPE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            logger.info(
                "collector starting",
                metadata: [
                    "listen": "\(settings.listen)", "idb": "\(settings.idbSite)/\(settings.idbDatabase)",
                    "queue": "\(settings.queue.directory)",
                ])
            try await CollectorServer(settings: settings, logger: logger).run(onReady: SystemdNotify().ready)
        }
    }
}
