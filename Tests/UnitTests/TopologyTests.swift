import Testing

@testable import Topology

@Suite("Topology file")
struct TopologyTests {
    static let contractExample = """
        deployment:
          name: contact-center-east
          mode: active-standby            # or active-active
        sites:
          - name: site1
            postgres: "host=127.0.0.1 port=25431 user=bcpipe"   # libpq conninfo of the site's server
            coordinator: 127.0.0.1:7901                            # the site coordinator's HTTP address
          - name: site2
            postgres: "host=127.0.0.1 port=25432 user=bcpipe"
            coordinator: 127.0.0.1:7902
        witnesses: [127.0.0.1:7909]       # optional: `bcpipe witness run` at locations outside both sites (6.4)
        sources:
          - { name: site1/voice, site: site1 }
          - { name: site2/voice, site: site2 }
        collectors:                       # an HA pair per source: one IDB at each site
          - { name: site1-a, source: site1/voice, idb: { site: site1, database: idb_site1_a }, listen: 127.0.0.1:7101, queue_dir: var/site1-a }
          - { name: site1-b, source: site1/voice, idb: { site: site2, database: idb_site1_b }, listen: 127.0.0.1:7102, queue_dir: var/site1-b }
          - { name: site2-a, source: site2/voice, idb: { site: site2, database: idb_site2_a }, listen: 127.0.0.1:7201, queue_dir: var/site2-a }
          - { name: site2-b, source: site2/voice, idb: { site: site1, database: idb_site2_b }, listen: 127.0.0.1:7202, queue_dir: var/site2-b }
        extractors:
          - { site: site1, role: active }   # active-standby: exactly one active; active-active: all active
          - { site: site2, role: standby }
        extract:
          data_stuck_threshold: 28800     # seconds (Info Mart's extract-data-stuck-threshold; default 8 h)
          late_data: discard              # discard | backfill (see 6.3)
          interval: 1                     # seconds between extraction cycles at most
        reporting:
          sla_seconds: 20                 # service-level threshold for answered_within_sla
          queues:                         # optional per-queue overrides
            billing: { sla_seconds: 30 }
          short_abandon_seconds: 5        # abandons within this wait are short abandons (counted apart)
          time_zones: [UTC, America/New_York]   # IANA zones the interval views are kept in; default [UTC]
          sub_hour_minutes: 15            # 15 or 30: the sub-hour level (Info Mart's sub-hour interval)
        retention:
          mart_days: 400                  # events and facts older than this leave the mart, a whole partition at a time
        """

