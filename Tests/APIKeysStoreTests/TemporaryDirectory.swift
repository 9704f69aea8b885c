import APIKeysCore
import Foundation
@testable import APIKeysStore

/// Runs `body` with a fresh directory that is removed afterwards.
func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("apikeys-test-\(UUID())").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try body(path)
}

/// Runs `body` with a key service on a new database in a temporary directory, closed afterwards.
func withService<R>(
    clock: ManualWallClock = ManualWallClock(nowMS: 1_700_000_000_000),
    _ body: (KeyService, String) throws -> R
) throws -> R {
    try withTemporaryDirectory { dir in
        let service = try KeyService.open(path: dir + "/apikeys.sqlite", clock: clock)
        defer { service.close() }
        return try body(service, dir)
    }
}
