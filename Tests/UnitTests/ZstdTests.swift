import Foundation
import Testing
import Traffic

@testable import ZstdCompression

@Suite("zstd")
struct ZstdTests {
    func sample(_ n: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix(seed: seed)
        let words = [
            "site1/voice", "interaction.queued", "\"agent\":", "sales", "2026-11-21T10:00:00.123Z", "{", "}", ",",
        ]
        var out: [UInt8] = []
        while out.count < n { out.append(contentsOf: words[Int(rng.next() % UInt64(words.count))].utf8) }
        return Array(out.prefix(n))
    }

    @Test(arguments: [0, 1, 100, 65_536, 1_000_003])
    func roundTrips(size: Int) throws {
        let input = sample(size, seed: UInt64(size))
        let compressed = try Zstd.compress(input)
        #expect(try Zstd.decompress(compressed, maxOutput: size) == input)
        if size > 1000 { #expect(compressed.count < size / 3, "repetitive text compresses") }
    }

    @Test func streamsAndConcatenatedFrames() throws {
        let input = sample(300_000, seed: 1)
        var c = try ZstdCompressor()
        var out: [UInt8] = []
        for chunk in stride(from: 0, to: input.count, by: 7_777) {
            try input[chunk..<min(chunk + 7_777, input.count)].withUnsafeBytes { try c.streamChunk($0) { out += $0 } }
        }
        try c.finishStream { out += $0 }
        out += try Zstd.compress(Array("tail".utf8))
        var d = try ZstdDecompressor()
        var back: [UInt8] = []
        for chunk in stride(from: 0, to: out.count, by: 1000) {
            try out[chunk..<min(chunk + 1000, out.count)].withUnsafeBytes {
                try d.decompress($0, maxOutput: 1 << 30) { back += $0 }
            }
        }
        try d.finish()
        #expect(back == input + Array("tail".utf8))
    }

    @Test func corruptAndTruncatedInputAreErrors() throws {
        let compressed = try Zstd.compress(sample(10_000, seed: 3))
        #expect(throws: ZstdError.self) { try Zstd.decompress(Array("not zstd at all".utf8), maxOutput: 1 << 20) }
        do {
            _ = try Zstd.decompress(Array(compressed.prefix(compressed.count / 2)), maxOutput: 1 << 20)
            Issue.record("a truncated frame must not decode")
        } catch let e as ZstdError {
            #expect(e.code == .corruptInput)
        }
    }

    @Test func refusesToInflatePastTheLimit() throws {
        let bomb = try Zstd.compress([UInt8](repeating: 0, count: 10_000_000))
        #expect(bomb.count < 2_000)
        do {
            _ = try Zstd.decompress(bomb, maxOutput: 1_000_000)
            Issue.record("must refuse")
        } catch let e as ZstdError {
            // Its 2 MiB window alone is more than a 1 MB output needs: refused at the header.
            #expect(e.code == .windowTooLarge || e.code == .outputTooLarge)
        }
        let smallWindow = try Zstd.compress([UInt8](repeating: 0, count: 100_000))
        do {
            _ = try Zstd.decompress(smallWindow, maxOutput: 50_000)
            Issue.record("must refuse")
        } catch let e as ZstdError {
            #expect(e.code == .outputTooLarge)
        }
    }

    // Catches a decoder left at zstd's default window limit (128 MiB): a crafted frame header
    // declaring that window would make every concurrent ingest request allocate it.
    @Test func refusesAFrameDeclaringAHugeWindowBeforeAllocatingIt() throws {
        // Magic, a frame header without content size (descriptor 0), a window descriptor of
        // 2^(10+17) = 128 MiB, then a raw block of 1 byte.
        let frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 17 << 3, 0x09, 0x00, 0x00, 0x41]
        #expect(Zstd.windowLog(for: 16 << 20) == 24)
        #expect(Zstd.windowLog(for: (16 << 20) + 1) == 25)
        #expect(Zstd.windowLog(for: 10) == 10)
        do {
            _ = try Zstd.decompress(frame, maxOutput: 16 << 20)
            Issue.record("must refuse")
        } catch let e as ZstdError {
            #expect(e.code == .windowTooLarge, "\(e)")
        }
        // The same frame is valid: with a decoder allowed that window it decodes.
        var open = try ZstdDecompressor(windowLogMax: 27)
        var out: [UInt8] = []
        try frame.withUnsafeBytes { try open.decompress($0, maxOutput: 10) { out += $0 } }
        #expect(out == [0x41])
    }

    @Test func interoperatesWithTheCommandLineTool() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/zstd") else {
            Issue.record("the zstd command line tool is missing: apt-get install zstd")
            return
        }
        let input = sample(200_000, seed: 9)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("zstd-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(try Zstd.compress(input)).write(to: dir.appendingPathComponent("ours.zst"))
        try Data(input).write(to: dir.appendingPathComponent("plain"))
        for args in [
            [
                "-q", "-d", "-f", dir.appendingPathComponent("ours.zst").path, "-o",
                dir.appendingPathComponent("ours.out").path,
            ],
            [
                "-q", "-3", "-f", dir.appendingPathComponent("plain").path, "-o",
                dir.appendingPathComponent("cli.zst").path,
            ],
        ] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/zstd")
            p.arguments = args
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
        #expect(try Data(contentsOf: dir.appendingPathComponent("ours.out")) == Data(input))
        let cli = [UInt8](try Data(contentsOf: dir.appendingPathComponent("cli.zst")))
        #expect(try Zstd.decompress(cli, maxOutput: input.count) == input)
    }
}
