import Foundation
import Yams

extension Topology {
    /// The file a command uses: `--config`, else `$BCPIPE_CONFIG`, else `./bcpipe.yaml`.
    public static func defaultPath(explicit: String?) -> String {
        if let explicit { return explicit }
        if let env = ProcessInfo.processInfo.environment["BCPIPE_CONFIG"], !env.isEmpty { return env }
        return "bcpipe.yaml"
    }

    /// Reads and validates a topology file.
    ///
    /// #### Errors
    /// ``TopologyError`` naming the file, the key path and what is wrong.
    public static func load(path: String) throws -> Topology {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw TopologyError(
                path: "",
                message:
                    "cannot read the topology file (\(error.localizedDescription)); pass --config PATH or set BCPIPE_CONFIG",
                file: path)
        }
        let base = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent().path
        do {
            return try parse(yaml: text, baseDirectory: base)
        } catch var error as TopologyError {
            error.file = path
            throw error
        }
    }

    /// Parses and validates topology YAML; relative `queue_dir`s resolve against `baseDirectory`.
    public static func parse(yaml: String, baseDirectory: String) throws -> Topology {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw TopologyError(path: "", message: "not valid YAML: \(error)")
        }
        guard let root else { throw TopologyError(path: "", message: "the file is empty") }
        var reader = TopologyReader()
        return try reader.read(root, baseDirectory: baseDirectory)
    }
}

/// Walks the YAML tree, keeping the key path for errors.
struct TopologyReader {
    func fail(_ path: String, _ node: Node?, _ message: String) -> TopologyError {
        TopologyError(path: path, message: message, line: node?.mark?.line)
    }

    func mapping(_ node: Node, _ path: String, allowed: [String], required: [String]) throws -> [String: Node] {
        guard case .mapping(let m) = node else { throw fail(path, node, "must be a mapping") }
        var out: [String: Node] = [:]
        for (k, v) in m {
            guard let key = k.string else { throw fail(path, k, "keys must be strings") }
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            guard allowed.contains(key) else {
                throw fail(keyPath, k, "unknown key; expected one of \(allowed.joined(separator: ", "))")
            }
            if out[key] != nil { throw fail(keyPath, k, "appears more than once") }
            out[key] = v
        }
        for key in required where out[key] == nil {
            throw fail(path.isEmpty ? key : "\(path).\(key)", node, "is required")
        }
        return out
    }

    func sequence(_ node: Node?, _ path: String) throws -> [Node] {
        guard let node else { return [] }
        guard case .sequence(let s) = node else { throw fail(path, node, "must be a list") }
        return Array(s)
    }

    func string(_ node: Node?, _ path: String) throws -> String {
        guard let node, case .scalar(let s) = node, !s.string.isEmpty else {
            throw fail(path, node, "must be a non-empty string")
        }
        return s.string
    }

    func int(_ node: Node?, _ path: String, min: Int) throws -> Int {
        guard let node, let v = node.int, v >= min else {
            throw fail(path, node, "must be an integer ≥ \(min)")
        }
        return v
    }

    func number(_ node: Node?, _ path: String) throws -> Double {
        guard let node, let v = node.float, v > 0, v.isFinite else {
            throw fail(path, node, "must be a number of seconds > 0")
        }
        return v
    }

    func hostPort(_ node: Node?, _ path: String) throws -> HostPort {
        let text = try string(node, path)
        guard let hp = HostPort(text) else {
            throw fail(path, node, "must be host:port, e.g. 127.0.0.1:7101 (got \"\(text)\")")
        }
        return hp
    }

