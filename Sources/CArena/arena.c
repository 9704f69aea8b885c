#include "capikeys_arena.h"

#include <stdint.h>
#include <stdlib.h>

enum { HEADER_SIZE = 16, CHUNK_SIZE = 4096 };

/* What precedes every block: the size asked for, and the arena that handed it out. */
struct header {
    size_t size;
    const struct capikeys_arena *owner;
};
_Static_assert(sizeof(struct header) <= HEADER_SIZE, "a block header fits in HEADER_SIZE");

struct chunk {
    struct chunk *next;
    size_t capacity;
    /* Keeps `data` 16-byte aligned. */
    size_t padding[2];
    unsigned char data[];
};

struct capikeys_arena {
    /* Newest first; the last one is the first chunk ever made, kept across resets. */
    struct chunk *chunks;
    unsigned char *cursor;
    size_t remaining;
};

/* Chunks made minus chunks freed on this thread: a test that packs and unpacks on one thread
   sees exactly its own (an arena freed on another thread only moves that thread's count). */
static _Thread_local long long live_chunks = 0;

long long capikeys_arena_thread_live_chunks(void) { return live_chunks; }

static void chunk_free(struct chunk *chunk) {
    free(chunk);
    live_chunks -= 1;
}

static struct chunk *chunk_create(size_t capacity, struct chunk *next) {
    void *memory = NULL;
    if (posix_memalign(&memory, 16, sizeof(struct chunk) + capacity) != 0) return NULL;
    live_chunks += 1;
    struct chunk *chunk = memory;
    chunk->next = next;
    chunk->capacity = capacity;
    return chunk;
}

capikeys_arena *capikeys_arena_create(void) {
    capikeys_arena *arena = calloc(1, sizeof(capikeys_arena));
    return arena;
}

void capikeys_arena_destroy(capikeys_arena *arena) {
    if (arena == NULL) return;
    struct chunk *chunk = arena->chunks;
    while (chunk != NULL) {
        struct chunk *next = chunk->next;
        chunk_free(chunk);
        chunk = next;
    }
    free(arena);
}

void capikeys_arena_reset(capikeys_arena *arena) {
    struct chunk *chunk = arena->chunks;
    if (chunk == NULL) return;
    while (chunk->next != NULL) {
        struct chunk *next = chunk->next;
        chunk_free(chunk);
        chunk = next;
    }
    arena->chunks = chunk;
    arena->cursor = chunk->data;
    arena->remaining = chunk->capacity;
}

void *capikeys_arena_alloc(capikeys_arena *arena, size_t size) {
    if (size > SIZE_MAX - HEADER_SIZE - 15) return NULL;
    size_t needed = HEADER_SIZE + ((size + 15) & ~(size_t)15);
    if (needed > arena->remaining) {
        size_t capacity = needed > CHUNK_SIZE ? needed : CHUNK_SIZE;
        struct chunk *chunk = chunk_create(capacity, arena->chunks);
        if (chunk == NULL) return NULL;
        arena->chunks = chunk;
        arena->cursor = chunk->data;
        arena->remaining = capacity;
    }
    unsigned char *block = arena->cursor;
    struct header *header = (struct header *)block;
    header->size = size;
    header->owner = arena;
    arena->cursor += needed;
    arena->remaining -= needed;
    return block + HEADER_SIZE;
}

long long capikeys_arena_block_size(const capikeys_arena *arena, const void *block) {
    /* Constant time: a lookup that walked the chunks made decoding quadratic in the frame size. */
    const struct header *header = (const struct header *)((const unsigned char *)block - HEADER_SIZE);
    return header->owner == arena ? (long long)header->size : -1;
}

void *capikeys_arena_protobuf_alloc(void *arena, size_t size) {
    return capikeys_arena_alloc(arena, size);
}

void capikeys_arena_protobuf_free(void *arena, void *block) {
    (void)arena;
    (void)block;
}
