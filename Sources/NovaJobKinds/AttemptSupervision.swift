import Foundation
import NovaCore
import Synchronization

/// How the processes of a command kind's attempt are contained, so that none outlives it.
///
/// Each attempt runs under `nova __supervise`, a child subreaper: every descendant whose parent
/// exits (a child that called `setsid()` and was orphaned on purpose) is reparented to it, so it
/// knows the attempt's processes whatever they did to their group, session or environment. When
/// the program ends, or the worker stops the attempt, it sends SIGTERM to all of them, SIGKILL
/// after `kill_grace`, and exits only once they are reaped; the worker holds the attempt's slot
/// and lease until then. Where a writable cgroup v2 hierarchy is delegated to the worker, each
/// attempt also gets a cgroup of its own, emptied with `cgroup.kill` (which also stops a process
/// forking as fast as it can). A supervisor whose worker dies kills the attempt at once.
public struct AttemptSupervision: Sendable, Equatable {
  /// The `nova` executable that runs `__supervise`; nil runs programs directly, in their own
  /// process group (a child that leaves it is then caught only by the sweep of dead workers).
  public var supervisor: String?
  /// The folder under which each attempt gets its cgroup; nil uses none.
  public var cgroupRoot: String?

  public init(supervisor: String?, cgroupRoot: String?) {
    self.supervisor = supervisor
    self.cgroupRoot = cgroupRoot
  }

  /// No supervisor and no cgroup: the program in its own process group.
  public static let none = AttemptSupervision(supervisor: nil, cgroupRoot: nil)

  /// What this process can use: itself as supervisor when it is the `nova` executable
  /// (`ProcessHardening.markAsNovaExecutable`), and a cgroup per attempt unless `NOVA_CGROUP` is
  /// `off` (a path names the folder to use; by default the worker's own cgroup, where writable).
  public static let detected: AttemptSupervision = {
    let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    // `nova-supervise` beside `nova` (built with it) starts faster than `nova __supervise`.
    let beside = URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent(Self.programName).path
    let supervisor = FileManager.default.isExecutableFile(atPath: beside) ? beside : executable
    return AttemptSupervision(
      supervisor: ProcessHardening.isNovaExecutable && !executable.isEmpty ? supervisor : nil,
      cgroupRoot: AttemptCgroups.root(setting: ProcessInfo.processInfo.environment["NOVA_CGROUP"]))
  }()

  /// The supervisor as a program of its own.
  public static let programName = "nova-supervise"

  /// The arguments that start the supervisor before its options: none for `nova-supervise`,
  /// the hidden subcommand for `nova`.
  var prefix: [String] {
    guard let supervisor else { return [] }
    return URL(fileURLWithPath: supervisor).lastPathComponent == Self.programName ? [] : [ProcessHardening.supervisorCommand]
  }

}

/// A cgroup v2 per attempt, under a folder of this worker's own.
public enum AttemptCgroups {
  /// The folder for this process's attempt cgroups: `NOVA_CGROUP` when it names one, else
  /// `nova-<pid>` in the worker's own cgroup v2 (created here), or nil when there is no writable
  /// cgroup v2 with `cgroup.kill` (kernel 5.14) or `NOVA_CGROUP` is `off`.
  public static func root(setting: String?) -> String? {
    if setting == "off" { return nil }
    var base: String
    if let setting, setting != "auto", !setting.isEmpty {
      base = setting
    } else {
      guard let own = ownCgroup() else { return nil }
      base = own
      // Moved into its own leaf by an earlier call (see `delegateControllers`): the folder
      // above is the one delegated to it.
      if URL(fileURLWithPath: own).lastPathComponent == "\(workerLeafPrefix)\(getpid())" {
        base = URL(fileURLWithPath: own).deletingLastPathComponent().path
      }
    }
    guard FileManager.default.fileExists(atPath: base + "/cgroup.kill") else { return nil }
    removeStale(in: base)
    let root = "\(base)/nova-\(getpid())"
    guard mkdir(root, 0o755) == 0 || errno == EEXIST else { return nil }
    return root
  }

  /// The roots whose controllers were handed down: at the first attempt made under each, so that
  /// a process that never runs a program (`nova enqueue`, `nova jobs show`) never moves itself.
  private static let delegated = Mutex<Set<String>>([])

  /// The leaf a worker moves itself into when it hands controllers down: `nova-worker-<pid>`.
  static let workerLeafPrefix = "nova-worker-"

