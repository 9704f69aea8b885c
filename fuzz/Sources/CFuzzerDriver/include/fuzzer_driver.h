#ifndef APIKEYS_FUZZER_DRIVER_H
#define APIKEYS_FUZZER_DRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (LLVM 11 and later): runs the fuzzing loop with `callback` as the target,
/// taking libFuzzer's usual flags from argv. The executable's `main` calls it, because SwiftPM
/// gives every executable a `main` of its own, which keeps libFuzzer's out.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
