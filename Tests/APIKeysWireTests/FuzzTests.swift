import Testing
@testable import APIKeysWire

/// Random and mutated bytes fed to every decoder: each input must decode or throw, never crash.
@Suite struct FuzzTests {
    /// A seeded generator so a failure can be replayed.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let decoders: [(String, @Sendable ([UInt8]) throws -> Void)] = Fixtures.all.map { sample in
        (String(describing: type(of: sample)), decoder(for: sample))
    }

    static func decoder<M: WireMessage>(for _: M) -> @Sendable ([UInt8]) throws -> Void {
        { bytes in _ = try M(serializedBytes: bytes) }
    }

    /// Feeds `inputs` to every decoder and returns how many decoded and how many threw.
    private func feed(_ inputs: [[UInt8]]) -> (decoded: Int, rejected: Int) {
        var decoded = 0
        var rejected = 0
        for input in inputs {
            for (_, decode) in Self.decoders {
                do {
                    try decode(input)
                    decoded += 1
                } catch is WireError {
                    rejected += 1
                } catch {
                    Issue.record("unexpected error type: \(error)")
                }
            }
        }
        return (decoded, rejected)
    }

    @Test func randomBytes() {
        var rng = SplitMix64(state: 0xA11CE)
        let inputs = (0..<10_000).map { _ in
            (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        let (decoded, rejected) = feed(inputs)
        #expect(decoded + rejected == inputs.count * Self.decoders.count)
        #expect(rejected > 0)
    }

    @Test func mutatedValidMessages() throws {
        var rng = SplitMix64(state: 0xB0B)
        let seeds = try Fixtures.all.map { try $0.serializedBytes() }.filter { !$0.isEmpty && $0.count < 4096 }
        var inputs: [[UInt8]] = []
        for _ in 0..<10_000 {
            var bytes = seeds.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 1:
                    bytes.insert(
                        UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                case 2 where bytes.count > 1: bytes.remove(at: Int.random(in: 0..<bytes.count, using: &rng))
                default: bytes = Array(bytes.prefix(Int.random(in: 1...bytes.count, using: &rng)))
                }
            }
            inputs.append(bytes)
        }
        let (decoded, rejected) = feed(inputs)
        #expect(decoded + rejected == inputs.count * Self.decoders.count)
        #expect(decoded > 0)
        #expect(rejected > 0)
    }
}
