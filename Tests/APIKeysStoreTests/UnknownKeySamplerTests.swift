import APIKeysCore
import Testing
@testable import APIKeysSQLite
@testable import APIKeysStore

/// Checks of unknown keys are written whole at most once per address, reason and second (ten a
/// second in all), counted otherwise, and dropped while the disk is low; real keys' are untouched.
@Suite struct UnknownKeySamplerTests {
    private func unknown(_ seq: UInt64, atMS: Int64, from address: String) -> AuditRecord {
        AuditRecord(
            seq: seq, atMS: atMS, action: .apiRequest, keyID: "", keyName: "", denial: .unknownKey,
            permissions: Array(repeating: String(repeating: "p", count: 64), count: 64),
            resource: String(repeating: "r", count: 1024), clientAddress: address)
    }

    @Test func oneAddressFloodingIsOneEventAndOneCountASecond() {
        var sampler = UnknownKeySampler()
        var written: [AuditRecord] = []
        for seq in 1...5_000 {
            let event = unknown(UInt64(seq), atMS: 10_000 + Int64(seq) / 10, from: "192.0.2.1")
            if !sampler.absorbs(event) { written.append(event) }
        }
        // 5,000 checks over 500 ms: one second.
        #expect(written.count == 1 && written[0].seq == 1)
        #expect(sampler.drain(before: 10_400).isEmpty)  // the second is not over
        let summaries = sampler.drain(before: 11_000)
        #expect(summaries.count == 1)
        #expect(summaries[0].seq == 2 && summaries[0].atMS == 10_000 && summaries[0].clientAddress == "192.0.2.1")
        #expect(summaries[0].detail.hasPrefix("4999 more checks of unknown keys"), "\(summaries[0].detail)")
        #expect(summaries[0].permissions.isEmpty && summaries[0].resource.isEmpty)
        #expect(sampler.isEmpty)
    }

    @Test func manyAddressesAreBoundedToo() {
        var sampler = UnknownKeySampler()
        var written = 0
        var seq: UInt64 = 0
        for round in 0..<3 {
            for address in 0..<1_000 {
                seq += 1
                if !sampler.absorbs(
                    unknown(seq, atMS: 20_000 + Int64(round), from: "10.0.\(address / 256).\(address % 256)"))
                {
                    written += 1
                }
            }
        }
        #expect(written == UnknownKeySampler.maxSampledPerSecond)
        let summaries = sampler.drain(before: nil)
        #expect(summaries.count == UnknownKeySampler.maxSourcesPerSecond + 1)
        let counted = summaries.map { Int($0.detail.prefix { $0.isNumber })! }.reduce(0, +)
        #expect(counted + written == 3_000)
        #expect(summaries.contains { $0.detail.contains("from addresses beyond the") })
    }

    @Test func realKeysPassAndLowDiskShedsTheNoise() {
        var sampler = UnknownKeySampler()
        let real = AuditRecord(
            seq: 1, atMS: 1_000, action: .apiRequest, keyID: "key_1", keyName: "k", denial: .disabled,
            clientAddress: "192.0.2.1")
        for _ in 0..<100 {
            let absorbed = sampler.absorbs(real)
            #expect(!absorbed)
        }
        sampler.shedding = true
        let unknownAbsorbed = sampler.absorbs(unknown(2, atMS: 1_000, from: "192.0.2.1"))
        let realAbsorbed = sampler.absorbs(real)
        #expect(unknownAbsorbed && !realAbsorbed)
        #expect(sampler.shed == 1 && sampler.drain(before: nil).isEmpty)
    }
}
