// swift-tools-version: 6.1
// The libFuzzer target over the wire layer: its own package, built only by `make fuzz` (and the
// short run in `make test`) with -sanitize=fuzzer,address, so the normal build never sees it.
import PackageDescription

let package = Package(
    name: "apikeys-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        // fuzz/.deps/apikeyd links to the repository root (made by `make fuzz`): a path
        // dependency is named after its folder, and the clone's folder may have any name.
        .package(path: ".deps/apikeyd"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "apikeys-fuzz",
            dependencies: [
                .product(name: "APIKeysWire", package: "apikeyd"),
                .product(name: "NIOCore", package: "swift-nio"),
                "CFuzzerDriver",
            ]
        ),
        .target(name: "CFuzzerDriver"),
    ],
    swiftLanguageModes: [.v6]
)
