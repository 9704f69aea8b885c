#ifndef CAPIKEYS_ARENA_H
#define CAPIKEYS_ARENA_H

#include <stddef.h>

/// A bump allocator whose blocks are all released at once (hand-written, not generated).
///
/// Every block is 16-byte aligned and preceded by the size it was asked for and its arena, so that the size of
/// a block can be read back: protobuf-c allocates each unpacked string as its length + 1, which
/// is how a string cut short by a NUL is told apart from a whole one. Allocation goes through C
/// so that protobuf-c's allocator callbacks cost no Swift reference counting.
typedef struct capikeys_arena capikeys_arena;

/// A new, empty arena; NULL when out of memory.
capikeys_arena *capikeys_arena_create(void);

/// Frees the arena and every block it handed out.
void capikeys_arena_destroy(capikeys_arena *arena);

/// Forgets every block, keeping the first chunk for reuse.
void capikeys_arena_reset(capikeys_arena *arena);

/// `size` bytes, 16-byte aligned, valid until the arena is reset or destroyed; NULL when out of memory.
void *capikeys_arena_alloc(capikeys_arena *arena, size_t size);

/// The size asked for `block` if this arena handed it out, -1 if another arena did. Constant
/// time: `block` must come from some arena (it reads the header in front of it); a pointer
/// from elsewhere (protobuf-c's shared empty string) must be told apart before.
long long capikeys_arena_block_size(const capikeys_arena *arena, const void *block);

/// Chunks allocated and not yet freed by the calling thread: a leak check for tests.
long long capikeys_arena_thread_live_chunks(void);

/// protobuf-c's `ProtobufCAllocator.alloc`, with the arena as `allocator_data`.
void *capikeys_arena_protobuf_alloc(void *arena, size_t size);

/// protobuf-c's `ProtobufCAllocator.free`: nothing, the arena frees everything at once.
void capikeys_arena_protobuf_free(void *arena, void *block);

#endif
