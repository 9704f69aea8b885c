// Counts the heap allocations and the reference-count operations of each thread, for
// `apikeyd-bench stages` (bench/stages.sh): preloaded (LD_PRELOAD), it wraps glibc's allocator
// and the Swift runtime's retain and release entry points, and exports the calling thread's
// counts as `apikeyd_thread_allocations` and `apikeyd_thread_retains`, which the benchmark finds
// with dlsym. Both counts per check stay put on a noisy machine where times do not. Retains and
// releases made inside the Swift runtime itself (not through its exported entry points) are
// not seen: the count is a floor.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

// initial-exec: reading it never calls into the dynamic loader (which could allocate).
static __thread unsigned long long allocations __attribute__((tls_model("initial-exec")));

unsigned long long apikeyd_thread_allocations(void) { return allocations; }

void *malloc(size_t size) {
    allocations++;
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    allocations++;
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    allocations++;
    return __libc_realloc(pointer, size);
}

void *memalign(size_t alignment, size_t size) {
    allocations++;
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    allocations++;
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    allocations++;
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return ENOMEM;
    *out = pointer;
    return 0;
}

// Retains and releases (plain and bridged: strings and arrays use the bridged ones), each one an
// atomic read-modify-write of the object's count unless the object is immortal or absent.
static __thread unsigned long long retains __attribute__((tls_model("initial-exec")));

unsigned long long apikeyd_thread_retains(void) { return retains; }

// Each wrapper counts, then calls the runtime's own entry point of the same name (found once).
#define COUNTED_RETAIN(name)                                                 \
    void *name(void *object) {                                               \
        static void *(*next)(void *);                                        \
        if (next == NULL) next = (void *(*)(void *))dlsym(RTLD_NEXT, #name); \
        retains++;                                                           \
        return next(object);                                                 \
    }
#define COUNTED_RELEASE(name)                                              \
    void name(void *object) {                                              \
        static void (*next)(void *);                                       \
        if (next == NULL) next = (void (*)(void *))dlsym(RTLD_NEXT, #name); \
        retains++;                                                         \
        next(object);                                                      \
    }

COUNTED_RETAIN(swift_retain)
COUNTED_RELEASE(swift_release)
COUNTED_RETAIN(swift_bridgeObjectRetain)
COUNTED_RELEASE(swift_bridgeObjectRelease)
