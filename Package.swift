// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "epochfs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "epochfs", targets: ["epochfs"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // etcd's v3 JSON gateway for `epochfs reconcile` (Sources/EpochReconcile/EtcdClient.swift says why).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // The mount's metrics: recorded through swift-metrics, kept and rendered in the
        // Prometheus text format by swift-prometheus (Sources/EpochMetrics).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries, found through pkg-config (Debian: libssl-dev, libfuse3-dev).
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),

        // Linux calls and constants Swift's Glibc module leaves out (they need _GNU_SOURCE).
        .target(name: "CLinux"),
        // FUSE over io_uring's rings, through liburing (Debian: liburing-dev).
        .target(name: "CURing", linkerSettings: [.linkedLibrary("uring")]),

        // Layers, lowest first: IO and Crypto; Format; System and WAL; Header and Metrics; Store;
        // Check; Volume; FUSE and Reconcile; the CLI. A target depends only on lower layers'
        // targets and the C modules, and declares every module it imports; nothing below the
        // FUSE frontend uses CFuse3. LayeringTests checks all three against this manifest;
        // docs/ARCHITECTURE.md says what each layer holds.
        // Every call on the backing directory (and the WAL files) goes through EpochIO.
        .target(name: "EpochIO", dependencies: ["CLinux", .product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "EpochCrypto", dependencies: ["COpenSSL"]),
        .target(name: "EpochFormat", dependencies: ["EpochCrypto"]),
        // What the volume layers share below them: locks, buffers, the shell, the mount table,
        // the backing directory's owner file.
        .target(name: "EpochSystem", dependencies: ["CLinux", "EpochCrypto", "EpochIO"]),
        // The volume's header: key sources, the header journal and its backups, the anchor.
        .target(name: "EpochHeader", dependencies: [
            "EpochCrypto", "EpochFormat", "EpochIO", "EpochSystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // What a mount reports: its counters, its metrics (recorded through swift-metrics, kept
        // and rendered in the Prometheus text format by swift-prometheus), re-encryption's status.
        .target(name: "EpochMetrics", dependencies: [
            "EpochFormat",
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // The stored volume: names, file content, the backing tree, and the opened volume
        // (LiveVolume) they share and are built on.
        .target(name: "EpochStore", dependencies: [
            "CLinux", "EpochCrypto", "EpochFormat", "EpochHeader", "EpochIO", "EpochMetrics", "EpochSystem",
        ]),
        // The checks: scan and fsck (with repairs), re-encryption, retire, the format upgrade.
        .target(name: "EpochCheck", dependencies: [
            "CLinux", "EpochCrypto", "EpochFormat", "EpochHeader", "EpochIO", "EpochMetrics", "EpochStore",
        ]),
        // The volume as its users see it: create and open, status, the control protocol, failures.
        .target(name: "EpochVolume", dependencies: [
            "EpochCheck", "EpochFormat", "EpochHeader", "EpochIO", "EpochMetrics", "EpochStore", "EpochSystem",
        ]),
        // CRC-32C for the WAL reader: SSE4.2 when the CPU has it, a table otherwise.
        .target(name: "CCRC32C"),
        // The raft WAL: read beside the volume layers, never by them.
        .target(name: "EpochWAL", dependencies: ["CCRC32C", "EpochCrypto", "EpochFormat", "EpochIO"]),
        .target(name: "EpochFUSE", dependencies: [
            "CFuse3", "CLinux", "CURing",
            "EpochCheck", "EpochHeader", "EpochIO", "EpochMetrics", "EpochStore", "EpochSystem", "EpochVolume",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // `epochfs reconcile`: volumes follow a committed epoch from a file, a command or etcd.
        .target(name: "EpochReconcile", dependencies: [
            "EpochFormat", "EpochHeader", "EpochIO", "EpochSystem", "EpochVolume",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The text escaping of `epochfs wal dump`, sixteen bytes at a time with SSE2.
        .target(name: "CEscape"),
        .executableTarget(name: "epochfs", dependencies: [
            "CEscape",
            "EpochCheck", "EpochCrypto", "EpochFormat", "EpochHeader", "EpochMetrics", "EpochStore", "EpochSystem",
            "EpochVolume", "EpochWAL", "EpochFUSE", "EpochReconcile",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "epochfs-bench", dependencies: ["EpochCrypto", "EpochFormat"],
                          path: "bench/Sources/epochfs-bench"),
        .executableTarget(name: "epochfs-walgen", dependencies: ["EpochCrypto", "EpochWAL"],
                          path: "bench/Sources/epochfs-walgen"),

        .target(name: "Support", dependencies: ["CLinux", "EpochIO"], path: "Tests/Support"),
        .testTarget(name: "EpochIOTests", dependencies: ["EpochIO", "Support"]),
        .testTarget(name: "EpochCryptoTests", dependencies: ["EpochCrypto", "Support"]),
        .testTarget(name: "EpochFormatTests", dependencies: ["EpochCrypto", "EpochFormat", "Support"]),
        .testTarget(name: "EpochVolumeTests", dependencies: [
            "CLinux", "EpochCheck", "EpochCrypto", "EpochFormat", "EpochHeader", "EpochIO", "EpochMetrics", "EpochStore",
            "EpochSystem", "EpochVolume", "Support",
        ]),
        .testTarget(name: "EpochWALTests", dependencies: ["CCRC32C", "EpochCrypto", "EpochFormat", "EpochHeader", "EpochStore", "EpochWAL", "EpochVolume", "Support"]),
        .testTarget(name: "CLITests", dependencies: ["epochfs", "Support"]),
        .testTarget(name: "CFuse3Tests", dependencies: ["CFuse3"]),
        .testTarget(name: "EpochFUSETests", dependencies: ["epochfs", "CLinux", "EpochStore", "EpochVolume", "Support"]),
        .testTarget(name: "EtcdTests", dependencies: ["epochfs", "EpochCrypto", "EpochFormat", "EpochHeader", "EpochVolume", "EpochWAL", "EpochReconcile", "Support"]),
        .testTarget(name: "EpochReconcileTests", dependencies: ["epochfs", "EpochReconcile", "EpochVolume", "Support"]),
    ],
    swiftLanguageModes: [.v6]
)
