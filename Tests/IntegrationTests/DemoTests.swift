import Foundation
import Lab
import Testing

/// `bcpipe demo`, the README's main command, end to end: every act reconciled as promised, the
/// queue-hourly report printed, the HTML report of the run well-formed with its timeline and
/// charts, rendered by a real browser, and no process left behind.
@Suite("The demo", .serialized)
struct DemoTests {
    @Test func theDemoPlaysEveryActAsPromised() async throws {
        let target = FileManager.default.temporaryDirectory.appendingPathComponent("demo-\(getpid()).html").path
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bcpipe-test-demo-\(getpid())").path
        // --report names a symlink: the report is written into the file it points to, and the
        // symlink stays (catches a write that renames a temporary file over the path).
        let report = target + ".link"
        try? FileManager.default.removeItem(atPath: report)
        try FileManager.default.createSymbolicLink(atPath: report, withDestinationPath: target)
        defer {
            try? FileManager.default.removeItem(atPath: report)
            try? FileManager.default.removeItem(atPath: target)
        }
        let out = try await Processes.output(
            [
                TestLab.executable, "demo", "--dir", dir, "--base-port", "\(TestLab.basePort + 3200)", "--act-seconds",
                "8", "--report", report,
            ], timeout: 900)
        #expect(out.status == 0, "\(out.text)")
        for n in 1...7 { #expect(out.text.contains("== act \(n): "), "act \(n)") }
        #expect(out.text.components(separatedBy: "✓ as promised").count == 8, "\(out.text)")
        #expect(out.text.contains("7 of 7 acts as promised"))
        #expect(out.text.contains("reconciliation (site2/mart"))
        // The long outage: an operator's declaration of site1 from site2 is stopped by the witness.
        #expect(out.text.contains("during the cut: refused (witness-reaches-failed-site)"), "\(out.text)")
        #expect(out.text.contains("lost 0 · miscounted 0 · unexpected 0"))
        #expect(out.text.contains("== report queue-hourly"))
        // The second zone's sub-hour intervals, their times in that zone (CONTRACT 5.1).
        #expect(out.text.contains("== report queue-intervals --level sub_hour --tz America/New_York"))
        #expect(out.text.contains("-05  ") || out.text.contains("-04  "), "period starts in New York time")
        #expect(out.text.contains("lab stopped; no process left"))
        // No process of the lab is left.
        let left = try await Processes.output(["/usr/bin/pgrep", "-f", dir])
        #expect(left.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(left.text)")

        #expect(
            try FileManager.default.attributesOfItem(atPath: report)[.type] as? FileAttributeType
                == .typeSymbolicLink, "the symlink was replaced")
        let html = try String(contentsOfFile: target, encoding: .utf8)
        let doc = try HTMLNode.parse(html)
        #expect(doc.element(id: "verdict")?.attributes["class"] == "ok")
        let acts = try #require(doc.element(id: "acts")).rows
        #expect(acts.count == 7)
        #expect(acts.allSatisfy { $0.last == "✓" }, "\(acts)")
        #expect(acts[2][0].contains("WAN outage longer") && acts[2][3].contains("backfilled"), "\(acts[2])")
        let timeline = try #require(doc.element(id: "timeline"))
        #expect(timeline.all("rect").count == 7)
        let queues = try #require(doc.element(id: "queues")).all("polyline")
        #expect(queues.count >= 4)
        // The outages show: some collector queued events during them.
        let peak = try #require(doc.element(id: "queues")).all("text").contains {
            $0.allText.contains("(max ") && !$0.allText.contains("(max 0.0 events)")
        }
        #expect(peak, "a queue depth above zero during the outages")
        #expect(try #require(doc.element(id: "lags")).all("polyline").count >= 2)
        #expect(try #require(doc.element(id: "freshness")).all("polyline").count == 1)
        // A missing browser is a failure, not a skip: the rendering is part of what is checked.
        guard Browser.available else {
            Issue.record(Comment(rawValue: Browser.missing))
            return
        }
        let dom = try await Browser.dumpDOM("file://" + report)
        #expect(dom.contains("Every act as promised."))
        #expect(dom.contains("<svg id=\"queues\""))
    }
}
