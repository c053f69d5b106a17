import Foundation
import PackagePlugin

/// Embeds the migrations under `SQL/` into the target as a generated Swift source, so the
/// `bcpipe` binary carries its schema wherever it is installed.
@main
struct EmbedSQL: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let sqlDirectory = context.package.directoryURL.appending(path: "SQL")
        var inputs: [URL] = []
        if let walker = FileManager.default.enumerator(at: sqlDirectory, includingPropertiesForKeys: nil) {
            for case let url as URL in walker where url.pathExtension == "sql" {
                inputs.append(url)
            }
        }
        inputs.sort { $0.path < $1.path }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedMigrations.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(inputs.count) SQL migrations",
                executable: try context.tool(named: "EmbedSQLTool").url,
                arguments: [sqlDirectory.path, output.path] + inputs.map(\.path),
                inputFiles: inputs,
                outputFiles: [output])
        ]
    }
}
