import APIKeysClient
import APIKeysWire
import ArgumentParser
import Foundation
import Histogram
import NIOCore
import NIOPosix
import NIOSSL

/// A load generator for the real protocol, in the spirit of redis-benchmark.
struct LoadBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Drive a running apikeyd with Check (or CreateKey) calls; print requests/s and latency percentiles.")

    @Option(help: "Server host.") var host = "127.0.0.1"
    @Option(help: "Server port.") var port = 7411
    @Option(name: .customShort("c"), help: "Connections.") var connections = 50
    @Option(name: .customShort("P"), help: "Calls in flight per connection.") var pipeline = 1
    @Option(name: .customShort("d"), help: "Seconds to measure.") var duration = 5.0
    @Option(name: .customShort("n"), help: "Replies to measure, instead of -d seconds.") var requests: Int?
    @Option(help: "Seconds to run before measuring.") var warmup = 1.0
    @Option(help: "RPC to call: check or create.") var rpc = "check"
    @Option(help: "API key to check (default: create one with the admin token).") var key: String?
    @Option(name: [.customLong("permission"), .customShort("p")], help: "Permission to ask for; repeatable.")
    var permissions: [String] = ["jobs:read"]
    @Option(help: "Admin token (to create the key, and for --rpc create).") var token: String?
    @Option(help: "File holding the admin token.") var tokenFile = "./data/admin.token"
    @Option(help: "Event loop threads of the generator.") var threads = 1
    @Option(help: "Speak TLS, trusting this PEM CA file (the server's certificate must carry 127.0.0.1 or the host).")
    var ca: String?
    @Flag(help: "Print one line of key=value pairs instead of a report.") var machine = false

    func run() async throws {
        guard rpc == "check" || rpc == "create" else { throw ValidationError("--rpc is check or create") }
        guard connections > 0, pipeline > 0, threads > 0, requests.map({ $0 > 0 }) ?? true else {
            throw ValidationError("-c, -P, -n and --threads take positive numbers")
        }
        let adminToken =
            token
            ?? (try? String(contentsOfFile: tokenFile, encoding: .utf8))?.trimmingCharacters(
                in: .whitespacesAndNewlines)
        let method: any RPCMethodDescriptor = rpc == "check" ? Authorize.check : KeyAdmin.createKey
        let payload: [UInt8]
        if rpc == "check" {
            var secret = key
            if secret == nil { secret = try await createKey(adminToken: adminToken) }
            payload = try CheckRequest(key: secret!, permissions: permissions, resource: "GET /bench").serializedBytes()
        } else {
            guard adminToken != nil else { throw ValidationError("--rpc create needs --token or --token-file") }
            payload = try CreateKeyRequest(name: "bench", permissions: permissions).serializedBytes()
        }
        var metadata: [String: String] = [:]
        if method.isKeyAdmin, let adminToken { metadata[MetadataKey.authorization] = "Bearer \(adminToken)" }
        let frames = try (1...pipeline).map { slot in
            var frame = ByteBuffer()
            try Framing.write(
                Envelope(callID: UInt64(slot), method: method.path, payload: payload, metadata: metadata),
                to: &frame)
            return frame
        }

        let tlsContext = try ca.map { try APIKeysClient.TLS(caFile: $0).makeContext() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let control = LoadControl(requests: requests)
        var results: [EventLoopFuture<LoadTally>] = []
        for _ in 0..<connections {
            let loop = group.next()
            let finished = loop.makePromise(of: LoadTally.self)
            results.append(finished.futureResult)
            _ = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tlsContext {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: tlsContext, serverHostname: nil))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            LoadConnectionHandler(
                                frames: frames, control: control, decodeCheck: rpc == "check", finished: finished))
                    }
                }
                .connect(host: host, port: port).get()
        }
        try await Task.sleep(for: .seconds(warmup))
        let cpuStart = CPUTime.now()
        let start = NIODeadline.now()
        control.recording.store(true, ordering: .relaxed)
        if requests != nil {
            while !control.budgetSpent { try await Task.sleep(for: .milliseconds(2)) }
        } else {
            try await Task.sleep(for: .seconds(duration))
        }
        control.recording.store(false, ordering: .relaxed)
        let end = requests != nil ? control.lastCountedAt.load(ordering: .relaxed) : NIODeadline.now().uptimeNanoseconds
        let elapsed = Double(end - start.uptimeNanoseconds) / 1e9
        let cpu = CPUTime.now() - cpuStart
        control.running.store(false, ordering: .relaxed)
        var total = LoadTally()
        for result in results { total.add(try await result.get()) }
        try await group.shutdownGracefully()
        report(total, elapsed: elapsed, cpuSeconds: cpu)
    }

    private func createKey(adminToken: String?) async throws -> String {
        guard let adminToken else { throw ValidationError("give --key, or an admin token to create one") }
        let client = APIKeysClient(
            configuration: .init(host: host, port: port, adminToken: adminToken, tls: ca.map { .init(caFile: $0) }))
        defer { Task { await client.close() } }
        return try await client.createKey(name: "bench", permissions: permissions).secret
    }

    private func report(_ tally: LoadTally, elapsed: Double, cpuSeconds: Double) {
        let rps = Double(tally.replies) / elapsed
        let us = { (percentile: Double) in Double(tally.latencies.valueAtPercentile(percentile)) / 1000 }
        let errors = tally.statuses.filter { $0.key != .ok }.values.reduce(0, +)
        if machine {
            print(
                String(
                    format:
                        "rps=%.0f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%d client_cpu=%.2f"
                        + " replies=%d allowed=%d denied_401=%d denied_403=%d",
                    rps, us(50), us(90), us(99), us(99.9), Double(tally.latencies.max) / 1000, errors,
                    cpuSeconds / elapsed, tally.replies, tally.allowed, tally.denied401, tally.denied403))
            return
        }
        print("apikeyd-bench load: \(rpc), c=\(connections) P=\(pipeline), \(String(format: "%.1f", elapsed)) s")
        print(String(format: "  requests/s   %12.0f", rps))
        print(
            String(
                format: "  latency µs   p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f",
                us(50), us(90), us(99), us(99.9), Double(tally.latencies.max) / 1000))
        print(
            "  replies      \(tally.replies)   errors \(errors)   statuses \(tally.statuses.map { "\($0.key)=\($0.value)" }.sorted())"
        )
        if !tally.decisions.isEmpty {
            print("  decisions    \(tally.decisions.map { "\($0.key)=\($0.value)" }.sorted())")
        }
        print(String(format: "  generator CPU %.0f%% of one core", 100 * cpuSeconds / elapsed))
    }
}

/// CPU time (user + system) this process has used.
enum CPUTime {
    static func now() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
