import Testing
@testable import APIKeysWire

@Suite struct RoundTripTests {
    @Test(arguments: Fixtures.all.indices)
    func everyMessageRoundTrips(index: Int) throws {
        try assertRoundTrip(Fixtures.all[index])
    }

    private func assertRoundTrip<M: WireMessage>(_ value: M) throws {
        let bytes = try value.serializedBytes()
        #expect(try M(serializedBytes: bytes) == value)
    }

    @Test func defaultValuesEncodeToNothing() throws {
        #expect(try CheckRequest().serializedBytes().isEmpty)
        #expect(try Envelope().serializedBytes().isEmpty)
        #expect(try CheckRequest(serializedBytes: [UInt8]()) == CheckRequest())
    }

    @Test func optionalFieldsKeepPresence() throws {
        let absent = try UpdateKeyRequest(serializedBytes: UpdateKeyRequest(id: "k").serializedBytes())
        #expect(absent.name == nil)
        #expect(absent.expiresAtMS == nil)
        #expect(!absent.hasPermissions)
        #expect(absent.permissions == PermissionSet())

        let zero = try UpdateKeyRequest(
            serializedBytes: UpdateKeyRequest(id: "k", name: "", expiresAtMS: 0, permissions: PermissionSet())
                .serializedBytes())
        #expect(zero.name == "")
        #expect(zero.expiresAtMS == 0)
        #expect(zero.hasPermissions)
        #expect(zero.permissions == PermissionSet(names: []))
    }

    @Test func bytesPayloadKeepsZeros() throws {
        let payload: [UInt8] = [0, 0, 0, 1, 0]
        let decoded = try Envelope(serializedBytes: Envelope(payload: payload).serializedBytes())
        #expect(decoded.payload == payload)
    }

    @Test func stringCutShortByNULIsRejected() throws {
        // Field 1 (name), wire type 2, length 3: "a\0b".
        let bytes: [UInt8] = [0x0A, 3, UInt8(ascii: "a"), 0, UInt8(ascii: "b")]
        #expect(throws: WireError.nulInString(message: "apikeys.v1.CreateKeyRequest", field: "name")) {
            try CreateKeyRequest(serializedBytes: bytes)
        }
    }

    @Test func invalidUTF8IsRejected() throws {
        let bytes: [UInt8] = [0x0A, 2, 0xC3, 0x28]
        #expect(throws: WireError.invalidUTF8(message: "apikeys.v1.CheckRequest", field: "key")) {
            try CheckRequest(serializedBytes: bytes)
        }
    }

    @Test func encodingAStringWithNULThrows() {
        #expect(throws: WireError.nulInString(message: "apikeys.v1.CreateKeyRequest", field: "name")) {
            try CreateKeyRequest(name: "a\u{0}b").serializedBytes()
        }
    }

    @Test func truncatedBytesAreMalformed() throws {
        let bytes = try Fixtures.apiKey.serializedBytes()
        #expect(throws: WireError.malformedMessage(message: "apikeys.v1.ApiKey")) {
            try ApiKey(serializedBytes: bytes.dropLast(3))
        }
    }

    @Test func repeatedMetadataKeyKeepsTheLastValue() throws {
        // Two map entries for "a": protobuf semantics say the last one wins.
        let entry1: [UInt8] = [0x0A, 1, UInt8(ascii: "a"), 0x12, 1, UInt8(ascii: "1")]
        let entry2: [UInt8] = [0x0A, 1, UInt8(ascii: "a"), 0x12, 1, UInt8(ascii: "2")]
        let bytes = [0x32, UInt8(entry1.count)] + entry1 + [0x32, UInt8(entry2.count)] + entry2
        #expect(try Envelope(serializedBytes: bytes).metadata == ["a": "2"])
    }
}