  /// Where `cpu` and `memory` are delegated to `base` (systemd's `Delegate=yes`), hands them down
  /// to the attempt cgroups under `root`, so that `limit` can write `cpu.max` and `memory.max`.
  /// A cgroup that hands controllers down may hold no process itself, so this process first
  /// moves into a leaf of its own beside `root`. Returns the controllers handed down (none where
  /// they are not delegated, or the move is refused: attempts then run without limits).
  @discardableResult
  static func delegateControllers(base: String, root: String, pid: Int32 = getpid()) -> [String] {
    guard let available = try? String(contentsOfFile: base + "/cgroup.controllers", encoding: .utf8) else { return [] }
    let names = Set(available.split(whereSeparator: \.isWhitespace).map(String.init))
    let wanted = ["cpu", "memory"].filter(names.contains)
    guard !wanted.isEmpty else { return [] }
    let enable = wanted.map { "+" + $0 }.joined(separator: " ")
    func write(_ text: String, _ path: String) -> Bool { (try? text.write(toFile: path, atomically: false, encoding: .utf8)) != nil }
    let handed = Set(
      ((try? String(contentsOfFile: base + "/cgroup.subtree_control", encoding: .utf8)) ?? "").split(whereSeparator: \.isWhitespace)
        .map(String.init))
    if !wanted.allSatisfy(handed.contains) {
      let leaf = "\(base)/\(workerLeafPrefix)\(pid)"
      guard mkdir(leaf, 0o755) == 0 || errno == EEXIST, write("\(pid)", leaf + "/cgroup.procs"),
        write(enable, base + "/cgroup.subtree_control")
      else { return [] }
    }
    return write(enable, root + "/cgroup.subtree_control") ? wanted : []
  }

  /// This process's cgroup v2 folder: its `0::` line in /proc/self/cgroup under the cgroup2 mount.
  static func ownCgroup() -> String? {
    guard let cgroups = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
      let line = cgroups.split(separator: "\n").first(where: { $0.hasPrefix("0::") }),
      let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
    else { return nil }
    let path = String(line.dropFirst(3))
    for mount in mounts.split(separator: "\n") {
      // Fields: id parent major:minor root mount-point options ... - type source options.
      let halves = mount.components(separatedBy: " - ")
      guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
      let fields = halves[0].split(separator: " ")
      guard fields.count > 4 else { continue }
      let point = String(fields[4])
      return path == "/" ? point : point + path
    }
    return nil
  }

  /// Kills and removes the attempt cgroups of workers that died (their `nova-<pid>` folder stays).
  static func removeStale(in base: String) {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: base) else { return }
    for entry in entries where entry.hasPrefix(workerLeafPrefix) {
      // The leaf a dead worker had moved itself into: empty since it died.
      guard let pid = Int32(entry.dropFirst(workerLeafPrefix.count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
      rmdir("\(base)/\(entry)")
    }
    for entry in entries where entry.hasPrefix("nova-") {
      guard let pid = Int32(entry.dropFirst(5)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
      let folder = "\(base)/\(entry)"
      for attempt in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where attempt.hasPrefix("attempt-") {
        empty("\(folder)/\(attempt)", within: .seconds(2))
      }
      rmdir(folder)
    }
  }

  /// Makes the cgroup of one attempt.
  static func make(in root: String, job: JobID, attempt: Int) -> String? {
    if delegated.withLock({ $0.insert(root).inserted }) {
      delegateControllers(base: URL(fileURLWithPath: root).deletingLastPathComponent().path, root: root)
    }
    let folder = "\(root)/attempt-\(job.rawValue)-\(attempt)"
    guard mkdir(folder, 0o755) == 0 || errno == EEXIST else { return nil }
    return folder
  }

  /// Limits the attempt's cgroup to the CPUs and memory its job asked for (0: no limit), where
  /// the controllers are handed down to it (`delegateControllers`); where they are not, the
  /// request still placed the job and the limit is left out. Returns the files written.
  @discardableResult
  static func limit(_ folder: String, cpus: Int, memoryMiB: Int) -> [String] {
    var written: [String] = []
    // cpu.max: quota and period in µs; N CPUs is N periods of quota per period.
    if cpus > 0, (try? "\(cpus * 100_000) 100000".write(toFile: folder + "/cpu.max", atomically: false, encoding: .utf8)) != nil {
      written.append("cpu.max")
    }
    if memoryMiB > 0, (try? "\(memoryMiB << 20)".write(toFile: folder + "/memory.max", atomically: false, encoding: .utf8)) != nil {
      written.append("memory.max")
    }
    return written
  }

  /// Whether processes are left in the cgroup.
  static func isPopulated(_ folder: String) -> Bool {
    guard let events = try? String(contentsOfFile: folder + "/cgroup.events", encoding: .utf8) else { return false }
    return events.contains("populated 1")
  }

  /// Kills what is left in the cgroup, waits until it is empty (bounded), and removes it.
  @discardableResult
  static func empty(_ folder: String, within bound: Duration) -> Bool {
    let deadline = ContinuousClock.now + bound
    while isPopulated(folder) {
      try? "1".write(toFile: folder + "/cgroup.kill", atomically: false, encoding: .utf8)
      if ContinuousClock.now >= deadline { return false }
      usleep(10_000)
    }
    return rmdir(folder) == 0 || errno == ENOENT
  }
}
