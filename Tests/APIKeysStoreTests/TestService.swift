import APIKeysCore
import APIKeysTestSupport
import Foundation
@testable import APIKeysStore

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
