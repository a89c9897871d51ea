import ArgumentParser
import Foundation
import NovaApplication
import NovaCore
import NovaPolicy
import NovaQueue
import NovaServer

struct EnqueueCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "enqueue",
    abstract: "Add a job and print its id.",
    discussion: "Built-in kinds: noop, sleep {\"ms\":N}, fail {\"times\":N}, echo (returns its payload).")

  @OptionGroup var store: StoreOptions
  @OptionGroup var output: OutputOptions

  @Argument(help: "The job kind.")
  var kind: String

  @Option(help: ArgumentHelp("JSON object passed to the handler.", valueName: "json"))
  var payload: String = "{}"

  @Option(help: "Queue name.")
  var queue: String = "default"

  @Option(help: ArgumentHelp("0...1000; higher runs first.", valueName: "n"))
  var priority: Int = 0

  @Option(help: ArgumentHelp("Run no earlier than this many seconds from now.", valueName: "seconds"))
  var delay: Double = 0

  @Option(name: .long, help: ArgumentHelp("Attempts before the job is dead-lettered.", valueName: "n"))
  var maxAttempts: Int = JobRequest.defaultMaxAttempts

  @Option(name: .long, help: ArgumentHelp("A repeated enqueue with the same key returns the first job.", valueName: "key"))
  var idempotencyKey: String?

  @Option(help: ArgumentHelp("Enqueue this many copies (for load tests); prints a summary instead of ids.", valueName: "n"))
  var count: Int = 1

  @Option(
    name: .long,
    help: ArgumentHelp("A key (tenant, model, account) whose per-key limits the job shares.", valueName: "key"))
  var concurrencyKey: String?

  @Option(help: ArgumentHelp("GPUs the job needs, all on one host.", valueName: "n"))
  var gpus: Int?

  @Option(name: .long, help: ArgumentHelp("Memory each of its GPUs must have (40G, 512M, or MiB).", valueName: "size"))
  var gpuMemory: String?

  @Option(help: ArgumentHelp("CPUs the job needs.", valueName: "n"))
  var cpus: Int?

  @Option(help: ArgumentHelp("Memory the job needs (16G, 512M, or MiB).", valueName: "size"))
  var memory: String?

  @Option(
    name: .customLong("constraint"),
    help: ArgumentHelp("Where the job may run: gpu_model=GLOB, host=GLOB or label.KEY=VALUE (repeatable).", valueName: "key=value"))
  var constraints: [String] = []

  func run() async throws {
    guard delay >= 0, delay <= 366 * 86400 else {
      throw NovaError.invalidInput(field: "--delay", message: "\(delay) is out of range 0...31622400")
    }
    let payloadData = Data(payload.utf8)
    let parsed: JSONValue
    do {
      parsed = try JSONValue.parse(payloadData)
    } catch {
      throw NovaError.invalidInput(field: "--payload", message: "not valid JSON: \(JSONErrorText.describe(error))")
    }
    guard case .object = parsed else {
      throw NovaError.invalidInput(field: "--payload", message: "must be a JSON object")
    }
    var request = JobRequest(
      kind: kind, payload: payloadData, queue: queue, priority: priority,
      runAt: delay > 0 ? Date().addingTimeInterval(delay) : nil, maxAttempts: maxAttempts,
      idempotencyKey: idempotencyKey)
    let requested = try JobRequirementFlags(gpus: gpus, gpuMemory: gpuMemory, cpus: cpus, memory: memory, constraints: constraints)
    request.resources = requested.resources
    request.constraints = requested.constraints
    request.concurrencyKey = concurrencyKey
    try request.validate(maxPayloadBytes: 1 << 20)
    guard (1...100_000_000).contains(count) else {
      throw NovaError.invalidInput(field: "--count", message: "\(count) is out of range 1...100000000")
    }
    guard count == 1 || idempotencyKey == nil else {
      throw NovaError.invalidInput(field: "--count", message: "cannot enqueue copies with one idempotency key")
    }
    let application = try await store.open()
    if let error = application.jobKindsError { throw error }
    let jobs = try application.jobs()
    if count > 1 {
      // One decision for all copies, then batches straight to the queue.
      let request = jobs.registry.withDefaults(request)
      try jobs.registry.validate(kind: request.kind, payload: request.payload)
      try await jobs.authorize(.localUser, "submit", PolicyResource(kind: "job", attributes: ["queue": request.queue, "job_kind": kind]))
      try await enqueueCopies(of: request, into: jobs.queue)
      return
    }
    let (job, created) = try await jobs.submit(request, by: .localUser)
    if output.json {
      try printJSON(EnqueueOutput(id: job.id.rawValue, state: job.state.rawValue, existing: !created))
    } else {
      print(job.id.rawValue)
    }
  }
}

extension EnqueueCommand {
  private func enqueueCopies(of request: JobRequest, into queue: any JobQueue) async throws {
    let start = ContinuousClock.now
    var done = 0
    let showProgress = stderrIsTerminal
    while done < count {
      let batch = min(1000, count - done)
      _ = try await queue.enqueue(batch: Array(repeating: request, count: batch))
      done += batch
      if showProgress && (done % 50_000 == 0 || done == count) {
        FileHandle.standardError.write(Data("\r  enqueued \(done)/\(count)".utf8))
      }
    }
    if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
    let seconds = (ContinuousClock.now - start).seconds
    if output.json {
      try printJSON(EnqueueCountOutput(enqueued: count, seconds: seconds))
    } else {
      print("enqueued \(count) \(kind) jobs in \(String(format: "%.2f", seconds)) s")
    }
  }
}

struct EnqueueCountOutput: Codable {
  var enqueued: Int
  var seconds: Double
}

struct EnqueueOutput: Codable {
  var id: String
  var state: String
  var existing: Bool
}
