#ifndef NOVA_SQLITE_H
#define NOVA_SQLITE_H

/// Turns off SQLite's memory statistics before the library initializes (sqlite3_config is
/// variadic, which Swift cannot call). With them on, every allocation SQLite makes takes a
/// process-wide mutex. Returns SQLite's result code: SQLITE_MISUSE when SQLite was already
/// initialized (the statistics then stay on; nothing else changes).
int nova_sqlite_disable_memory_statistics(void);

#endif
