import ArgumentParser
import Extractor
import Foundation
import Logging
import PostgresClient
import Topology

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
        @Option(help: "Serve /healthz and /metrics (source and IDB lags) on HOST:PORT.") var listen: String?
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let topology = try topologyOptions.load()
            var settings = try ExtractorSettings.from(topology: topology, site: site)
            let environment = ProcessInfo.processInfo.environment
            settings.dbUser = environment["BCPIPE_DB_USER"].flatMap { $0.isEmpty ? nil : $0 }
            settings.logPhases = environment["BCPIPE_EXTRACTOR_TIMING"] != nil
            var logger = Logger(label: "bcpipe.extractor.\(site)")
            logger[metadataKey: "site"] = "\(site)"
            logger.logLevel =
                ProcessInfo.processInfo.environment["BCPIPE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            logger.info("extractor starting", metadata: ["site": "\(site)", "idbs": "\(settings.idbs.count)"])
            var address: (host: String, port: Int)?
            if let listen {
                guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
                    (1...65535).contains(port)
                else {
                    throw ValidationError("--listen \(listen): expected HOST:PORT, e.g. 127.0.0.1:7801")
                }
                address = (String(listen[..<colon]), port)
            }
            try await Self.checkZones(settings, logger: logger)
            let extractor = Extractor(settings: settings, logger: logger)
            // SIGTERM ends the process between cycles' transactions; a SIGKILL mid-cycle rolls the cycle back.
            let systemd = SystemdNotify()
            try await ExtractorServer(extractor: extractor, listen: address, logger: logger).run(onReady: systemd.ready)
        }

        /// A topology whose `reporting.time_zones` PostgreSQL does not know is refused before the
        /// extractor starts (exit 2), not cycle after cycle. A mart that does not answer yet is
        /// checked by each cycle instead (it refuses the same zones).
        static func checkZones(_ settings: ExtractorSettings, logger: Logger) async throws {
            var config = PostgresConfiguration(conninfo: settings.martConninfo, database: Topology.martDatabase)
            config.user = settings.dbUser
            config.connectTimeout = settings.timeouts.connect
            guard let mart = try? await PostgresConnection.connect(config, logger: logger) else { return }
            let unknown = try await mart.closing {
                try await IntervalAggregates.unknownZones(settings.reporting.timeZones, at: $0)
            }
            if !unknown.isEmpty {
                throw TopologyError(
                    path: "reporting.time_zones",
                    message:
                        "PostgreSQL's time-zone database (pg_timezone_names) has no zone \(unknown.joined(separator: ", ")); use IANA names it lists, e.g. America/New_York"
                )
            }
        }
    }
}