    func enumValue<E: RawRepresentable & CaseIterable>(_ node: Node?, _ path: String, _: E.Type) throws -> E
    where E.RawValue == String {
        let text = try string(node, path)
        guard let v = E(rawValue: text) else {
            throw fail(
                path, node, "must be one of \(E.allCases.map(\.rawValue).joined(separator: ", ")) (got \"\(text)\")")
        }
        return v
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.utf8.first, s.utf8.count <= 63 else { return false }
        guard (first >= 97 && first <= 122) || first == 95 else { return false }
        return s.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }
    }

    mutating func read(_ root: Node, baseDirectory: String) throws -> Topology {
        let top = try mapping(
            root, "",
            allowed: [
                "deployment", "sites", "sources", "collectors", "extractors", "extract", "reporting", "retention",
                "witnesses",
            ],
            required: ["deployment", "sites", "sources", "collectors", "extractors"])

        let dep = try mapping(top["deployment"]!, "deployment", allowed: ["name", "mode"], required: ["name", "mode"])
        let deployment = Topology.Deployment(
            name: try string(dep["name"], "deployment.name"),
            mode: try enumValue(dep["mode"], "deployment.mode", Topology.Mode.self))

        var sites: [Topology.Site] = []
        for (i, node) in try sequence(top["sites"], "sites").enumerated() {
            let p = "sites[\(i)]"
            let m = try mapping(
                node, p, allowed: ["name", "postgres", "coordinator"], required: ["name", "postgres", "coordinator"])
            let name = try string(m["name"], "\(p).name")
            guard Self.isIdentifier(name.replacingOccurrences(of: "-", with: "_")) else {
                throw fail("\(p).name", m["name"], "must be lower-case letters, digits, _ or - (got \"\(name)\")")
            }
            if sites.contains(where: { $0.name == name }) {
                throw fail("\(p).name", m["name"], "site \"\(name)\" is defined twice")
            }
            let postgres = try string(m["postgres"], "\(p).postgres")
            if postgres.range(of: "password", options: .caseInsensitive) != nil {
                throw fail("\(p).postgres", m["postgres"], "must not contain a password: use PGPASSFILE or ~/.pgpass")
            }
            sites.append(
                .init(name: name, postgres: postgres, coordinator: try hostPort(m["coordinator"], "\(p).coordinator")))
        }
        if sites.isEmpty { throw fail("sites", top["sites"], "must list at least one site") }
        let siteNames = Set(sites.map(\.name))
        func checkSite(_ node: Node?, _ path: String) throws -> String {
            let s = try string(node, path)
            guard siteNames.contains(s) else {
                throw fail(path, node, "unknown site \"\(s)\"; sites are \(sites.map(\.name).joined(separator: ", "))")
            }
            return s
        }

        var sources: [Topology.Source] = []
        for (i, node) in try sequence(top["sources"], "sources").enumerated() {
            let p = "sources[\(i)]"
            let m = try mapping(node, p, allowed: ["name", "site"], required: ["name", "site"])
            let name = try string(m["name"], "\(p).name")
            guard isValidSourceName(name) else {
                throw fail("\(p).name", m["name"], "must be 1–128 characters of A–Z a–z 0–9 . _ / - (got \"\(name)\")")
            }
            if sources.contains(where: { $0.name == name }) {
                throw fail("\(p).name", m["name"], "source \"\(name)\" is defined twice")
            }
            sources.append(.init(name: name, site: try checkSite(m["site"], "\(p).site")))
        }
        let sourceNames = Set(sources.map(\.name))

        var collectors: [Topology.Collector] = []
        var listens: [HostPort: String] = [:]
        for (i, node) in try sequence(top["collectors"], "collectors").enumerated() {
            let p = "collectors[\(i)]"
            let m = try mapping(
                node, p, allowed: ["name", "source", "idb", "listen", "queue_dir"],
                required: ["name", "source", "idb", "listen", "queue_dir"])
            let name = try string(m["name"], "\(p).name")
            if collectors.contains(where: { $0.name == name }) {
                throw fail("\(p).name", m["name"], "collector \"\(name)\" is defined twice")
            }
            let source = try string(m["source"], "\(p).source")
            guard sourceNames.contains(source) else {
                throw fail("\(p).source", m["source"], "unknown source \"\(source)\"")
            }
            let idbMap = try mapping(
                m["idb"]!, "\(p).idb", allowed: ["site", "database"], required: ["site", "database"])
            let idbSite = try checkSite(idbMap["site"], "\(p).idb.site")
            let database = try string(idbMap["database"], "\(p).idb.database")
            guard Self.isIdentifier(database), database != Topology.martDatabase, database != "postgres" else {
                throw fail(
                    "\(p).idb.database", idbMap["database"],
                    "must be a lower-case identifier other than mart and postgres (got \"\(database)\")")
            }
            let idb = Topology.IDBRef(site: idbSite, database: database)
            if let other = collectors.first(where: { $0.idb == idb }) {
                throw fail(
                    "\(p).idb", m["idb"],
                    "IDB \(database) at \(idbSite) is already written by collector \(other.name): one collector per IDB"
                )
            }
            let listen = try hostPort(m["listen"], "\(p).listen")
            if let other = listens[listen] {
                throw fail("\(p).listen", m["listen"], "\(listen) is already the address of collector \(other)")
            }
            listens[listen] = name
            var queueDir = try string(m["queue_dir"], "\(p).queue_dir")
            if !queueDir.hasPrefix("/") {
                queueDir = URL(fileURLWithPath: baseDirectory).appendingPathComponent(queueDir).standardizedFileURL.path
            }
            collectors.append(.init(name: name, source: source, idb: idb, listen: listen, queueDir: queueDir))
        }
        for (i, source) in sources.enumerated() where !collectors.contains(where: { $0.source == source.name }) {
            throw fail(
                "sources[\(i)]", nil, "source \"\(source.name)\" has no collector; give it an HA pair of collectors")
        }

        var extractors: [Topology.Extractor] = []
        for (i, node) in try sequence(top["extractors"], "extractors").enumerated() {
            let p = "extractors[\(i)]"
            let m = try mapping(node, p, allowed: ["site", "role"], required: ["site", "role"])
            let site = try checkSite(m["site"], "\(p).site")
            if extractors.contains(where: { $0.site == site }) {
                throw fail("\(p).site", m["site"], "site \"\(site)\" has two extractors")
            }
            extractors.append(
                .init(site: site, role: try enumValue(m["role"], "\(p).role", Topology.ExtractorRole.self)))
        }
        let active = extractors.filter { $0.role == .active }.count
        switch deployment.mode {
        case .activeStandby where active != 1:
            throw fail(
                "extractors", top["extractors"],
                "active-standby needs exactly one extractor with role active (found \(active))")
        case .activeActive where active != extractors.count || extractors.isEmpty:
            throw fail("extractors", top["extractors"], "active-active needs every extractor to have role active")
        default: break
        }

        var extract = Topology.ExtractSettings()
        if let node = top["extract"] {
            let m = try mapping(
                node, "extract", allowed: ["data_stuck_threshold", "late_data", "interval"], required: [])
            if m["data_stuck_threshold"] != nil {
                extract.dataStuckThreshold = try int(m["data_stuck_threshold"], "extract.data_stuck_threshold", min: 1)
            }
            if m["late_data"] != nil {
                extract.lateData = try enumValue(m["late_data"], "extract.late_data", Topology.LateDataPolicy.self)
            }
            if m["interval"] != nil { extract.interval = try number(m["interval"], "extract.interval") }
        }
        let reporting = try readReporting(top["reporting"])
        var retention = Topology.RetentionSettings()
        if let node = top["retention"] {
            let m = try mapping(node, "retention", allowed: ["mart_days"], required: [])
            if m["mart_days"] != nil { retention.martDays = try int(m["mart_days"], "retention.mart_days", min: 1) }
        }
        let witnesses = try readWitnesses(top["witnesses"], sites: sites, collectors: collectors)
        return Topology(
            deployment: deployment, sites: sites, sources: sources, collectors: collectors, extractors: extractors,
            extract: extract, reporting: reporting, retention: retention, witnesses: witnesses,
            baseDirectory: baseDirectory)
    }

    /// `reporting:` SLAs (global and per queue), short abandons, the interval views' zones and
    /// sub-hour level. Zone names are checked for their form here and against PostgreSQL's
    /// time-zone database by the extractor, which derives every period from it.
    func readReporting(_ node: Node?) throws -> Topology.ReportingSettings {
        var r = Topology.ReportingSettings()
        guard let node else { return r }
        let m = try mapping(
            node, "reporting",
            allowed: ["sla_seconds", "queues", "short_abandon_seconds", "time_zones", "sub_hour_minutes"], required: [])
        if m["sla_seconds"] != nil { r.slaSeconds = try int(m["sla_seconds"], "reporting.sla_seconds", min: 0) }
        if let queues = m["queues"] {
            guard case .mapping(let qs) = queues else { throw fail("reporting.queues", queues, "must be a mapping") }
            for (k, v) in qs {
                let name = try string(k, "reporting.queues")
                let q = try mapping(v, "reporting.queues.\(name)", allowed: ["sla_seconds"], required: ["sla_seconds"])
                r.queueSLASeconds[name] = try int(q["sla_seconds"], "reporting.queues.\(name).sla_seconds", min: 0)
            }
        }
        if m["short_abandon_seconds"] != nil {
            r.shortAbandonSeconds = try int(m["short_abandon_seconds"], "reporting.short_abandon_seconds", min: 0)
        }
        if let zones = m["time_zones"] {
            r.timeZones = []
            for (i, z) in try sequence(zones, "reporting.time_zones").enumerated() {
                let p = "reporting.time_zones[\(i)]"
                let name = try string(z, p)
                guard Self.isZoneName(name) else {
                    throw fail(p, z, "must be an IANA time-zone name such as America/New_York (got \"\(name)\")")
                }
                if r.timeZones.contains(name) { throw fail(p, z, "\(name) is listed twice") }
                r.timeZones.append(name)
            }
            if r.timeZones.isEmpty {
                throw fail("reporting.time_zones", zones, "must name at least one zone, e.g. [UTC]")
            }
        }
        if let sub = m["sub_hour_minutes"] {
            r.subHourMinutes = try int(sub, "reporting.sub_hour_minutes", min: 1)
            guard [15, 30].contains(r.subHourMinutes) else {
                throw fail("reporting.sub_hour_minutes", sub, "must be 15 or 30 (got \(r.subHourMinutes))")
            }
        }
        return r
    }

    /// The form of an IANA zone name: letters, digits and `/_+-`, not starting with `/`.
    static func isZoneName(_ s: String) -> Bool {
        guard let first = s.utf8.first, first != 47, s.utf8.count <= 64 else { return false }
        return s.utf8.allSatisfy { b in
            (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || (b >= 48 && b <= 57) || b == 47 || b == 95 || b == 43
                || b == 45
        }
    }

    /// `witnesses: [host:port, …]`: each an address of its own (not a coordinator's or a collector's,
    /// which run inside a site), listed once.
    func readWitnesses(_ node: Node?, sites: [Topology.Site], collectors: [Topology.Collector]) throws -> [HostPort] {
        guard let node else { return [] }
        var witnesses: [HostPort] = []
        for (i, item) in try sequence(node, "witnesses").enumerated() {
            let p = "witnesses[\(i)]"
            let address = try hostPort(item, p)
            if witnesses.contains(address) { throw fail(p, item, "\(address) is listed twice") }
            if let site = sites.first(where: { $0.coordinator == address }) {
                throw fail(
                    p, item,
                    "\(address) is the coordinator of \(site.name); a witness is a `bcpipe witness run` at a location outside every site"
                )
            }
            if let c = collectors.first(where: { $0.listen == address }) {
                throw fail(p, item, "\(address) is the address of collector \(c.name); a witness needs its own")
            }
            witnesses.append(address)
        }
        return witnesses
    }

    func isValidSourceName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 128 else { return false }
        return name.utf8.allSatisfy { b in
            (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || (b >= 48 && b <= 57) || b == 46 || b == 95 || b == 47
                || b == 45
        }
    }
}

