import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

extension ProcessTests {
  /// Issue #21 point 8: `nova jobs logs` shows each stream's lines whole, in the order they were
  /// written, escapes control characters unless `--raw`, and marks streams with `--prefix`.
  @Test func jobsLogsShowsWholeLinesEscapedUnlessRaw() async throws {
    let dir = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(path: dir.appendingPathComponent("nova.sqlite").path)
    let id: JobID = try await queue.enqueue(JobRequest(kind: "echo"))
    let written: [(attempt: Int, stream: JobLogStream, text: String)] = [
      (1, .stdout, "\u{1B}[31mloading"), (1, .stderr, "warning\u{07}\n"), (1, .stdout, " done\u{1B}[0m\n"), (2, .stdout, "again\r\n"),
    ]
    try await queue.appendLogs(
      written.map { JobLogChunk(job: id, queue: "default", attempt: $0.attempt, stream: $0.stream, data: Data($0.text.utf8), time: .now) })
    let plain = try await NovaProcess.run(["jobs", "logs", id.rawValue, "--data-dir", dir.path])
    #expect(plain.code == 0, "\(plain.stderr)")
    let shown = ["==> attempt 1 <==", #"warning\x07"#, #"\x1b[31mloading done\x1b[0m"#, "==> attempt 2 <==", #"again\x0d"#]
    #expect(plain.stdout == shown.map { $0 + "\n" }.joined())
    let prefixed = try await NovaProcess.run(["jobs", "logs", id.rawValue, "--attempt", "1", "--prefix", "--data-dir", dir.path])
    #expect(prefixed.code == 0, "\(prefixed.stderr)")
    #expect(prefixed.stdout == #"stderr: warning\x07"# + "\n" + #"stdout: \x1b[31mloading done\x1b[0m"# + "\n")
    let raw = try await NovaProcess.run(["jobs", "logs", id.rawValue, "--attempt", "1", "--raw", "--data-dir", dir.path])
    #expect(raw.code == 0, "\(raw.stderr)")
    #expect(raw.stdout == "\u{1B}[31mloading" + "warning\u{07}\n" + " done\u{1B}[0m\n")
  }
}
