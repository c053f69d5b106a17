import ArgumentParser
import Extractor
import Foundation
import Logging

extension BCPipe {
    /// `bcpipe extractor run`
    struct ExtractorCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "extractor", abstract: "The site's extractor (IDBs → mart).", subcommands: [Run.self])
    }
}

extension BCPipe.ExtractorCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the extractor of a site: merge every IDB into the site's mart, cycle by cycle.")
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "The site whose mart this extractor writes.") var site: String

        func run() async throws {
            let topology = try topologyOptions.load()
            let settings = try ExtractorSettings.from(topology: topology, site: site)
            var logger = Logger(label: "bcpipe.extractor.\(site)")
            logger.logLevel =
                ProcessInfo.processInfo.environment["BCPIPE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            logger.info("extractor starting", metadata: ["site": "\(site)", "idbs": "\(settings.idbs.count)"])
            let extractor = Extractor(settings: settings, logger: logger)
            // SIGTERM ends the process between cycles' transactions; a SIGKILL mid-cycle rolls the cycle back.
            try await extractor.run()
        }
    }
}
