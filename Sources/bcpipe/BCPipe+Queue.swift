import ArgumentParser
import DiskQueue
import EventRows
import Foundation

extension BCPipe {
    /// `bcpipe queue …`: offline inspection of a collector's disk queue.
    struct QueueCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "queue", abstract: "Inspect a collector's disk queue offline.",
            subcommands: [Stat.self, Verify.self, Dump.self, Salvage.self])
    }
}

extension BCPipe.QueueCommand {
    struct Stat: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Segments, bytes, events queued, cursor, losses.")
        @Argument(help: "The queue directory (a collector's queue_dir).") var dir: String
        @Flag(help: "Print one JSON document.") var json = false

        func run() async throws {
            let inspector = try QueueInspector(directory: dir)
            let cursor = inspector.cursor
            var frames = 0
            var events: UInt64 = 0
            var oldest: Int64?
            var damage = 0
            try inspector.walk(fromCursor: true) { finding, _ in
                switch finding {
                case .frame(_, let h):
                    frames += 1
                    events += UInt64(h.count)
                    if h.oldestTimestamp > 0 { oldest = min(oldest ?? h.oldestTimestamp, h.oldestTimestamp) }
                case .damage: damage += 1
                }
            }
            let sizes = inspector.segmentSizes
            let report: [String: Any] = [
                "segments": inspector.segments.count, "bytes": sizes.reduce(0, +), "frames": frames, "events": events,
                "oldest_event_ts": oldest.map {
                    ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double($0) / 1000))
                } ?? NSNull(),
                "lost_events": cursor?.lostEvents ?? 0, "damaged_regions": damage,
                "cursor": cursor.map { "\($0.position.segment):\($0.position.offset)" } ?? NSNull(),
            ]
            if json {
                let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print("queue \(dir)")
                print("  segments \(inspector.segments.count), \(sizes.reduce(0, +)) bytes on disk")
                print(
                    "  unacknowledged: \(events) events in \(frames) frames, oldest \(report["oldest_event_ts"] is NSNull ? "-" : report["oldest_event_ts"]!)"
                )
                print(
                    "  ack cursor: \(cursor.map { "segment \($0.position.segment) offset \($0.position.offset), next event index \($0.nextIndex)" } ?? "none")"
                )
                print(
                    "  lost events counted: \(cursor?.lostEvents ?? 0); damaged regions now: \(damage)\(damage > 0 ? " (run bcpipe queue verify)" : "")"
                )
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Check every frame (checksums, decompression, records); exit 1 on damage, naming segment and offset.")
        @Argument var dir: String

        func run() async throws {
            let inspector = try QueueInspector(directory: dir)
            var frames = 0
            var problems: [String] = []
            try inspector.walk(fromCursor: false) { finding, records in
                switch finding {
                case .frame(let position, _):
                    do {
                        _ = try records()
                        frames += 1
                    } catch {
                        problems.append("segment \(position.segment) offset \(position.offset): \(error)")
                    }
                case .damage(let position, let length, let lost, let detail):
                    problems.append(
                        "segment \(position.segment) offset \(position.offset): \(detail), \(length) bytes, \(lost.map { "\($0) events lost" } ?? "events unknown")"
                    )
                }
            }
            if problems.isEmpty {
                print("ok: \(frames) frames in \(inspector.segments.count) segments verified")
                // Losses counted before (by a salvage, or by a collector reading past damage)
                // are history: said, not reported as damage to repair again.
                if let lost = inspector.cursor?.lostEvents, lost > 0 {
                    print("earlier losses: \(lost) events, counted in lost_events")
                }
                for line in inspector.salvageHistory { print("  \(line)") }
                return
            }
            for p in problems { print("DAMAGED \(p)") }
            print(
                "\(problems.count) damaged region(s), \(frames) good frames; `bcpipe queue salvage \(dir)` rewrites the queue keeping every readable frame"
            )
            throw ExitCode(1)
        }
    }

    struct Dump: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the queued events as NDJSON.")
        @Argument var dir: String
        @Flag(help: "Also print acknowledged frames still on disk.") var all = false

        func run() async throws {
            let inspector = try QueueInspector(directory: dir)
            let out = FileHandle.standardOutput
            var buffer: [UInt8] = []
            try inspector.walk(fromCursor: !all) { finding, records in
                guard case .frame = finding else { return }
                for r in try records() {
                    do {
                        try QueueRecord.appendNDJSON(of: r, to: &buffer)
                    } catch {
                        throw ValidationError("a queued record cannot be read as an event: \(error)")
                    }
                    buffer.append(10)
                }
                if buffer.count > 1 << 20 {
                    out.write(Data(buffer))
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            out.write(Data(buffer))
        }
    }

    struct Salvage: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rewrite a damaged queue keeping every readable frame; the original is kept beside it.")
        @Argument var dir: String

        func run() async throws {
            // salvage() takes the queue's lock: it refuses while a collector has the queue open.
            let result = try QueueInspector(directory: dir).salvage()
            print(
                "salvaged \(dir): kept \(result.kept) frames, dropped \(result.dropped) damaged regions (\(result.lost) events lost, counted now in lost_events); `bcpipe queue verify \(dir)` is clean"
            )
            print("the damaged original is kept in \(result.backup)")
        }
    }
}
