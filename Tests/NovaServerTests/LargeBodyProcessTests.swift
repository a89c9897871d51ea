import Foundation
import NovaCore
import NovaTestSupport
import Testing

/// Issue #21 point 5: a caller is authorized before its body is read. A viewer sending six 62 MB
/// batch bodies at once used to be refused only after they were read and parsed (peak RSS
/// 734 MB); now the refusal comes first and the server's peak resident size stays small.
@Suite("Large bodies", .serialized, .timeLimit(.minutes(3)))
struct LargeBodyProcessTests {
  /// The peak resident size of `pid` in MiB (VmHWM).
  static func peakMiB(_ pid: Int32) -> Double {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
      let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return 0 }
    return kib / 1024
  }

  @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl"))
  func aViewersHugeBodiesAreRefusedUnread() async throws {
    let dir = try TemporaryDirectory.make()
    let viewer = try await NovaProcess.run(["tokens", "create", "--name", "dash", "--role", "viewer", "--data-dir", dir.path])
    let worker = try await NovaProcess.run(["tokens", "create", "--name", "gpu", "--role", "worker", "--data-dir", dir.path])
    #expect(viewer.code == 0 && worker.code == 0, "\(viewer.stderr)\(worker.stderr)")
    let server = try NovaProcess(["serve", "--port", "0", "--data-dir", dir.path, "--workers", "0"], niceness: 10)
    defer { server.signal(SIGKILL) }
    let port = try await server.listeningPort()
    let before = Self.peakMiB(server.pid)
    // 62 MB of a batch that would parse, as the issue sent it.
    let body = dir.appendingPathComponent("body.json")
    let entry = #"{"kind":"noop","payload":{"x":"\#(String(repeating: "y", count: 1000))"}},"#
    var text = #"{"jobs":["#
    while text.utf8.count < 62_000_000 { text += entry }
    text += #"{"kind":"noop"}]}"#
    try text.write(to: body, atomically: true, encoding: .utf8)
    let bearer = viewer.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let script =
      (0..<6).map { index in
        "nice -n 15 curl -s -o /dev/null -w '%{http_code}\\n' -H 'Authorization: Bearer \(bearer)' -H 'Content-Type: application/json' "
          + "--data-binary @'\(body.path)' http://127.0.0.1:\(port)/v1/jobs/batch > '\(dir.path)/status-\(index)' &"
      }.joined(separator: "\n") + "\nwait\n"
    // A chunked body (no Content-Length) from a worker to a report route: read up to its limit only.
    let workerBearer = worker.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let chunked =
      "nice -n 15 curl -s -o /dev/null -w '%{http_code}\\n' -H 'Authorization: Bearer \(workerBearer)' "
      + "-H 'Transfer-Encoding: chunked' --data-binary @'\(body.path)' http://127.0.0.1:\(port)/v1/jobs/heartbeat > '\(dir.path)/status-chunked'\n"
    // A body announced over every route's limit: refused from its Content-Length, unread.
    let announced =
      "nice -n 15 curl -s -m 20 -o /dev/null -w '%{http_code}\\n' -H 'Authorization: Bearer \(workerBearer)' -H 'Content-Length: 104857600' "
      + "--data-binary 'x' http://127.0.0.1:\(port)/v1/jobs/complete > '\(dir.path)/status-announced'\n"
    let run = try ChildProcess("/bin/sh", ["-c", script + chunked + announced], standardOutput: "/dev/null", standardError: "/dev/null")
    #expect(await run.waitForExit(timeout: .seconds(120)) == 0)
    for index in 0..<6 {
      let status = (try? String(contentsOfFile: "\(dir.path)/status-\(index)", encoding: .utf8)) ?? ""
      #expect(status.hasPrefix("403"), "request \(index) answered \(status)")
    }
    let chunkedStatus = (try? String(contentsOfFile: "\(dir.path)/status-chunked", encoding: .utf8)) ?? ""
    #expect(chunkedStatus.hasPrefix("413"), "the chunked body was answered \(chunkedStatus)")
    let announcedStatus = (try? String(contentsOfFile: "\(dir.path)/status-announced", encoding: .utf8)) ?? ""
    #expect(announcedStatus.hasPrefix("413"), "the announced 100 MiB body was answered \(announcedStatus)")
    let peak = Self.peakMiB(server.pid)
    #expect(peak < max(100, before + 60), "nova serve peaked at \(peak) MiB (\(before) MiB before the bodies)")
    server.signal(SIGTERM)
    #expect(await server.waitForExit() == 0)
  }

  /// Connections are files: `nova serve` started with a low soft limit on open files raises it
  /// to the hard limit.
  @Test func serveRaisesItsOpenFileLimit() async throws {
    let dir = try TemporaryDirectory.make()
    let server = try ChildProcess(
      "/bin/sh", ["-c", "ulimit -Sn 256 && exec '\(novaExecutablePath)' serve --port 0 --workers 0 --data-dir '\(dir.path)'"],
      standardOutput: "/dev/null", standardError: "/dev/null")
    defer { server.signal(SIGKILL) }
    var files: [Substring] = []
    try await eventually("nova serve to raise its limit", timeout: .seconds(20)) {
      let limits = (try? String(contentsOfFile: "/proc/\(server.pid)/limits", encoding: .utf8)) ?? ""
      files = Array(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }?.split(separator: " ").dropFirst(3).prefix(2) ?? [])
      let command = FileManager.default.contents(atPath: "/proc/\(server.pid)/cmdline") ?? Data()
      // Past the shell's exec (the shell itself still has the limit it was started with).
      let program = command.split(separator: 0).first.map { String(decoding: $0, as: UTF8.self) } ?? ""
      return program.hasSuffix("/nova") && files.count == 2 && files[0] != "256"
    }
    #expect(files.count == 2 && files[0] == files[1], "open files: \(files)")
  }
}
