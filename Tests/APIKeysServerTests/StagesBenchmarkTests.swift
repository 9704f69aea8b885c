import APIKeysTestSupport
import Foundation
import Testing

/// The built `apikeyd-bench stages`: every stage of both ports runs, and the HTTP stages end on a
/// request the port allowed (the benchmark exits non-zero otherwise).
@Suite struct StagesBenchmarkTests {
    static let binary = productsDirectory.appendingPathComponent("apikeyd-bench")

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: binary.path)))
    func measuresEveryStageOfBothPorts() async throws {
        let result = try await runCommand(Self.binary, ["stages", "--keys", "10", "--checks", "200"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        let measured = lines.filter { $0.contains(" ns ") && $0.contains(" allocations ") }
        #expect(measured.count == 17, "\(result.stdout)")
        #expect(lines.contains("RPC Check (one frame of the load generators' request):"))
        #expect(lines.contains("HTTP /authorize (the request wrk sends straight at the port):"))
        #expect(measured.contains { $0.hasSuffix("through the port's handlers (EmbeddedChannel)") })
    }
}
