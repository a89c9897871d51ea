import Foundation
// swift-tools-version:6.1
import PackageDescription

/// CI (scripts/test.sh) builds Nova's own targets with warnings as errors; dependencies and
/// everyday builds are not affected.
let warningsAsErrors: [SwiftSetting] =
  ProcessInfo.processInfo.environment["NOVA_WARNINGS_AS_ERRORS"] == "1" ? [.unsafeFlags(["-warnings-as-errors"])] : []

let swiftSettings: [SwiftSetting] =
  [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
  ] + warningsAsErrors

let package = Package(
  name: "Nova",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "nova", targets: ["nova"]),
    .executable(name: "nova-supervise", targets: ["nova-supervise"]),
    .library(name: "NovaCore", targets: ["NovaCore"]),
    .library(name: "NovaDatabase", targets: ["NovaDatabase"]),
    .library(name: "NovaQueue", targets: ["NovaQueue"]),
    .library(name: "NovaRedis", targets: ["NovaRedis"]),
    .library(name: "NovaRedisQueue", targets: ["NovaRedisQueue"]),
    .library(name: "NovaSecurity", targets: ["NovaSecurity"]),
    .library(name: "NovaPolicy", targets: ["NovaPolicy"]),
    .library(name: "NovaMonitoring", targets: ["NovaMonitoring"]),
    .library(name: "NovaAlerting", targets: ["NovaAlerting"]),
    .library(name: "NovaBenchmarks", targets: ["NovaBenchmarks"]),
    .library(name: "NovaDashboards", targets: ["NovaDashboards"]),
    .library(name: "NovaApplication", targets: ["NovaApplication"]),
    .library(name: "NovaServer", targets: ["NovaServer"]),
    .library(name: "NovaConsole", targets: ["NovaConsole"]),
    .library(name: "NovaJobKinds", targets: ["NovaJobKinds"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-http-types", from: "1.4.0"),
    .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    .package(url: "https://github.com/apple/swift-atomics", from: "1.2.0"),
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
  ],
  targets: [
    // The per-attempt process supervisor and the prctl calls Swift cannot make (prctl is variadic).
    .target(name: "CNovaProcess"),
    .executableTarget(name: "nova-supervise", dependencies: ["CNovaProcess"]),
    // sqlite3_config, which Swift cannot call either (it is variadic).
    .target(name: "CNovaSQLite", linkerSettings: [.linkedLibrary("sqlite3")]),
    .target(
      name: "NovaCore",
      dependencies: [
        "CNovaProcess",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaDatabase",
      dependencies: [
        "NovaCore", "CNovaSQLite",
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "GRDBSQLite", package: "GRDB.swift"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaQueue",
      dependencies: [
        "NovaCore", "NovaDatabase",
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "GRDBSQLite", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaRedis",
      dependencies: [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaRedisQueue",
      dependencies: ["NovaCore", "NovaDatabase", "NovaQueue", "NovaRedis"],
      swiftSettings: swiftSettings
    ),
    .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
    .target(
      name: "NovaSecurity",
      dependencies: [
        "NovaCore", "NovaDatabase", "NovaMonitoring", "NovaQueue", "CZlib",
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaMonitoring",
      dependencies: [
        "NovaCore", "NovaDatabase",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaPolicy",
      dependencies: [
        "NovaCore",
        .product(name: "Atomics", package: "swift-atomics"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaAlerting",
      dependencies: [
        "NovaCore", "NovaDatabase", "NovaMonitoring",
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaBenchmarks",
      dependencies: [
        "NovaAlerting", "NovaCore", "NovaDatabase", "NovaJobKinds", "NovaMonitoring", "NovaPolicy", "NovaQueue", "NovaRedis", "NovaSecurity",
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaDashboards",
      dependencies: ["NovaCore"],
      swiftSettings: swiftSettings
    ),
    // The operations console: server-rendered pages over the stores (routes live in NovaServer).
    .target(
      name: "NovaConsole",
      dependencies: ["NovaAlerting", "NovaCore", "NovaQueue", "NovaSecurity"],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaApplication",
      dependencies: [
        "NovaJobKinds",
        "NovaAlerting", "NovaCore", "NovaDatabase", "NovaMonitoring", "NovaPolicy", "NovaQueue", "NovaRedis", "NovaRedisQueue",
        "NovaSecurity",
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaServer",
      dependencies: [
        "NovaApplication",
        "NovaConsole",
        "NovaCore",
        "NovaDatabase",
        "NovaAlerting",
        "NovaDashboards",
        "NovaMonitoring",
        "NovaPolicy",
        "NovaQueue",
        "NovaSecurity",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdCore", package: "hummingbird"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // Job kinds declared in nova-jobs.yaml: programs and HTTP endpoints as job handlers.
    .target(
      name: "NovaJobKinds",
      dependencies: [
        "NovaCore", "NovaQueue",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "nova",
      dependencies: [
        "NovaApplication",
        "NovaJobKinds",
        "NovaBenchmarks",
        "NovaCore",
        "NovaDatabase",
        "NovaAlerting",
        "NovaDashboards",
        "NovaQueue",
        "NovaRedis",
        "NovaMonitoring",
        "NovaPolicy",
        "NovaRedisQueue",
        "NovaSecurity",
        "NovaServer",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // The README's "Use Nova from Swift" example, built and run by the tests.
    .executableTarget(
      name: "HelloNova",
      dependencies: [
        "NovaCore", "NovaQueue",
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Examples/HelloNova",
      swiftSettings: swiftSettings
    ),
    .target(
      name: "NovaTestSupport",
      dependencies: [
        "NovaCore",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      path: "Tests/NovaTestSupport",
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaAlertingTests",
      dependencies: [
        "NovaAlerting", "NovaBenchmarks", "NovaCore", "NovaDatabase", "NovaMonitoring", "NovaQueue", "NovaSecurity", "NovaTestSupport",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaApplicationTests",
      dependencies: [
        "NovaApplication", "NovaCore", "NovaDatabase", "NovaPolicy", "NovaQueue", "NovaSecurity", "NovaTestSupport",
        .product(name: "GRDB", package: "GRDB.swift"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaBenchmarksTests",
      dependencies: [
        "NovaBenchmarks", "NovaCore", "NovaPolicy", "NovaQueue", "NovaRedis", "NovaRedisQueue", "NovaSecurity", "NovaTestSupport",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaJobKindsTests",
      dependencies: ["NovaBenchmarks", "NovaCore", "NovaJobKinds", "NovaQueue", "NovaTestSupport"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaCoreTests",
      dependencies: ["NovaCore", "NovaTestSupport"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaMonitoringTests",
      dependencies: [
        "NovaCore", "NovaDatabase", "NovaMonitoring", "NovaQueue", "NovaSecurity", "NovaTestSupport",
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaPolicyTests",
      dependencies: ["NovaCore", "NovaPolicy", "NovaTestSupport"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaQueueTests",
      dependencies: [
        "NovaBenchmarks", "NovaCore", "NovaDatabase", "NovaQueue", "NovaRedis", "NovaRedisQueue", "NovaTestSupport",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaRedisTests",
      dependencies: [
        "NovaRedis", "NovaTestSupport",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaSecurityTests",
      dependencies: [
        "NovaCore", "NovaDatabase", "NovaQueue", "NovaRedisQueue", "NovaSecurity", "NovaTestSupport",
        .product(name: "Crypto", package: "swift-crypto"), .product(name: "GRDB", package: "GRDB.swift"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "NovaServerTests",
      dependencies: [
        "NovaApplication", "NovaAlerting", "NovaBenchmarks", "NovaConsole", "NovaCore", "NovaDatabase", "NovaDashboards", "NovaMonitoring",
        "NovaPolicy",
        "NovaQueue", "NovaServer", "NovaRedisQueue",
        "NovaSecurity", "NovaTestSupport",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdTesting", package: "hummingbird"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "HTTPTypes", package: "swift-http-types"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
  ],
  swiftLanguageModes: [.v6]
)
