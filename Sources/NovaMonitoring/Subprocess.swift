import Foundation

/// Runs programs with `posix_spawn` and reaps them with `waitpid`: no SIGCHLD handling (which
/// Foundation's `Process` needs, and which threads that block signals never see).
enum Subprocess {
  /// Runs `path` to completion; its standard output, or nil when it could not start or failed.
  static func output(_ path: String, _ arguments: [String]) -> (status: Int32, output: String)? {
    var pipe: [Int32] = [0, 0]
    guard Foundation.pipe(&pipe) == 0 else { return nil }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
    posix_spawn_file_actions_addclose(&actions, pipe[0])
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    guard let pid = spawn(path, arguments, actions: &actions) else {
      close(pipe[0])
      close(pipe[1])
      return nil
    }
    close(pipe[1])
    var data = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
      let count = read(pipe[0], &buffer, buffer.count)
      if count <= 0 { break }
      data += buffer[0..<count]
    }
    close(pipe[0])
    return (wait(pid), String(decoding: data, as: UTF8.self))
  }

  /// Starts `/bin/sh -c command` with its output discarded; returns its pid.
  static func start(shell command: String) -> pid_t? {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    return spawn("/bin/sh", ["-c", command], actions: &actions)
  }

  /// Stops a started program and reaps it.
  static func stop(_ pid: pid_t) {
    var status: Int32 = 0
    if waitpid(pid, &status, WNOHANG) == 0 {
      kill(pid, SIGTERM)
      _ = wait(pid)
    }
  }

  private static func spawn(_ path: String, _ arguments: [String], actions: inout posix_spawn_file_actions_t) -> pid_t? {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid: pid_t = 0
    // A program written a moment ago can be briefly "busy" (ETXTBSY) while another thread's
    // fork still holds its file open for writing: try again shortly.
    for _ in 0..<50 {
      let result = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
      if result == 0 { return pid }
      if result != ETXTBSY { return nil }
      usleep(10_000)
    }
    return nil
  }

  private static func wait(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
  }
}
