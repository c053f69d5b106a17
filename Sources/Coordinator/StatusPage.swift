import Foundation

/// HTML of the operator's status page (`GET /` of a coordinator): the same data as
/// `bcpipe status --json`, one self-contained page (no script, no network) that reloads itself.
extension DeploymentStatus {
    public func html(refreshSeconds: Int = 2, viewpoint: String) -> String {
        var h = HTML()
        let reporting = reportingSite.map { "\($0)/mart" } ?? "none"
        h.raw(
            """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"/>
            <meta http-equiv="refresh" content="\(refreshSeconds)"/>
            <title>bcpipe · \(HTML.escape(deployment)) · \(HTML.escape(phase?.rawValue ?? "?"))</title>
            <style>\(HTML.style)</style></head><body>
            """)
        h.raw("<header>")
        h.element("h1", "bcpipe — \(deployment)")
        h.raw(#"<dl class="summary">"#)
        for (k, v, cls) in [
            ("phase", phase?.rawValue ?? "?", phase == .normal ? "ok" : "warn"), ("mode", mode.rawValue, ""),
            ("epoch", epoch.map(String.init) ?? "?", ""),
            ("reporting mart", reporting, reportingSite == nil ? "bad" : ""),
            ("interval views", intervalViews?.summary ?? "not built yet", ""),
        ] {
            h.raw(#"<div id="\#(k.replacingOccurrences(of: " ", with: "-"))" class="\#(cls)">"#)
            h.element("dt", k)
            h.element("dd", v)
            h.raw("</div>")
        }
        h.raw("</dl>")
        h.element("p", "as \(viewpoint) sees it at \(collectedAt); reloads every \(refreshSeconds) s", class: "meta")
        h.raw("</header>")

        h.element("h2", "Sites and links")
        h.table(
            id: "sites",
            [
                "site", "link from \(viewpoint)", "coordinator", "mart", "phase", "epoch", "fence", "retired",
                "replication",
            ],
            sites.map { s in
                let link = s.name == viewpoint ? "local" : (s.reachable ? "up" : "DOWN")
                var replication = s.replication.map {
                    "to \($0.subscription): \($0.state), lag \($0.replayLagSeconds.map { String(format: "%.3f s", $0) } ?? "-")"
                }
                replication += s.following.map(\.description)
                return [
                    .text(s.name), .status(link, link == "DOWN" ? "bad" : "ok"),
                    .status(s.coordinatorAnswers ? "up" : "DOWN", s.coordinatorAnswers ? "ok" : "bad"),
                    .text(s.reachable ? (s.role?.rawValue ?? "?") : "unreachable"), .text(s.phase?.rawValue ?? "-"),
                    .text(s.epoch.map(String.init) ?? "-"),
                    .status(s.fenced.map { "FENCED: \($0)" } ?? "-", s.fenced == nil ? "" : "bad"),
                    .text(s.retired.isEmpty ? "-" : s.retired.joined(separator: ", ")),
                    .text(replication.isEmpty ? "-" : replication.joined(separator: "; ")),
                ]
            })

        h.element("h2", "Witnesses")
        h.element(
            "p", partitionGuard, id: "partition-guard",
            class: witnesses.isEmpty || !witnesses.contains(where: \.reachable) ? "warn" : "ok")
        if !witnesses.isEmpty {
            h.table(
                id: "witnesses", ["witness", "answers"] + sites.map { "sees \($0.name)" },
                witnesses.map { w in
                    [
                        .text(w.address),
                        .status(w.reachable ? "yes" : "NO: \(w.error ?? "")", w.reachable ? "ok" : "bad"),
                    ]
                        + sites.map { site in
                            guard let r = w.sees.first(where: { $0.site == site.name }) else { return .text("-") }
                            return .status(r.summary, r.seesSite ? "ok" : "warn")
                        }
                })
        }

        h.element("h2", "Collectors")
        h.table(
            id: "collectors", ["collector", "source → IDB", "mode", "queue depth", "oldest queued", "lost"],
            collectors.map { c in
                let age =
                    c.oldestEventTs.flatMap { ISO8601DateFormatter.parse($0) }.map {
                        String(format: "%.0f s", Date().timeIntervalSince($0))
                    } ?? "-"
                return [
                    .text(c.name), .text("\(c.source) → \(c.idb)"),
                    .status(
                        c.running ? (c.mode?.rawValue ?? "?") : "DOWN",
                        !c.running ? "bad" : c.mode == .direct ? "ok" : "warn"),
                    .text(c.running ? "\(c.queueEvents ?? 0) events" : "-"), .text(age),
                    .status("\(c.lostEvents ?? 0)", (c.lostEvents ?? 0) > 0 ? "bad" : ""),
                ]
            })

        h.element("h2", "Extractors")
        h.table(
            id: "extractors", ["site", "role", "cycles", "complete through", "source", "state", "watermark", "lag"],
            sites.flatMap { s -> [[HTML.Cell]] in
                let head: [HTML.Cell] = [
                    .text(s.name), .text(s.fenced == nil ? (s.role?.rawValue ?? "?") : "fenced"),
                    .text(s.extractorCycles.map(String.init) ?? "-"), .text(s.extractorCompleteThrough ?? "-"),
                ]
                guard !s.sources.isEmpty else { return [head + [.text("-"), .text("-"), .text("-"), .text("-")]] }
                return s.sources.enumerated().map { i, src in
                    (i == 0 ? head : Array(repeating: HTML.Cell.text(""), count: 4)) + [
                        .text(src.source),
                        .status(src.state.rawValue, src.state == .current ? "ok" : src.state == .retired ? "" : "bad"),
                        .text(src.completeThrough ?? "-"),
                        .text(src.lagSeconds.map { String(format: "%.1f s", $0) } ?? "-"),
                    ]
                }
            })

        h.element("h2", "Procedure")
        if let site = sites.first(where: { $0.name == reportingSite && $0.procedure != nil })
            ?? sites.first(where: { $0.procedure != nil }), let p = site.procedure
        {
            h.element(
                "p",
                "\(p.kind.rawValue) \(p.target): \(p.status.rawValue), started by \(p.startedBy) at \(p.startedAt); steps done: \(p.stepsDone.isEmpty ? "none" : p.stepsDone.map(\.rawValue).joined(separator: ", "))",
                id: "procedure")
            h.table(
                id: "journal", ["at", "epoch", "who", "procedure", "step", "status"],
                site.journal.map {
                    [
                        .text($0.at), .text(String($0.epoch)), .text($0.actor), .text($0.procedure), .text($0.step),
                        .text($0.status),
                    ]
                })
        } else {
            h.element("p", "none has run", id: "procedure")
        }
        h.raw("</body></html>\n")
        return h.text
    }
}

/// A little HTML writer: every text escaped.
struct HTML {
    enum Cell {
        case text(String)
        case status(String, String)
    }

    var text = ""

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    mutating func raw(_ s: String) { text += s + "\n" }

    mutating func element(_ tag: String, _ content: String, id: String? = nil, class cls: String? = nil) {
        let attributes = (id.map { #" id="\#($0)""# } ?? "") + (cls.map { #" class="\#($0)""# } ?? "")
        text += "<\(tag)\(attributes)>\(Self.escape(content))</\(tag)>\n"
    }

    mutating func table(id: String, _ header: [String], _ rows: [[Cell]]) {
        text += #"<table id="\#(id)"><thead><tr>"#
        for h in header { text += "<th>\(Self.escape(h))</th>" }
        text += "</tr></thead><tbody>\n"
        for row in rows {
            text += "<tr>"
            for cell in row {
                switch cell {
                case .text(let s): text += "<td>\(Self.escape(s))</td>"
                case .status(let s, let cls): text += #"<td class="\#(cls)">\#(Self.escape(s))</td>"#
                }
            }
            text += "</tr>\n"
        }
        text += "</tbody></table>\n"
    }

    static let style = """
        body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
        h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
        .summary{display:flex;gap:1.5em;margin:0}.summary div{border:1px solid #ccc;border-radius:6px;padding:.3em .8em}
        dt{font-size:.8em;color:#666}dd{margin:0;font-weight:600}
        table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:.25em .7em;text-align:left}
        th{background:#f4f4f4}.ok{color:#176b2c}.warn{color:#8a5a00}.bad{color:#b00020;font-weight:600}
        .meta{color:#666;font-size:.85em}
        """
}
