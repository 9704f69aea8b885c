import APIKeysTestSupport
import Testing
@testable import APIKeysWire

/// Random and mutated bytes fed to every decoder: each input must decode or throw, never crash.
@Suite struct FuzzTests {
    static let decoders: [(String, @Sendable ([UInt8]) throws -> Bool)] = Fixtures.all.map { sample in
        (String(describing: type(of: sample)), decoder(for: sample))
    }

    /// Decodes with `M`; what decodes must encode and decode again to the same value (false if not).
    static func decoder<M: WireMessage>(for _: M) -> @Sendable ([UInt8]) throws -> Bool {
        { bytes in
            let message = try M(serializedBytes: bytes)
            return (try? M(serializedBytes: message.serializedBytes())) == message
        }
    }

    /// Feeds `inputs` to every decoder; per decoder, how many inputs decoded and how many threw.
    /// A decoded value that does not survive a round trip, or an error other than WireError, is
    /// recorded as an issue.
    private func feed(_ inputs: [[UInt8]]) -> [String: (decoded: Int, rejected: Int)] {
        var counts: [String: (decoded: Int, rejected: Int)] = [:]
        for input in inputs {
            for (name, decode) in Self.decoders {
                do {
                    if try decode(input) {
                        counts[name, default: (0, 0)].decoded += 1
                    } else {
                        Issue.record("\(name) changed across encode and decode: \(input)")
                    }
                } catch is WireError {
                    counts[name, default: (0, 0)].rejected += 1
                } catch {
                    Issue.record("unexpected error type: \(error)")
                }
            }
        }
        return counts
    }

    /// The fixtures hold a sample of every message type of the contract, so these tests (and
    /// the round trips) cover them all.
    @Test func fixturesCoverEveryMessageOfTheContract() {
        let covered = Set(Fixtures.all.map { ObjectIdentifier(type(of: $0)) })
        let missing = WireContract.messageTypes.filter { !covered.contains(ObjectIdentifier($0)) }
        #expect(missing.isEmpty, "no fixture for \(missing)")
    }

    @Test func randomBytes() {
        var rng = SplitMix64(state: 0xA11CE)
        let inputs = (0..<10_000).map { _ in
            (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        let counts = feed(inputs)
        // Random bytes are mostly not a message: every decoder refused some (a decoder that
        // accepted everything would not be decoding).
        let neverRejecting = counts.filter { $0.value.rejected == 0 }.map(\.key)
        #expect(neverRejecting.isEmpty, "accepted every random input: \(neverRejecting)")
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
        let counts = feed(inputs)
        // Mutations of valid messages both decode (and then survive a round trip) and fail.
        #expect(counts.values.reduce(0) { $0 + $1.decoded } > inputs.count)
        #expect(counts.values.reduce(0) { $0 + $1.rejected } > inputs.count)
    }
}
