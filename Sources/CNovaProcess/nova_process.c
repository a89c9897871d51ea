// The per-attempt supervisor of command job kinds, and the prctl calls Swift cannot make
// (prctl is variadic). Why a supervisor per attempt: a program's child may leave the process
// group with setsid(), ignore SIGTERM and clear its environment; only the kernel's own bookkeeping
// still ties it to the attempt. As a child subreaper the supervisor inherits every descendant
// whose parent exits, so "what this attempt started" is exactly "the supervisor's descendants"
// (and, where the worker gave one, the attempt's cgroup, which cgroup.kill empties at once).
#define _GNU_SOURCE
#include "nova_process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int nova_random_bytes(void *buffer, size_t count) {
  ssize_t got;
  do {
    got = getrandom(buffer, count, 0);
  } while (got < 0 && errno == EINTR);
  return got == (ssize_t)count ? 0 : -1;
}

int nova_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0); }

int nova_get_child_subreaper(void) {
  int value = 0;
  if (prctl(PR_GET_CHILD_SUBREAPER, &value, 0, 0, 0) != 0) return -1;
  return value;
}

int nova_set_dumpable(int on) { return prctl(PR_SET_DUMPABLE, on ? 1 : 0, 0, 0, 0); }

int nova_get_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); }

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig) {
  int saved = errno;
  unsigned char byte = (unsigned char)sig;
  ssize_t ignored = write(signal_pipe[1], &byte, 1);
  (void)ignored;
  errno = saved;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/// The parent pid of `pid` from /proc/<pid>/stat (the field after the parenthesised name, which
/// may itself hold spaces and parentheses), or -1.
static pid_t parent_of(pid_t pid) {
  char path[64], buffer[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buffer, sizeof buffer - 1);
  close(fd);
  if (n <= 0) return -1;
  buffer[n] = 0;
  char *close_paren = strrchr(buffer, ')');
  if (!close_paren) return -1;
  char state;
  int ppid;
  if (sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) return -1;
  return (pid_t)ppid;
}

/// Sends `sig` to `pid` only if it is still the child of `parent`: a pidfd pins the process, so
/// a pid reused since /proc was read (its process reaped by its own parent) is never signalled.
/// Without pidfds (Linux < 5.3) the parent is checked again just before kill.
static void signal_checked(pid_t pid, pid_t parent, int sig) {
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_send_signal)
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    if (parent_of(pid) == parent) syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
    close(fd);
    return;
  }
  if (errno != ENOSYS) return;
#endif
  if (parent_of(pid) == parent) kill(pid, sig);
}

/// Sends `sig` to every descendant of this process; returns how many there were.
static int signal_descendants(int sig) {
  pid_t self = getpid();
  size_t capacity = 256, count = 0;
  pid_t *pids = malloc(capacity * sizeof(pid_t));
  pid_t *parents = malloc(capacity * sizeof(pid_t));
  if (!pids || !parents) {
    free(pids);
    free(parents);
    return 0;
  }
  DIR *proc = opendir("/proc");
  if (proc) {
    struct dirent *entry;
    while ((entry = readdir(proc))) {
      char *end;
      long pid = strtol(entry->d_name, &end, 10);
      if (*end || pid <= 0 || pid == self) continue;
      pid_t parent = parent_of((pid_t)pid);
      if (parent <= 0) continue;
      if (count == capacity) {
        capacity *= 2;
        pid_t *more_pids = realloc(pids, capacity * sizeof(pid_t));
        if (!more_pids) break;
        pids = more_pids;
        pid_t *more_parents = realloc(parents, capacity * sizeof(pid_t));
        if (!more_parents) break;
        parents = more_parents;
      }
      pids[count] = (pid_t)pid;
      parents[count] = parent;
      count++;
    }
    closedir(proc);
  }
  // Marks descendants in passes: a process is one when its parent is this process or a marked
  // one. Few processes per attempt, so the quadratic walk costs nothing.
  char *marked = calloc(count ? count : 1, 1);
  int found = 0;
  if (marked) {
    int changed = 1;
    while (changed) {
      changed = 0;
      for (size_t i = 0; i < count; i++) {
        if (marked[i]) continue;
        int is_descendant = parents[i] == self;
        for (size_t j = 0; !is_descendant && j < count; j++) is_descendant = marked[j] && pids[j] == parents[i];
        if (is_descendant) {
          marked[i] = 1;
          changed = 1;
        }
      }
    }
    for (size_t i = 0; i < count; i++) {
      if (!marked[i]) continue;
      found++;
      signal_checked(pids[i], parents[i], sig);
    }
  }
  free(marked);
  free(pids);
  free(parents);
  return found;
}

/// Writes `text` to `directory/file`; 0 on success.
static int write_file(const char *directory, const char *file, const char *text) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/%s", directory, file) >= (int)sizeof path) return -1;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t length = (ssize_t)strlen(text);
  ssize_t written = write(fd, text, (size_t)length);
  close(fd);
  return written == length ? 0 : -1;
}

