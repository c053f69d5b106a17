/// One numbered SQL migration from `SQL/<component>/NNN_name.sql`, embedded at build time.
public struct Migration: Sendable, Equatable {
    /// Which kind of database it applies to.
    public enum Component: String, Sendable, CaseIterable {
        case idb, mart
    }

    public var component: Component
    public var version: Int
    public var name: String
    public var sql: String

    /// A stable checksum of the SQL text (FNV-1a 64), to notice a migration edited after it was applied.
    public var checksum: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in sql.utf8 {
            hash ^= UInt64(b)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Every embedded migration, in component and version order.
    public static let all: [Migration] = {
        embeddedMigrationFiles.compactMap { file -> Migration? in
            let parts = file.path.split(separator: "/")
            guard parts.count == 2, let component = Component(rawValue: String(parts[0])) else { return nil }
            let base = parts[1].dropLast(4)  // ".sql"
            guard let underscore = base.firstIndex(of: "_"), let version = Int(base[..<underscore]) else { return nil }
            return Migration(
                component: component, version: version, name: String(base[base.index(after: underscore)...]),
                sql: file.sql)
        }.sorted { ($0.component.rawValue, $0.version) < ($1.component.rawValue, $1.version) }
    }()

    /// The migrations of one component, in version order.
    public static func of(_ component: Component) -> [Migration] {
        all.filter { $0.component == component }
    }
}
