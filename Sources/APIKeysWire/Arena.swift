internal import CArena
internal import CProtobufC

/// Memory for one pack or unpack through protobuf-c, released all at once when the arena goes away.
///
/// Unpacking uses the arena (`CArena`, a small C bump allocator) as protobuf-c's allocator: every
/// block protobuf-c asks for is carved from the arena's chunks with its requested size recorded
/// just before it, and protobuf-c's frees are no-ops. That makes freeing an unpacked message on
/// every path automatic (the arena's `deinit`), and it gives back what C strings lose: the true length of each string field, so a string cut
/// short by a NUL is detected instead of silently truncated.
///
/// Packing builds the C structs, strings and arrays in the arena, so they live until `pack` returns.
final class Arena {
    private let raw: OpaquePointer

    init() {
        guard let raw = capikeys_arena_create() else { fatalError("out of memory creating an arena") }
        self.raw = raw
    }

    deinit {
        capikeys_arena_destroy(raw)
    }

    /// Chunks allocated minus chunks freed on the calling thread (a leak check for tests).
    static var liveChunksOnThisThread: Int { Int(capikeys_arena_thread_live_chunks()) }

    /// Forgets every allocation, keeping the first chunk for the next use: an arena reused per
    /// connection costs no `malloc` per call.
    func reset() {
        capikeys_arena_reset(raw)
    }

    /// Returns `size` bytes, 16-byte aligned, valid until the arena is released or reset.
    func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        guard let block = capikeys_arena_alloc(raw, size) else { fatalError("out of memory allocating \(size) bytes") }
        return block
    }

    /// The size requested for a block this arena handed out, or nil if another arena did.
    /// `pointer` must be a block of some arena (constant time: it reads the block's header).
    func allocatedSize(of pointer: UnsafeRawPointer) -> Int? {
        let size = capikeys_arena_block_size(raw, pointer)
        return size < 0 ? nil : Int(size)
    }

    /// Runs `body` with a protobuf-c allocator that allocates from this arena (in C: no Swift
    /// reference counting per allocation).
    func withAllocator<R>(_ body: (UnsafeMutablePointer<ProtobufCAllocator>) throws -> R) rethrows -> R {
        var allocator = ProtobufCAllocator(
            alloc: capikeys_arena_protobuf_alloc, free: capikeys_arena_protobuf_free,
            allocator_data: UnsafeMutableRawPointer(raw))
        return try withExtendedLifetime(self) { try body(&allocator) }
    }
}
