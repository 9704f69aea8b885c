#ifndef APIKEYS_CPROTOBUFC_SHIM_H
#define APIKEYS_CPROTOBUFC_SHIM_H
// The protobuf-c runtime (Debian: libprotobuf-c-dev).
#include <protobuf-c/protobuf-c.h>

/// Whether `pointer` is protobuf-c's shared empty string, the value of an unpacked string field
/// that was absent (Swift cannot import `protobuf_c_empty_string` itself).
static inline int capikeys_is_protobuf_empty_string(const void *pointer) {
    return pointer == (const void *)protobuf_c_empty_string;
}

/// Reads a base-128 varint at `*at`, moving `*at` past it; 0 when the bytes end first or it is
/// longer than 10 bytes.
static inline int capikeys_read_varint(const uint8_t *data, size_t len, size_t *at, uint64_t *value) {
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 70 && *at < len; shift += 7) {
        uint8_t byte = data[(*at)++];
        if (shift < 64) result |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *value = result;
            return 1;
        }
    }
    return 0;
}

/// Whether the serialized message in `data` holds more than `max` fields at its top level (each
/// entry of a repeated or map field counts). Counting stops past `max` and skips each field's
/// value by its length, so the cost is at most `max` fields whatever the message's size: a
/// frame of many tiny entries is refused before protobuf-c unpacks (and allocates) every one.
/// Decodes nothing: bytes that are not a message answer 0, and protobuf-c then rejects them.
static inline int capikeys_protobuf_has_more_fields_than(const uint8_t *data, size_t len, size_t max) {
    size_t at = 0, fields = 0;
    while (at < len) {
        uint64_t tag = 0, value = 0;
        if (!capikeys_read_varint(data, len, &at, &tag)) return 0;
        if (++fields > max) return 1;
        switch (tag & 7) {
        case 0:
            if (!capikeys_read_varint(data, len, &at, &value)) return 0;
            break;
        case 1:
            if (len - at < 8) return 0;
            at += 8;
            break;
        case 2:
            if (!capikeys_read_varint(data, len, &at, &value) || value > len - at) return 0;
            at += (size_t)value;
            break;
        case 5:
            if (len - at < 4) return 0;
            at += 4;
            break;
        default:  // groups and invalid wire types: protobuf-c's to refuse
            return 0;
        }
    }
    return 0;
}
#endif
