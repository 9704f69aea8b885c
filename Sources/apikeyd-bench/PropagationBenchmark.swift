import APIKeysClient
import APIKeysWire
import ArgumentParser
import Foundation
import Histogram

/// Revocation propagation across replicas: the time from a RotateKey or SetKeyEnabled(false)
/// returning on one replica to the first deny of the old secret on another.
struct PropagationBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "propagation",
        abstract: "Revoke keys on one replica; time until another denies them (p50/p99/max).")

    @Option(help: "The replica that revokes, host:port.") var writer = "127.0.0.1:7411"
    @Option(help: "The replica that is asked, host:port.") var observer = "127.0.0.1:7412"
    @Option(help: "Admin token.") var token: String?
    @Option(help: "File holding the admin token.") var tokenFile = "./data/admin.token"
    @Option(help: "Revocations to time.") var rounds = 1000
    @Flag(help: "Print one line of key=value pairs instead of a report.") var machine = false

    func run() async throws {
        guard let writerEndpoint = APIKeysClient.Endpoint(writer), let observerEndpoint = APIKeysClient.Endpoint(observer)
        else { throw ValidationError("--writer and --observer are host:port") }
        let adminToken =
            token ?? (try? String(contentsOfFile: tokenFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        let writer = APIKeysClient(
            configuration: .init(host: writerEndpoint.host, port: writerEndpoint.port, adminToken: adminToken))
        let observer = APIKeysClient(configuration: .init(host: observerEndpoint.host, port: observerEndpoint.port))
        var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for round in 0..<rounds {
            let issued = try await writer.createKey(name: "propagation \(round)", permissions: ["jobs:read"])
            while try await observer.check(key: issued.secret, permissions: ["jobs:read"]).decision != .allow {}
            if round % 2 == 0 {
                _ = try await writer.rotateKey(id: issued.key.id)
            } else {
                _ = try await writer.setKeyEnabled(id: issued.key.id, enabled: false)
            }
            let returned = DispatchTime.now().uptimeNanoseconds
            while try await observer.check(key: issued.secret, permissions: ["jobs:read"]).decision == .allow {}
            latencies.record(DispatchTime.now().uptimeNanoseconds - returned)
        }
        await writer.close()
        await observer.close()
        let ms = { (percentile: Double) in Double(latencies.valueAtPercentile(percentile)) / 1e6 }
        if machine {
            print(String(format: "rounds=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f", rounds, ms(50), ms(99), Double(latencies.max) / 1e6))
        } else {
            print(String(format: "%d revocations: first deny on the other replica after p50 %.2f ms, p99 %.2f ms, max %.2f ms", rounds, ms(50), ms(99), Double(latencies.max) / 1e6))
        }
    }
}
