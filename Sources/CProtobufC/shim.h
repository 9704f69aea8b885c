#ifndef APIKEYS_CPROTOBUFC_SHIM_H
#define APIKEYS_CPROTOBUFC_SHIM_H
// The protobuf-c runtime (Debian: libprotobuf-c-dev).
#include <protobuf-c/protobuf-c.h>

/// Whether `pointer` is protobuf-c's shared empty string, the value of an unpacked string field
/// that was absent (Swift cannot import `protobuf_c_empty_string` itself).
static inline int capikeys_is_protobuf_empty_string(const void *pointer) {
    return pointer == (const void *)protobuf_c_empty_string;
}
#endif
