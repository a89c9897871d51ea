import Foundation
import NovaCore

/// Runs the hardware probes' programs (nvidia-smi, a GPU load) with `ChildProgram`, as job programs are run.
enum ProbeProgram {
  /// How one run ended.
  enum Outcome: Sendable, Equatable {
    /// It ended by itself: its exit code (128 + the signal when one killed it) and its standard output.
    case finished(status: Int32, output: String)
    /// It ran past its time and was killed.
    case timedOut
    /// There is no program at that path.
    case missing
    /// It could not be started, or wrote more than the limit.
    case failed(String)
  }

  /// Far more than any probe's report: a program writing more is broken, and is stopped rather than read on.
  static let defaultOutputLimit = 1 << 20

  /// Runs `path` to its end, or kills it after `timeout`; its standard error is discarded.
  static func run(_ path: String, _ arguments: [String], timeout: Duration, limit: Int = defaultOutputLimit) async -> Outcome {
    await withTaskGroup(of: Outcome?.self) { group in
      group.addTask { await Self.runToEnd(path, arguments, limit: limit) }
      group.addTask {
        // Cancelled with its caller: the run, torn down too, says how it ended.
        do { try await Task.sleep(for: timeout) } catch { return nil }
        return .timedOut
      }
      var outcome: Outcome?
      for await next in group {
        if let next {
          outcome = next
          break
        }
      }
      // Cancelling the run is its teardown; the group returns only once the program is reaped.
      group.cancelAll()
      return outcome ?? .failed("cancelled")
    }
  }

  /// Starts `/bin/sh -c command`, its output discarded, until `stop` ends it.
  static func start(shell command: String) -> Task<Void, Never> {
    Task {
      do {
        _ = try await ChildProgram.run(
          "/bin/sh", arguments: ["-c", command], environment: ProcessInfo.processInfo.environment, stopGrace: .seconds(2)
        ) {
          execution in
          async let discarded: Void = { for await _ in execution.standardError {} }()
          for await _ in execution.standardOutput {}
          await discarded
        }
      } catch {
        // A load that cannot start leaves the GPU idle, which the samples then show.
      }
    }
  }

  /// Ends a program `start` started, and waits until it is reaped.
  static func stop(_ program: Task<Void, Never>) async {
    program.cancel()
    await program.value
  }

  private static func runToEnd(_ path: String, _ arguments: [String], limit: Int) async -> Outcome {
    var busyTries = 0
    while true {
      do {
        // In a group of its own, so that the signals of a timeout reach whatever the program started too.
        let (termination, output) = try await ChildProgram.output(path, arguments: arguments, limit: limit)
        guard let output else { return .failed("more than \(limit) bytes of output") }
        let text = String(decoding: output, as: UTF8.self)
        switch termination {
        case .exited(let code): return .finished(status: code, output: text)
        case .signaled(let signal): return .finished(status: 128 + signal, output: text)
        }
      } catch let error as ChildProgram.SpawnError {
        switch error.code {
        case ENOENT:
          return .missing
        // A program written a moment ago can be briefly busy (ETXTBSY) while another thread's fork still holds it
        // open for writing.
        case ETXTBSY where busyTries < 50:
          busyTries += 1
          do { try await Task.sleep(for: .milliseconds(10)) } catch { return .failed("cancelled") }
        default:
          return .failed("\(error)")
        }
      } catch {
        return .failed("\(error)")
      }
    }
  }
}
