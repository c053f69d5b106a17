import Foundation

// Usage: EmbedSQLTool SQL_DIR OUTPUT.swift FILE.sql...
// Writes `embeddedMigrationFiles`: (relative path, contents) for every file, in path order.
let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: EmbedSQLTool SQL_DIR OUTPUT FILE...\n".utf8))
    exit(2)
}
let root = URL(fileURLWithPath: arguments[1]).standardizedFileURL.path
var source = "// Generated from SQL/ by the EmbedSQL plugin. Do not edit.\n"
source += "let embeddedMigrationFiles: [(path: String, sql: String)] = [\n"
for path in arguments.dropFirst(3).sorted() {
    let full = URL(fileURLWithPath: path).standardizedFileURL.path
    let relative = full.hasPrefix(root + "/") ? String(full.dropFirst(root.count + 1)) : full
    let text = try String(contentsOfFile: full, encoding: .utf8)
    // A raw string with enough #s that no sequence in the file can end it.
    var hashes = "#"
    while text.contains("\"" + hashes) { hashes += "#" }
    source += "    (\(String(reflecting: relative)), \(hashes)\"\"\"\n\(text)\n\"\"\"\(hashes)),\n"
}
source += "]\n"
try source.write(toFile: arguments[2], atomically: true, encoding: .utf8)
