// swift-tools-version: 6.0
// Cordon — host microsegmentation agent for Linux. GPL-2.0-or-later (the netfilter libraries are GPL).
import PackageDescription

let package = Package(
    name: "Cordon",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "cordon", targets: ["cordon"]),
        .executable(name: "cordon-bench", targets: ["cordon-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
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
        .target(
            name: "CordonAgent",
            dependencies: ["CordonCore", "CordonStore", "CordonConntrack", "CordonNftables", "CNftnl", "CordonNetlink", "Yams",
                           .product(name: "SystemPackage", package: "swift-system"),
                           .product(name: "Logging", package: "swift-log")]
        ),

        // Throwaway network namespaces for the demo, the integration tests and the benchmarks.
        .target(name: "CordonLab"),

        .executableTarget(
            name: "cordon",
            dependencies: ["CordonAgent", "CordonNftables", "CordonLab", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "cordon-bench",
            dependencies: ["CordonAgent", "CordonLab", "CConntrack", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        .testTarget(
            name: "CordonCoreTests",
            dependencies: ["CordonCore", "CordonStore", "CordonAgent", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "CordonIntegrationTests", dependencies: ["CordonCore", "CordonStore", "CordonAgent", "CordonNftables", "CordonLab", "cordon", "cordon-bench",
                                                          .product(name: "GRDB", package: "GRDB.swift")]),
    ],
    swiftLanguageModes: [.v6]
)
