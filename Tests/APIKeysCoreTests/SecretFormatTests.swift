import Testing
@testable import APIKeysCore

@Suite struct SecretFormatTests {
    let format = SecretFormat.standard
    /// `dbm_` + 40 × "A": its CRC-32 (zlib) is 0xFA488E8B, which is "4aAp5P" in base 62.
    let knownSecret = "dbm_" + String(repeating: "A", count: 40) + "4aAp5P"

    @Test func crc32MatchesTheBitwiseDefinitionAtEveryLength() {
        func bitwise(_ bytes: [UInt8]) -> UInt32 {
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                crc ^= UInt32(byte)
                for _ in 0..<8 { crc = crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
            }
            return crc ^ 0xFFFF_FFFF
        }
        var generator = SystemRandomNumberGenerator()
        for length in 0..<80 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(CRC32.checksum(bytes) == bitwise(bytes), "length \(length)")
        }
    }

    @Test func knownCheckDigitsMatchZlibCRC32() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(format.isWellFormed(knownSecret))
    }

    @Test func generatedSecretsAreWellFormedAndDistinct() {
        let secrets = (0..<1000).map { _ in format.generate() }
        #expect(Set(secrets).count == secrets.count)
        for secret in secrets {
            #expect(secret.count == 50)
            #expect(secret.hasPrefix("dbm_"))
            #expect(format.isWellFormed(secret))
        }
    }

    /// 200,000 body characters against a uniform draw over the 62 symbols, by Pearson's
    /// chi-squared (61 degrees of freedom: mean 61, standard deviation 11). Drawing `byte % 62`
    /// without rejecting bytes of 248 and above gives 8 symbols 5/256 each and the rest 4/256:
    /// an expected statistic of about 61 + 1,300 here. The bound, 150, is passed by an unbiased
    /// generator about once in 10^9 runs.
    @Test func bodyCharactersAreUniformOverTheAlphabet() {
        var counts: [Character: Int] = [:]
        let secrets = 5000
        for _ in 0..<secrets {
            for character in format.generate().dropFirst(4).prefix(40) { counts[character, default: 0] += 1 }
        }
        #expect(counts.count == 62)
        let expected = Double(secrets * 40) / 62
        let chiSquared = counts.values.reduce(0.0) { $0 + (Double($1) - expected) * (Double($1) - expected) / expected }
        #expect(
            chiSquared < 150,
            "chi-squared \(chiSquared) over 61 degrees of freedom: the alphabet is not drawn uniformly")
    }

    @Test(arguments: [
        "",
        "dbm_",
        "xyz_" + String(repeating: "A", count: 40) + "4aAp5P",  // wrong prefix
        "dbm_" + String(repeating: "A", count: 39) + "4aAp5P",  // too short
        "dbm_" + String(repeating: "A", count: 41) + "4aAp5P",  // too long
        "dbm_" + String(repeating: "A", count: 39) + "-" + "4aAp5P",  // outside the alphabet
        "dbm_" + String(repeating: "A", count: 39) + "B" + "4aAp5P",  // check does not match
        "dbm_" + String(repeating: "A", count: 40) + "4aAp5Q",  // check digit altered
        "dbm_" + String(repeating: "A", count: 39) + "é" + "4aAp5P",
    ])
    func malformedSecretsAreRejected(secret: String) {
        #expect(!format.isWellFormed(secret))
    }

    @Test func prefixIsConfigurable() throws {
        let custom = try SecretFormat(prefix: "acme_")
        let secret = custom.generate()
        #expect(secret.hasPrefix("acme_"))
        #expect(custom.isWellFormed(secret))
        #expect(!format.isWellFormed(secret))
        #expect(throws: KeyError.self) { try SecretFormat(prefix: "bad prefix") }
    }

    @Test func hintRevealsOnlyThePrefixAndFourCharacters() {
        #expect(format.hint(for: knownSecret) == "dbm_AAAA…")
    }

    @Test func sha256MatchesTheStandardVector() {
        let expected: [UInt8] = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
            0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
        ]
        #expect(SecretHash(of: "abc").digest == expected)
        #expect(SecretHash(digest: expected) == SecretHash(of: "abc"))
        #expect(SecretHash(of: "abd") != SecretHash(of: "abc"))
    }
}

/// A connection's memo of its last secret's hash answers exactly as hashing each time would,
/// whatever order secrets come in: the same one again, another, a malformed one, one with the
/// same bytes in another string, one too long to remember, back again.
@Suite struct PresentedSecretMemoTests {
    @Test func theMemoAnswersAsHashingEachTimeWould() {
        let format = SecretFormat.standard
        let (first, second) = (format.generate(), format.generate())
        let sameBytesAnotherString = String(decoding: Array(first.utf8), as: UTF8.self)
        let longer = "Bearer " + second + String(repeating: "x", count: 200)
        let oneDigitOff = String(first.dropLast()) + (first.hasSuffix("0") ? "1" : "0")
        let presented: [String] = [
            first, first, second, first, "dbm_malformed", "dbm_malformed", "Bearer " + second, second,
            sameBytesAnotherString, "", longer, longer, first, oneDigitOff,
        ]
        let memo = PresentedSecretMemo()
        for (index, secret) in presented.enumerated() {
            #expect(memo.hash(ofPresented: secret, format: format) == format.hash(ofPresented: secret), "#\(index)")
        }
        #expect(format.hash(ofPresented: first) != nil && format.hash(ofPresented: "dbm_malformed") == nil)
    }
}
