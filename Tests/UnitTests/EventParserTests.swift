import Testing
import Traffic

@testable import EventModel

@Suite("Event parser")
struct EventParserTests {
    let parser = EventParser()

    func parse(_ text: String) -> ParsedBody { parser.parse(body: Array(text.utf8)) }

    func rejection(_ line: String) -> String? {
        let r = parse(line)
        return r.rejected.first?.description
    }

    static let good =
        #"{"source":"site1/voice","seq":7,"ts":"2026-11-21T10:00:00.123Z","type":"interaction.queued","interaction":"c1","queue":"sales"}"#

    @Test func parsesAValidEvent() throws {
        let r = parse(Self.good)
        #expect(r.rejected.isEmpty)
        let e = try #require(r.events.first)
        #expect(e.source == "site1/voice")
        #expect(e.seq == 7)
        #expect(e.ts.rfc3339 == "2026-11-21T10:00:00.123Z")
        #expect(e.type == .interactionQueued)
        #expect(e.queue == "sales")
        #expect(r.lines == [1])
    }

    @Test func everyKindOfEvent() {
        let lines = [
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"interaction.created","interaction":"c","media":"chat"}"#,
            #"{"source":"s","seq":2,"ts":"2026-11-21T10:00:00Z","type":"interaction.answered","interaction":"c","agent":"a"}"#,
            #"{"source":"s","seq":3,"ts":"2026-11-21T10:00:00Z","type":"interaction.held","interaction":"c","agent":"a"}"#,
            #"{"source":"s","seq":4,"ts":"2026-11-21T10:00:00Z","type":"interaction.retrieved","interaction":"c","agent":"a"}"#,
            #"{"source":"s","seq":5,"ts":"2026-11-21T10:00:00Z","type":"interaction.transferred","interaction":"c","agent":"a"}"#,
            #"{"source":"s","seq":6,"ts":"2026-11-21T10:00:00Z","type":"interaction.abandoned","interaction":"c"}"#,
            #"{"source":"s","seq":7,"ts":"2026-11-21T10:00:00Z","type":"interaction.ended","interaction":"c"}"#,
            #"{"source":"s","seq":8,"ts":"2026-11-21T10:00:00Z","type":"agent.login","agent":"a"}"#,
            #"{"source":"s","seq":9,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"a"}"#,
            #"{"source":"s","seq":10,"ts":"2026-11-21T10:00:00Z","type":"agent.not_ready","agent":"a","reason":"lunch"}"#,
            #"{"source":"s","seq":11,"ts":"2026-11-21T10:00:00Z","type":"agent.logout","agent":"a"}"#,
            #"{"source":"s","seq":12,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
        ]
        let r = parse(lines.joined(separator: "\n"))
        #expect(r.rejected == [])
        #expect(r.events.count == 12)
        #expect(r.events[0].direction == .inbound, "direction defaults to inbound on created")
        #expect(r.events[9].reason == "lunch")
    }

    @Test(arguments: [
        (#"{"seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#, "line 1: source: is required"),
        (#"{"source":"s","ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#, "line 1: seq: is required"),
        (#"{"source":"s","seq":1,"type":"heartbeat"}"#, "line 1: ts: is required"),
        (#"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z"}"#, "line 1: type: is required"),
        (
            #"{"source":"s","seq":-1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: seq: must be an integer ≥ 0"
        ),
        (
            #"{"source":"s","seq":"5","ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: seq: must be an integer ≥ 0"
        ),
        (
            #"{"source":"s","seq":1.5,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: seq: must be an integer ≥ 0 (got a fraction or exponent)"
        ),
        (
            #"{"source":"s","seq":9223372036854775808,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: seq: must be less than 2^63"
        ),
        (
            #"{"source":"s","seq":99999999999999999999999,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: seq: must be less than 2^63"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21 10:00","type":"heartbeat"}"#,
            "line 1: ts: must be an RFC 3339 time with offset, e.g. 2026-11-21T10:00:00.123Z"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00","type":"heartbeat"}"#,
            "line 1: ts: must be an RFC 3339 time with offset, e.g. 2026-11-21T10:00:00.123Z"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-02-30T10:00:00Z","type":"heartbeat"}"#,
            "line 1: ts: must be an RFC 3339 time with offset, e.g. 2026-11-21T10:00:00.123Z"
        ),
        (
            #"{"source":"s","seq":1,"ts":1700000000,"type":"heartbeat"}"#,
            "line 1: ts: must be an RFC 3339 time with offset, e.g. 2026-11-21T10:00:00.123Z"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"call.started"}"#,
            "line 1: type: unknown event type \"call.started\"; expected one of interaction.created, interaction.queued, interaction.answered, interaction.held, interaction.retrieved, interaction.transferred, interaction.abandoned, interaction.ended, agent.login, agent.ready, agent.not_ready, agent.logout, heartbeat"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"interaction.queued","queue":"q"}"#,
            "line 1: interaction: is required for interaction.queued"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"interaction.queued","interaction":"c"}"#,
            "line 1: queue: is required for interaction.queued"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"interaction.created","interaction":"c"}"#,
            "line 1: media: is required for interaction.created"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"interaction.created","interaction":"c","media":"fax"}"#,
            "line 1: media: must be one of voice, chat, email, callback (got \"fax\")"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"interaction.created","interaction":"c","media":"voice","direction":"up"}"#,
            "line 1: direction: must be one of inbound, outbound, internal (got \"up\")"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready"}"#,
            "line 1: agent: is required for agent.ready"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":5}"#,
            "line 1: agent: must be a string"
        ),
        (
            #"{"source":"bad source!","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: source: must be 1–128 characters of A–Z a–z 0–9 . _ / - (got \"bad source!\")"
        ),
        (
            #"{"source":"","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: source: must be 1–128 characters of A–Z a–z 0–9 . _ / - (got \"\")"
        ),
        (
            #"{"source":"s","seq":1,"seq":2,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#,
            "line 1: seq: appears more than once"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"a\u0000b"}"#,
            "line 1: agent: must not contain the NUL character (U+0000)"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"\ud800"}"#,
            "line 1: agent: unpaired UTF-16 surrogate in \\u escape"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"a","attrs":{"k":1}}"#,
            "line 1: attrs.k: must be a string"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"a","attrs":[]}"#,
            "line 1: attrs: must be an object of string values"
        ),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"a","attrs":{"k":"1","k":"2"}}"#,
            "line 1: attrs.k: appears more than once"
        ),
        (#"[1,2]"#, "line 1: not a JSON object: a line must be one {…} event"),
        (#"{"source":"s","seq":1"#, "line 1: invalid JSON at byte 22: unterminated object"),
        (#"{"source":"s" "seq":1}"#, "line 1: invalid JSON at byte 15: expected ',' or '}'"),
        (
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"} x"#,
            "line 1: invalid JSON at byte 71: unexpected characters after the event object"
        ),
        (#"{source:"s"}"#, "line 1: invalid JSON at byte 2: expected a field name in double quotes"),
    ])
    func rejectsWithTheFieldAtFault(line: String, expected: String) {
        #expect(rejection(line) == expected)
    }

    @Test func timestampsNormaliseToUTCMilliseconds() throws {
        let cases = [
            ("2026-11-21T12:00:00.123+02:00", "2026-11-21T10:00:00.123Z"),
            ("2026-11-21T10:00:00.1234567Z", "2026-11-21T10:00:00.123Z"),
            ("2026-11-21t10:00:00.5z", "2026-11-21T10:00:00.500Z"),
            ("2026-11-21T00:30:00-01:00", "2026-11-21T01:30:00.000Z"),
            ("2024-02-29T23:59:59.999Z", "2024-02-29T23:59:59.999Z"),
            ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
        ]
        for (input, expected) in cases {
            #expect(Timestamp(rfc3339: input)?.rfc3339 == expected, "\(input)")
        }
        #expect(Timestamp(rfc3339: "2025-02-29T00:00:00Z") == nil)
        #expect(Timestamp(rfc3339: "2026-11-21T24:00:00Z") == nil)
        #expect(Timestamp(rfc3339: "2026-11-21T10:00:60Z") == nil)
        #expect(Timestamp(rfc3339: "2026-11-21T10:00:00.Z") == nil)
        #expect(Timestamp(rfc3339: "2026-11-21T10:00:00+0200") == nil)
        #expect(Timestamp(rfc3339: "2026-11-21T10:00:00Z")?.millisecondsSinceEpoch == 1_795_255_200_000)
    }

    @Test func rejectsInvalidUTF8AndRawControlCharacters() {
        let prefix = Array(#"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":""#.utf8)
        let suffix = Array(#""}"#.utf8)
        for bad: [UInt8] in [[0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]] {
            let r = parser.parse(body: prefix + bad + suffix)
            #expect(r.rejected.first?.description == "line 1: agent: invalid UTF-8", "\(bad)")
        }
        let r = parser.parse(body: prefix + [0x01] + suffix)
        #expect(r.rejected.first?.description == "line 1: agent: control character U+0001 must be escaped")
        let ok = parser.parse(body: prefix + Array("Zoë 日本 🎧".utf8) + suffix)
        #expect(ok.events.first?.agent == "Zoë 日本 🎧")
    }

    @Test func enforcesLengthLimits() {
        let long = String(repeating: "é", count: 129)
        let r = parse(#"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"\#(long)"}"#)
        #expect(r.rejected.first?.description == "line 1: agent: must be at most 128 characters")
        let ok = parse(
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"\#(String(repeating: "é", count: 128))"}"#
        )
        #expect(ok.rejected.isEmpty, "128 characters of two bytes each are fine")
        let attrs = (0...64).map { #""k\#($0)":"v""# }.joined(separator: ",")
        let r2 = parse(#"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat","attrs":{\#(attrs)}}"#)
        #expect(r2.rejected.first?.description == "line 1: attrs: must have at most 64 keys")
        let big = String(repeating: "v", count: 1025)
        let r3 = parse(
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat","attrs":{"seg":"\#(big)"}}"#)
        #expect(r3.rejected.first?.description == "line 1: attrs.seg: must be at most 1024 characters")
        let huge =
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat","pad":""#
            + String(repeating: "x", count: 70_000) + #""}"#
        let r4 = parse(huge)
        #expect(
            r4.rejected.first?.description == "line 1: line is \(huge.utf8.count) bytes, longer than the limit of 65536"
        )
    }

    @Test func ignoresUnknownFieldsOfAnyShapeButBoundsNesting() {
        let r = parse(
            #"{"x":{"a":[1,2.5e-3,true,false,null,{"b":"c"}]},"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat","y":-0.5}"#
        )
        #expect(r.rejected.isEmpty)
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        let r2 = parse(#"{"x":\#(deep),"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"heartbeat"}"#)
        #expect(r2.rejected.first?.reason.contains("nesting deeper than 64 levels") == true)
    }

    @Test func sqlLookingValuesAreJustData() throws {
        let nasty = #"x'); DROP TABLE idb.events; --"#
        let r = parse(
            #"{"source":"s","seq":1,"ts":"2026-11-21T10:00:00Z","type":"agent.ready","agent":"\#(nasty)","attrs":{"q":"' OR 1=1 --"}}"#
        )
        let e = try #require(r.events.first)
        #expect(e.agent == nasty)
        #expect(e.attrs["q"] == "' OR 1=1 --")
    }

    @Test func numbersLinesAndSkipsBlankOnes() {
        let body =
            "\n" + Self.good + "\r\n   \n" + "{bad\n"
            + Self.good.replacingOccurrences(of: "\"seq\":7", with: "\"seq\":8")
        let r = parse(body)
        #expect(r.lines == [2, 5])
        #expect(r.rejected.map(\.line) == [4])
        #expect(r.rejected.first?.error.hasPrefix("invalid JSON") == true)
    }

    @Test func unknownSourcesAreRejectedWhenTheTopologyIsKnown() {
        let p = EventParser(isKnownSource: { $0 == "site1/voice" })
        let r = p.parse(body: Array(Self.good.replacingOccurrences(of: "site1/voice", with: "site9/voice").utf8))
        #expect(
            r.rejected.first?.description
                == "line 1: source: unknown source \"site9/voice\": not a source of the topology")
        #expect(p.parse(body: Array(Self.good.utf8)).events.count == 1)
    }

    @Test func encoderRoundTrips() throws {
        let e = Event(
            source: "site2/chat", seq: 1 << 62, ts: Timestamp(rfc3339: "2026-01-02T03:04:05.006Z")!,
            type: .interactionCreated,
            interaction: "c\"1\\\n\t", media: .email, direction: .outbound, queue: nil, agent: "日本", reason: nil,
            attrs: ["b": "2", "a": "1\u{1}"])
        let line = e.json
        #expect(
            line.hasPrefix(
                #"{"source":"site2/chat","seq":4611686018427387904,"ts":"2026-01-02T03:04:05.006Z","type":"interaction.created""#
            ))
        let back = try #require(parse(line).events.first)
        #expect(back == e)
    }

    /// Seeded random mutations of valid lines: the parser never crashes, every non-blank line is
    /// either accepted or rejected with a line number, and what it accepts re-encodes and re-parses equal.
    @Test func fuzzedInputIsAlwaysAnsweredLineByLine() {
        var rng = SplitMix(seed: 20261122)
        let seeds = [
            Self.good,
            #"{"source":"a.b/c-d_e","seq":0,"ts":"2026-11-21T10:00:00+05:30","type":"interaction.created","interaction":"x","media":"voice","attrs":{"lang":"fr","seg":"gold"}}"#,
            #"{"source":"s","seq":3,"ts":"2026-11-21T10:00:00Z","type":"heartbeat","extra":[{"a":null}]}"#,
        ]
        let alphabet =
            Array(#"{}[]":,\"0123456789.-eE tfnul\u00ff"#.utf8) + [0x00, 0x0A, 0x0D, 0x80, 0xC3, 0xE2, 0xF0, 0xFF]
        for _ in 0..<3000 {
            var bytes = Array(seeds[Int(rng.next() % UInt64(seeds.count))].utf8)
            let mutations = 1 + Int(rng.next() % 6)
            for _ in 0..<mutations where !bytes.isEmpty {
                let at = Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 4 {
                case 0: bytes[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
                default: bytes = Array(bytes[..<at])  // truncation
                }
            }
            let r = parser.parse(body: bytes)
            // A line is blank when, less one trailing CR, it holds only spaces and tabs.
            let nonBlankLines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).filter { line in
                let body = line.last == 0x0D ? line.dropLast() : line[...]
                return body.contains { $0 != 0x20 && $0 != 0x09 }
            }.count
            #expect(r.events.count + r.rejected.count == nonBlankLines)
            for e in r.events {
                #expect(parser.parse(body: Array(e.json.utf8)).events == [e])
            }
        }
    }

    @Test func randomBytesNeverCrash() {
        var rng = SplitMix(seed: 7)
        for _ in 0..<2000 {
            let n = Int(rng.next() % 300)
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let r = parser.parse(body: bytes)
            #expect(r.events.count + r.rejected.count <= bytes.count + 1)
        }
    }
}
