import Foundation
import Logging
import NovaCore
import NovaJobKinds
import NovaQueue
import NovaTestSupport
import Testing

/// `examples/nova-jobs.yaml` is valid and its kinds do what the README says.
@Suite("Example job kinds", .timeLimit(.minutes(5)))
struct ExampleKindsTests {
  /// The checkout: the example's command names its script relative to it.
  let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  func registry(path: String = "/usr/local/bin:/usr/bin:/bin") throws -> JobRegistry {
    let file = try JobKindsFile.load(
      path: repositoryRoot.appendingPathComponent("examples/nova-jobs.yaml").path, builtins: Set(BuiltinJobs.registry.kinds))
    #expect(file.kinds.map(\.name) == ["summarise", "ask", "gpu-smoke", "shout"])
    #expect(file.kinds.map(\.type) == ["command", "http", "command", "external"])
    // The query's comma is inside one argument (a YAML flow list would split it otherwise).
    #expect(
      file.kinds[2].action
        == .command(CommandKind(command: ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv"], deadExitCodes: [6, 9, 12])))
    // Run from the checkout, as the README does (the process's own directory is left alone:
    // tests run in parallel).
    let kinds = file.kinds.map { definition -> JobKindDefinition in
      guard case .command(var command) = definition.action else { return definition }
      command.cwd = repositoryRoot.path
      return JobKindDefinition(name: definition.name, timeout: definition.timeout, action: .command(command))
    }
    var registry = JobRegistry()
    JobKindsFile(kinds: kinds).register(into: &registry, environment: ["PATH": path, "LANG": "C.UTF-8"])
    return registry
  }

  func context(_ kind: String) -> JobContext {
    JobContext(id: JobID.Generator().next(now: Date()), queue: "default", kind: kind, attempt: 1, maxAttempts: 3, logger: Logger(label: "test"))
  }

  @Test func theSummariseAgentRunsFromTheRepository() async throws {
    let result = try await registry().run(
      kind: "summarise", payload: Data(#"{"text": "one two three four five six seven eight nine ten"}"#.utf8), context: context("summarise"))
    #expect(try JSONValue.parse(try #require(result)) == .object(["summary": .string("one two three four five six seven eight"), "words": .int(10)]))
    await #expect(throws: NonRetryableJobError.self, "a bad payload is dead-lettered (exit 2)") {
      try await registry().run(kind: "summarise", payload: Data(#"{"txt": 1}"#.utf8), context: context("summarise"))
    }
  }

  /// Without a GPU (this machine has none, nor nvidia-smi), the smoke kind fails at once and says why.
  @Test func theGPUSmokeKindFailsClearlyWithoutAGPU() async throws {
    do {
      _ = try await registry(path: "/usr/bin:/bin").run(kind: "gpu-smoke", payload: Data("{}".utf8), context: context("gpu-smoke"))
      Issue.record("gpu-smoke succeeded without nvidia-smi")
    } catch let error as NonRetryableJobError {
      #expect(error.message.contains("command 'nvidia-smi' was not found in PATH"), "\(error.message)")
    }
  }
}
