import Foundation
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

  /// Starts the periodic sweep once per process.
  public static func start(every interval: Duration = .seconds(30)) {
    let first = started.withLock { started -> Bool in
      defer { started = true }
      return !started
    }
    guard first else { return }
    Task.detached(priority: .background) {
      while true {
        _ = sweep()
        try? await Task.sleep(for: interval)
      }
    }
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
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return nil }
    // Fields after the command name (which may hold spaces): state is field 3, start time 22.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 19 else { return nil }
    return "\(namespace)/\(pid):\(fields[19])"
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
