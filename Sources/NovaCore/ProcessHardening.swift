import CNovaProcess
import Foundation
import Synchronization

/// What a Nova process does to itself at start so that the programs it runs cannot reach into
/// it, and so that what they start cannot escape it.
public enum ProcessHardening {
  /// Makes this process non-dumpable: its `/proc/<pid>/environ`, memory and ptrace are then closed
  /// to processes of the same user (a job's program), which could otherwise read the worker's
  /// tokens and passwords. Core dumps are off as well.
  @discardableResult
  public static func makeNonDumpable() -> Bool { nova_set_dumpable(0) == 0 }

  /// Whether this process is dumpable (1) or not (0).
  public static var dumpable: Int32 { nova_get_dumpable() }

  /// Makes this process a child subreaper: a descendant whose parent exits is reparented here
  /// instead of to init, where it can be found, killed and reaped.
  @discardableResult
  public static func becomeChildSubreaper() -> Bool { nova_set_child_subreaper(1) == 0 }

  /// Whether this process is a child subreaper.
  public static var isChildSubreaper: Bool { nova_get_child_subreaper() == 1 }

  /// Raises the soft limit on open files to the hard limit (a server's connections, waiting
  /// claims and programs' pipes are files); returns the limit now in force. The limit it was
  /// started with is kept for the programs it runs (`originalOpenFileLimit`).
  @discardableResult
  public static func raiseOpenFileLimit() -> UInt64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < limit.rlim_max {
      var raised = limit
      raised.rlim_cur = limit.rlim_max
      if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
        state.withLock { $0.originalOpenFiles = UInt64(limit.rlim_cur) }
        return UInt64(raised.rlim_max)
      }
    }
    return UInt64(limit.rlim_cur)
  }

  /// The soft limit on open files this process was started with, when `raiseOpenFileLimit`
  /// raised it (programs get it back: some close every descriptor up to the limit).
  public static var originalOpenFileLimit: UInt64? { state.withLock { $0.originalOpenFiles } }

  /// Marks this process as the `nova` executable, which can run `__supervise` for its programs.
  public static func markAsNovaExecutable() { state.withLock { $0.isNova = true } }

  /// Whether this process is the `nova` executable (`markAsNovaExecutable`).
  public static var isNovaExecutable: Bool { state.withLock { $0.isNova } }

  private static let state = Mutex((originalOpenFiles: UInt64?.none, isNova: false))

  /// The hidden subcommand that runs the per-attempt supervisor (`nova __supervise ...`).
  public static let supervisorCommand = "__supervise"

  /// Runs the per-attempt supervisor with `arguments` (the options after `__supervise`) and exits
  /// as the program it ran did.
  public static func runSupervisor(_ arguments: [String]) -> Never {
    var pointers: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
    pointers.append(nil)
    let status = pointers.withUnsafeBufferPointer { buffer in
      nova_supervise(Int32(arguments.count), buffer.baseAddress!)
    }
    exit(status)
  }
}
