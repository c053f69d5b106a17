import ArgumentParser
import EventModel
import Foundation
import Topology
import Traffic

extension BCPipe {
    /// `bcpipe gen`: realistic, seeded contact-center traffic to a file or to the collectors.
    struct Gen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Generate realistic contact-center events (deterministic for a seed) to a file or to the collectors.")
        @OptionGroup var topologyOptions: TopologyOptions
        @Option(help: "Events per second, all sources together.") var rate: Double = 100
        @Option(help: "Seconds of traffic (event time).") var duration: Double?
        @Option(help: "Number of events, all sources together.") var count: Int?
        @Option(help: "Random seed: the same seed gives the same traffic.") var seed: UInt64 = 1
        @Option(help: "Comma-separated sources (default: every source of the topology, or site1/voice,site2/voice).")
        var sources: String?
        @Option(help: "Write NDJSON here ('-' for stdout).") var out: String?
        @Flag(help: "POST each source's events to both collectors of its pair, in real time.") var post = false
        @Option(
            help:
                "Time of the first event: RFC 3339, or 'now' (default: now with --post, 2026-11-21T08:00:00Z otherwise)."
        ) var start: String?
        @Option(
            help:
                "Seq of each source's first event (default: with --start now, the start time in microseconds, so a later run never reuses a seq; 1 otherwise)."
        ) var firstSeq: Int64?
        @Option(name: .customLong("batch-ms"), help: "With --post: milliseconds of traffic per request.")
        var batchMilliseconds: Int = 200

        func validate() throws {
            guard (out == nil) != !post else { throw ValidationError("give exactly one of --out FILE and --post") }
            guard (duration == nil) != (count == nil) else {
                throw ValidationError("give exactly one of --duration and --count")
            }
            guard rate > 0 else { throw ValidationError("--rate must be > 0") }
        }

        func run() async throws {
            let topology: Topology? = post || sources == nil ? try? topologyOptions.load() : nil
            if post && topology == nil { _ = try topologyOptions.load() }  // the real error
            let names =
                sources.map { $0.split(separator: ",").map(String.init) }
                ?? topology?.sources.map(\.name) ?? ["site1/voice", "site2/voice"]
            for n in names where !EventLimits.isValidSourceName(n) {
                throw ValidationError("\(n) is not a valid source name")
            }
            let startMs: Int64
            var seq0: Int64 = 1
            switch start ?? (post ? "now" : "2026-11-21T08:00:00Z") {
            case "now":
                startMs = Int64(Date().timeIntervalSince1970 * 1000)
                seq0 = startMs * 1000
            case let text:
                guard let t = EventModel.Timestamp(rfc3339: text) else {
                    throw ValidationError("--start must be RFC 3339 or now")
                }
                startMs = t.millisecondsSinceEpoch
            }
            // About six events per interaction, agents' state changes included.
            let profile = TrafficGenerator.Profile.staffed(arrivalsPerSecond: rate / Double(names.count) / 6.0)
            let generators = names.map {
                TrafficGenerator(source: $0, seed: seed, start: startMs, firstSeq: firstSeq ?? seq0, profile: profile)
            }
            let endMs = duration.map { startMs + Int64($0 * 1000) }
            var merged = MergedTraffic(generators: generators, endMs: endMs, limit: count)
            if let out {
                try write(&merged, to: out)
            } else if let topology {
                try await postAll(&merged, topology: topology, names: names)
            }
        }

        func write(_ merged: inout MergedTraffic, to path: String) throws {
            let handle: FileHandle
            if path == "-" {
                handle = .standardOutput
            } else {
                handle = try OutputFile.open(path, what: "a writable file or - for stdout")
            }
            var buffer: [UInt8] = []
            var n = 0
            while let e = merged.next() {
                e.appendJSON(to: &buffer)
                buffer.append(10)
                n += 1
                if buffer.count > 1 << 20 {
                    handle.write(Data(buffer))
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            handle.write(Data(buffer))
            if path != "-" {
                try handle.close()
                FileHandle.standardError.write(Data("wrote \(n) events to \(path)\n".utf8))
            }
        }

        func postAll(_ merged: inout MergedTraffic, topology: Topology, names: [String]) async throws {
            let poster = Poster()
            var targets: [String: [String]] = [:]
            for n in names {
                let urls = topology.collectors.filter { $0.source == n }.map { "http://\($0.listen)" }
                guard !urls.isEmpty else { throw ValidationError("source \(n) has no collector in the topology") }
                targets[n] = urls
            }
            let wallStart = Date()
            let firstTs = merged.peekTime ?? 0
            var sent = 0
            var batches: [String: [UInt8]] = [:]
            var counts: [String: Int] = [:]
            var done = false
            while !done {
                // Everything due by the next tick of real time.
                let elapsed = Date().timeIntervalSince(wallStart) + Double(batchMilliseconds) / 1000
                let dueBy = firstTs + Int64(elapsed * 1000)
                while let t = merged.peekTime, t <= dueBy, let e = merged.next() {
                    e.appendJSON(to: &batches[e.source, default: []])
                    batches[e.source]!.append(10)
                    counts[e.source, default: 0] += 1
                    sent += 1
                }
                done = merged.peekTime == nil
                let work = batches
                batches = [:]
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (source, body) in work {
                        for url in targets[source]! {
                            group.addTask { try await poster.post(body, to: url) }
                        }
                    }
                    try await group.waitForAll()
                }
                if !done {
                    let next = wallStart.addingTimeInterval(Double((merged.peekTime ?? dueBy) - firstTs) / 1000)
                    let wait = next.timeIntervalSinceNow
                    if wait > 0 { try await Task.sleep(for: .seconds(min(wait, Double(batchMilliseconds) / 1000))) }
                }
            }
            let wall = Date().timeIntervalSince(wallStart)
            print(
                "generated \(sent) events in \(String(format: "%.1f", wall)) s (\(Int(Double(sent) / max(wall, 0.001))) events/s), seed \(seed)"
            )
            for (url, t) in poster.results.sorted(by: { $0.key < $1.key }) {
                let sorted = t.latencies.sorted()
                let p99 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
                print(
                    "  \(url): accepted \(t.accepted), duplicates \(t.duplicates), rejected \(t.rejected), retries \(t.retries), ack p99 \(String(format: "%.1f", p99 * 1000)) ms"
                )
            }
        }
    }
}

/// The sources' streams merged in time order, cut at an end time or a count.
struct MergedTraffic {
    var generators: [TrafficGenerator]
    var heads: [Event?]
    let endMs: Int64?
    let limit: Int?
    var produced = 0

    init(generators: [TrafficGenerator], endMs: Int64?, limit: Int?) {
        var gens = generators
        heads = gens.indices.map { gens[$0].next() }
        self.generators = gens
        self.endMs = endMs
        self.limit = limit
    }

    var peekTime: Int64? {
        if let limit, produced >= limit { return nil }
        let t = heads.compactMap { $0?.ts.millisecondsSinceEpoch }.min()
        if let t, let endMs, t >= endMs { return nil }
        return t
    }

    mutating func next() -> Event? {
        guard let t = peekTime, let i = heads.firstIndex(where: { $0?.ts.millisecondsSinceEpoch == t }) else {
            return nil
        }
        let e = heads[i]
        heads[i] = generators[i].next()
        produced += 1
        return e
    }
}
