import Foundation
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

/// Writes the figures as `BENCHMARKS.md`.
func writeBenchmarks(to path: String, events: Int, started: Date) throws {
    let rows = figures.withLock { $0 }
    var out = """
        # Benchmarks

        Written by `scripts/bench` (release build) — do not edit by hand; run it again. Every figure
        is beside its baseline measured in the same run on the same machine; timings are never
        asserted in tests (these machines are noisy). Latest run:

        - when: \(ISO8601DateFormatter().string(from: started)), \(Int(Date().timeIntervalSince(started) / 60)) min
        - machine: \(machineDescription())
        - size: \(events) synthetic contact-center events where a figure says "the events"


        """
    var section = ""
    for r in rows {
        if r.section != section {
            section = r.section
            out += "\n## \(section)\n\n| what | figure | baseline (same run) | ratio / goal |\n|---|---|---|---|\n"
        }
        func cell(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|") }
        out += "| \(cell(r.what)) | \(cell(r.figure)) | \(cell(r.baseline)) | \(cell(r.goal)) |\n"
    }
    try out.write(toFile: path, atomically: true, encoding: .utf8)
}
