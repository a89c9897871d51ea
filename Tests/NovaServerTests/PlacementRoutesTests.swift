import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaApplication
import NovaCore
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

/// Issue #22 points 1 and 4 over HTTP: jobs submitted with `resources` and `constraints` (alone,
/// in a batch, or from their kind's defaults) show them; errors name the field; a worker's claim
/// with its free `capacity` gets the jobs that fit, each with its `placement`.
@Suite("HTTP placement", .timeLimit(.minutes(5)))
struct PlacementRoutesTests {
  struct Setup {
    let server: NovaServer
    let queue: SQLiteJobQueue
    let tokens: [String: String]
  }

  /// A server under the built-in policy with an operator and a worker token; `train.*` kinds are
  /// external, and `train.gpu` asks for a GPU and 2 GiB on an H100 unless a job says otherwise.
  func makeServer() async throws -> Setup {
    var registry = BuiltinJobs.registry
    registry.registerExternal("train.step")
    registry.registerExternal("train.gpu")
    registry.setDefaults("train.gpu", resources: JobResources(gpus: 1, memory_mib: 2048), constraints: JobConstraints(gpu_model: "*H100*"))
    let made = try await PolicedTestServer.make(roles: [("gpu-1", .worker), ("ops", .operator)], registry: registry)
    return Setup(server: made.server, queue: made.queue, tokens: made.tokens)
  }

  /// A request under `token`; the status and the body as JSON (null when it is not JSON).
  func send(_ client: some TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, _ token: String, _ body: String? = nil)
    async throws -> (status: HTTPResponse.Status, body: JSONValue)
  {
    try await client.execute(uri: uri, method: method, headers: bearer(token), body: body.map { ByteBuffer(string: $0) }) { response in
      (response.status, (try? JSONValue.parse(Data(response.body.readableBytesView))) ?? .null)
    }
  }

  func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

  func string(_ value: JSONValue?) -> String? {
    guard case .string(let text)? = value else { return nil }
    return text
  }

  /// The code and message of an error answer.
  func failure(_ body: JSONValue) -> (code: String?, message: String?) {
    let error = body.objectValue?["error"]?.objectValue
    return (string(error?["code"]), string(error?["message"]))
  }

  /// The `jobs` of an answer (a claim's or a batch's).
  func entries(_ body: JSONValue) -> [[String: JSONValue]] {
    guard case .array(let jobs)? = body.objectValue?["jobs"] else { return [] }
    return jobs.compactMap(\.objectValue)
  }

  /// Submits one job as the operator; its JSON.
  func submit(_ client: some TestClientProtocol, _ setup: Setup, _ body: String) async throws -> [String: JSONValue] {
    let answer = try await send(client, .post, "/v1/jobs", setup.tokens["ops"]!, body)
    #expect(answer.status == .created, "\(body): \(answer.body)")
    return try #require(answer.body.objectValue)
  }

