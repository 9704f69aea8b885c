#ifndef APIKEYS_CSQLITE_SHIM_H
#define APIKEYS_CSQLITE_SHIM_H
#include <sqlite3.h>

// Swift cannot import SQLITE_TRANSIENT (a cast of -1 to a function pointer).
static inline sqlite3_destructor_type csqlite_transient(void) {
    return SQLITE_TRANSIENT;
}

// sqlite3_config is variadic, which Swift cannot call. Memory statistics take a global mutex on
// every SQLite allocation; apikeyd does not read them, so they are turned off before first use.
static inline int csqlite_disable_memstatus(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
#endif
