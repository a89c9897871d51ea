import ArgumentParser
import Foundation
import NovaCore

/// The `nova` command line.
@main
struct NovaCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "nova",
    abstract: "Nova: a durable job queue and orchestration core for fleets of AI agents.",
    discussion: """
      Exit codes: 0 success, 1 runtime failure, 2 bad input (flags, payloads, data directory),
      3 not found, 4 the job's state does not allow the action, 5 verification failed (audit log
      or evidence bundle), 6 denied by policy.
      """,
    version: "0.1.0",
    subcommands: [
      ServeCommand.self, WorkerCommand.self, EnqueueCommand.self, JobsCommand.self, PolicyCommand.self,
      AuditCommand.self, TokensCommand.self, EvidenceCommand.self, KPICommand.self, AlertsCommand.self, JournalCommand.self, DashboardsCommand.self,
      KindsCommand.self, QueuesCommand.self, WorkersCommand.self, BenchCommand.self,
    ])

  /// Parses, runs, and maps every error to a message on stderr and a meaningful exit code.
  static func main() async {
    let arguments = CommandLine.arguments
    // A command kind's attempt runs under `nova __supervise` (a program of its own, not a
    // subcommand: it parses nothing else and starts no runtime work).
    if arguments.count > 1, arguments[1] == ProcessHardening.supervisorCommand {
      ProcessHardening.runSupervisor(Array(arguments.dropFirst(2)))
    }
    // Programs that jobs run are of the same user: they must not read this process's
    // environment (tokens, passwords) or memory through /proc.
    ProcessHardening.markAsNovaExecutable()
    ProcessHardening.makeNonDumpable()
    // Connections, waiting claims and programs' pipes are files: the hard limit, not the soft.
    ProcessHardening.raiseOpenFileLimit()
    do {
      // What a command changes is audited as the local user.
      try await AuditContext.$actor.withValue("cli:\(NSUserName())") {
        var command = try parseAsRoot()
        if var asyncCommand = command as? any AsyncParsableCommand {
          try await asyncCommand.run()
        } else {
          try command.run()
        }
      }
    } catch let error as NovaError {
      fail(error.description, code: ExitStatus.code(for: error))
    } catch let error as ExitCode {
      Foundation.exit(error.rawValue)
    } catch {
      let code = exitCode(for: error)
      if code == .success { exit(withError: error) }
      if code == .validationFailure {
        FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
        Foundation.exit(ExitStatus.badInput)
      }
      fail(String(describing: error), code: ExitStatus.failure)
    }
  }

  static func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    Foundation.exit(code)
  }
}

/// Exit codes of `nova`.
enum ExitStatus {
  static let failure: Int32 = 1
  static let badInput: Int32 = 2
  static let notFound: Int32 = 3
  static let conflict: Int32 = 4
  static let verificationFailed: Int32 = 5
  static let denied: Int32 = 6
  /// A benchmark compared with a saved baseline breached a threshold (`nova bench baseline --compare`).
  static let baselineBreach: Int32 = 7
  /// `nova audit verify`: the log has entries but no signed checkpoint to check them against.
  static let unanchored: Int32 = 8

  static func code(for error: NovaError) -> Int32 {
    switch error {
    case .invalidInput, .malformedInput, .unknownJobKind, .payloadTooLarge, .storage: return badInput
    case .jobNotFound, .notFound: return notFound
    case .invalidState, .leaseLost, .idempotencyConflict: return conflict
    case .unavailable: return failure
    case .forbidden: return denied
    }
  }
}
