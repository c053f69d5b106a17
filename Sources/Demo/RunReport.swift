import Foundation

/// The HTML report of a demo run: one self-contained file (inline CSS and SVG, no script, no
/// network) with the timeline of acts and, on the same time axis, the queue depth of every
/// collector, the extraction lag of every source and the mart's freshness — so the outages, the
/// site failure and the recovery show at a glance.
extension DemoStory.Result {
    public func html() -> String {
        var out = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"/>
            <title>bcpipe demo — \(ok ? "as promised" : "NOT as promised")</title>
            <style>
            body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:980px;color:#222}
            h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
            table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
            .ok{color:#176b2c}.bad{color:#b00020;font-weight:600}.did{color:#555;font-size:.9em;margin:0;padding-left:1.2em}
            svg{display:block;margin:.3em 0 1em}svg text{font:11px system-ui,sans-serif;fill:#444}
            </style></head><body>

            """
        out += "<h1>bcpipe demo: the business-continuity story</h1>\n"
        out +=
            #"<p id="verdict" class="\#(ok ? "ok" : "bad")">\#(ok ? "Every act as promised." : "Some act did NOT do what it promises.") "#
            + "Started \(esc(startedAt)), \(Int(seconds)) s, \(esc(mode)), stuck threshold \(stuckThreshold) s, reporting mart at the end: \(esc(reportingSite ?? "none")).</p>\n"

        out += "<h2>Timeline</h2>\n" + timeline()
        out +=
            #"<table id="acts"><thead><tr><th>act</th><th>time</th><th>phase</th><th>reconciliation</th><th></th></tr></thead><tbody>"#
        for a in acts {
            out += "<tr><td>\(a.number). \(esc(a.title))<ul class=\"did\">"
            for d in a.did { out += "<li>\(esc(d))</li>" }
            out += "</ul></td><td>\(Int(a.started))–\(Int(a.ended)) s</td><td>\(esc(a.phase))</td>"
            out += "<td>\(esc(a.reconciliation?.line ?? "-"))</td>"
            out +=
                a.ok
                ? #"<td class="ok">✓</td>"# : #"<td class="bad">✗ \#(esc(a.problems.joined(separator: "; ")))</td>"#
            out += "</tr>\n"
        }
        out += "</tbody></table>\n"

        let collectors = Set(samples.flatMap { $0.queues.keys }).sorted()
        out += "<h2>Queue depth per collector (events on disk)</h2>\n"
        out += chart(
            id: "queues", unit: "events", collectors.map { c in (c, samples.map { ($0.t, Double($0.queues[c] ?? 0)) }) }
        )
        let sources = Set(samples.flatMap { $0.lags.keys }).sorted()
        out += "<h2>Extraction lag per source in the reporting mart</h2>\n"
        out += chart(
            id: "lags", unit: "s",
            sources.map { s in (s, samples.compactMap { x in x.lags[s].map { (x.t, $0) } }) })
        out += "<h2>Mart freshness (now − completeness watermark)</h2>\n"
        out += chart(
            id: "freshness", unit: "s", [("freshness", samples.compactMap { x in x.freshness.map { (x.t, $0) } })])
        out += "</body></html>\n"
        return out
    }

    var span: Double { max(seconds, samples.last?.t ?? 0, 1) }

    func timeline() -> String {
        let (w, h) = (940.0, 44.0)
        var svg = #"<svg id="timeline" width="\#(Int(w))" height="\#(Int(h))" viewBox="0 0 \#(Int(w)) \#(Int(h))">"#
        for (i, a) in acts.enumerated() {
            let x = a.started / span * w
            let width = max(2, (a.ended - a.started) / span * w)
            svg +=
                #"<rect x="\#(f(x))" y="4" width="\#(f(width))" height="20" fill="\#(a.ok ? Self.band[i % 2] : "#f4c7c3")"><title>\#(esc(a.title))</title></rect>"#
            svg += #"<text x="\#(f(x + 3))" y="18">\#(a.number)</text>"#
        }
        svg += #"<text x="0" y="40">0 s</text><text x="\#(f(w - 40))" y="40">\#(Int(span)) s</text></svg>"#
        return svg + "\n"
    }

    static let band = ["#dbe8f6", "#c6dbef"]
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    /// A line chart over the run's time axis, with the acts shaded behind.
    func chart(id: String, unit: String, _ series: [(String, [(Double, Double)])]) -> String {
        let (w, h, left, bottom) = (940.0, 200.0, 50.0, 22.0)
        let top = max(1, series.flatMap { $0.1.map(\.1) }.max() ?? 1) * 1.1
        let x = { (t: Double) in left + t / self.span * (w - left) }
        let y = { (v: Double) in (h - bottom) - v / top * (h - bottom - 8) }
        var svg =
            #"<svg id="\#(id)" width="\#(Int(w))" height="\#(Int(h + 16 * Double(series.count)))" viewBox="0 0 \#(Int(w)) \#(Int(h + 16 * Double(series.count)))">"#
        for (i, a) in acts.enumerated() {
            svg +=
                #"<rect x="\#(f(x(a.started)))" y="0" width="\#(f(max(1, x(a.ended) - x(a.started))))" height="\#(f(h - bottom))" fill="\#(Self.band[i % 2])" opacity="0.5"/>"#
        }
        svg += #"<line x1="\#(f(left))" y1="\#(f(h - bottom))" x2="\#(f(w))" y2="\#(f(h - bottom))" stroke="gray"/>"#
        svg += #"<text x="0" y="12">\#(fmt(top / 1.1)) \#(esc(unit))</text><text x="0" y="\#(f(h - bottom))">0</text>"#
        svg +=
            #"<text x="\#(f(left))" y="\#(f(h - 6))">0 s</text><text x="\#(f(w - 40))" y="\#(f(h - 6))">\#(Int(span)) s</text>"#
        for (i, (name, points)) in series.enumerated() {
            let color = Self.palette[i % Self.palette.count]
            if !points.isEmpty {
                let path = points.map { "\(f(x($0.0))),\(f(y($0.1)))" }.joined(separator: " ")
                svg +=
                    #"<polyline class="series" data-name="\#(esc(name))" fill="none" stroke="\#(color)" stroke-width="1.6" points="\#(path)"/>"#
            }
            let ly = h + 12 + 16 * Double(i)
            svg +=
                #"<rect x="\#(f(left))" y="\#(f(ly - 9))" width="10" height="10" fill="\#(color)"/><text x="\#(f(left + 14))" y="\#(f(ly))">\#(esc(name)) (max \#(fmt(points.map(\.1).max() ?? 0)) \#(esc(unit)))</text>"#
        }
        return svg + "</svg>\n"
    }

    func f(_ v: Double) -> String { String(format: "%.1f", v) }
    func fmt(_ v: Double) -> String { v >= 100 ? String(Int(v.rounded())) : String(format: "%.1f", v) }
    func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
