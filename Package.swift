// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "bcpipe",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "bcpipe", targets: ["bcpipe"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C libraries, each used by exactly one Swift module.
        .systemLibrary(
            name: "CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),
        .systemLibrary(
            name: "CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),

        // PostgreSQL client over libpq: connections as actors on their own threads.
        .target(
            name: "PostgresClient",
            dependencies: ["CLibPQ", "CivilTime", .product(name: "Logging", package: "swift-log")]),
        // UTC calendar arithmetic shared by event timestamps and the PostgreSQL codec.
        .target(name: "CivilTime"),
        // zstd buffers and streams.
        .target(name: "ZstdCompression", dependencies: ["CZstd"]),
        // gzip (RFC 1952) decoding and encoding through zlib, for Content-Encoding: gzip.
        .target(name: "GzipCompression", dependencies: ["CZlib"]),
        // The persistent on-disk queue: segments of zstd frames, group commit, self-healing recovery.
        .target(
            name: "DiskQueue",
            dependencies: ["ZstdCompression", .product(name: "Logging", package: "swift-log")]),
        // Events as COPY rows of the event tables (IDB and mart).
        .target(name: "EventRows", dependencies: ["EventModel", "PostgresClient"]),
        // The per-site collector: HTTP ingest, write-ahead disk queue, shipping to its IDB.
        .target(
            name: "Collector",
            dependencies: [
                "Control", "DiskQueue", "EventModel", "EventRows", "PostgresClient", "Topology", "ZstdCompression",
                "GzipCompression",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Info Mart's role: merge the IDBs of each HA pair and transform into the mart.
        .target(
            name: "Extractor",
            dependencies: [
                "Control", "EventModel", "EventRows", "PostgresClient", "Topology",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The control plane's vocabulary, its pure state machine and the one owner of its SQL.
        .target(name: "Control", dependencies: ["PostgresClient", "Topology"]),
        // The coordinators, the witness and the business-continuity procedures (dr declare, rtn start).
        .target(
            name: "Coordinator",
            dependencies: [
                "Control", "PostgresClient", "Topology",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Realistic, seeded contact-center traffic and an HTTP poster (bcpipe gen).
        .target(name: "Traffic", dependencies: ["EventModel", "Topology"]),
        .target(
            name: "Demo",
            dependencies: ["Control", "Coordinator", "Lab", "Topology", "PostgresClient", "Traffic", "EventModel"]),
        // The NDJSON interaction event of CONTRACT 1: parser, validator, encoder.
        .target(name: "EventModel", dependencies: ["CivilTime"]),
        // The topology file of CONTRACT 3.
        .target(name: "Topology", dependencies: ["Yams"]),
        // SQL/ migrations embedded at build time, and the migrator.
        .target(
            name: "Schema",
            dependencies: ["PostgresClient", "Topology", .product(name: "Logging", package: "swift-log")],
            plugins: ["EmbedSQL"]),
        // The local two-site lab: PostgreSQL servers, WAN link simulator, topology files.
        .target(
            name: "Lab",
            dependencies: [
                "PostgresClient", "Topology", "Schema", .product(name: "Logging", package: "swift-log"),
            ]),
        // The command line: parses arguments and wires the modules above.
        .executableTarget(
            name: "bcpipe",
            dependencies: [
                "PostgresClient", "EventModel", "Topology", "Schema", "Lab", "ZstdCompression", "DiskQueue",
                "EventRows",
                "Collector", "Traffic", "Extractor", "Control", "Coordinator", "Demo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Benchmarks: run with scripts/bench (release build); prints figures beside baselines.
        .executableTarget(
            name: "bcpipe-bench",
            dependencies: [
                "PostgresClient", "EventModel", "ZstdCompression", "Lab", "Schema", "DiskQueue", "Collector", "Traffic",
                "Topology", "Extractor", "Control", "Coordinator",
            ]),

        // Processes the tests start, SIGKILL and measure (a queue writer, a queue drainer).
        .executableTarget(name: "bcpipe-testkit", dependencies: ["DiskQueue"]),

        // Build-time tool and plugin that embed SQL/ into the Schema module.
        .executableTarget(name: "EmbedSQLTool"),
        .plugin(name: "EmbedSQL", capability: .buildTool(), dependencies: ["EmbedSQLTool"]),

        .testTarget(
            name: "UnitTests",
            dependencies: [
                "EventModel", "EventRows", "Topology", "ZstdCompression", "GzipCompression", "Schema", "Lab",
                "DiskQueue", "Collector",
                "Traffic", "Extractor", "Control", "Coordinator", "Demo",
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "PostgresClient", "Lab", "Schema", "Topology", "EventModel", "EventRows", "DiskQueue", "Collector",
                "Extractor",
                "Control", "Coordinator", "Traffic", "ZstdCompression", "Demo",
            ]),
    ],
    swiftLanguageModes: [.v6]
)
