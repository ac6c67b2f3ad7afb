// swift-tools-version: 6.0
// Cordon — host microsegmentation agent for Linux. GPL-2.0-or-later (the netfilter libraries are GPL).
import PackageDescription

let package = Package(
    name: "Cordon",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "cordon", targets: ["cordon"]),
        .executable(name: "cordon-bench", targets: ["cordon-bench"]),
        .executable(name: "cordon-server", targets: ["cordon-server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        // The fleet half: the server (Hummingbird on SwiftNIO, PostgreSQL), its CA, and the
        // HTTPS client the agent and `cordon fleet` share.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // Operations: Prometheus metrics through swift-metrics.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // One C module per system library, each with a prefixed shim for what Swift cannot import.
        .target(
            name: "CConntrack",
            linkerSettings: [.linkedLibrary("netfilter_conntrack"), .linkedLibrary("nfnetlink")]
        ),
        .target(
            name: "CNftnl",
            linkerSettings: [.linkedLibrary("nftnl"), .linkedLibrary("mnl")]
        ),

        // The netlink socket, message walker and wake-up pipe every reader shares.
        .target(name: "CordonNetlink", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),

        // Pure logic: no kernel, no database.
        .target(name: "CordonCore", dependencies: ["Yams", .product(name: "Crypto", package: "swift-crypto")]),

        // One target per facility.
        .target(name: "CordonStore", dependencies: ["CordonCore", .product(name: "GRDB", package: "GRDB.swift")]),
        .target(name: "CordonConntrack", dependencies: ["CordonCore", "CConntrack", "CordonNetlink", .product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "CordonNftables", dependencies: ["CordonCore", "CNftnl", "CordonNetlink", .product(name: "SystemPackage", package: "swift-system")]),
        // The messages agents, server and analysts exchange: pure Codable, shared by both ends.
        .target(name: "CordonWire", dependencies: ["CordonCore"]),
        // HTTPS to the server, trusting only its CA: the agent's channel and `cordon fleet`.
        .target(name: "CordonFleetClient", dependencies: [
            "CordonWire", .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOFoundationCompat", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio")]),
        // The server: an application builder, one controller per resource, one store per aggregate.
        .target(name: "CordonServer", dependencies: [
            "CordonWire", "CordonCore", "CordonTelemetry",
            .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOTLS", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            // The API's contract, one file, compiled in: nothing to install beside the binary.
            // And the console's files: served from the binary, no CDN, nothing fetched elsewhere.
            resources: [.embedInCode("openapi.json")] + ["index.html", "console.css", "app.js", "api.js", "dom.js", "logic.js", "fleet.js", "host.js",
                                                        "map.js", "policy.js"].map { .embedInCode("Console/" + $0) }),
        .target(
            name: "CordonAgent",
            dependencies: ["CordonCore", "CordonStore", "CordonConntrack", "CordonNftables", "CNftnl", "CordonNetlink", "Yams",
                           "CordonWire", "CordonFleetClient", "CordonTelemetry",
                           .product(name: "SystemPackage", package: "swift-system"),
                           .product(name: "Logging", package: "swift-log")]
        ),

        // What the agent and the server share for operations: log lines (text for journald, JSON
        // for shippers), the service manager's notifications, the Prometheus endpoint.
        .target(name: "CordonTelemetry", dependencies: [
            .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"), .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]),

        // Throwaway network namespaces for the demo, the integration tests and the benchmarks.
        .target(name: "CordonLab", dependencies: ["CordonTelemetry"]),

        .executableTarget(
            name: "cordon",
            // cordon-server: built with it, for the demo's fleet part.
            dependencies: ["CordonAgent", "CordonNftables", "CordonLab", "CordonFleetClient", "CordonWire", "CordonTelemetry", "Yams", "cordon-server", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "cordon-server",
            dependencies: ["CordonServer", "CordonCore", "CordonWire", "CordonTelemetry", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "cordon-bench",
            dependencies: ["CordonAgent", "CordonLab", "CConntrack", "CordonFleetClient", "CordonWire", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        .testTarget(
            name: "CordonCoreTests",
            dependencies: ["CordonCore", "CordonStore", "CordonAgent", "CordonTelemetry", "CordonLab", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // The server's routes in process, on in-memory stores: no root, no PostgreSQL, no network.
        .testTarget(name: "CordonServerTests", dependencies: ["CordonServer", "CordonWire", "CordonCore",
                                                     .product(name: "HummingbirdTesting", package: "hummingbird"),
                                                     .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "CordonIntegrationTests", dependencies: ["CordonCore", "CordonStore", "CordonAgent", "CordonNftables", "CordonLab", "cordon", "cordon-bench",
                                                          "cordon-server", "CordonServer", "CordonWire", "CordonFleetClient",
                                                          .product(name: "GRDB", package: "GRDB.swift"),
                                                          .product(name: "PostgresNIO", package: "postgres-nio")]),
    ],
    swiftLanguageModes: [.v6]
)
