#ifndef APIKEYS_CPROTOBUFC_SHIM_H
#define APIKEYS_CPROTOBUFC_SHIM_H
// The protobuf-c runtime (Debian: libprotobuf-c-dev).
#include <protobuf-c/protobuf-c.h>
#endif