/// Kills everything the attempt started: the cgroup at once where there is one (cgroup.kill also
/// catches a process forking as fast as it can), then every descendant found in /proc.
static void kill_everything(const char *cgroup, pid_t program, int program_done) {
  if (cgroup) write_file(cgroup, "cgroup.kill", "1");
  // Once the program is reaped its pid may name another process group: its own group's members
  // are descendants, found below.
  if (!program_done) kill(-program, SIGKILL);
  signal_descendants(SIGKILL);
}

/// Reaps exited children without blocking; sets *program_status when the program is among them.
static void reap(pid_t program, int *program_done, int *program_status) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (pid == program) {
      *program_done = 1;
      *program_status = status;
    }
  }
}

/// Whether any child is left (alive or not yet reaped).
static int has_children(void) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno != ECHILD;
  return 1;
}

static void usage(const char *message) {
  fprintf(stderr, "nova __supervise: %s\n"
                  "usage: nova __supervise [--cgroup DIR] [--uid N] [--gid N] [--groups G,G...] [--nofile N] [--grace-ms N] -- PROGRAM [ARGS...]\n",
          message);
}

static int parse_id(const char *text, long *out) {
  char *end;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno || *end || value < 0 || value > 0x7fffffff) return -1;
  *out = value;
  return 0;
}

int nova_supervise(int argc, char *const argv[]) {
  const char *cgroup = NULL;
  long uid = -1, gid = -1, grace_ms = 10000, nofile = -1;
  gid_t groups[64];
  int group_count = -1;
  int index = 0;
  while (index < argc && strcmp(argv[index], "--") != 0) {
    const char *option = argv[index];
    if (index + 1 >= argc) {
      usage("an option lacks its value");
      return 125;
    }
    const char *value = argv[index + 1];
    if (strcmp(option, "--cgroup") == 0) {
      cgroup = value;
    } else if (strcmp(option, "--uid") == 0) {
      if (parse_id(value, &uid)) return usage("--uid is not a number"), 125;
    } else if (strcmp(option, "--gid") == 0) {
      if (parse_id(value, &gid)) return usage("--gid is not a number"), 125;
    } else if (strcmp(option, "--nofile") == 0) {
      if (parse_id(value, &nofile)) return usage("--nofile is not a number"), 125;
    } else if (strcmp(option, "--grace-ms") == 0) {
      if (parse_id(value, &grace_ms)) return usage("--grace-ms is not a number"), 125;
    } else if (strcmp(option, "--groups") == 0) {
      group_count = 0;
      char copy[1024];
      snprintf(copy, sizeof copy, "%s", value);
      for (char *save = NULL, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        long id;
        if (parse_id(item, &id) || group_count == 64) return usage("--groups is not a list of up to 64 numbers"), 125;
        groups[group_count++] = (gid_t)id;
      }
    } else {
      usage("unknown option");
      return 125;
    }
    index += 2;
  }
  if (index + 1 >= argc) {
    usage("the program is missing");
    return 125;
  }
  char *const *program_argv = argv + index + 1;

  if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    perror("nova __supervise: pipe");
    return 125;
  }
  int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1};
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_signal;
  action.sa_flags = SA_NOCLDSTOP;
  sigemptyset(&action.sa_mask);
  sigset_t handled;
  sigemptyset(&handled);
  for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
    sigaction(forwarded[i], &action, NULL);
    sigaddset(&handled, forwarded[i]);
  }
  // The worker's spawning thread may block these (a Swift process's threads block SIGCHLD); the
  // mask is inherited, and a blocked stop would never arrive.
  sigprocmask(SIG_UNBLOCK, &handled, NULL);

  nova_set_child_subreaper(1);
  // The worker's death is noticed by the parent-death signal and, since that signal follows the
  // thread that forked and not the process, by the parent pid changing too.
  pid_t worker = getppid();
  prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0);
  if (getppid() != worker) return 137;

  pid_t program = fork();
  if (program < 0) {
    perror("nova __supervise: fork");
    return 125;
  }
  if (program == 0) {
    setpgid(0, 0);
    if (cgroup) {
      char pid_text[32];
      snprintf(pid_text, sizeof pid_text, "%d", (int)getpid());
      // Without the cgroup the supervisor still finds and kills everything: run anyway.
      if (write_file(cgroup, "cgroup.procs", pid_text) != 0) {
        fprintf(stderr, "nova: warning: cannot join the attempt's cgroup %s (%s); running without it\n", cgroup, strerror(errno));
      }
    }
    if (nofile > 0) {
      // The worker raised its own limit on open files; the program gets the one it was started with.
      struct rlimit limit;
      if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && (rlim_t)nofile <= limit.rlim_max) {
        limit.rlim_cur = (rlim_t)nofile;
        setrlimit(RLIMIT_NOFILE, &limit);
      }
    }
    if (group_count >= 0 && setgroups((size_t)group_count, groups) != 0) {
      fprintf(stderr, "nova: cannot set supplementary groups: %s\n", strerror(errno));
      _exit(125);
    }
    if (gid >= 0 && setgid((gid_t)gid) != 0) {
      fprintf(stderr, "nova: cannot switch to group %ld: %s\n", gid, strerror(errno));
      _exit(125);
    }
    if (uid >= 0 && setuid((uid_t)uid) != 0) {
      fprintf(stderr, "nova: cannot switch to user %ld: %s\n", uid, strerror(errno));
      _exit(125);
    }
    // The program starts with default signal handling: ignoring SIGPIPE is the worker's choice,
    // not the program's.
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) sigaction(forwarded[i], &fallback, NULL);
    sigaction(SIGPIPE, &fallback, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    execv(program_argv[0], program_argv);
    fprintf(stderr, "nova: cannot run %s: %s\n", program_argv[0], strerror(errno));
    _exit(127);
  }
  // The supervisor holds no end of the program's input (the worker's write must fail, not
  // block, when the program exits unread) and writes nothing to its output.
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    close(null);
  }

  int program_done = 0, program_status = 0;
  int stopping = 0;
  long long kill_at = -1;
  for (;;) {
    struct pollfd waiting = {.fd = signal_pipe[0], .events = POLLIN};
    poll(&waiting, 1, 50);
    unsigned char signals[64];
    ssize_t n;
    int stop = 0;
    while ((n = read(signal_pipe[0], signals, sizeof signals)) > 0) {
      for (ssize_t i = 0; i < n; i++) {
        int sig = signals[i];
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT) stop = 1;
      }
    }
    reap(program, &program_done, &program_status);
    if (getppid() != worker) {
      // The worker died (SIGKILL, OOM): nothing of the attempt may outlive it.
      do {
        kill_everything(cgroup, program, program_done);
        reap(program, &program_done, &program_status);
        usleep(10000);
      } while (has_children());
      return 137;
    }
    // The program ended and left nothing (the common case): no /proc walk. Whatever it left is
    // a child here (reparented to this subreaper), so no child means no descendant.
    if (program_done && !stopping && !has_children()) break;
    if ((stop || program_done) && !stopping) {
      // Stopped (timeout, cancellation, shutdown), or the program ended and left processes
      // behind: SIGTERM to all of them, SIGKILL after the grace.
      stopping = 1;
      if (!program_done) kill(-program, SIGTERM);
      signal_descendants(SIGTERM);
      kill_at = now_ms() + grace_ms;
    }
    if (stopping && now_ms() >= kill_at) kill_everything(cgroup, program, program_done);
    if (program_done && !has_children()) break;
  }

  // Exits as the program did, so that the worker sees its exit code or signal.
  if (WIFEXITED(program_status)) return WEXITSTATUS(program_status);
  if (WIFSIGNALED(program_status)) {
    int sig = WTERMSIG(program_status);
    signal(sig, SIG_DFL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    sigprocmask(SIG_UNBLOCK, &only, NULL);
    raise(sig);
    return 128 + sig;
  }
  return 1;
}

