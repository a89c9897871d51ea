import Foundation
import NovaCore
import Synchronization
import Testing

/// `ChildProgram`, which replaced swift-subprocess after every program started in a CI test
/// process from some point on hung at once. Each run has a thread of its own and nothing is shared
/// between runs, so many at once, cancelled ones, floods and programs whose children keep the pipes
/// open must all end.
@Suite("Child programs", .timeLimit(.minutes(3)))
struct ChildProgramTests {
  static let path = ["PATH": "/usr/bin:/bin"]
  var environment: [String: String] { Self.path }

  @Test func inputGoesInOutputAndExitComeBack() async throws {
    let (termination, value) = try await ChildProgram.run(
      "/bin/sh", arguments: ["-c", "cat; echo err >&2; exit 7"], environment: environment, input: Array("payload".utf8),
      stopGrace: .seconds(1)
    ) { execution in
      async let err = collect(execution.standardError)
      let out = await collect(execution.standardOutput)
      return (out, await err)
    }
    #expect(termination == .exited(7))
    #expect(String(decoding: value.0, as: UTF8.self) == "payload")
    #expect(String(decoding: value.1, as: UTF8.self) == "err\n")
    let killed = try await ChildProgram.output("/bin/sh", arguments: ["-c", "kill -9 $$"], limit: 10)
    #expect(killed.termination == .signaled(SIGKILL))
  }

  @Test func theEnvironmentIsExactlyWhatIsGivenAndTheFolderIsSet() async throws {
    let folder = FileManager.default.temporaryDirectory.path
    let (termination, value) = try await ChildProgram.run(
      "/usr/bin/env", arguments: [], environment: ["ONLY": "this"], workingDirectory: folder, stopGrace: .seconds(1)
    ) { await collect($0.standardOutput) }
    #expect(termination == .exited(0))
    #expect(String(decoding: value, as: UTF8.self) == "ONLY=this\n")
    await #expect(throws: ChildProgram.SpawnError.self) {
      _ = try await ChildProgram.run("/bin/true", arguments: [], environment: [:], workingDirectory: "/no/such/folder", stopGrace: .seconds(1)) { _ in
      }
    }
  }

  @Test func aMissingProgramIsReportedByItsErrno() async throws {
    do {
      _ = try await ChildProgram.output("/no/such/program", arguments: [], limit: 10)
      Issue.record("a missing program started")
    } catch let error as ChildProgram.SpawnError {
      #expect(error.code == ENOENT)
      #expect(error.description.contains("/no/such/program"))
    }
  }

  /// A program that never reads its input and exits: the run ends, the input is dropped.
  @Test func aProgramIgnoringItsInputStillEnds() async throws {
    let big = [UInt8](repeating: 0x41, count: 4 << 20)
    let (termination, _) = try await ChildProgram.run("/bin/true", arguments: [], environment: environment, input: big, stopGrace: .seconds(1)) {
      await collect($0.standardOutput)
    }
    #expect(termination == .exited(0))
  }

  /// More output than the buffer holds, read slowly: nothing is lost and memory stays bounded
  /// (the program waits on its pipe).
  @Test func aFloodReadSlowlyArrivesWhole() async throws {
    let (termination, count) = try await ChildProgram.run(
      "/bin/sh", arguments: ["-c", "head -c 8000000 /dev/zero"], environment: environment, stopGrace: .seconds(1)
    ) { execution in
      var count = 0
      for await chunk in execution.standardOutput {
        count += chunk.count
        if count < 2_000_000 { try? await Task.sleep(for: .milliseconds(1)) }
      }
      return count
    }
    #expect(termination == .exited(0))
    #expect(count == 8_000_000)
  }

  /// The program exits while a child it started keeps the output pipe open: the run ends with the
  /// program, what it wrote arrives.
  @Test func aChildHoldingThePipeDoesNotHoldTheRun() async throws {
    let started = ContinuousClock.now
    let (termination, value) = try await ChildProgram.run(
      "/bin/sh", arguments: ["-c", "echo before; (sleep 30 &) ; exit 0"], environment: environment, stopGrace: .seconds(1)
    ) { await collect($0.standardOutput) }
    #expect(termination == .exited(0))
    #expect(String(decoding: value, as: UTF8.self) == "before\n")
    #expect(ContinuousClock.now - started < .seconds(10))
    // (The sleeping child is this test's process group's orphan; kill it.)
    _ = try await ChildProgram.output("/usr/bin/pkill", arguments: ["-f", "^sleep 30$"], limit: 1000)
  }

  /// Cancelling the caller stops the program: SIGTERM, then SIGKILL after the grace for one that
  /// ignores it; the run returns only once it is reaped, and throws CancellationError.
  @Test func cancellingStopsTheProgramThenKillsIt() async throws {
    let pid = Mutex<Int32>(0)
    let run = Task {
      try await ChildProgram.run(
        "/bin/sh", arguments: ["-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], environment: environment,
        stopGrace: .milliseconds(500)
      ) { execution in
        pid.withLock { $0 = execution.pid }
        return await collect(execution.standardOutput)
      }
    }
    while pid.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(10)) }
    try await Task.sleep(for: .milliseconds(200))
    let cancelled = ContinuousClock.now
    run.cancel()
    await #expect(throws: CancellationError.self) { _ = try await run.value }
    let took = ContinuousClock.now - cancelled
    #expect(took >= .milliseconds(450) && took < .seconds(5), "stopped after \(took)")
    #expect(kill(pid.withLock { $0 }, 0) != 0, "the program outlived its run")
    #expect(!ChildProgram.running.withLock { $0.contains(pid.withLock { $0 }) })
  }

  /// Many short runs, 25 at a time (more would only load the machine the other suites share), some
  /// cancelled at random points, with thread churn: every one ends (the hang this type replaced
  /// came after many runs).
  @Test func manyRunsAtOnceAllEnd() async throws {
    let environment = Self.path
    let finished = try await withThrowingTaskGroup(of: Int.self) { group in
      var done = 0
      for index in 0..<200 {
        if index >= 25 { done += try await group.next() ?? 0 }
        group.addTask {
          let task = Task {
            try await ChildProgram.run(
              "/bin/sh", arguments: ["-c", "echo \(index); cat >/dev/null; sleep 0.0\(index % 5)"], environment: environment,
              input: Array("x".utf8), stopGrace: .milliseconds(100)
            ) { execution in
              async let err = collect(execution.standardError)
              let out = await collect(execution.standardOutput)
              _ = await err
              return out
            }
          }
          if index % 7 == 0 {
            try await Task.sleep(for: .milliseconds(index % 20))
            task.cancel()
            _ = try? await task.value
          } else {
            let (termination, out) = try await task.value
            #expect(termination == .exited(0))
            #expect(String(decoding: out, as: UTF8.self) == "\(index)\n")
          }
          return 1
        }
        if index % 10 == 0 { Thread.detachNewThread { usleep(1000) } }
      }
      return try await group.reduce(done, +)
    }
    #expect(finished == 200)
  }
}

private func collect(_ output: ChildProgram.Output) async -> [UInt8] {
  var bytes: [UInt8] = []
  for await chunk in output { bytes += chunk }
  return bytes
}
