// Counts the heap allocations of each thread, for `apikeyd-bench stages` (bench/stages.sh):
// preloaded (LD_PRELOAD), it wraps glibc's allocator and exports the calling thread's count as
// `apikeyd_thread_allocations`, which the benchmark finds with dlsym. Allocation counts per check
// stay put on a noisy machine where times do not.
#define _GNU_SOURCE
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
