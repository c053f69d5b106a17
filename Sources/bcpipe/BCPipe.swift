import ArgumentParser
import Foundation
import Logging
import Topology

/// `bcpipe`: the business-continuity reporting pipeline's command line (CONTRACT 4).
@main
struct BCPipe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bcpipe",
        abstract: "Business-continuity reporting pipeline for a two-site contact center.",
        subcommands: [
            Demo.self, LabCommand.self, DB.self, Status.self, QueueCommand.self, CollectorCommand.self,
            ExtractorCommand.self, CoordinatorCommand.self, WitnessCommand.self, DR.self, RTN.self, Switchover.self,
            Report.self, IDBCommand.self, MartCommand.self, Gen.self, Chaos.self,
        ])

    /// Exit codes of CONTRACT 4.
    enum Exit {
        static let failed: Int32 = 1
        static let usage: Int32 = 2
        static let refused: Int32 = 3
    }

    static func main() async {
        let level = ProcessInfo.processInfo.environment["BCPIPE_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
        switch LogFormat.requested(in: CommandLine.arguments) {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level ?? .warning
                return handler
            }
        case .json:
            // A log shipper wants the notices too (each procedure step is one).
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level ?? .info
                return handler
            }
        }
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                print(message)
                Foundation.exit(0)
            }
            FileHandle.standardError.write(Data((message + "\n").utf8))
            Foundation.exit(Exit.usage)
        }
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var sync = command
                try sync.run()
            }
            Foundation.exit(0)
        } catch let exitCode as ExitCode {
            Foundation.exit(exitCode.rawValue)
        } catch  where exitCode(for: error) == .success {
            // --help on a command group, or a command that ends with a clean exit.
            print(fullMessage(for: error))
            Foundation.exit(0)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            switch error {
            case is SafetyRefusal: Foundation.exit(Exit.refused)
            case is TopologyError, is ValidationError: Foundation.exit(Exit.usage)
            default: Foundation.exit(Exit.failed)
            }
        }
    }
}

/// Options every command that reads the topology shares.
struct TopologyOptions: ParsableArguments {
    @Option(name: .long, help: "Topology file (default: $BCPIPE_CONFIG, else ./bcpipe.yaml).")
    var config: String?

    func load() throws -> Topology {
        try Topology.load(path: Topology.defaultPath(explicit: config))
    }
}

extension Logger {
    static let cli = Logger(label: "bcpipe")
}

/// The running executable, for processes the lab starts.
func currentExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}
