import Foundation
import NovaCore
import NovaDatabase
import NovaQueue
import NovaTestSupport
import Testing

/// Issue #21 part 6: one data directory, many processes. Processes that open a fresh data
/// directory at once all succeed; none loses the race to create the tables.
@Suite("Fresh data directory", .serialized, .timeLimit(.minutes(3)))
struct FreshDataDirectoryTests {
  @Test func eightProcessesOpeningAFreshDataDirectoryAtOnceAllSucceed() async throws {
    // Before the schema lock, about one round in five failed with "table … already exists".
    for round in 1...20 {
      let dir = try TemporaryDirectory.make("nova-fresh")
      defer { try? FileManager.default.removeItem(at: dir) }
      let common = ["--data-dir", dir.path]
      let commands = Array(repeating: ["enqueue", "noop"] + common, count: 6) + [["jobs", "stats"] + common, ["tokens", "list"] + common]
      // All started before any is waited for, so that they open the directory together.
      let processes = try commands.map { try NovaProcess($0, niceness: 15) }
      var ids: [String] = []
      var failed = false
      for (arguments, process) in zip(commands, processes) {
        let code = await process.waitForExit(timeout: .seconds(60))
        if code == nil { process.signal(SIGKILL) }
        let command = "round \(round): nova \(arguments.joined(separator: " "))"
        let outcome = code.map { String($0) } ?? "never (killed after 60 s)"
        #expect(code == 0, "\(command) exited \(outcome); stderr: \(process.stderr)")
        failed = failed || code != 0
        if arguments[0] == "enqueue" {
          let id = process.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
          #expect(JobID(id).isWellFormed, "\(command) printed '\(id)'; stderr: \(process.stderr)")
          ids.append(id)
        }
      }
      let path = dir.appendingPathComponent("nova.sqlite").path
      let queue = try SQLiteJobQueue(path: path)
      let page = try await queue.list(JobFilter(limit: 100))
      let listed = Set(page.jobs.map(\.id.rawValue))
      #expect(listed == Set(ids), "round \(round): jobs in the database \(listed.sorted()), enqueued \(ids.sorted())")
      let lockPath = NovaDatabase.schemaLockPath(path)
      var lock = stat()
      let found = stat(lockPath, &lock) == 0
      #expect(found && lock.st_mode & 0o077 == 0, "round \(round): \(lockPath) is missing or may be read by others")
      // One failed round says all there is to say; the others would only repeat it.
      if failed || listed != Set(ids) { break }
    }
  }
}
