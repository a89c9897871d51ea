// A shim over SQLite's default ("unix") VFS that writes each WAL frame with one system call.
//
// SQLite appends a WAL frame as two writes: its 24-byte header, then the page right after it
// (walWriteOneFrame in wal.c). Under small group commits, those pwrite calls were the largest
// single cost of Nova's writer thread: a frame header costs a system call of its own for 24
// bytes. This shim holds back a 24-byte write to a WAL file that starts where this handle's
// last write ended (a frame appended: its page comes next) and, when the next write starts
// where the header ends, writes both from one buffer. Anything else done through the handle
// first (another write, a read, a sync, a size, a close) writes the held header alone first.
//
// Only appended headers are held: the headers SQLite rewrites in place at a commit that
// overwrote frames of its own transaction (walRewriteChecksums) have no page after them, and
// the last of them would otherwise wait for the handle's next use, unwritten when the
// transaction is published. An appended header is always followed by its page, in the same
// call of walWriteOneFrame, before SQLite publishes the frame in the WAL index (on the
// database file's handle): a held header is never all that a reader or a crash could see. A
// crash between the header and the page leaves the same torn frame as before (WAL recovery
// drops frames whose checksums fail).
//
// Files other than WAL files are opened by the default VFS itself, with its own methods: the
// shim adds nothing to database, journal or temporary files.

#include "nova_sqlite.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

enum { WAL_FRAME_HEADER_BYTES = 24 };

typedef struct NovaWALFile {
  sqlite3_file base;
  /// The default VFS's file, right after this struct in the same allocation.
  sqlite3_file *real;
  /// The offset of the held frame header, or -1 when none is held.
  sqlite3_int64 heldOffset;
  /// Where this handle's last write ended (-1 before the first): the WAL's append point.
  sqlite3_int64 writtenTo;
  unsigned char held[WAL_FRAME_HEADER_BYTES];
  /// Header and page, copied together (grown to the page size on first use).
  unsigned char *joined;
  int joinedCapacity;
} NovaWALFile;

static sqlite3_vfs *realVFS = NULL;
static sqlite3_vfs novaVFS;
static atomic_llong joinedWrites = 0;
static atomic_llong loneHeaderWrites = 0;

static int walRealOffset(void) {
  // The default VFS's file follows ours, aligned for any of its fields.
  return (int)((sizeof(NovaWALFile) + 15) & ~(size_t)15);
}

static int flushHeld(NovaWALFile *file) {
  if (file->heldOffset < 0) return SQLITE_OK;
  sqlite3_int64 offset = file->heldOffset;
  file->heldOffset = -1;
  atomic_fetch_add_explicit(&loneHeaderWrites, 1, memory_order_relaxed);
  int rc = file->real->pMethods->xWrite(file->real, file->held, WAL_FRAME_HEADER_BYTES, offset);
  file->writtenTo = rc == SQLITE_OK ? offset + WAL_FRAME_HEADER_BYTES : -1;
  return rc;
}

#define REAL(f) (((NovaWALFile *)(f))->real)
#define FLUSHED_OR_RETURN(f)                                  \
  do {                                                        \
    int flushed = flushHeld((NovaWALFile *)(f));              \
    if (flushed != SQLITE_OK) return flushed;                 \
  } while (0)

static int walClose(sqlite3_file *f) {
  NovaWALFile *file = (NovaWALFile *)f;
  int flushed = flushHeld(file);
  int closed = file->real->pMethods ? file->real->pMethods->xClose(file->real) : SQLITE_OK;
  sqlite3_free(file->joined);
  file->joined = NULL;
  return flushed != SQLITE_OK ? flushed : closed;
}

static int walRead(sqlite3_file *f, void *buffer, int amount, sqlite3_int64 offset) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xRead(REAL(f), buffer, amount, offset);
}

