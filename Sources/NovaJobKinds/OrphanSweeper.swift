import Foundation
import NovaCore
import Synchronization

/// Kills what is left of the programs of a worker that died without cleaning up (SIGKILL, OOM).
/// The program itself dies with its worker (its parent-death signal), but a child it forked is
/// reparented and lives on. Every program gets `NOVA_WORKER=<pid namespace>/<pid>:<start time>`
/// of its worker in its environment, which its children inherit; a sweep (when a worker starts,
/// then every 30 s) kills each process whose `NOVA_WORKER` names a worker of its own pid
/// namespace that no longer runs. The start time guards against a reused pid; the namespace
/// keeps a sweeper on the host from judging a container's workers by the host's pids. A child
/// that clears its environment escapes the sweep.
public enum OrphanSweeper {
  /// The environment variable naming a program's worker.
  public static let variable = "NOVA_WORKER"

  /// This process's pid namespace (`pid:[4026531836]`).
  static let namespace: String = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/pid")) ?? "pid:[?]"

  /// This process, as its programs name it.
  public static let identity: String = identity(of: getpid()) ?? "\(namespace)/\(getpid()):0"

  private static let started = Mutex(false)

  /// Makes this process a child subreaper and starts the periodic sweeps once per process: of
  /// dead workers' programs every `interval`, of this worker's own orphans every second.
  public static func start(every interval: Duration = .seconds(30)) {
    let first = started.withLock { started -> Bool in
      defer { started = true }
      return !started
    }
    guard first else { return }
    // A supervisor killed on its own (by the OOM killer, say) leaves the attempt's processes
    // orphaned: as a subreaper this worker inherits them instead of init, and reaps them.
    ProcessHardening.becomeChildSubreaper()
    Task.detached(priority: .background) {
      var last = ContinuousClock.now - interval
      while true {
        if ContinuousClock.now - last >= interval {
          last = .now
          _ = sweep()
        }
        _ = reapOwnOrphans()
        try? await Task.sleep(for: .seconds(1))
      }
    }
  }

  /// Kills and reaps the children of this process that are neither an attempt's supervisor nor
  /// in this process's group (what the worker itself starts stays in it): descendants of a killed
  /// supervisor, reparented here. Only a child seen on two sweeps in a row (the same process: its
  /// start time) is touched, so a child being spawned, or a supervisor that just exited and is
  /// about to be reaped by its `ChildProgram` run, is never taken for an orphan; and each is reaped by its
  /// pid, never with a wait for any child.
  @discardableResult
  public static func reapOwnOrphans() -> [Int32] {
    guard AttemptSupervision.detected.supervisor != nil,
      let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc")
    else { return [] }
    let own = getpid()
    let group = getpgrp()
    let ours = ChildProgram.running.withLock { $0 }
    var suspects: Set<String> = []
    var reaped: [Int32] = []
    for entry in entries {
      guard let pid = Int32(entry), pid != own, !ours.contains(pid), parent(of: pid) == own, getpgid(pid) != group,
        let identity = identity(of: pid)
      else { continue }
      let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
      if isSupervisor(command) { continue }
      suspects.insert(identity)
      guard previousSuspects.withLock({ $0.contains(identity) }) else { continue }
      kill(pid, SIGKILL)
      var status: Int32 = 0
      if waitpid(pid, &status, WNOHANG) == pid { reaped.append(pid) }
    }
    previousSuspects.withLock { $0 = suspects }
    return reaped
  }

  /// The orphans the last sweep saw, by identity (pid and start time).
  private static let previousSuspects = Mutex<Set<String>>([])

  static func parent(of pid: Int32) -> Int32? {
    statFields(pid).flatMap { $0.count > 1 ? Int32($0[1]) : nil }
  }

  /// Whether a command line (NUL-separated) is `nova-supervise ...` or `nova __supervise ...`.
  static func isSupervisor(_ cmdline: Data) -> Bool {
    let arguments = cmdline.split(separator: 0, omittingEmptySubsequences: false)
    if let program = arguments.first, String(decoding: program, as: UTF8.self).hasSuffix("/" + AttemptSupervision.programName) {
      return true
    }
    return arguments.count > 1 && String(decoding: arguments[1], as: UTF8.self) == ProcessHardening.supervisorCommand
  }

  /// One sweep; the pids it killed.
  @discardableResult
  public static func sweep() -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var killed: [Int32] = []
    var alive: [String: Bool] = [identity: true]
    let ours = namespace + "/"
    for entry in entries {
      // Only workers of this pid namespace can be judged by their pid here.
      guard let pid = Int32(entry), pid != getpid(), let worker = workerOf(pid), worker.hasPrefix(ours) else { continue }
      let running = alive[worker] ?? isRunning(worker)
      alive[worker] = running
      if !running, kill(pid, SIGKILL) == 0 { killed.append(pid) }
    }
    return killed
  }

  /// `<pid namespace>/<pid>:<start time in clock ticks since boot>` of a running process of this namespace.
  static func identity(of pid: Int32) -> String? {
    guard let fields = statFields(pid), fields.count > 19 else { return nil }
    return "\(namespace)/\(pid):\(fields[19])"
  }

  /// The fields of /proc/<pid>/stat after the command name (which may hold spaces): the state
  /// first (field 3), then the parent pid (field 4), ..., the start time at index 19 (field 22).
  static func statFields(_ pid: Int32) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
      return nil
    }
    return stat[stat.index(after: close)...].split(separator: " ")
  }

  static func isRunning(_ worker: String) -> Bool {
    guard let slash = worker.lastIndex(of: "/"), let pid = Int32(worker[worker.index(after: slash)...].prefix { $0 != ":" }) else {
      return true
    }
    return identity(of: pid) == worker
  }

  /// The `NOVA_WORKER` of a process, when it has one (and its environment can be read).
  static func workerOf(_ pid: Int32) -> String? {
    guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
    let prefix = Array((variable + "=").utf8)
    for entry in environ.split(separator: 0) where entry.starts(with: prefix) {
      return String(decoding: entry.dropFirst(prefix.count), as: UTF8.self)
    }
    return nil
  }
}
