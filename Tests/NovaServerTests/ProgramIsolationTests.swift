import Foundation
import NovaCore
import NovaQueue
import NovaTestSupport
import Testing

/// Issue #21 point 3: a job's program cannot read its worker. The worker is non-dumpable, so its
/// `/proc/<pid>/environ` (tokens, passwords) is closed to a program of the same account; a kind
/// with `user` runs as an account that cannot read the data directory either.
@Suite("Programs cannot read their worker", .serialized, .timeLimit(.minutes(3)))
struct ProgramIsolationTests {
  /// What the program reports: whether it could read its worker's environment and the database.
  static let probe = """
    import json, os, sys
    worker = int(os.environ["NOVA_WORKER"].split("/")[-1].split(":")[0])
    out = {"uid": os.getuid()}
    for name, path in (("environ", "/proc/%d/environ" % worker), ("database", os.path.join(sys.argv[1], "nova.sqlite"))):
        try:
            data = open(path, "rb").read()
            out[name] = "read: " + ("secret seen" if b"hunter2" in data else "%d bytes" % len(data))
        except OSError as error:
            out[name] = type(error).__name__
    print(json.dumps(out))
    """

  func prepare(user: String?) throws -> (folder: URL, jobs: String) {
    let folder = try TemporaryDirectory.make()
    let script = folder.appendingPathComponent("probe.py").path
    try Self.probe.write(toFile: script, atomically: true, encoding: .utf8)
    let account = user.map { ", user: \($0)" } ?? ""
    let jobs = folder.appendingPathComponent("nova-jobs.yaml").path
    try "kinds:\n  probe: {type: command, command: [/usr/bin/python3, \(script), \(folder.path)/data]\(account)}\n"
      .write(toFile: jobs, atomically: true, encoding: .utf8)
    return (folder, jobs)
  }

  /// `nova` and `nova-supervise` copied into a folder every account may enter: the checkout may
  /// sit below one only its owner can (a `mktemp -d` clone is 0700), and `nobody` must run them.
  static let novaForAnyone: String? = try? executablesForAnyone()

  static func executablesForAnyone() throws -> String {
    let folder = try TemporaryDirectory.make("nova-bin")
    chmod(folder.path, 0o755)
    let source = URL(fileURLWithPath: novaExecutablePath).deletingLastPathComponent()
    for name in ["nova", "nova-supervise"] {
      let from = source.appendingPathComponent(name).path
      let to = folder.appendingPathComponent(name).path
      // A hard link writes nothing (no descriptor a forked child could hold open for writing);
      // a copy only across file systems.
      if link(from, to) != 0 { try FileManager.default.copyItem(atPath: from, toPath: to) }
      chmod(to, 0o755)
    }
    // Until a run succeeds: a child another test forks meanwhile may still hold the copy's
    // write descriptor (exec then fails with ETXTBSY, exit 126) until it execs itself.
    let nova = folder.appendingPathComponent("nova").path
    for _ in 0..<100 {
      let trial = try ChildProcess("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", nova, "--version"])
      if trial.waitForExitBlocking(timeout: .seconds(30)) == 0 { break }
      usleep(50_000)
    }
    return nova
  }

  /// Runs `nova ARGS` as `account` (through setpriv) or as this user; waits for it when `wait`.
  @discardableResult
  func nova(_ arguments: [String], as account: Int? = nil, output: URL, wait: Bool = true) async throws -> ChildProcess {
    var path = novaExecutablePath
    var argv = arguments
    if let account {
      argv = ["--reuid=\(account)", "--regid=\(account)", "--clear-groups", "--", try #require(Self.novaForAnyone)] + arguments
      path = "/usr/bin/setpriv"
    }
    let child = try ChildProcess(
      path, argv, environment: ["PATH": "/usr/bin:/bin", "AWS_SECRET_ACCESS_KEY": "hunter2", "NOVA_TOKEN": "hunter2"],
      standardOutput: output.path, standardError: output.path)
    if wait {
      let status = await child.waitForExit()
      #expect(status == 0, "nova \(arguments.joined(separator: " ")) exited \(status): \((try? String(contentsOf: output, encoding: .utf8)) ?? "")")
    }
    return child
  }

  /// Enqueues a probe job, runs a worker until it is done, and returns what the program saw.
  func run(worker account: Int?, user: String?) async throws -> [String: JSONValue] {
    let (folder, jobs) = try prepare(user: user)
    let data = folder.appendingPathComponent("data")
    try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
    if let account { _ = chown(data.path, uid_t(account), gid_t(account)) }
    let log = folder.appendingPathComponent("out.log")
    try await nova(["enqueue", "probe", "--data-dir", data.path, "--jobs", jobs], as: account, output: log)
    let worker = try await nova(
      ["worker", "--data-dir", data.path, "--jobs", jobs, "--workers", "1", "--poll-ms", "20"], as: account,
      output: folder.appendingPathComponent("worker.log"), wait: false)
    defer { worker.signal(SIGKILL) }
    let queue = try SQLiteJobQueue(path: data.appendingPathComponent("nova.sqlite").path)
    var result: Data?
    try await eventually("the probe job to succeed", timeout: .seconds(60)) {
      let page = try await queue.list(JobFilter())
      result = page.jobs.first?.result
      return page.jobs.first?.state == .succeeded
    }
    guard case .object(let fields) = try JSONValue.parse(try #require(result)) else { throw TestFailure("result \(String(describing: result))") }
    return fields
  }

  @Test(.enabled(if: getuid() == 0, "starting a worker as another account needs root"))
  func aProgramOfTheWorkersOwnAccountCannotReadItsEnvironment() async throws {
    let seen = try await run(worker: 65534, user: nil)
    #expect(seen["uid"] == .int(65534))
    #expect(seen["environ"] == .string("PermissionError"), "the program read its worker's environment: \(seen)")
  }

  @Test(.enabled(if: getuid() == 0, "switching a program to another account needs root"))
  func aKindWithAUserCannotReadTheWorkerNorTheDataDirectory() async throws {
    let seen = try await run(worker: nil, user: "nobody")
    #expect(seen["uid"] == .int(65534))
    #expect(seen["environ"] == .string("PermissionError"), "\(seen)")
    #expect(seen["database"] == .string("PermissionError"), "the program read the database: \(seen)")
  }
}