static int walWrite(sqlite3_file *f, const void *buffer, int amount, sqlite3_int64 offset) {
  NovaWALFile *file = (NovaWALFile *)f;
  if (file->heldOffset >= 0 && offset == file->heldOffset + WAL_FRAME_HEADER_BYTES && amount > 0) {
    int total = WAL_FRAME_HEADER_BYTES + amount;
    if (file->joinedCapacity < total) {
      unsigned char *grown = sqlite3_realloc(file->joined, total);
      if (grown == NULL) {
        FLUSHED_OR_RETURN(f);
        int rc = file->real->pMethods->xWrite(file->real, buffer, amount, offset);
        file->writtenTo = rc == SQLITE_OK ? offset + amount : -1;
        return rc;
      }
      file->joined = grown;
      file->joinedCapacity = total;
    }
    memcpy(file->joined, file->held, WAL_FRAME_HEADER_BYTES);
    memcpy(file->joined + WAL_FRAME_HEADER_BYTES, buffer, (size_t)amount);
    sqlite3_int64 start = file->heldOffset;
    file->heldOffset = -1;
    atomic_fetch_add_explicit(&joinedWrites, 1, memory_order_relaxed);
    int rc = file->real->pMethods->xWrite(file->real, file->joined, total, start);
    file->writtenTo = rc == SQLITE_OK ? offset + amount : -1;
    return rc;
  }
  FLUSHED_OR_RETURN(f);
  if (amount == WAL_FRAME_HEADER_BYTES && offset == file->writtenTo) {
    memcpy(file->held, buffer, WAL_FRAME_HEADER_BYTES);
    file->heldOffset = offset;
    return SQLITE_OK;
  }
  // A header rewritten in place (its checksums), or one not at the append point.
  if (amount == WAL_FRAME_HEADER_BYTES) atomic_fetch_add_explicit(&loneHeaderWrites, 1, memory_order_relaxed);
  int rc = file->real->pMethods->xWrite(file->real, buffer, amount, offset);
  file->writtenTo = rc == SQLITE_OK ? offset + amount : -1;
  return rc;
}

static int walTruncate(sqlite3_file *f, sqlite3_int64 size) {
  FLUSHED_OR_RETURN(f);
  ((NovaWALFile *)f)->writtenTo = -1;
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int walSync(sqlite3_file *f, int flags) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int walFileSize(sqlite3_file *f, sqlite3_int64 *size) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int walLock(sqlite3_file *f, int lock) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xLock(REAL(f), lock);
}

static int walUnlock(sqlite3_file *f, int lock) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}

static int walCheckReservedLock(sqlite3_file *f, int *result) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), result);
}

static int walFileControl(sqlite3_file *f, int op, void *argument) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xFileControl(REAL(f), op, argument);
}

static int walSectorSize(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }

static int walDeviceCharacteristics(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int walShmMap(sqlite3_file *f, int page, int pageSize, int extend, void volatile **mapped) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xShmMap(REAL(f), page, pageSize, extend, mapped);
}

static int walShmLock(sqlite3_file *f, int offset, int n, int flags) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void walShmBarrier(sqlite3_file *f) {
  (void)flushHeld((NovaWALFile *)f);
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int walShmUnmap(sqlite3_file *f, int deleteFlag) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xShmUnmap(REAL(f), deleteFlag);
}

static int walFetch(sqlite3_file *f, sqlite3_int64 offset, int amount, void **pointer) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xFetch(REAL(f), offset, amount, pointer);
}

static int walUnfetch(sqlite3_file *f, sqlite3_int64 offset, void *pointer) {
  FLUSHED_OR_RETURN(f);
  return REAL(f)->pMethods->xUnfetch(REAL(f), offset, pointer);
}

static const sqlite3_io_methods walMethods = {
  3, walClose, walRead, walWrite, walTruncate, walSync, walFileSize, walLock, walUnlock,
  walCheckReservedLock, walFileControl, walSectorSize, walDeviceCharacteristics, walShmMap,
  walShmLock, walShmBarrier, walShmUnmap, walFetch, walUnfetch,
};
static const sqlite3_io_methods walMethodsV2 = {
  2, walClose, walRead, walWrite, walTruncate, walSync, walFileSize, walLock, walUnlock,
  walCheckReservedLock, walFileControl, walSectorSize, walDeviceCharacteristics, walShmMap,
  walShmLock, walShmBarrier, walShmUnmap, NULL, NULL,
};
static const sqlite3_io_methods walMethodsV1 = {
  1, walClose, walRead, walWrite, walTruncate, walSync, walFileSize, walLock, walUnlock,
  walCheckReservedLock, walFileControl, walSectorSize, walDeviceCharacteristics, NULL, NULL,
  NULL, NULL, NULL, NULL,
};