    @Test func parsesTheContractExample() throws {
        let t = try Topology.parse(yaml: Self.contractExample, baseDirectory: "/srv/bcpipe")
        #expect(t.deployment == .init(name: "contact-center-east", mode: .activeStandby))
        #expect(t.sites.map(\.name) == ["site1", "site2"])
        #expect(t.sites[0].coordinator == HostPort(host: "127.0.0.1", port: 7901))
        #expect(t.collectors.count == 4)
        #expect(t.collectors[1].idb == .init(site: "site2", database: "idb_site1_b"))
        #expect(
            t.collectors[0].queueDir == "/srv/bcpipe/var/site1-a",
            "relative queue_dir resolves against the file's directory")
        #expect(t.extract.dataStuckThreshold == 28_800)
        #expect(t.extract.lateData == .discard)
        #expect(t.reporting.slaSeconds == 20)
        #expect(t.reporting.slaSeconds(queue: "billing") == 30 && t.reporting.slaSeconds(queue: "sales") == 20)
        #expect(t.reporting.shortAbandonSeconds == 5 && t.reporting.subHourMinutes == 15)
        #expect(t.reporting.timeZones == ["UTC", "America/New_York"])
        #expect(t.retention.martDays == 400)
        #expect(t.databases(atSite: "site1") == ["idb_site1_a", "idb_site2_b", "mart"])
        #expect(t.witnesses == [HostPort(host: "127.0.0.1", port: 7909)])
    }

    @Test func writtenYAMLReadsBackEqual() throws {
        let t = try Topology.parse(yaml: Self.contractExample, baseDirectory: "/srv/bcpipe")
        let again = try Topology.parse(yaml: t.yaml(relativeTo: "/srv/bcpipe"), baseDirectory: "/srv/bcpipe")
        #expect(again == t)
    }

    func error(replacing old: String, with new: String) -> String? {
        let text = Self.contractExample.replacingOccurrences(of: old, with: new)
        #expect(text != Self.contractExample, "the test's replacement must apply")
        do {
            _ = try Topology.parse(yaml: text, baseDirectory: "/")
            return nil
        } catch let e as TopologyError {
            return e.path + ": " + e.message
        } catch {
            return "\(error)"
        }
    }

    @Test func namesTheBadKeyPath() {
        #expect(
            error(
                replacing: "idb: { site: site2, database: idb_site2_a }",
                with: "idb: { site: site9, database: idb_site2_a }")
                == "collectors[2].idb.site: unknown site \"site9\"; sites are site1, site2")
        #expect(
            error(replacing: "mode: active-standby  ", with: "mode: hot-warm  ")
                == "deployment.mode: must be one of active-active, active-standby (got \"hot-warm\")")
        #expect(
            error(replacing: "role: standby", with: "role: active")
                == "extractors: active-standby needs exactly one extractor with role active (found 2)")
        #expect(
            error(replacing: "listen: 127.0.0.1:7102", with: "listen: 127.0.0.1:7101")
                == "collectors[1].listen: 127.0.0.1:7101 is already the address of collector site1-a")
        #expect(
            error(replacing: "listen: 127.0.0.1:7202", with: "listen: localhost")
                == "collectors[3].listen: must be host:port, e.g. 127.0.0.1:7101 (got \"localhost\")")
        #expect(
            error(replacing: "late_data: discard", with: "late_data: keep")
                == "extract.late_data: must be one of discard, backfill (got \"keep\")")
        #expect(
            error(replacing: "data_stuck_threshold: 28800", with: "data_stuck_threshold: -5")
                == "extract.data_stuck_threshold: must be an integer ≥ 1")
        #expect(
            error(replacing: "sla_seconds: 20", with: "sla_secs: 20")
                == "reporting.sla_secs: unknown key; expected one of sla_seconds, queues, short_abandon_seconds, time_zones, sub_hour_minutes"
        )
        #expect(
            error(replacing: "sub_hour_minutes: 15", with: "sub_hour_minutes: 20")
                == "reporting.sub_hour_minutes: must be 15 or 30 (got 20)")
        #expect(
            error(replacing: "time_zones: [UTC, America/New_York]", with: "time_zones: [UTC, \"New York\"]")
                == "reporting.time_zones[1]: must be an IANA time-zone name such as America/New_York (got \"New York\")"
        )
        #expect(
            error(replacing: "time_zones: [UTC, America/New_York]", with: "time_zones: [UTC, UTC]")
                == "reporting.time_zones[1]: UTC is listed twice")
        #expect(
            error(replacing: "billing: { sla_seconds: 30 }", with: "billing: { sla: 30 }")
                == "reporting.queues.billing.sla: unknown key; expected one of sla_seconds")
        #expect(
            error(replacing: "mart_days: 400", with: "mart_days: 0")
                == "retention.mart_days: must be an integer ≥ 1")
        #expect(
            error(replacing: "{ name: site2/voice, site: site2 }", with: "{ name: site1/voice, site: site2 }")
                == "sources[1].name: source \"site1/voice\" is defined twice")
        #expect(
            error(replacing: "port=25432 user=bcpipe", with: "port=25432 user=bcpipe password=hunter2")
                == "sites[1].postgres: must not contain a password: use PGPASSFILE or ~/.pgpass")
        #expect(
            error(replacing: "database: idb_site2_b", with: "database: Idb-2")
                == "collectors[3].idb.database: must be a lower-case identifier other than mart and postgres (got \"Idb-2\")"
        )
        #expect(
            error(replacing: "  - { site: site2, role: standby }\n", with: "  - { site: site1, role: standby }\n")
                == "extractors[1].site: site \"site1\" has two extractors")
    }

    /// Catches a witness list that would make `dr declare` ask the wrong process: an address
    /// that is not host:port, listed twice, or a coordinator's (inside the site it should judge).
    @Test func witnessesAreAddressesOfTheirOwn() throws {
        #expect(
            error(replacing: "witnesses: [127.0.0.1:7909]", with: "witnesses: [witness-host]")
                == "witnesses[0]: must be host:port, e.g. 127.0.0.1:7101 (got \"witness-host\")")
        #expect(
            error(replacing: "witnesses: [127.0.0.1:7909]", with: "witnesses: [127.0.0.1:7909, 127.0.0.1:7909]")
                == "witnesses[1]: 127.0.0.1:7909 is listed twice")
        #expect(
            error(replacing: "witnesses: [127.0.0.1:7909]", with: "witnesses: [127.0.0.1:7902]")
                == "witnesses[0]: 127.0.0.1:7902 is the coordinator of site2; a witness is a `bcpipe witness run` at a location outside every site"
        )
        #expect(
            error(replacing: "witnesses: [127.0.0.1:7909]", with: "witnesses: 127.0.0.1:7909")
                == "witnesses: must be a list")
        let none = Self.contractExample.replacingOccurrences(of: "witnesses: [127.0.0.1:7909]", with: "")
        #expect(try Topology.parse(yaml: none, baseDirectory: "/").witnesses.isEmpty, "witnesses are optional")
    }

    @Test func refusesMissingAndMalformedFiles() {
        #expect(throws: TopologyError.self) { try Topology.parse(yaml: "", baseDirectory: "/") }
        #expect(throws: TopologyError.self) { try Topology.parse(yaml: "deployment: [", baseDirectory: "/") }
        #expect(throws: TopologyError.self) { try Topology.parse(yaml: "- 1\n- 2", baseDirectory: "/") }
        #expect(throws: TopologyError.self) { try Topology.load(path: "/nonexistent/bcpipe.yaml") }
        do {
            _ = try Topology.parse(yaml: "deployment:\n  name: x\n  mode: active-active\n", baseDirectory: "/")
            Issue.record("a file without sites must be refused")
        } catch let e as TopologyError {
            #expect(e.path == "sites")
            #expect(e.message == "is required")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func hostPorts() {
        #expect(HostPort("127.0.0.1:7101") == HostPort(host: "127.0.0.1", port: 7101))
        #expect(HostPort("[::1]:80") == HostPort(host: "::1", port: 80))
        #expect(HostPort("[::1]:80")?.description == "[::1]:80")
        #expect(HostPort("host:0") == nil)
        #expect(HostPort("host:70000") == nil)
        #expect(HostPort(":80") == nil)
        #expect(HostPort("::1:80") == nil)
    }
}
