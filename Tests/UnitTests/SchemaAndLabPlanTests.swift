import Testing

@testable import Lab
@testable import Schema
@testable import Topology

@Suite("Migrations and the lab's plan")
struct SchemaAndLabPlanTests {
    @Test func migrationsAreEmbeddedInOrder() {
        let idb = Migration.of(.idb)
        let mart = Migration.of(.mart)
        #expect(idb.first?.version == 1)
        #expect(mart.first?.version == 1)
        #expect(idb.map(\.version) == Array(1...idb.count), "versions are 1, 2, … with no gap")
        #expect(mart.map(\.version) == Array(1...mart.count))
        #expect(idb[0].sql.contains("CREATE TABLE idb.events"))
        #expect(mart[0].sql.contains("CREATE VIEW report.queue_hourly"))
        #expect(idb[0].checksum == idb[0].checksum && idb[0].checksum != mart[0].checksum)
        #expect(idb[0].checksum.count == 16)
    }

    func state(_ mode: Topology.Mode = .activeStandby, sites: Int = 2) -> LabState {
        LabState(
            basePort: 25_400, mode: mode, stuckThreshold: 20, lateData: .backfill,
            sites: (1...sites).map { .init(name: "site\($0)", index: $0, hasSources: $0 <= 2) })
    }

    @Test func portsAreDistinctAndBelowTheEphemeralRange() {
        let s = state(sites: 4)
        let ports =
            s.ports.map(\.0) + s.sites.map { s.coordinatorPort($0) }
            + (1...2).flatMap { i in (0...1).map { s.collectorPort(siteIndex: i, member: $0) } }
        #expect(Set(ports).count == ports.count)
        #expect(ports.allSatisfy { $0 > 1024 && $0 < 32_768 })
    }

    @Test(arguments: [Topology.Mode.activeStandby, .activeActive])
    func labTopologiesAreValidAndRouteTheRemoteSiteThroughTheWAN(mode: Topology.Mode) throws {
        let s = state(mode)
        for viewpoint in [nil, "site1", "site2"] {
            let t = s.topology(directory: "/lab", viewpoint: viewpoint)
            let parsed = try Topology.parse(yaml: t.yaml(relativeTo: "/lab"), baseDirectory: "/lab")
            #expect(parsed == t)
            #expect(t.collectors.map(\.name) == ["site1-a", "site1-b", "site2-a", "site2-b"])
            #expect(t.collectors.map(\.idb.site) == ["site1", "site2", "site2", "site1"])
            #expect(t.extractors.filter { $0.role == .active }.count == (mode == .activeActive ? 2 : 1))
            #expect(t.extract.dataStuckThreshold == 20)
            #expect(t.extract.lateData == .backfill)
        }
        let site1View = s.topology(directory: "/lab", viewpoint: "site1")
        #expect(site1View.sites[0].postgres == "host=127.0.0.1 port=25411 user=bcpipe")
        #expect(
            site1View.sites[1].postgres == "host=127.0.0.1 port=25441 user=bcpipe", "site2 through the WAN from site1")
        let direct = s.topology(directory: "/lab", viewpoint: nil)
        #expect(direct.sites[1].postgres == "host=127.0.0.1 port=25412 user=bcpipe")
        // Every view lists the one witness, at the observers' location (not through the WAN).
        for viewpoint in [nil, "site1", "site2"] {
            #expect(
                s.topology(directory: "/lab", viewpoint: viewpoint).witnesses == [
                    HostPort(host: "127.0.0.1", port: 25409)
                ])
        }
        #expect(!s.routes.contains { $0.upstream == s.witnessPort }, "no WAN route leads to the witness")
    }

    @Test func wanRoutesCoverEveryOrderedPairAndService() {
        let s = state(sites: 3)
        #expect(s.routes.count == 3 * 2 * 2)
        #expect(Set(s.routes.map(\.listen)).count == s.routes.count)
        #expect(WANConfiguration.linkKey("site2", "site1") == WANConfiguration.linkKey("site1", "site2"))
    }
}
