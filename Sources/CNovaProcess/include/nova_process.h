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

/// Fills `count` bytes (at most 256) from the kernel's random pool with one getrandom(2) call;
/// returns 0, or -1 when the kernel gave fewer.
int nova_random_bytes(void *buffer, size_t count);

/// prctl(PR_GET_DUMPABLE).
int nova_get_dumpable(void);

/// prctl(PR_GET_CHILD_SUBREAPER): 1 when this process is a subreaper.
int nova_get_child_subreaper(void);

/// Starts `path` with posix_spawn (a vfork-style clone that only execs: nothing in the child can
/// take a lock another thread of this process held): `fds` become its standard input, output and
/// error, every other descriptor is closed, every signal is unblocked and at its default action,
/// it runs in a process group of its own and, when `cwd` is not NULL, in that folder. On success
/// fills `pid` and `pidfd` (-1 where the kernel has no pidfd_open) and returns 0; otherwise the
/// errno of what failed.
int nova_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd, const int fds[3], pid_t *pid,
               int *pidfd);

/// 1 when the child `pid` has exited (it is left to be reaped), 0 while it runs, -1 on an error.
int nova_child_exited(pid_t pid);

/// Reaps the child `pid`, waiting for it: its exit code (0-255), or 256 + the signal that
/// killed it, or -1 on an error.
int nova_reap(pid_t pid);

/// pipe2(fds, O_CLOEXEC, plus O_NONBLOCK when `nonblocking`): 0, or the errno.
int nova_pipe(int fds[2], int nonblocking);

#endif
