#ifndef APIKEYS_CSQLITE_SHIM_H
#define APIKEYS_CSQLITE_SHIM_H
#include <sqlite3.h>

// Swift cannot import SQLITE_TRANSIENT (a cast of -1 to a function pointer).
static inline sqlite3_destructor_type csqlite_transient(void) {
    return SQLITE_TRANSIENT;
}
#endif