int nova_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd, const int fds[3], pid_t *pid,
               int *pidfd) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  int error = posix_spawn_file_actions_init(&actions);
  if (error) return error;
  error = posix_spawnattr_init(&attributes);
  if (error) {
    posix_spawn_file_actions_destroy(&actions);
    return error;
  }
  for (int target = 0; target < 3 && !error; target++) error = posix_spawn_file_actions_adddup2(&actions, fds[target], target);
  if (!error) error = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  if (!error && cwd) error = posix_spawn_file_actions_addchdir_np(&actions, cwd);
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  // The worker ignores SIGPIPE and may block signals on its threads; the program starts clean.
  for (int sig = 1; sig < 32; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaddset(&defaults, sig);
  }
  if (!error) error = posix_spawnattr_setsigmask(&attributes, &empty);
  if (!error) error = posix_spawnattr_setsigdefault(&attributes, &defaults);
  if (!error) error = posix_spawnattr_setpgroup(&attributes, 0);
  if (!error) error = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  if (!error) error = posix_spawn(pid, path, &actions, &attributes, argv, envp);
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  if (error) return error;
  *pidfd = -1;
#if defined(SYS_pidfd_open)
  // Not yet reaped (only this process waits for it), so the pidfd names exactly this child.
  *pidfd = (int)syscall(SYS_pidfd_open, *pid, 0);
  if (*pidfd >= 0) fcntl(*pidfd, F_SETFD, FD_CLOEXEC);
#endif
  return 0;
}

int nova_child_exited(pid_t pid) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return -1;
  return info.si_pid == pid ? 1 : 0;
}

int nova_reap(pid_t pid) {
  int status = 0;
  pid_t result;
  do {
    result = waitpid(pid, &status, 0);
  } while (result < 0 && errno == EINTR);
  if (result != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 256 + WTERMSIG(status);
  return -1;
}

int nova_pipe(int fds[2], int nonblocking) {
  return pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)) == 0 ? 0 : errno;
}
