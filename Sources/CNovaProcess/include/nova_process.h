#ifndef NOVA_PROCESS_H
#define NOVA_PROCESS_H

#include <sys/types.h>

/// Runs `nova __supervise [options] -- PROGRAM ARGS...`: the per-attempt supervisor. It becomes a
/// child subreaper, starts the program in a process group of its own (optionally in a cgroup and
/// as another user), forwards a stop to every descendant, and when the program ends (or its
/// worker dies) kills and reaps whatever the program left behind, then exits as the program did.
/// `argv[0]` is the first option. Returns only on a usage error (the exit status to use).
int nova_supervise(int argc, char *const argv[]);

/// prctl(PR_SET_CHILD_SUBREAPER, on): orphaned descendants are reparented to this process.
int nova_set_child_subreaper(int on);

/// prctl(PR_SET_DUMPABLE, on): 0 closes /proc/<pid>/environ, mem and ptrace to other processes
/// of the same user.
int nova_set_dumpable(int on);

/// prctl(PR_GET_DUMPABLE).
int nova_get_dumpable(void);

/// prctl(PR_GET_CHILD_SUBREAPER): 1 when this process is a subreaper.
int nova_get_child_subreaper(void);

#endif
