import EventModel
import Foundation
import Lab
import Schema
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("bcpipe command line")
struct CLITests {
    func bcpipe(_ args: [String]) async throws -> Processes.Output {
        try await Processes.output([TestLab.executable] + args, timeout: 120)
    }

    @Test func dbMigrateIsIdempotentThroughTheCommand() async throws {
        let lab = try await TestLab.shared.get()
        let out = try await bcpipe(["db", "migrate", "--config", lab.topologyPath(site: "site1"), "--site", "site1"])
        #expect(out.status == 0, "\(out.text)")
        #expect(
            out.text.contains("site1/mart: up to date (version \(Migration.of(.mart).last!.version))"), "\(out.text)")
        #expect(out.text.contains("site1/idb_site1_a: up to date"))
        let status = try await bcpipe(["status", "--config", lab.topologyPath, "--json"])
        #expect(status.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(status.text.utf8)) as? [String: Any]
        let sites = json?["sites"] as? [[String: Any]]
        #expect(sites?.count == 2)
        #expect(sites?.allSatisfy { $0["reachable"] as? Bool == true && $0["phase"] as? String == "normal" } == true)
    }

    /// A one-site topology file in a directory of its own (the caller removes it).
    static func oneSiteTopology(postgres: String, idbSite: String) throws -> (URL, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("bcpipe.yaml").path
        try """
        deployment: { name: x, mode: active-active }
        sites:
          - { name: site1, postgres: "\(postgres)", coordinator: "127.0.0.1:1" }
        sources:
          - { name: site1/voice, site: site1 }
        collectors:
          - { name: c, source: site1/voice, idb: { site: \(idbSite), database: idb_a }, listen: "127.0.0.1:2", queue_dir: q }
        extractors:
          - { site: site1, role: active }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return (dir, path)
    }

    @Test func aBadTopologyExitsTwoNamingTheKey() async throws {
        let (dir, path) = try Self.oneSiteTopology(postgres: "host=127.0.0.1 port=1", idbSite: "site9")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = try await bcpipe(["db", "migrate", "--config", path])
        #expect(out.status == 2)
        #expect(out.text.contains("collectors[0].idb.site: unknown site \"site9\""), "\(out.text)")

        let env = try await Processes.output(["/usr/bin/env", "BCPIPE_CONFIG=\(path)", TestLab.executable, "status"])
        #expect(env.status == 2, "BCPIPE_CONFIG is the default --config")
        #expect(env.text.contains(path))
    }

    /// Catches a witness that starts without knowing where to listen, or that dies (or hangs,
    /// or traps in an HTTP probe in flight) instead of saying its port is taken.
    @Test func aWitnessNamesWhatIsWrongWithWhereItListens() async throws {
        let (dir, path) = try Self.oneSiteTopology(
            postgres: "host=127.0.0.1 port=1 connect_timeout=1", idbSite: "site1")
        defer { try? FileManager.default.removeItem(at: dir) }
        let nowhere = try await bcpipe(["witness", "run", "--config", path])
        #expect(nowhere.status == 2 && nowhere.text.contains("give --listen host:port"), "\(nowhere.text)")
        let bad = try await bcpipe(["witness", "run", "--config", path, "--listen", "witness"])
        #expect(bad.status == 2 && bad.text.contains("--listen must be host:port"), "\(bad.text)")
        // A port another process holds: exit 1 naming it, every time (the prober's probe in
        // flight when the server gives up must not trap or hang the process).
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(holder, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(bound == 0 && listen(holder, 1) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(holder, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        for _ in 0..<5 {
            let taken = try await Processes.output(
                [TestLab.executable, "witness", "run", "--config", path, "--listen", "127.0.0.1:\(port)"], timeout: 30)
            #expect(taken.status == 1 && taken.text.contains("Address already in use"), "\(taken.text)")
        }
    }

    @Test func usageErrorsExitTwoAndLabErrorsOne() async throws {
        let bad = try await bcpipe(["lab", "link", "site1", "site2", "sideways", "--dir", "/tmp/none"])
        #expect(bad.status == 2)
        #expect(bad.text.contains("the link state must be up or down"))
        let unknown = try await bcpipe(["no-such-command"])
        #expect(unknown.status == 2)
        let noLab = try await bcpipe(["lab", "status", "--dir", "/tmp/bcpipe-no-lab-here"])
        #expect(noLab.status == 1)
        #expect(noLab.text.contains("no lab in /tmp/bcpipe-no-lab-here; start one with `bcpipe lab up"))
        let help = try await bcpipe(["--help"])
        #expect(help.status == 0)
        #expect(help.text.contains("lab"))
    }
}

@Suite("bcpipe queue")
struct QueueCLITests {
    func bcpipe(_ args: [String]) async throws -> Processes.Output {
        try await Processes.output([TestLab.executable] + args, timeout: 120)
    }

    @Test func statVerifyDumpAndSalvage() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cli-queue-\(getpid())").path
        defer {
            for path
                in (try? FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path))
                ?? []
            where path.hasPrefix("cli-queue-\(getpid())") {
                try? FileManager.default.removeItem(
                    atPath: FileManager.default.temporaryDirectory.appendingPathComponent(path).path)
            }
        }
        let writer = try Child([testkit, "queue-writer", dir, "1", "40", "5", "2048"])
        #expect(writer.wait().filter { $0.hasPrefix("acked") }.count == 40)

        let stat = try await bcpipe(["queue", "stat", dir, "--json"])
        #expect(stat.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(stat.text.utf8)) as? [String: Any]
        #expect(json?["events"] as? Int == 200)
        #expect(json?["lost_events"] as? Int == 0)

        let ok = try await bcpipe(["queue", "verify", dir])
        #expect(ok.status == 0)
        #expect(ok.text.hasPrefix("ok: 40 frames"))

        let dump = try await bcpipe(["queue", "dump", dir])
        let lines = dump.text.split(separator: "\n")
        #expect(lines.count == 200)
        #expect(lines.first?.hasPrefix("0 0 0 0 ") == true)

        // Damage the header of the first frame of the second segment.
        let segments = try FileManager.default.contentsOfDirectory(atPath: dir + "/segments").sorted()
        #expect(segments.count >= 2)
        let seg = dir + "/segments/" + segments[1]
        let handle = try #require(FileHandle(forUpdatingAtPath: seg))
        try handle.seek(toOffset: 28 + 10)
        try handle.write(contentsOf: Data([0xFF, 0xFF]))
        try handle.close()

        let bad = try await bcpipe(["queue", "verify", dir])
        #expect(bad.status == 1)
        #expect(bad.text.contains("DAMAGED segment 2 offset 28: damaged frame header"), "\(bad.text)")
        #expect(bad.text.contains("5 events lost"))

        // As an operator types it: from the queue's parent directory, by a relative path (this
        // catches the salvage that moved the original aside and then failed on "open : ").
        let parent = (dir as NSString).deletingLastPathComponent
        let name = (dir as NSString).lastPathComponent
        let salvage = try await Processes.output(
            ["/bin/bash", "-c", "cd '\(parent)' && '\(TestLab.executable)' queue salvage '\(name)'"], timeout: 120)
        #expect(salvage.status == 0, "\(salvage.text)")
        #expect(salvage.text.contains("kept 39 frames, dropped 1 damaged regions (5 events lost"))
        // Catches the salvage loop: verify after a salvage called the counted loss damage and
        // asked for another salvage.
        let after = try await bcpipe(["queue", "verify", dir])
        #expect(after.status == 0, "a salvaged queue verifies clean: \(after.text)")
        #expect(after.text.contains("earlier losses: 5 events"), "\(after.text)")
        #expect(after.text.contains("salvage: kept 39 frames"), "says when the loss was counted: \(after.text)")
        #expect(try await bcpipe(["queue", "dump", dir]).text.split(separator: "\n").count == 195)
        // Catches `events` counting the lost ones: it is what will ship.
        let statAfter = try await bcpipe(["queue", "stat", dir, "--json"])
        let afterJSON = try JSONSerialization.jsonObject(with: Data(statAfter.text.utf8)) as? [String: Any]
        #expect(afterJSON?["events"] as? Int == 195, "\(statAfter.text)")
        #expect(afterJSON?["lost_events"] as? Int == 5)
    }
}

@Suite("bcpipe gen")
struct GenCLITests {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    @Test func reproducesTheCommittedFixtureByteForByte() async throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("gen-\(getpid()).ndjson").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let run = try await Processes.output([
            TestLab.executable, "gen", "--count", "2000", "--seed", "7", "--rate", "50", "--out", out,
        ])
        #expect(run.status == 0, "\(run.text)")
        let fixture = try Data(contentsOf: Self.repository.appendingPathComponent("Fixtures/gen-seed7-2000.ndjson"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == fixture, "the same seed gives the same traffic")
    }

    @Test func theHandWrittenFixtureIsValidAndCoveredByItsExpectedReports() throws {
        let body = try Data(contentsOf: Self.repository.appendingPathComponent("Fixtures/basic-day.ndjson"))
        let parsed = EventParser().parse(body: Array(body))
        #expect(parsed.rejected.isEmpty)
        #expect(parsed.events.count == 35)
        let expected =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: Self.repository.appendingPathComponent("Fixtures/basic-day.expected.json")))
            as? [String: Any]
        let interactions =
            (expected?["interactions"] as? [[String: Any]])?.compactMap { $0["interaction"] as? String } ?? []
        let created = parsed.events.filter { $0.type == .interactionCreated }.compactMap(\.interaction)
        #expect(interactions == created)
        let offers = (expected?["queue_hourly"] as? [[String: Any]])?.reduce(0) { $0 + ($1["offered"] as? Int ?? 0) }
        #expect(offers == parsed.events.filter { $0.type == .interactionQueued }.count)
    }

    /// `--out` writes into the file it names: a symlink stays a symlink (and `/dev/null` a
    /// device — FileManager's atomic create once replaced it with a regular file when run as root);
    /// a path it cannot write is named in the error.
    @Test func genWritesInPlaceAndNamesAPathItCannotWrite() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gen-out-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createSymbolicLink(
            atPath: dir + "/link.ndjson", withDestinationPath: dir + "/real.ndjson")
        let run = try await Processes.output([
            TestLab.executable, "gen", "--count", "100", "--seed", "7", "--out", dir + "/link.ndjson",
        ])
        #expect(run.status == 0, "\(run.text)")
        let kind = try FileManager.default.attributesOfItem(atPath: dir + "/link.ndjson")[.type] as? FileAttributeType
        #expect(kind == .typeSymbolicLink, "the symlink was replaced")
        let written = try String(contentsOfFile: dir + "/real.ndjson", encoding: .utf8)
        #expect(written.split(separator: "\n").count == 100)
        let bad = try await Processes.output([
            TestLab.executable, "gen", "--count", "1", "--out", dir + "/no/such/dir/x.ndjson",
        ])
        #expect(bad.status != 0)
        #expect(bad.text.contains("cannot write \(dir)/no/such/dir/x.ndjson"), "\(bad.text)")
    }

    @Test func genNeedsExactlyOneDestinationAndOneLength() async throws {
        let both = try await Processes.output([
            TestLab.executable, "gen", "--count", "1", "--duration", "1", "--out", "/dev/null",
        ])
        #expect(both.status == 2)
        #expect(both.text.contains("exactly one of --duration and --count"))
        let none = try await Processes.output([TestLab.executable, "gen", "--count", "1"])
        #expect(none.status == 2)
    }
}
