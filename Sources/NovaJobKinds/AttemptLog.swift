import Foundation
import Logging
import NovaCore
import NovaQueue

/// Forwards what a program writes to the store's log of its attempt while it runs: chunks are
/// gathered and written every `interval` (one write for both streams), so `nova jobs logs
/// --follow` shows output as it comes, and a program that writes nothing costs no write. Only
/// the head of a stream (`BoundedOutput`: its first `max_output_bytes`, ending at a line end near
/// the limit) is forwarded live; when the program ends, a marker line saying how much was dropped
/// and the stream's last bytes, from a line start, close the log. Chunks never mix the streams.
actor AttemptLog {
  private let store: any JobLogStore
  private let context: JobContext
  private var pending: [JobLogChunk] = []
  private var pendingBytes = 0
  /// The write in flight: each write waits for the one before, so chunks land in the order they
  /// were written (the actor is reentrant, and a Redis store spreads calls over connections).
  private var lastWrite: Task<Void, Never>?

  /// Pending output this large is written at once rather than at the next interval.
  static let flushBytes = 256 << 10
  /// How often pending output is written.
  static let interval: Duration = .milliseconds(250)

  init(store: any JobLogStore, context: JobContext) {
    self.store = store
    self.context = context
  }

  /// Output of `stream`, within the stream's limit.
  func add(_ stream: JobLogStream, _ bytes: [UInt8]) async {
    if bytes.isEmpty { return }
    // Consecutive output of one stream is kept as one chunk.
    if let last = pending.last, last.stream == stream {
      pending[pending.count - 1].data.append(contentsOf: bytes)
    } else {
      pending.append(
        JobLogChunk(job: context.id, queue: context.queue, attempt: context.attempt, stream: stream, data: Data(bytes), time: Date()))
    }
    pendingBytes += bytes.count
    if pendingBytes >= Self.flushBytes { await flush() }
  }

  /// Writes what is pending, after the writes before it; returns once all of them landed. A
  /// store that fails loses this output, never the job.
  func flush() async {
    if !pending.isEmpty {
      let chunks = pending
      pending = []
      pendingBytes = 0
      let (previous, store, logger) = (lastWrite, store, context.logger)
      lastWrite = Task {
        await previous?.value
        do {
          try await store.appendLogs(chunks)
        } catch {
          logger.warning("could not keep the job's output", metadata: ["error": "\(error)"])
        }
      }
    }
    await lastWrite?.value
  }

  /// After the program ended: for each stream that went past its limit, a marker line and the
  /// part of its tail beyond what was forwarded; then the last write.
  func finish(stdout: BoundedOutput, stderr: BoundedOutput, limit: Int) async {
    for (stream, output) in [(JobLogStream.stdout, stdout), (.stderr, stderr)] where output.truncated {
      let (dropped, tail) = output.unkeptTail()
      // A head with no line end near the limit was cut mid-line: the marker still gets a line of its own.
      let endsLine = output.head.last.map { $0 == UInt8(ascii: "\n") } ?? true
      let opening = endsLine ? "" : "\n"
      let marker =
        "[nova: \(dropped) bytes of \(stream.rawValue) not kept (max_output_bytes \(limit)); its last \(tail.count) bytes follow]"
      await add(stream, Array("\(opening)\(marker)\n".utf8))
      await add(stream, Array(tail))
    }
    await flush()
  }

  /// Writes pending output every `interval` until cancelled.
  func flushPeriodically() async {
    while !Task.isCancelled {
      do {
        try await Task.sleep(for: Self.interval)
      } catch {
        return
      }
      await flush()
    }
  }
}
