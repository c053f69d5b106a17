import Foundation

/// PostgreSQL's own programs (`pg_ctl`, `pg_dump`, `psql`…), which Debian keeps in the package's
/// bin directory rather than on PATH, and a way to run a pipeline of them.
public enum PostgresTools {
    public struct NotFound: Error, CustomStringConvertible {
        public var description: String
    }

    /// `$BCPIPE_PG_BIN`, else the newest `/usr/lib/postgresql/N/bin` that has `tool`.
    public static func binDirectory(containing tool: String) throws -> String {
        if let env = ProcessInfo.processInfo.environment["BCPIPE_PG_BIN"], !env.isEmpty { return env }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init)
            .sorted()
        for v in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(root)/\(v)/bin/\(tool)") {
            return "\(root)/\(v)/bin"
        }
        throw NotFound(
            description:
                "PostgreSQL's \(tool) not found under \(root)/*/bin; install it (apt-get install postgresql-15) or set BCPIPE_PG_BIN"
        )
    }

    /// Runs a bash script (a pipeline of the tools, with `set -o pipefail` where it matters) with
    /// extra environment variables; its exit status and its output and errors together.
    public static func shell(_ script: String, environment: [String: String]) throws -> (status: Int32, text: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", script]
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