  @Test func aJobShowsTheResourcesAndConstraintsItWasSubmittedWith() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let ops = setup.tokens["ops"]!
      let submitted = #"""
        {"kind":"train.step","resources":{"gpus":2,"gpu_memory_mib":40000,"cpus":4,"memory_mib":16000},
         "constraints":{"gpu_model":"*H100*","labels":{"zone":"b"}}}
        """#
      let job = try await submit(client, setup, submitted)
      let resources = try parse(#"{"gpus": 2, "gpu_memory_mib": 40000, "cpus": 4, "memory_mib": 16000}"#)
      let constraints = try parse(#"{"gpu_model": "*H100*", "labels": {"zone": "b"}}"#)
      #expect(job["resources"] == resources)
      #expect(job["constraints"] == constraints)
      #expect(job["placement"] == nil, "placed only when claimed")
      let id = try #require(string(job["id"]))
      let shown = try await send(client, .get, "/v1/jobs/\(id)", ops)
      #expect(shown.status == .ok)
      #expect(shown.body.objectValue?["resources"] == resources)
      #expect(shown.body.objectValue?["constraints"] == constraints)
      let stored = try #require(try await setup.queue.get(JobID(id)))
      #expect(stored.requirements?.resources == JobResources(gpus: 2, gpu_memory_mib: 40000, cpus: 4, memory_mib: 16000))

      // Only a host constraint: the resources show as asking for nothing.
      let spark = try await submit(client, setup, #"{"kind":"train.step","constraints":{"host":"spark-*"}}"#)
      #expect(try spark["constraints"] == parse(#"{"host": "spark-*", "labels": {}}"#))
      #expect(try spark["resources"] == parse(#"{"gpus": 0, "gpu_memory_mib": 0, "cpus": 0, "memory_mib": 0}"#))
      // A job that asks for nothing, in so many words or not at all, shows neither.
      for body in [#"{"kind":"train.step"}"#, #"{"kind":"train.step","resources":{},"constraints":{}}"#] {
        let plain = try await submit(client, setup, body)
        #expect(plain["resources"] == nil && plain["constraints"] == nil, "\(body)")
      }
    }
  }

  @Test func aKindsDefaultsApplyToJobsThatGiveNoneOfTheirOwn() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let ops = setup.tokens["ops"]!
      let kindResources = try parse(#"{"gpus": 1, "gpu_memory_mib": 0, "cpus": 0, "memory_mib": 2048}"#)
      let kindConstraints = try parse(#"{"gpu_model": "*H100*", "labels": {}}"#)
      let defaulted = try await submit(client, setup, #"{"kind":"train.gpu"}"#)
      #expect(defaulted["resources"] == kindResources)
      #expect(defaulted["constraints"] == kindConstraints)
      // A job's own resources replace the kind's whole; the kind's constraints still apply.
      let own = try await submit(client, setup, #"{"kind":"train.gpu","resources":{"cpus":2}}"#)
      #expect(try own["resources"] == parse(#"{"gpus": 0, "gpu_memory_mib": 0, "cpus": 2, "memory_mib": 0}"#))
      #expect(own["constraints"] == kindConstraints)

      // The same in a batch.
      let batch = try await send(
        client, .post, "/v1/jobs/batch", ops, #"{"jobs":[{"kind":"train.gpu"},{"kind":"train.gpu","constraints":{"host":"spark-*"}}]}"#)
      #expect(batch.status == .created)
      let ids = entries(batch.body).compactMap { string($0["id"]) }
      #expect(ids.count == 2)
      let sparkConstraints = try parse(#"{"host": "spark-*", "labels": {}}"#)
      for (id, constraints) in zip(ids, [kindConstraints, sparkConstraints]) {
        let shown = try await send(client, .get, "/v1/jobs/\(id)", ops)
        #expect(shown.body.objectValue?["resources"] == kindResources)
        #expect(shown.body.objectValue?["constraints"] == constraints)
      }
    }
  }

  @Test func badResourcesAndConstraintsAreRefusedNamingTheField() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let ops = setup.tokens["ops"]!
      let negative = try await send(client, .post, "/v1/jobs", ops, #"{"kind":"noop","resources":{"gpus":-1}}"#)
      #expect(negative.status == .unprocessableContent)
      #expect(failure(negative.body).code == "invalid_input")
      #expect(failure(negative.body).message == "invalid resources.gpus: -1 is out of range 0...64")
      for (body, mentions) in [
        (#"{"kind":"noop","resources":{"gpu":1}}"#, "invalid resources.gpu: unknown"),
        (#"{"kind":"noop","resources":{"gpus":1.5}}"#, "invalid resources.gpus: must be a whole number"),
        (#"{"kind":"noop","resources":{"gpu_memory_mib":100}}"#, "invalid resources.gpu_memory_mib: asks for GPU memory without asking for GPUs"),
        (#"{"kind":"noop","resources":[1]}"#, "invalid resources: must be an object"),
        (#"{"kind":"noop","constraints":{"model":"x"}}"#, "invalid constraints.model: unknown"),
        (#"{"kind":"noop","constraints":{"labels":{"zone":3}}}"#, "invalid constraints.labels.zone:"),
      ] {
        let answer = try await send(client, .post, "/v1/jobs", ops, body)
        #expect(answer.status == .unprocessableContent, "\(body)")
        #expect(failure(answer.body).message?.hasPrefix(mentions) == true, "\(body): \(answer.body)")
      }
      // In a batch, the entry is named and nothing is enqueued.
      let batch = try await send(
        client, .post, "/v1/jobs/batch", ops, #"{"jobs":[{"kind":"noop"},{"kind":"noop","resources":{"gpus":-1}}]}"#)
      #expect(batch.status == .unprocessableContent)
      #expect(failure(batch.body).message == "invalid jobs[1].resources.gpus: -1 is out of range 0...64")
      #expect(try await setup.queue.stats().total(.available) == 0)
    }
  }

  @Test func aClaimWithCapacityGetsTheJobsThatFitEachWithItsPlacement() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let ops = setup.tokens["ops"]!
      let worker = setup.tokens["gpu-1"]!
      let gpuBody = try await submit(client, setup, #"{"kind":"train.step","resources":{"gpus":1}}"#)
      let gpuJob = try #require(string(gpuBody["id"]))
      let zonedBody = try await submit(client, setup, #"{"kind":"train.step","constraints":{"labels":{"zone":"b"}}}"#)
      let zoned = try #require(string(zonedBody["id"]))
      let claim = #""worker":"gpu-a/pid-7","queues":["default"],"kinds":["train.*"],"max":10"#

      // Without capacity, a worker gets only jobs that ask for nothing: none here.
      let plain = try await send(client, .post, "/v1/workers/claim", worker, "{\(claim)}")
      #expect(plain.status == .ok)
      #expect(plain.body.objectValue?["jobs"] == .array([]))

      // A capacity that is not one is refused, naming the field; nothing is claimed.
      for (capacity, message) in [
        (#"{"host":"gpu-a","gpus":[{"index":"zero"}]}"#, "invalid capacity.gpus[0].index: must be a whole number"),
        (#"{"host":"gpu-a","gpu":[]}"#, "invalid capacity.gpu: unknown; expected one of cpus, gpus, host, labels, memory_mib"),
        (#"{"gpus":[]}"#, "invalid capacity.host: is required"),
        (#""gpu-a""#, "invalid capacity: must be an object"),
      ] {
        let answer = try await send(client, .post, "/v1/workers/claim", worker, #"{\#(claim),"capacity":\#(capacity)}"#)
        #expect(answer.status == .unprocessableContent, "\(capacity)")
        #expect(failure(answer.body).code == "invalid_input" && failure(answer.body).message == message, "\(answer.body)")
      }
      let waiting = try await send(client, .get, "/v1/jobs/\(gpuJob)", ops)
      #expect(string(waiting.body.objectValue?["state"]) == "available")

      // With a GPU free, the GPU job is claimed and placed on it; the zoned job stays for a host in zone b.
      let capacity = #"{"host":"gpu-a","gpus":[{"index":0,"uuid":"GPU-a0","model":"NVIDIA H100","memory_mib":81559}],"cpus":8,"memory_mib":64000}"#
      let placed = try await send(client, .post, "/v1/workers/claim", worker, #"{\#(claim),"capacity":\#(capacity)}"#)
      #expect(placed.status == .ok)
      let jobs = entries(placed.body)
      #expect(jobs.map { string($0["id"]) } == [gpuJob])
      let job = try #require(jobs.first)
      let placement = try parse(#"{"host": "gpu-a", "gpus": [{"index": 0, "uuid": "GPU-a0"}], "cpus": 0, "memory_mib": 0}"#)
      #expect(job["placement"] == placement)
      #expect(string(job["state"]) == "running")
      #expect(try job["resources"] == parse(#"{"gpus": 1, "gpu_memory_mib": 0, "cpus": 0, "memory_mib": 0}"#))
      #expect(string(job["lease"]?.objectValue?["token"])?.isEmpty == false)
      // The placement is kept on the job.
      let shown = try await send(client, .get, "/v1/jobs/\(gpuJob)", ops)
      #expect(shown.body.objectValue?["placement"] == placement)
      let stillWaiting = try await send(client, .get, "/v1/jobs/\(zoned)", ops)
      #expect(string(stillWaiting.body.objectValue?["state"]) == "available")
      let stored = try #require(try await setup.queue.get(JobID(gpuJob)))
      #expect(stored.placement == JobPlacement(host: "gpu-a", gpus: [.init(index: 0, uuid: "GPU-a0")], cpus: 0, memory_mib: 0))
      #expect(stored.placement?.visibleDevices == "0" && stored.state == .running)

      // A host in zone b takes the zoned job, on none of its GPUs (it asked for none).
      let zoneB = #"{"host":"gpu-b","gpus":[{"index":0,"uuid":"GPU-b0","model":"NVIDIA H100","memory_mib":81559}],"labels":{"zone":"b"}}"#
      let onZoneB = try await send(client, .post, "/v1/workers/claim", worker, #"{\#(claim),"capacity":\#(zoneB)}"#)
      let second = entries(onZoneB.body)
      #expect(second.map { string($0["id"]) } == [zoned])
      #expect(try second.first?["placement"] == parse(#"{"host": "gpu-b", "gpus": [], "cpus": 0, "memory_mib": 0}"#))
    }
  }

  /// A worker over HTTP that sends its host's whole capacity (`host_capacity`) beside what is
  /// free is listed with it, and reserves its host for a starving large job as a pool does.
  @Test func aWorkerThatSendsItsHostCapacityIsListedWithItAndReservesForAStarvingJob() async throws {
    var registry = BuiltinJobs.registry
    registry.registerExternal("train.step")
    var configuration = NovaServer.Configuration(workers: 0)
    configuration.pool.reserveAfter = .milliseconds(200)
    let made = try await PolicedTestServer.make(roles: [("gpu-1", .worker), ("ops", .operator)], registry: registry, configuration: configuration)
    let setup = Setup(server: made.server, queue: made.queue, tokens: made.tokens)
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let worker = setup.tokens["gpu-1"]!
      let claim = #""worker":"gpu-a-pid-7","queues":["default"],"kinds":["train.*"],"max":10"#
      func gpu(_ index: Int) -> String { #"{"index":\#(index),"uuid":"GPU-a\#(index)","model":"NVIDIA H100","memory_mib":81559}"# }
      let host = #"{"host":"gpu-a","gpus":[\#(gpu(0)),\#(gpu(1))],"cpus":8,"memory_mib":64000}"#
      let oneFree = #"{"host":"gpu-a","gpus":[\#(gpu(1))],"cpus":8,"memory_mib":64000}"#

      // What is free must be part of what the host has; each mistake names its field.
      for (body, message) in [
        (#"{\#(claim),"host_capacity":\#(host)}"#, "invalid capacity: give what is free as well as host_capacity"),
        (
          #"{\#(claim),"capacity":{"host":"gpu-b","gpus":[]},"host_capacity":\#(host)}"#,
          "invalid capacity.host: 'gpu-b' is not host_capacity's host 'gpu-a'"
        ),
        (
          #"{\#(claim),"capacity":{"host":"gpu-a","gpus":[\#(gpu(2))]},"host_capacity":\#(host)}"#,
          "invalid capacity.gpus: GPU 2 is free but not in host_capacity"
        ),
        (#"{\#(claim),"capacity":\#(oneFree),"host_capacity":{"gpus":[]}}"#, "invalid host_capacity.host: is required"),
      ] {
        let answer = try await send(client, .post, "/v1/workers/claim", worker, body)
        #expect(answer.status == .unprocessableContent, "\(body)")
        #expect(failure(answer.body).message == message, "\(answer.body)")
      }

      // A 2-GPU job on a host with one of its two GPUs free: it waits, and once it has waited
      // past the reservation wait, the claim reserves the host for it.
      let big = try #require(string(try await submit(client, setup, #"{"kind":"train.step","resources":{"gpus":2}}"#)["id"]))
      try await Task.sleep(for: .milliseconds(300))
      let first = try await send(client, .post, "/v1/workers/claim", worker, #"{\#(claim),"capacity":\#(oneFree),"host_capacity":\#(host)}"#)
      #expect(first.status == .ok && entries(first.body).isEmpty, "\(first.body)")
      // A 1-GPU job that arrives later would fit the free GPU, but the host is held for the big one.
      let small = try #require(string(try await submit(client, setup, #"{"kind":"train.step","resources":{"gpus":1}}"#)["id"]))
      let held = try await send(client, .post, "/v1/workers/claim", worker, #"{\#(claim),"capacity":\#(oneFree),"host_capacity":\#(host)}"#)
      #expect(entries(held.body).isEmpty, "the reserved host placed \(entries(held.body).map { string($0["id"]) })")
      // Both GPUs free: the big job starts first.
      let drained = try await send(client, .post, "/v1/workers/claim", worker, #"{\#(claim),"capacity":\#(host),"host_capacity":\#(host)}"#)
      #expect(entries(drained.body).map { string($0["id"]) } == [big], "\(drained.body)")
      #expect(try await setup.queue.get(JobID(small))?.state == .available)

      // The registry shows the host's whole capacity, and what is in use of it.
      let listed = try await send(client, .get, "/v1/workers/gpu-a-pid-7", setup.tokens["ops"]!)
      #expect(listed.status == .ok, "\(listed.body)")
      let capacity = try #require(listed.body.objectValue?["capacity"]?.objectValue)
      guard case .array(let gpus)? = capacity["gpus"] else { throw TestFailure("no GPUs listed: \(listed.body)") }
      #expect(gpus.count == 2)
    }
  }
}
