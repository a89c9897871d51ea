import CNovaProcess
import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Runs a program with its standard streams piped, each run watched by a thread of its own.
///
/// Why not swift-subprocess: its runs share one process-wide monitor and one I/O loop, keyed by
/// descriptor and pid numbers that the kernel reuses, and it forks with a raw `clone3` after which
/// the child calls into glibc; in CI every program started after some point hung at once. Here
/// nothing is shared between runs: the thread spawns with `posix_spawn` (the child only execs),
/// polls the pipes and the pidfd, delivers output with backpressure, stops the program's process
/// group when asked (SIGTERM, SIGKILL after the grace) and reaps it by pid. Nothing blocking runs
/// on Swift's cooperative threads.
public enum ChildProgram {
  /// How a program ended.
  public enum Termination: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var description: String {
      switch self {
      case .exited(let code): "exit code \(code)"
      case .signaled(let signal): "signal \(signal)"
      }
    }
  }

  /// A program that could not be started.
  public struct SpawnError: Error, Sendable, CustomStringConvertible {
    /// The `errno` of what failed (`ENOENT`: no such program; `ETXTBSY`: being written).
    public let code: Int32
    public let path: String
    public var description: String { "cannot start \(path): \(String(cString: strerror(code)))" }
  }

  /// The pids of the programs started here and not yet reaped: the sweep of a worker's orphans
  /// leaves them (and their exit status) alone.
  public static let running = Mutex<Set<Int32>>([])

  /// One output stream of a running program: chunks as they are read, ending when the program's
  /// end of the pipe closes or, once the program has exited, when what it wrote is read (a
  /// grandchild still holding the pipe open does not keep the run alive).
  public struct Output: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    let stream: AsyncStream<[UInt8]>
    let watch: Watch
    let index: Int

    public struct AsyncIterator: AsyncIteratorProtocol {
      var inner: AsyncStream<[UInt8]>.AsyncIterator
      let watch: Watch
      let index: Int

      public mutating func next() async -> [UInt8]? {
        let chunk = await inner.next()
        if let chunk { watch.consumed(index, chunk.count) }
        return chunk
      }
    }

    public func makeAsyncIterator() -> AsyncIterator {
      AsyncIterator(inner: stream.makeAsyncIterator(), watch: watch, index: index)
    }
  }

  /// A started program: its pid and its two output streams.
  public struct Execution: Sendable {
    public let pid: Int32
    public let standardOutput: Output
    public let standardError: Output
    let watch: Watch

    /// Kills the program's process group at once (SIGKILL), while it is still this run's to signal.
    public func kill() { watch.kill() }
  }

  /// Starts `path` with `arguments` and `environment` in `workingDirectory`, in a process group of
  /// its own, `input` written to its standard input (then closed; nil: /dev/null), and runs
  /// `body` with it. Returns once the program has exited and is reaped, with how it ended and what
  /// `body` returned. Cancelling the calling task stops the program: SIGTERM to its process group,
  /// SIGKILL `stopGrace` later; the run still returns only once it is reaped, then throws
  /// `CancellationError`.
  public static func run<Result: Sendable>(
    _ path: String, arguments: [String], environment: [String: String], workingDirectory: String? = nil,
    input: [UInt8]? = nil, stopGrace: Duration, body: (Execution) async throws -> Result
  ) async throws -> (termination: Termination, value: Result) {
    if let workingDirectory {
      var isFolder: ObjCBool = false
      guard FileManager.default.fileExists(atPath: workingDirectory, isDirectory: &isFolder), isFolder.boolValue else {
        throw SpawnError(code: ENOTDIR, path: workingDirectory)
      }
    }
    let watch = Watch(stopGrace: stopGrace)
    let streams = (AsyncStream<[UInt8]>.makeStream(), AsyncStream<[UInt8]>.makeStream())
    watch.outputs = [streams.0.continuation, streams.1.continuation]
    for (index, stream) in [streams.0, streams.1].enumerated() {
      stream.continuation.onTermination = { _ in watch.abandoned(index) }
    }
    let command = Command(
      path: path, arguments: [path] + arguments, environment: environment.map { "\($0.key)=\($0.value)" }, directory: workingDirectory)
    let pid = try await withCheckedThrowingContinuation { (started: CheckedContinuation<Int32, any Error>) in
      let thread = Thread { watch.main(command, input: input, started: started) }
      thread.name = "nova-program"
      thread.stackSize = 256 << 10
      thread.start()
    }
    let execution = Execution(
      pid: pid, standardOutput: Output(stream: streams.0.stream, watch: watch, index: 0),
      standardError: Output(stream: streams.1.stream, watch: watch, index: 1), watch: watch)
    return try await withTaskCancellationHandler {
      let value: Result
      do {
        value = try await body(execution)
        // What `body` did not read is no longer kept for it.
        watch.abandoned(0)
        watch.abandoned(1)
      } catch {
        watch.stop()
        _ = await watch.termination()
        throw error
      }
      let termination = await watch.termination()
      if Task.isCancelled { throw CancellationError() }
      return (termination, value)
    } onCancel: {
      watch.stop()
    }
  }

  /// Runs `path` to its end and returns how it ended with what it wrote to standard output
  /// (at most `limit` bytes; nil when it wrote more, and then it is stopped).
  public static func output(
    _ path: String, arguments: [String], environment: [String: String] = ProcessInfo.processInfo.environment, limit: Int,
    stopGrace: Duration = .seconds(2)
  ) async throws -> (termination: Termination, output: [UInt8]?) {
    let (termination, output) = try await run(path, arguments: arguments, environment: environment, stopGrace: stopGrace) {
      execution -> [UInt8]? in
      // Standard error is read too (and dropped), so that a program writing much to it never blocks.
      async let discarded: Void = { for await _ in execution.standardError {} }()
      var bytes: [UInt8] = []
      for await chunk in execution.standardOutput {
        bytes += chunk
        if bytes.count > limit {
          execution.kill()
          await discarded
          return nil
        }
      }
      await discarded
      return bytes
    }
    return (termination, output)
  }

  struct Command: Sendable {
    let path: String
    let arguments: [String]
    let environment: [String]
    let directory: String?
  }

  /// The state a run's thread shares with the tasks that read its output and wait for its end.
  final class Watch: Sendable {
    struct State {
      var outputs: [AsyncStream<[UInt8]>.Continuation?] = [nil, nil]
      /// Bytes handed to a stream and not yet taken by its reader.
      var unconsumed = [0, 0]
      var abandoned = [false, false]
      var stopRequested = false
      var killRequested = false
      var termination: Termination?
      var waiters: [CheckedContinuation<Termination, Never>] = []
      var wakeFD: Int32 = -1
    }

    let state = Mutex(State())
    let stopGrace: Duration
    /// How many unread bytes a stream may hold before the thread stops reading its pipe (the
    /// program then blocks writing, as it would on a full pipe).
    static let bufferLimit = 1 << 20
    static let chunkSize = 64 << 10

    init(stopGrace: Duration) { self.stopGrace = stopGrace }

    var outputs: [AsyncStream<[UInt8]>.Continuation?] {
      get { state.withLock { $0.outputs } }
      set { state.withLock { $0.outputs = newValue } }
    }

    func consumed(_ index: Int, _ count: Int) {
      wake { $0.unconsumed[index] -= count }
    }

    func abandoned(_ index: Int) {
      wake { state in
        state.abandoned[index] = true
        state.unconsumed[index] = 0
      }
    }

    func stop() { wake { $0.stopRequested = true } }

    func kill() { wake { $0.killRequested = true } }

    func termination() async -> Termination {
      await withCheckedContinuation { continuation in
        let done = state.withLock { state -> Termination? in
          if let termination = state.termination { return termination }
          state.waiters.append(continuation)
          return nil
        }
        if let done { continuation.resume(returning: done) }
      }
    }

    /// Wakes the thread. Written under the lock, so that the thread cannot close the descriptor
    /// (and the number be reused) between reading it and writing to it.
    private func wake(_ change: (inout State) -> Void) {
      state.withLock { state in
        change(&state)
        guard state.wakeFD >= 0 else { return }
        var byte: UInt8 = 1
        _ = write(state.wakeFD, &byte, 1)
      }
    }

    /// The thread: spawns, then moves bytes and watches for the end until the program is reaped.
    func main(_ command: Command, input: [UInt8]?, started: CheckedContinuation<Int32, any Error>) {
      // Writing to a program that closed its input must fail the write (EPIPE), not kill this
      // process: SIGPIPE is blocked on this thread (it is sent to the writing thread).
      var pipeSignal = sigset_t()
      sigemptyset(&pipeSignal)
      sigaddset(&pipeSignal, SIGPIPE)
      pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
      var wake: [Int32] = [-1, -1]
      var stdinPipe: [Int32] = [-1, -1]
      var stdoutPipe: [Int32] = [-1, -1]
      var stderrPipe: [Int32] = [-1, -1]
      var failed: Int32 = 0
      failed = nova_pipe(&wake, 1)
      if failed == 0 { failed = nova_pipe(&stdoutPipe, 0) }
      if failed == 0 { failed = nova_pipe(&stderrPipe, 0) }
      if failed != 0 {
        // Reported below.
      } else if input != nil {
        failed = nova_pipe(&stdinPipe, 0)
      } else {
        stdinPipe[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if stdinPipe[0] < 0 { failed = errno }
      }
      var pid: pid_t = 0
      var pidfd: Int32 = -1
      if failed == 0 {
        let childEnds: [Int32] = [stdinPipe[0], stdoutPipe[1], stderrPipe[1]]
        failed = Self.spawn(command, childEnds, &pid, &pidfd)
      }
      for fd in [stdinPipe[0], stdoutPipe[1], stderrPipe[1]] where fd >= 0 { close(fd) }
      if failed != 0 {
        for fd in [wake[0], wake[1], stdinPipe[1], stdoutPipe[0], stderrPipe[0]] where fd >= 0 { close(fd) }
        finishOutputs()
        started.resume(throwing: SpawnError(code: failed, path: command.path))
        return
      }
      ChildProgram.running.withLock { _ = $0.insert(pid) }
      state.withLock { $0.wakeFD = wake[1] }
      for fd in [stdinPipe[1], stdoutPipe[0], stderrPipe[0]] where fd >= 0 {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
      }
      started.resume(returning: pid)
      let status = pump(pid: pid, pidfd: pidfd, wake: wake[0], stdin: stdinPipe[1], input: input ?? [], outputs: [stdoutPipe[0], stderrPipe[0]])
      ChildProgram.running.withLock { _ = $0.remove(pid) }
      let waiters = state.withLock { state -> [CheckedContinuation<Termination, Never>] in
        state.termination = status
        state.wakeFD = -1
        close(wake[0])
        close(wake[1])
        defer { state.waiters = [] }
        return state.waiters
      }
      if pidfd >= 0 { close(pidfd) }
      for waiter in waiters { waiter.resume(returning: status) }
    }

    private static func spawn(_ command: Command, _ fds: [Int32], _ pid: inout pid_t, _ pidfd: inout Int32) -> Int32 {
      func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] { strings.map { strdup($0) } + [nil] }
      let argv = cStrings(command.arguments)
      let envp = cStrings(command.environment)
      defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
      }
      return fds.withUnsafeBufferPointer { fds in
        if let directory = command.directory {
          return nova_spawn(command.path, argv, envp, directory, fds.baseAddress, &pid, &pidfd)
        }
        return nova_spawn(command.path, argv, envp, nil, fds.baseAddress, &pid, &pidfd)
      }
    }

    private func finishOutputs() {
      let outputs = state.withLock { state -> [AsyncStream<[UInt8]>.Continuation?] in
        defer { state.outputs = [nil, nil] }
        return state.outputs
      }
      for output in outputs { output?.finish() }
    }

    private func finishOutput(_ index: Int) {
      let output = state.withLock { state -> AsyncStream<[UInt8]>.Continuation? in
        defer { state.outputs[index] = nil }
        return state.outputs[index]
      }
      output?.finish()
    }

    /// Reads one chunk from an output pipe; false at its end (or on an error).
    private func read(_ fd: Int32, _ index: Int, _ buffer: inout [UInt8]) -> Bool? {
      let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if count > 0 {
        let (output, keep) = state.withLock { state -> (AsyncStream<[UInt8]>.Continuation?, Bool) in
          if !state.abandoned[index] { state.unconsumed[index] += count }
          return (state.outputs[index], !state.abandoned[index])
        }
        if keep { output?.yield(Array(buffer[0..<count])) }
        return true
      }
      if count < 0, errno == EAGAIN || errno == EINTR { return nil }
      return false
    }

    private func pump(pid: pid_t, pidfd: Int32, wake: Int32, stdin: Int32, input: [UInt8], outputs: [Int32]) -> Termination {
      var outputs = outputs
      var stdin = stdin
      var written = 0
      var exited = false
      var stopDeadline: ContinuousClock.Instant?
      var killed = false
      var buffer = [UInt8](repeating: 0, count: Self.chunkSize)
      if stdin >= 0, input.isEmpty {
        close(stdin)
        stdin = -1
      }
      while !exited {
        let (stopping, killing, full) = state.withLock { state in
          (state.stopRequested, state.killRequested, state.unconsumed.map { $0 >= Self.bufferLimit })
        }
        if killing, !killed {
          Glibc.kill(-pid, SIGKILL)
          Glibc.kill(pid, SIGKILL)
          killed = true
        }
        if stopping, stopDeadline == nil {
          Glibc.kill(-pid, SIGTERM)
          Glibc.kill(pid, SIGTERM)
          stopDeadline = .now + stopGrace
        }
        if let deadline = stopDeadline, !killed, ContinuousClock.now >= deadline {
          Glibc.kill(-pid, SIGKILL)
          Glibc.kill(pid, SIGKILL)
          killed = true
        }
        var polled: [pollfd] = [pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        if pidfd >= 0 { polled.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
        for index in 0..<2 where outputs[index] >= 0 && !full[index] {
          polled.append(pollfd(fd: outputs[index], events: Int16(POLLIN), revents: 0))
        }
        if stdin >= 0 { polled.append(pollfd(fd: stdin, events: Int16(POLLOUT), revents: 0)) }
        var timeout: Int32 = -1
        // Without a pidfd (kernels before 5.3) the end is looked for every 20 ms.
        if pidfd < 0 { timeout = 20 }
        if let deadline = stopDeadline, !killed {
          let left = deadline - .now
          timeout = min(timeout < 0 ? Int32.max : timeout, Int32(max(1, left.seconds * 1000 + 1)))
        }
        _ = poll(&polled, nfds_t(polled.count), timeout)
        var drainWake: UInt8 = 0
        while Glibc.read(wake, &drainWake, 1) > 0 {}
        for entry in polled where entry.revents != 0 {
          if entry.fd == pidfd {
            exited = true
          } else if entry.fd == stdin {
            let count = input[written...].withUnsafeBytes { write(stdin, $0.baseAddress, $0.count) }
            if count > 0 { written += count }
            // A program that does not read its input must not fail: its end closed, the rest is dropped.
            if written >= input.count || (count < 0 && errno != EAGAIN && errno != EINTR) {
              close(stdin)
              stdin = -1
            }
          } else if let index = outputs.firstIndex(of: entry.fd) {
            if read(entry.fd, index, &buffer) == false {
              close(entry.fd)
              outputs[index] = -1
              finishOutput(index)
            }
          }
        }
        if pidfd < 0, !exited { exited = nova_child_exited(pid) != 0 }
      }
      // What the program wrote before it exited is in the pipes: read it, then stop listening.
      // (At most 1 MiB each: a grandchild still writing to them is not waited for.)
      for index in 0..<2 where outputs[index] >= 0 {
        for _ in 0..<16 where read(outputs[index], index, &buffer) == true {}
        close(outputs[index])
        finishOutput(index)
      }
      if stdin >= 0 { close(stdin) }
      let status = nova_reap(pid)
      // -1 only if another waiter took the status (nothing here does): reported as such.
      return status >= 256 ? .signaled(status - 256) : .exited(status)
    }
  }
}
