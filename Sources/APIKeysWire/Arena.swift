internal import CProtobufC

/// Memory for one pack or unpack through protobuf-c, released all at once when the arena goes away.
///
/// Unpacking uses the arena as protobuf-c's allocator: every block protobuf-c asks for is carved
/// from the arena's chunks with its requested size recorded just before it, and protobuf-c's frees
/// are no-ops. That makes freeing an unpacked message on every path automatic (the arena's `deinit`),
/// and it gives back what C strings lose: the true length of each string field, so a string cut
/// short by a NUL is detected instead of silently truncated.
///
/// Packing builds the C structs, strings and arrays in the arena, so they live until `pack` returns.
final class Arena {
    private static let headerSize = 16
    private static let chunkSize = 4096

    private var chunks: [UnsafeMutableRawPointer] = []
    private var chunkBounds: [Range<UInt>] = []
    private var cursor: UnsafeMutableRawPointer?
    private var remaining = 0

    init() {}

    deinit {
        for chunk in chunks { chunk.deallocate() }
    }

    /// Forgets every allocation, keeping the first chunk for the next use: an arena reused per
    /// connection costs no `malloc` per call.
    func reset() {
        guard let first = chunks.first else { return }
        for chunk in chunks.dropFirst() { chunk.deallocate() }
        chunks = [first]
        chunkBounds = [chunkBounds[0]]
        cursor = first
        remaining = Int(chunkBounds[0].upperBound - chunkBounds[0].lowerBound)
    }

    /// Returns `size` bytes, 16-byte aligned, valid until the arena is released or reset.
    func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        let needed = Self.headerSize + (size + 15) & ~15
        if needed > remaining {
            let capacity = max(Self.chunkSize, needed)
            let chunk = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
            chunks.append(chunk)
            let start = UInt(bitPattern: chunk)
            chunkBounds.append(start..<start + UInt(capacity))
            cursor = chunk
            remaining = capacity
        }
        let block = cursor!
        block.storeBytes(of: size, as: Int.self)
        cursor = block + needed
        remaining -= needed
        return block + Self.headerSize
    }

    /// The size requested for a block this arena handed out, or nil if `pointer` is not one.
    func allocatedSize(of pointer: UnsafeRawPointer) -> Int? {
        let address = UInt(bitPattern: pointer)
        guard chunkBounds.contains(where: { $0.contains(address) }) else { return nil }
        return (pointer - Self.headerSize).load(as: Int.self)
    }

    /// Runs `body` with a protobuf-c allocator that allocates from this arena.
    func withAllocator<R>(_ body: (UnsafeMutablePointer<ProtobufCAllocator>) throws -> R) rethrows -> R {
        var allocator = ProtobufCAllocator(
            alloc: { data, size in
                Unmanaged<Arena>.fromOpaque(data!).takeUnretainedValue().allocate(size)
            },
            free: { _, _ in },
            allocator_data: Unmanaged.passUnretained(self).toOpaque()
        )
        return try withExtendedLifetime(self) { try body(&allocator) }
    }
}