extension Topology {
    /// The topology as a YAML file of CONTRACT 3 (queue directories relative to `relativeTo` when inside it).
    public func yaml(relativeTo directory: String? = nil) -> String {
        func q(_ s: String) -> String {
            var out = "\""
            for ch in s.unicodeScalars {
                switch ch {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                default: out.unicodeScalars.append(ch)
                }
            }
            return out + "\""
        }
        var y = "deployment:\n  name: \(q(deployment.name))\n  mode: \(deployment.mode.rawValue)\n"
        y += "sites:\n"
        for s in sites {
            y +=
                "  - name: \(s.name)\n    postgres: \(q(s.postgres))\n    coordinator: \(q(s.coordinator.description))\n"
        }
        y += "sources:\n"
        for s in sources { y += "  - { name: \(q(s.name)), site: \(s.site) }\n" }
        y += "collectors:\n"
        for c in collectors {
            var dir = c.queueDir
            if let directory, dir.hasPrefix(directory + "/") { dir = String(dir.dropFirst(directory.count + 1)) }
            y +=
                "  - { name: \(q(c.name)), source: \(q(c.source)), idb: { site: \(c.idb.site), database: \(c.idb.database) }, listen: \(q(c.listen.description)), queue_dir: \(q(dir)) }\n"
        }
        y += "extractors:\n"
        for e in extractors { y += "  - { site: \(e.site), role: \(e.role.rawValue) }\n" }
        y +=
            "extract:\n  data_stuck_threshold: \(extract.dataStuckThreshold)\n  late_data: \(extract.lateData.rawValue)\n"
        y +=
            "  interval: \(extract.interval == extract.interval.rounded() ? String(Int(extract.interval)) : String(extract.interval))\n"
        y += "reporting:\n  sla_seconds: \(reporting.slaSeconds)\n"
        if !reporting.queueSLASeconds.isEmpty {
            y += "  queues:\n"
            for (name, sla) in reporting.queueSLASeconds.sorted(by: { $0.key < $1.key }) {
                y += "    \(q(name)): { sla_seconds: \(sla) }\n"
            }
        }
        y += "  short_abandon_seconds: \(reporting.shortAbandonSeconds)\n"
        y += "  time_zones: [\(reporting.timeZones.map(q).joined(separator: ", "))]\n"
        y += "  sub_hour_minutes: \(reporting.subHourMinutes)\n"
        if let days = retention.martDays { y += "retention:\n  mart_days: \(days)\n" }
        if !witnesses.isEmpty {
            y += "witnesses: [\(witnesses.map { q($0.description) }.joined(separator: ", "))]\n"
        }
        return y
    }
}
