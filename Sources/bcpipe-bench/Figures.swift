import Foundation
import Lab
import Synchronization

/// Every figure the benchmarks print, kept for `BENCHMARKS.md`: what was measured, the figure,
/// the baseline measured in the same run, and the ratio or goal.
struct Figure: Sendable {
    var section: String
    var what: String
    var figure: String
    var baseline: String
    var goal: String
}

extension Figure {
    /// Its line of a Markdown table; an empty baseline says `no baseline`.
    var markdownRow: String {
        func cell(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|") }
        return
            "| \(cell(what)) | \(cell(figure)) | \(cell(baseline.isEmpty ? "no baseline" : baseline)) | \(cell(goal)) |\n"
    }
}

let figures = Mutex<[Figure]>([])

/// Records one row of `BENCHMARKS.md` (the human-readable line is printed separately).
func figure(_ section: String, _ what: String, _ value: String, baseline: String = "", goal: String = "") {
    figures.withLock { $0.append(Figure(section: section, what: what, figure: value, baseline: baseline, goal: goal)) }
}

/// The machine the figures come from: cores, memory, CPU model, kernel, PostgreSQL.
func machineDescription() -> String {
    let cpu =
        ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").split(separator: "\n")
        .first { $0.hasPrefix("model name") }.map {
            String($0.split(separator: ":", maxSplits: 1)[1]).trimmingCharacters(in: .whitespaces)
        }
        ?? "unknown CPU"
    var uts = utsname()
    uname(&uts)
    let kernel = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let postgres =
        (try? PostgresToolsVersion.server()) ?? "PostgreSQL (version unknown)"
    return
        "\(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpu)), \(ProcessInfo.processInfo.physicalMemory >> 30) GiB, Linux \(kernel), \(postgres)"
}

enum PostgresToolsVersion {
    static func server() throws -> String {
        let root = "/usr/lib/postgresql"
        let v = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).max()
        return v.map { "PostgreSQL \($0)" } ?? "PostgreSQL"
    }
}

/// Writes the figures as `BENCHMARKS.md`. A run that measured only some sections
/// (`BENCH_ONLY`) replaces those and keeps the others from the file as they were; each section
/// says which run measured it.
func writeBenchmarks(to path: String, events: Int, started: Date) throws {
    let rows = figures.withLock { $0 }
    let when = ISO8601DateFormatter().string(from: started)
    var kept = previousSections(path)
    var order = kept.map(\.title)
    var fresh: [String: String] = [:]
    for r in rows {
        if fresh[r.section] == nil {
            fresh[r.section] =
                "Measured in the run of \(when) (\(events) events where a figure says \"the events\").\n\n| what | figure | baseline (same run) | ratio / goal |\n|---|---|---|---|\n"
            if !order.contains(r.section) { order.append(r.section) }
        }
        fresh[r.section]! += r.markdownRow
    }
    kept.removeAll { fresh[$0.title] != nil }
    var out = """
        # Benchmarks

        Written by `scripts/bench` (release build) — do not edit by hand (except a section that
        says it was recorded by hand, with its runs and dates); run it again. Every figure
        is beside its baseline measured in the same run on the same machine, like for like, or
        says `no baseline`; timings are never asserted in tests (these machines are noisy). Each
        section says which run measured it (a run with `BENCH_ONLY` replaces only its own
        sections). Latest run:

        - when: \(when), \(Int(Date().timeIntervalSince(started) / 60)) min
        - machine: \(machineDescription())

        """
    for title in order {
        let body = fresh[title] ?? kept.first { $0.title == title }?.body ?? ""
        out += "\n## \(title)\n\n" + body.trimmingCharacters(in: .newlines) + "\n"
    }
    try out.write(toFile: path, atomically: true, encoding: .utf8)
}

/// The sections of an existing `BENCHMARKS.md`, in order; a section written before sections
/// said their run gets the file's own date.
func previousSections(_ path: String) -> [(title: String, body: String)] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    let fileWhen = text.split(separator: "\n").first { $0.hasPrefix("- when: ") }.map {
        String($0.dropFirst("- when: ".count).split(separator: ",").first ?? "")
    }
    var out: [(title: String, body: String)] = []
    for part in text.components(separatedBy: "\n## ").dropFirst() {
        let lines = part.split(separator: "\n", omittingEmptySubsequences: false)
        guard let title = lines.first else { continue }
        var body = lines.dropFirst().joined(separator: "\n").trimmingCharacters(in: .newlines)
        if !body.hasPrefix("Measured in the run of"), !body.hasPrefix("Recorded by hand"), let fileWhen {
            body = "Measured in the run of \(fileWhen).\n\n" + body
        }
        out.append((String(title), body))
    }
    return out
}

/// The README's table of the run: every row with a goal, between the README's
/// `<!-- bench:begin -->` and `<!-- bench:end -->` lines. Only a full run writes it, so the
/// README's table is always one run's.
func writeReadmeTable(to path: String, started: Date) throws {
    let begin = "<!-- bench:begin -->"
    let end = "<!-- bench:end -->"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8), let b = text.range(of: begin),
        let e = text.range(of: end), b.upperBound <= e.lowerBound
    else { throw LabError("\(path) has no \(begin) … \(end) lines for the benchmark table") }
    let rows = figures.withLock { $0 }.filter { $0.goal.contains("goal") }
    var table =
        "\nThe rows with a goal from the full run of \(ISO8601DateFormatter().string(from: started)) (every row, and the machine, in BENCHMARKS.md):\n\n| what | figure | baseline (same run) | ratio / goal |\n|---|---|---|---|\n"
    for r in rows { table += r.markdownRow }
    try (String(text[..<b.upperBound]) + "\n" + table + "\n" + String(text[e.lowerBound...])).write(
        toFile: path, atomically: true, encoding: .utf8)
}