static int novaOpen(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *outFlags) {
  (void)vfs;
  if ((flags & SQLITE_OPEN_WAL) == 0) {
    // The default VFS's own file and methods, in the (larger) space SQLite allocated.
    return realVFS->xOpen(realVFS, name, f, flags, outFlags);
  }
  NovaWALFile *file = (NovaWALFile *)f;
  memset(file, 0, sizeof(NovaWALFile));
  file->real = (sqlite3_file *)((unsigned char *)f + walRealOffset());
  file->heldOffset = -1;
  file->writtenTo = -1;
  int rc = realVFS->xOpen(realVFS, name, file->real, flags, outFlags);
  // SQLite closes a file whose methods are set even when opening it failed. Methods of an
  // older version than the wrapper's are offered as that version (SQLite then calls none of
  // the newer ones, which the wrapper would forward to nothing).
  const sqlite3_io_methods *real = file->real->pMethods;
  file->base.pMethods = real == NULL ? NULL : real->iVersion >= 3 ? &walMethods : real->iVersion == 2 ? &walMethodsV2 : &walMethodsV1;
  return rc;
}

static int novaDelete(sqlite3_vfs *vfs, const char *name, int syncDirectory) {
  (void)vfs;
  return realVFS->xDelete(realVFS, name, syncDirectory);
}

static int novaAccess(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
  (void)vfs;
  return realVFS->xAccess(realVFS, name, flags, result);
}

static int novaFullPathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
  (void)vfs;
  return realVFS->xFullPathname(realVFS, name, size, out);
}

static void *novaDlOpen(sqlite3_vfs *vfs, const char *name) {
  (void)vfs;
  return realVFS->xDlOpen(realVFS, name);
}

static void novaDlError(sqlite3_vfs *vfs, int size, char *message) {
  (void)vfs;
  realVFS->xDlError(realVFS, size, message);
}

static void (*novaDlSym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
  (void)vfs;
  return realVFS->xDlSym(realVFS, handle, symbol);
}

static void novaDlClose(sqlite3_vfs *vfs, void *handle) {
  (void)vfs;
  realVFS->xDlClose(realVFS, handle);
}

static int novaRandomness(sqlite3_vfs *vfs, int size, char *out) {
  (void)vfs;
  return realVFS->xRandomness(realVFS, size, out);
}

static int novaSleep(sqlite3_vfs *vfs, int microseconds) {
  (void)vfs;
  return realVFS->xSleep(realVFS, microseconds);
}

static int novaCurrentTime(sqlite3_vfs *vfs, double *now) {
  (void)vfs;
  return realVFS->xCurrentTime(realVFS, now);
}

static int novaGetLastError(sqlite3_vfs *vfs, int size, char *message) {
  (void)vfs;
  return realVFS->xGetLastError(realVFS, size, message);
}

static int novaCurrentTimeInt64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
  (void)vfs;
  return realVFS->xCurrentTimeInt64(realVFS, now);
}

static int novaSetSystemCall(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr call) {
  (void)vfs;
  return realVFS->xSetSystemCall(realVFS, name, call);
}

static sqlite3_syscall_ptr novaGetSystemCall(sqlite3_vfs *vfs, const char *name) {
  (void)vfs;
  return realVFS->xGetSystemCall(realVFS, name);
}

static const char *novaNextSystemCall(sqlite3_vfs *vfs, const char *name) {
  (void)vfs;
  return realVFS->xNextSystemCall(realVFS, name);
}

int nova_sqlite_register_wal_vfs(void) {
  // Once per process (the Swift side calls it once): registered again, the VFS would be
  // overwritten while SQLite's list holds it.
  if (sqlite3_vfs_find("nova-wal") != NULL) return SQLITE_OK;
  sqlite3_vfs *current = sqlite3_vfs_find(NULL);
  if (current == NULL) return SQLITE_ERROR;
  if (current->iVersion < 3) return SQLITE_MISUSE;
  realVFS = current;
  novaVFS = (sqlite3_vfs){
    3, walRealOffset() + current->szOsFile, current->mxPathname, NULL, "nova-wal", NULL,
    novaOpen, novaDelete, novaAccess, novaFullPathname, novaDlOpen, novaDlError, novaDlSym,
    novaDlClose, novaRandomness, novaSleep, novaCurrentTime, novaGetLastError,
    novaCurrentTimeInt64, novaSetSystemCall, novaGetSystemCall, novaNextSystemCall,
  };
  return sqlite3_vfs_register(&novaVFS, 1);
}

long long nova_sqlite_wal_joined_writes(void) {
  return atomic_load_explicit(&joinedWrites, memory_order_relaxed);
}

long long nova_sqlite_wal_lone_header_writes(void) {
  return atomic_load_explicit(&loneHeaderWrites, memory_order_relaxed);
}
