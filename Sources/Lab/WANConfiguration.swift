import Foundation

/// The state of the WAN between two sites.
public enum LinkState: String, Codable, Sendable, CaseIterable {
    /// Traffic flows.
    case up
    /// Connections are reset and new ones refused (a firewall REJECT, a router that answers).
    case refuse
    /// Traffic is silently held: nothing is answered, nothing is reset (a dead path, a black hole).
    case blackhole
}

/// One cross-site path the WAN simulator carries: processes at `from` reach a service at `to`
/// by connecting to `listen`, which forwards to `upstream`.
public struct WANRoute: Codable, Sendable, Equatable {
    public var from: String
    public var to: String
    public var service: String
    public var listen: Int
    public var upstream: Int
}

/// The WAN simulator's configuration file: routes and link states. The lab writes it; the
/// simulator process re-reads it whenever it changes and acknowledges the generation it applied.
public struct WANConfiguration: Codable, Sendable, Equatable {
    public var generation: Int = 0
    public var routes: [WANRoute] = []
    /// Keyed by ``linkKey(_:_:)``; a missing link is up.
    public var links: [String: LinkState] = [:]

    public init() {}

    /// The key of the link between two sites, the same in both directions.
    public static func linkKey(_ a: String, _ b: String) -> String {
        a < b ? "\(a)~\(b)" : "\(b)~\(a)"
    }

    public func state(of route: WANRoute) -> LinkState {
        links[Self.linkKey(route.from, route.to)] ?? .up
    }

    public static func load(_ path: String) throws -> WANConfiguration {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONDecoder().decode(WANConfiguration.self, from: data)
    }

    /// Writes atomically (rename), so the simulator never reads half a file.
    public func save(_ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
