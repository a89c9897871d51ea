import Foundation
import NovaTestSupport
import Testing

/// The tiers themselves: this test binary, run again on the store suite with no `redis-server`
/// on `PATH`, passes and lists its skips; with `NOVA_REQUIRE_ALL_TESTS=1` the same run fails.
@Suite("Test tiers", .serialized, .timeLimit(.minutes(5)))
struct TestTiersTests {
  /// Runs this test binary on the "Store unavailable" suite with `environment` added.
  func runStoreSuite(_ environment: [String: String]) async throws -> (code: Int32, output: String) {
    let binary = CommandLine.arguments[0]
    guard binary.hasSuffix(".xctest") || binary.contains("PackageTests") else {
      throw TestFailure("not running from the test binary (\(binary))")
    }
    let dir = try TemporaryDirectory.make("nova-tiers")
    let log = dir.appendingPathComponent("out.txt").path
    var variables = environment
    // The inner run's coverage counters must not overwrite this run's.
    variables["LLVM_PROFILE_FILE"] = dir.appendingPathComponent("inner-%p.profraw").path
    let child = try ChildProcess(
      binary, ["--testing-library", "swift-testing", "--filter", "StoreUnavailableTests"],
      environment: variables, standardOutput: log, standardError: log)
    guard let code = await child.waitForExit(timeout: .seconds(120)) else {
      child.signal(SIGKILL)
      throw TestFailure("the inner test run did not finish")
    }
    return (code, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
  }

  @Test func withoutRedisOnPathTheRedisTestsAreSkippedWithTheReason() async throws {
    let run = try await runStoreSuite(["PATH": "/nonexistent", "NOVA_REQUIRE_ALL_TESTS": "0"])
    #expect(run.code == 0, "\(run.output.suffix(2000))")
    #expect(run.output.contains("redisDownIsUnavailableWithinTheDeadline() skipped: \"redis-server is not installed"), "\(run.output.suffix(2000))")
    #expect(run.output.contains("sqliteLockedPastTheBusyTimeoutIsUnavailable() passed"), "\(run.output.suffix(2000))")
  }

  @Test func withTheCIVariableAMissingRedisFailsTheRun() async throws {
    let run = try await runStoreSuite(["PATH": "/nonexistent", "NOVA_REQUIRE_ALL_TESTS": "1"])
    #expect(run.code != 0, "\(run.output.suffix(2000))")
    #expect(run.output.contains("redis-server is not installed"), "\(run.output.suffix(2000))")
    #expect(!run.output.contains("skipped"), "\(run.output.suffix(2000))")
  }
}
