import Foundation
import Lab
import Testing

/// Runbooks are code: every command of every runbook in `Runbooks/` runs against a fresh lab and
/// every `> **Check:**` line is checked (the format is in `Runbooks/README.md`).
@Suite("Runbooks", .serialized)
struct RunbookTests {
    struct Step {
        var commands: [String]
        var exit: Int32 = 0
        var shows: [String] = []
        var hides: [String] = []
        var within: Double?
        var line: Int
    }

    static let runbooks = [
        "wan-outage-short.md", "wan-outage-long.md", "dr-active-standby.md", "dr-active-active.md",
        "emergency-operation.md", "return-to-normal.md", "idb-purge.md", "return-to-normal-switch-over.md",
        "planned-switch-over.md", "wan-outage-or-site-failure.md",
    ]

    static func parse(_ text: String) throws -> [Step] {
        var steps: [Step] = []
        let lines = text.components(separatedBy: "\n")
        var i = 0
        while i < lines.count {
            guard lines[i].hasPrefix("```sh") else {
                if lines[i].hasPrefix("> **Check:**") {
                    guard !steps.isEmpty else { throw RunbookError("line \(i + 1): a check before any command") }
                    let checks = lines[i].dropFirst("> **Check:**".count).components(separatedBy: " · ")
                    for raw in checks {
                        let c = raw.trimmingCharacters(in: .whitespaces)
                        func quoted() throws -> String {
                            guard let a = c.firstIndex(of: "`"), let b = c.lastIndex(of: "`"), a < b else {
                                throw RunbookError("line \(i + 1): \(c): expected text in backquotes")
                            }
                            return String(c[c.index(after: a)..<b])
                        }
                        if c.hasPrefix("exit "), let n = Int32(c.dropFirst(5)) {
                            steps[steps.count - 1].exit = n
                        } else if c.hasPrefix("shows ") {
                            steps[steps.count - 1].shows.append(try quoted())
                        } else if c.hasPrefix("hides ") {
                            steps[steps.count - 1].hides.append(try quoted())
                        } else if c.hasPrefix("within "), let n = Double(c.dropFirst(7).dropLast(2)) {
                            steps[steps.count - 1].within = n
                        } else {
                            throw RunbookError("line \(i + 1): unknown check \"\(c)\"")
                        }
                    }
                }
                i += 1
                continue
            }
            var commands: [String] = []
            var j = i + 1
            while j < lines.count && !lines[j].hasPrefix("```") {
                let l = lines[j].trimmingCharacters(in: .whitespaces)
                if !l.isEmpty && !l.hasPrefix("#") { commands.append(l) }
                j += 1
            }
            steps.append(Step(commands: commands, line: i + 1))
            i = j + 1
        }
        return steps
    }

    struct RunbookError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    @Test func everyRunbookIsListedAndParses() throws {
        let dir = GenCLITests.repository.appendingPathComponent("Runbooks").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter {
            $0.hasSuffix(".md") && $0 != "README.md"
        }
        #expect(Set(files) == Set(Self.runbooks), "every runbook is rehearsed by this suite")
        for f in files {
            let steps = try Self.parse(try String(contentsOfFile: dir + "/" + f, encoding: .utf8))
            #expect(steps.count >= 4, "\(f)")
            #expect(
                steps.allSatisfy { $0.commands.allSatisfy { $0.hasPrefix("bcpipe ") } }, "\(f): bcpipe commands only")
        }
    }

    @Test(arguments: Array(runbooks.enumerated()))
    func rehearse(index: Int, runbook: String) async throws {
        let text = try String(
            contentsOf: GenCLITests.repository.appendingPathComponent("Runbooks/\(runbook)"), encoding: .utf8)
        let steps = try Self.parse(text)
        let lab = try TestLab.makeLab(name: "runbook-\(index)")
        TestLab.registerCleanup(lab)
        let base = TestLab.basePort + 1700 + 100 * index
        let bin = URL(fileURLWithPath: TestLab.executable).deletingLastPathComponent().path
        let environment = [
            "LAB": lab.directory, "BASE": "\(base)",
            // As an operator: the procedures log in as the coordinator role, not the owner.
            "BCPIPE_DB_USER": "bcpipe_coordinator",
            "PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"),
        ]
        for step in steps {
            for (n, command) in step.commands.enumerated() {
                let last = n == step.commands.count - 1
                let deadline = Date().addingTimeInterval(last ? step.within ?? 0 : 0)
                var out: Processes.Output
                var problems: [String]
                repeat {
                    out = try await Processes.output(
                        ["/bin/bash", "-c", command], environment: environment, timeout: 180)
                    problems = []
                    let expected: Int32 = last ? step.exit : 0
                    if out.status != expected { problems.append("exit \(out.status), expected \(expected)") }
                    if last {
                        for s in step.shows where !out.text.contains(s) { problems.append("does not show `\(s)`") }
                        for h in step.hides where out.text.contains(h) { problems.append("shows `\(h)`") }
                    }
                    if problems.isEmpty || Date() >= deadline { break }
                    try await Task.sleep(for: .seconds(1))
                } while true
                #expect(
                    problems.isEmpty,
                    "\(runbook):\(step.line): \(command)\n\(problems.joined(separator: "; "))\n\(out.text)")
                if !problems.isEmpty { break }
            }
        }
        try? lab.down(remove: true)
    }
}
