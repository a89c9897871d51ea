#ifndef NOVA_SQLITE_H
#define NOVA_SQLITE_H

/// Turns off SQLite's memory statistics before the library initializes (sqlite3_config is
/// variadic, which Swift cannot call). With them on, every allocation SQLite makes takes a
/// process-wide mutex. Returns SQLite's result code: SQLITE_MISUSE when SQLite was already
/// initialized (the statistics then stay on; nothing else changes).
int nova_sqlite_disable_memory_statistics(void);

/// Makes a shim over the default VFS the default ("nova-wal"): it writes each WAL frame's
/// header and page with one system call instead of two (see nova_wal_vfs.c). Call once, before
/// the first connection opens; returns SQLite's result code (SQLITE_OK when already done).
int nova_sqlite_register_wal_vfs(void);

/// WAL frames written with one system call (header and page together) since the process began.
long long nova_sqlite_wal_joined_writes(void);

/// WAL frame headers written alone: rewritten in place (their checksums, at a commit that
/// overwrote frames of its own transaction), or something else came between a header and its page.
long long nova_sqlite_wal_lone_header_writes(void);

#endif
