import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NovaApplication
import NovaCore
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

/// Issue #22 points 3 and 5 over HTTP, under the built-in policy with real tokens: the queues
/// and their flow control (`GET /v1/queues`, `POST /v1/queues/{queue}/pause|resume|controls`,
/// journaled), the worker registry (`GET /v1/workers[/{id}]`) fed by HTTP claims and pool
/// announcements, and the per-host capacity gauges.
@Suite("HTTP fleet routes", .timeLimit(.minutes(5)))
struct FleetRoutesTests {
  struct Setup {
    let server: NovaServer
    let queue: SQLiteJobQueue
    let tokens: [String: String]
  }

  /// An answer: its status and body (as bytes, and as JSON: null when it is not JSON).
  struct Answer {
    let status: HTTPResponse.Status
    let data: Data

    var json: JSONValue { (try? JSONValue.parse(data)) ?? .null }
    var object: [String: JSONValue] { json.objectValue ?? [:] }
  }

  /// A server under the built-in policy with a worker, an operator, a viewer and an admin token;
  /// `train.*` kinds are external.
  func makeServer() async throws -> Setup {
    var registry = BuiltinJobs.registry
    registry.registerExternal("train.step")
    let made = try await PolicedTestServer.make(
      roles: [("gpu-1", .worker), ("ops", .operator), ("dash", .viewer), ("root", .admin)], registry: registry)
    return Setup(server: made.server, queue: made.queue, tokens: made.tokens)
  }

  /// A request under `token`.
  func send(_ client: some TestClientProtocol, _ method: HTTPRequest.Method, _ uri: String, _ token: String, _ body: String? = nil)
    async throws -> Answer
  {
    try await client.execute(uri: uri, method: method, headers: bearer(token), body: body.map { ByteBuffer(string: $0) }) { response in
      Answer(status: response.status, data: Data(response.body.readableBytesView))
    }
  }

  func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Data(text.utf8)) }

  func string(_ value: JSONValue?) -> String? {
    guard case .string(let text)? = value else { return nil }
    return text
  }

  /// A JSON number, whether it was written whole (`10`) or not (`10.0`).
  func number(_ value: JSONValue?) -> Double? {
    switch value {
    case .int(let whole)?: return Double(whole)
    case .double(let fraction)?: return fraction
    default: return nil
    }
  }

  /// The code and message of an error answer.
  func failure(_ answer: Answer) -> (code: String?, message: String?) {
    let error = answer.object["error"]?.objectValue
    return (string(error?["code"]), string(error?["message"]))
  }

  /// The objects of an answer's list `key` (`jobs`, `queues`, `workers`).
  func entries(_ answer: Answer, _ key: String) -> [[String: JSONValue]] {
    guard case .array(let items)? = answer.object[key] else { return [] }
    return items.compactMap(\.objectValue)
  }

  /// Submits one job as the operator; its id.
  func submit(_ client: some TestClientProtocol, _ setup: Setup, queue: String) async throws -> String {
    let answer = try await send(client, .post, "/v1/jobs", setup.tokens["ops"]!, #"{"kind":"train.step","queue":"\#(queue)"}"#)
    #expect(answer.status == .created, "\(answer.json)")
    return try #require(string(answer.object["id"]))
  }

  /// The ids of the jobs a claim by the worker token got.
  func claim(_ client: some TestClientProtocol, _ setup: Setup, _ body: String) async throws -> [String] {
    let answer = try await send(client, .post, "/v1/workers/claim", setup.tokens["gpu-1"]!, body)
    #expect(answer.status == .ok, "\(body): \(answer.json)")
    return entries(answer, "jobs").compactMap { string($0["id"]) }
  }

  /// A job's state as the API shows it.
  func state(_ client: some TestClientProtocol, _ setup: Setup, _ id: String) async throws -> String? {
    string(try await send(client, .get, "/v1/jobs/\(id)", setup.tokens["ops"]!).object["state"])
  }

  /// The members `keys` of a JSON object (nil members left out).
  func settingsOf(_ value: JSONValue, _ keys: [String]) -> JSONValue {
    .object((value.objectValue ?? [:]).filter { keys.contains($0.key) })
  }

  /// Every state at zero but those given, as `QueueResource.jobs` shows them.
  func counts(_ given: [JobState: Int]) -> [String: JSONValue] {
    Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, JSONValue.int(Int64(given[$0] ?? 0))) })
  }

  @Test func theQueueListShowsEachQueuesControlsAndJobsByState() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      _ = try await submit(client, setup, queue: "gpu")
      _ = try await submit(client, setup, queue: "gpu")
      _ = try await submit(client, setup, queue: "cpu")
      #expect(try await claim(client, setup, #"{"worker":"w","queues":["gpu"],"max":1}"#).count == 1)
      try await setup.queue.setControls(QueueControls(maxRunning: 4, ratePerSecond: 2.5, weight: 2), queue: "gpu")
      try await setup.queue.setControls(QueueControls(paused: true), queue: "idle")

      let answer = try await send(client, .get, "/v1/queues", setup.tokens["dash"]!)
      #expect(answer.status == .ok)
      let listed = try JSONDecoder().decode(QueueListResource.self, from: answer.data)
      #expect(
        listed
          == QueueListResource(queues: [
            QueueResource(QueueSummary(name: "cpu", controls: QueueControls(), counts: [.available: 1])),
            QueueResource(
              QueueSummary(
                name: "gpu", controls: QueueControls(maxRunning: 4, ratePerSecond: 2.5, weight: 2), counts: [.available: 1, .running: 1])),
            QueueResource(QueueSummary(name: "idle", controls: QueueControls(paused: true), counts: [:])),
          ]))

      // The fields by name: limits that are not set are left out; every state is counted.
      let queues = entries(answer, "queues")
      #expect(queues.map { string($0["name"]) } == ["cpu", "gpu", "idle"])
      let gpu = try #require(queues.first { string($0["name"]) == "gpu" })
      #expect(Set(gpu.keys) == ["name", "paused", "max_running", "rate_per_second", "weight", "jobs"])
      #expect(gpu["paused"] == .bool(false))
      #expect(gpu["max_running"] == .int(4))
      #expect(number(gpu["rate_per_second"]) == 2.5)
      #expect(gpu["weight"] == .int(2))
      #expect(gpu["jobs"] == .object(counts([.available: 1, .running: 1])))
      let cpu = try #require(queues.first { string($0["name"]) == "cpu" })
      #expect(Set(cpu.keys) == ["name", "paused", "weight", "jobs"])
      #expect(cpu["paused"] == .bool(false) && cpu["weight"] == .int(1))
      #expect(cpu["jobs"] == .object(counts([.available: 1])))
      let idle = try #require(queues.first { string($0["name"]) == "idle" })
      #expect(idle["paused"] == .bool(true))
      #expect(idle["jobs"] == .object(counts([:])))

      // Reading queues is reading: a worker token may not.
      let worker = try await send(client, .get, "/v1/queues", setup.tokens["gpu-1"]!)
      #expect(worker.status == .forbidden)
    }
  }

  @Test func anOperatorPausesAndResumesAQueueAndClaimsObeyIt() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let job = try await submit(client, setup, queue: "q")
      let other = try await submit(client, setup, queue: "other")

      // Neither a viewer nor a worker may pause a queue; it stays as it was.
      for name in ["dash", "gpu-1"] {
        let refused = try await send(client, .post, "/v1/queues/q/pause", setup.tokens[name]!)
        #expect(refused.status == .forbidden, "\(name)")
        #expect(failure(refused).code == "forbidden", "\(name): \(refused.json)")
      }
      #expect(try await setup.queue.controls()["q"] == QueueControls())

      let paused = try await send(client, .post, "/v1/queues/q/pause", setup.tokens["ops"]!)
      #expect(paused.status == .ok, "\(paused.json)")
      #expect(string(paused.object["name"]) == "q")
      #expect(paused.object["paused"] == .bool(true))
      #expect(paused.object["weight"] == .int(1))
      #expect(paused.object["max_running"] == nil && paused.object["rate_per_second"] == nil)
      #expect(paused.object["jobs"] == .object(counts([.available: 1])))
      #expect(try await setup.queue.controls()["q"] == QueueControls(paused: true))

      // A paused queue hands out nothing; its job stays available, and other queues are served.
      #expect(try await claim(client, setup, #"{"worker":"w-1","queues":["q"],"max":4}"#).isEmpty)
      #expect(try await state(client, setup, job) == "available")
      #expect(try await claim(client, setup, #"{"worker":"w-1","queues":["q","other"],"max":4}"#) == [other])
      #expect(try await setup.queue.get(JobID(job))?.state == .available)
      // Pausing again answers the same.
      let again = try await send(client, .post, "/v1/queues/q/pause", setup.tokens["ops"]!)
      #expect(again.status == .ok && again.object["paused"] == .bool(true))

      let resumed = try await send(client, .post, "/v1/queues/q/resume", setup.tokens["ops"]!)
      #expect(resumed.status == .ok, "\(resumed.json)")
      #expect(resumed.object["paused"] == .bool(false))
      #expect(try await claim(client, setup, #"{"worker":"w-1","queues":["q"],"max":4}"#) == [job])
      #expect(try await state(client, setup, job) == "running")
      // A viewer may not resume either.
      #expect(try await send(client, .post, "/v1/queues/q/resume", setup.tokens["dash"]!).status == .forbidden)
    }
  }

  @Test func controlsAreSetClearedAndRefusedNamingTheField() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let ops = setup.tokens["ops"]!
      let set = try await send(client, .post, "/v1/queues/train/controls", ops, #"{"max_running": 1, "rate": "600/m", "weight": 3}"#)
      #expect(set.status == .ok, "\(set.json)")
      #expect(string(set.object["name"]) == "train")
      #expect(set.object["max_running"] == .int(1))
      #expect(number(set.object["rate_per_second"]) == 10)
      #expect(set.object["weight"] == .int(3))
      #expect(set.object["paused"] == .bool(false))
      #expect(set.object["jobs"] == .object(counts([:])))
      #expect(try await setup.queue.controls()["train"] == QueueControls(maxRunning: 1, ratePerSecond: 10, weight: 3))

      // null removes one limit; the fields left out are kept.
      let cleared = try await send(client, .post, "/v1/queues/train/controls", ops, #"{"max_running": null}"#)
      #expect(cleared.status == .ok, "\(cleared.json)")
      #expect(cleared.object["max_running"] == nil)
      #expect(number(cleared.object["rate_per_second"]) == 10)
      #expect(cleared.object["weight"] == .int(3))
      let kept = QueueControls(ratePerSecond: 10, weight: 3)
      #expect(try await setup.queue.controls()["train"] == kept)

      // A number is a rate per second; pausing through controls works too.
      let numeric = try await send(client, .post, "/v1/queues/numeric/controls", ops, #"{"rate": 2.5, "paused": true}"#)
      #expect(numeric.status == .ok)
      #expect(number(numeric.object["rate_per_second"]) == 2.5 && numeric.object["paused"] == .bool(true))

      // Bad bodies are refused naming the field (the message begins as given), and change nothing.
      let refusals: [(body: String, status: HTTPResponse.Status, code: String, message: String)] = [
        (#"{"weight": 0}"#, .unprocessableContent, "invalid_input", "invalid weight: 0 is out of range 1...1000"),
        (#"{"weight": 1001}"#, .unprocessableContent, "invalid_input", "invalid weight: 1001 is out of range 1...1000"),
        (#"{"weight": 2.5}"#, .unprocessableContent, "invalid_input", "invalid weight: must be a whole number"),
        (#"{"rate": "fast"}"#, .unprocessableContent, "invalid_input", "invalid rate: 'fast' is not a rate such as 10/s, 600/m"),
        (#"{"rate": "10/w"}"#, .unprocessableContent, "invalid_input", "invalid rate: '10/w' is not a rate such as 10/s, 600/m"),
        (#"{"rate": 0}"#, .unprocessableContent, "invalid_input", "invalid rate: 0.0 "),
        (
          #"{"rate": true}"#, .unprocessableContent, "invalid_input",
          #"invalid rate: must be a rate such as "10/s", a number per second, or null"#
        ),
        (#"{"max_running": "x"}"#, .unprocessableContent, "invalid_input", "invalid max_running: must be a whole number"),
        (#"{"max_running": -1}"#, .unprocessableContent, "invalid_input", "invalid max_running: -1 is out of range 0...1000000"),
        (#"{"paused": "yes"}"#, .unprocessableContent, "invalid_input", "invalid paused: must be true or false"),
        (#"{"color": 1}"#, .badRequest, "malformed_input", "malformed color: unknown field; expected one of max_running, "),
        ("[1]", .badRequest, "malformed_input", "malformed body: expected a JSON object"),
      ]
      for refusal in refusals {
        let answer = try await send(client, .post, "/v1/queues/train/controls", ops, refusal.body)
        #expect(answer.status == refusal.status, "\(refusal.body): \(answer.json)")
        #expect(failure(answer).code == refusal.code, "\(refusal.body)")
        #expect(failure(answer).message?.hasPrefix(refusal.message) == true, "\(refusal.body): \(answer.json)")
      }
      // The unknown field's message lists every field the route takes.
      let unknown = try await send(client, .post, "/v1/queues/train/controls", ops, #"{"color": 1}"#)
      let fields = failure(unknown).message?.components(separatedBy: "expected one of ").last?.components(separatedBy: ", ") ?? []
      #expect(Set(["max_running", "paused", "rate", "weight"]).isSubset(of: fields), "\(fields)")
      #expect(try await setup.queue.controls()["train"] == kept)

      // A queue name that is not one (a space, or too long) names `queue`, and no queue is made.
      for uri in ["/v1/queues/bad%20name/pause", "/v1/queues/bad%20name/controls"] {
        let answer = try await send(client, .post, uri, ops, #"{"weight": 2}"#)
        #expect(answer.status == .unprocessableContent, "\(uri): \(answer.json)")
        #expect(failure(answer).code == "invalid_input")
        let message = failure(answer).message ?? ""
        #expect(message.hasPrefix("invalid queue: 'bad") && message.hasSuffix("may hold only letters, digits, '.', '_', '-' and ':'"), "\(message)")
      }
      let long = try await send(client, .post, "/v1/queues/\(String(repeating: "q", count: 129))/pause", ops)
      #expect(long.status == .unprocessableContent)
      #expect(failure(long).message == "invalid queue: must be 1 to 128 characters")

      let listed = try await send(client, .get, "/v1/queues", setup.tokens["dash"]!)
      let queues = entries(listed, "queues")
      #expect(queues.map { string($0["name"]) } == ["numeric", "train"])
      let train = try #require(queues.first { string($0["name"]) == "train" })
      #expect(train["max_running"] == nil && number(train["rate_per_second"]) == 10 && train["weight"] == .int(3))
    }
  }

  @Test func eachChangeOfControlsIsJournaledUnderItsCaller() async throws {
    let setup = try await makeServer()
    // The server keeps its journal in the security database.
    let journal = try #require(setup.server.journal)
    let before = Date().millisecondsSince1970
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let ops = setup.tokens["ops"]!
      let root = setup.tokens["root"]!
      #expect(try await send(client, .post, "/v1/queues/nightly/pause", ops).status == .ok)
      #expect(try await send(client, .post, "/v1/queues/nightly/pause", setup.tokens["dash"]!).status == .forbidden)
      #expect(try await send(client, .post, "/v1/queues/nightly/controls", ops, #"{"max_running": 2, "rate": 0.5}"#).status == .ok)
      #expect(try await send(client, .post, "/v1/queues/nightly/controls", ops, #"{"weight": 0}"#).status == .unprocessableContent)
      #expect(try await send(client, .post, "/v1/queues/nightly/controls", ops, #"{"colour": 1}"#).status == .badRequest)
      #expect(try await send(client, .post, "/v1/queues/nightly/resume", root).status == .ok)
      #expect(try await send(client, .post, "/v1/queues/nightly/controls", root, #"{"rate": null, "weight": 5}"#).status == .ok)

      // One entry per change that was made (none for the refused ones), in order.
      let recorded = try await journal.entries(kinds: ["queue.controls"])
      #expect(recorded.count == 4)
      #expect(recorded.allSatisfy { $0.kind == "queue.controls" })
      #expect(recorded.map(\.subject) == ["nightly", "nightly", "nightly", "nightly"])
      #expect(recorded.map(\.actor) == ["token:ops", "token:ops", "token:root", "token:root"])
      #expect(recorded.allSatisfy { $0.time >= before })
      let payloads = try [
        parse(#"{"paused": true, "weight": 1, "max_running": null, "rate_per_second": null}"#),
        parse(#"{"paused": true, "weight": 1, "max_running": 2, "rate_per_second": 0.5}"#),
        parse(#"{"paused": false, "weight": 1, "max_running": 2, "rate_per_second": 0.5}"#),
        parse(#"{"paused": false, "weight": 5, "max_running": 2, "rate_per_second": null}"#),
      ]
      // The settings each change left (its payload may say more).
      let settings = ["paused", "weight", "max_running", "rate_per_second"]
      #expect(recorded.map { settingsOf($0.payload, settings) } == payloads)

      // The same entries through the journal route, for a viewer.
      let shown = try await send(client, .get, "/v1/journal?kind=queue.controls", setup.tokens["dash"]!)
      #expect(shown.status == .ok)
      let listed = entries(shown, "entries")
      #expect(listed.map { string($0["actor"]) } == ["token:ops", "token:ops", "token:root", "token:root"])
      #expect(listed.map { string($0["subject"]) } == ["nightly", "nightly", "nightly", "nightly"])
      #expect(listed.map { settingsOf($0["payload"] ?? .null, settings) } == payloads)
    }
  }

  @Test func theWorkerRegistryListsHTTPAndPoolWorkers() async throws {
    let setup = try await makeServer()
    let app = Application(router: setup.server.makeRouter())
    try await app.test(.router) { client in
      let dash = setup.tokens["dash"]!
      let capacity = #"""
        {"host":"gpu-a","gpus":[{"index":0,"uuid":"GPU-a0","model":"NVIDIA H100","memory_mib":81559}],"cpus":8,"memory_mib":64000,
         "labels":{"zone":"b"}}
        """#
      let claimBody = #"{"worker":"w-http-1","queues":["q"],"kinds":["train.*"],"capacity":\#(capacity)}"#
      #expect(try await claim(client, setup, claimBody).isEmpty)

      // A worker over HTTP says what is free (not its whole capacity): nothing shows in use.
      let listed = try await send(client, .get, "/v1/workers", dash)
      #expect(listed.status == .ok, "\(listed.json)")
      #expect(entries(listed, "workers").map { string($0["id"]) } == ["w-http-1"])
      let entry = try #require(entries(listed, "workers").first)
      var http = entry
      let timestamps = ["started_at", "last_seen", "expires_at"].map { http.removeValue(forKey: $0) }
      #expect(timestamps.allSatisfy { string($0)?.isEmpty == false }, "\(timestamps)")
      let free = try parse(
        #"""
        {"host": "gpu-a", "gpus": [{"index": 0, "uuid": "GPU-a0", "model": "NVIDIA H100", "memory_mib": 81559, "unified_memory": false}],
         "cpus": 8, "memory_mib": 64000, "labels": {"zone": "b"}}
        """#)
      let expected = try parse(
        #"""
        {"id": "w-http-1", "state": "live", "host": "gpu-a", "queues": ["q"], "kinds": ["train.*"], "labels": {"zone": "b"},
         "free": \#(String(decoding: free.encoded(), as: UTF8.self)), "running": []}
        """#)
      #expect(JSONValue.object(http) == expected)
      #expect(http["capacity"] == nil && http["in_use"] == nil && http["version"] == nil)

      // One worker by name: the same entry.
      let one = try await send(client, .get, "/v1/workers/w-http-1", dash)
      #expect(one.status == .ok)
      #expect(one.json == .object(entry))
      let missing = try await send(client, .get, "/v1/workers/nobody", dash)
      #expect(missing.status == .notFound)
      #expect(failure(missing).code == "not_found")
      #expect(
        failure(missing).message == "worker 'nobody' is not in the registry (it never announced itself, or lapsed over an hour ago)")
      // The registry is read as queues are: not by a worker token.
      #expect(try await send(client, .get, "/v1/workers", setup.tokens["gpu-1"]!).status == .forbidden)

      // A claim whose free capacity changed announces it at once; the worker keeps its start.
      let busy = #"{"worker":"w-http-1","queues":["q"],"kinds":["train.*"],"capacity":{"host":"gpu-a","gpus":[],"cpus":2,"memory_mib":1000}}"#
      #expect(try await claim(client, setup, busy).isEmpty)
      let after = try await send(client, .get, "/v1/workers/w-http-1", dash)
      #expect(try after.object["free"] == parse(#"{"host": "gpu-a", "gpus": [], "cpus": 2, "memory_mib": 1000, "labels": {}}"#))
      #expect(after.object["started_at"] == timestamps[0])

      // A pool worker announces its capacity and what is free of it: the difference is in use.
      let started = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 - 120).rounded(.down))
      let seen = started.addingTimeInterval(100)
      let expires = started.addingTimeInterval(180)
      let gpus = [
        HostCapacity.GPU(index: 0, uuid: "GPU-b0", model: "NVIDIA H100 80GB HBM3", memory_mib: 81559),
        HostCapacity.GPU(index: 1, uuid: "GPU-b1", model: "NVIDIA H100 80GB HBM3", memory_mib: 81559),
      ]
      let whole = HostCapacity(host: "gpu-b", gpus: gpus, cpus: 32, memory_mib: 256000, labels: ["zone": "c"])
      let left = HostCapacity(host: "gpu-b", gpus: [gpus[1]], cpus: 24, memory_mib: 192000, labels: ["zone": "c"])
      let running = [JobID.generate().rawValue, JobID.generate().rawValue]
      try await setup.queue.announce(
        WorkerPresence(
          worker: "pool-gpu-b-1", queues: ["gpu"], kinds: ["echo", "train.*"], expiresAt: expires, host: "gpu-b", version: NovaVersion.string,
          startedAt: started, lastSeen: seen, capacity: whole, free: left, running: running))
      // One that stopped announcing itself is still listed, as lapsed.
      try await setup.queue.announce(
        WorkerPresence(worker: "pool-gone", queues: [], kinds: [], expiresAt: Date().addingTimeInterval(-60), host: "gpu-c"))

      let fleet = try await send(client, .get, "/v1/workers", dash)
      let workers = entries(fleet, "workers")
      #expect(workers.map { string($0["id"]) } == ["pool-gone", "pool-gpu-b-1", "w-http-1"])
      #expect(workers.map { string($0["state"]) } == ["lapsed", "live", "live"])
      let pool = try #require(workers.first { string($0["id"]) == "pool-gpu-b-1" })
      let wholeJSON = String(decoding: try JSONEncoder().encode(whole), as: UTF8.self)
      let leftJSON = String(decoding: try JSONEncoder().encode(left), as: UTF8.self)
      let poolExpected = try parse(
        #"""
        {"id": "pool-gpu-b-1", "state": "live", "host": "gpu-b", "version": "\#(NovaVersion.string)", "queues": ["gpu"],
         "kinds": ["echo", "train.*"], "labels": {"zone": "c"}, "capacity": \#(wholeJSON), "free": \#(leftJSON),
         "in_use": {"gpus": [0], "cpus": 8, "memory_mib": 64000}, "running": ["\#(running[0])", "\#(running[1])"],
         "started_at": "\#(JobResource.timestamp(started))", "last_seen": "\#(JobResource.timestamp(seen))",
         "expires_at": "\#(JobResource.timestamp(expires))"}
        """#)
      #expect(JSONValue.object(pool) == poolExpected)
      #expect(try await send(client, .get, "/v1/workers/pool-gpu-b-1", dash).json == poolExpected)
      let gone = try await send(client, .get, "/v1/workers/pool-gone", dash)
      #expect(gone.status == .ok && string(gone.object["state"]) == "lapsed")
      #expect(string(gone.object["host"]) == "gpu-c" && gone.object["in_use"] == nil && gone.object["labels"] == .object([:]))
    }
  }

  /// The value of `name{host="…",resource="…"}` in Prometheus text (labels in the order the
  /// collector gives them), or nil when there is no such series.
  func gauge(_ text: String, _ name: String, host: String, resource: String) -> Double? {
    let prefix = #"\#(name){host="\#(host)",resource="\#(resource)"} "#
    return text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }).flatMap { Double($0.dropFirst(prefix.count)) }
  }

  @Test func hostCapacityAndUseAreExportedAndZeroedWhenTheirWorkersLapse() async throws {
    let setup = try await makeServer()
    // Host names of this test alone: the metrics registry is the test process's.
    let suffix = UUID().uuidString.prefix(8).lowercased()
    let (hostA, hostB, hostC) = ("fleet-a-\(suffix)", "fleet-b-\(suffix)", "fleet-c-\(suffix)")
    func gpus(_ indices: [Int], _ host: String) -> [HostCapacity.GPU] {
      indices.map { HostCapacity.GPU(index: $0, uuid: "GPU-\(host)-\($0)", model: "NVIDIA H100", memory_mib: 81559) }
    }
    let live = Date().addingTimeInterval(120)
    // Host A: two workers, one GPU each; one holds its GPU, 2 CPUs and 16000 MiB, the other
    // says nothing free (all of it is) and names its host only in its capacity.
    let a1 = WorkerPresence(
      worker: "m-a-1-\(suffix)", queues: [], kinds: [], expiresAt: live, host: hostA,
      capacity: HostCapacity(host: hostA, gpus: gpus([0], hostA), cpus: 8, memory_mib: 32000),
      free: HostCapacity(host: hostA, gpus: [], cpus: 6, memory_mib: 16000))
    let a2 = WorkerPresence(
      worker: "m-a-2-\(suffix)", queues: [], kinds: [], expiresAt: live,
      capacity: HostCapacity(host: hostA, gpus: gpus([1], hostA), cpus: 8, memory_mib: 32000))
    // Host B: eight GPUs, three in use.
    let b1 = WorkerPresence(
      worker: "m-b-1-\(suffix)", queues: [], kinds: [], expiresAt: live, host: hostB,
      capacity: HostCapacity(host: hostB, gpus: gpus(Array(0..<8), hostB), cpus: 64, memory_mib: 512000),
      free: HostCapacity(host: hostB, gpus: gpus(Array(3..<8), hostB), cpus: 40, memory_mib: 256000))
    // Host C: a worker over HTTP says only what is free: no capacity to export.
    let c1 = WorkerPresence(
      worker: "m-c-1-\(suffix)", queues: [], kinds: [], expiresAt: live, host: hostC,
      free: HostCapacity(host: hostC, gpus: gpus([0], hostC), cpus: 4, memory_mib: 8000))
    for presence in [a1, a2, b1, c1] { try await setup.queue.announce(presence) }

    let collector = QueueMetricsCollector(queue: setup.queue, pool: nil, logger: Logger(label: "test"))
    try await collector.collect()
    var text = String(decoding: NovaMetrics.render(), as: UTF8.self)
    #expect(text.contains("# TYPE nova_worker_capacity gauge"))
    #expect(text.contains("# TYPE nova_worker_in_use gauge"))
    #expect(text.split(separator: "\n").map(String.init).contains(#"nova_worker_capacity{host="\#(hostA)",resource="gpus"} 2.0"#))
    let first: [(host: String, capacity: [String: Double], inUse: [String: Double])] = [
      (hostA, ["gpus": 2, "cpus": 16, "memory_mib": 64000], ["gpus": 1, "cpus": 2, "memory_mib": 16000]),
      (hostB, ["gpus": 8, "cpus": 64, "memory_mib": 512000], ["gpus": 3, "cpus": 24, "memory_mib": 256000]),
    ]
    for expected in first {
      for resource in ["gpus", "cpus", "memory_mib"] {
        #expect(gauge(text, "nova_worker_capacity", host: expected.host, resource: resource) == expected.capacity[resource], "\(resource)")
        #expect(gauge(text, "nova_worker_in_use", host: expected.host, resource: resource) == expected.inUse[resource], "\(resource)")
      }
    }
    #expect(!text.contains(#"host="\#(hostC)""#), "a worker without capacity exports nothing")

    // Host A's workers lapse: its series go back to 0 on the next pass; host B's stay.
    for var presence in [a1, a2] {
      presence.expiresAt = Date().addingTimeInterval(-1)
      try await setup.queue.announce(presence)
    }
    try await collector.collect()
    text = String(decoding: NovaMetrics.render(), as: UTF8.self)
    for resource in ["gpus", "cpus", "memory_mib"] {
      #expect(gauge(text, "nova_worker_capacity", host: hostA, resource: resource) == 0, "\(resource)")
      #expect(gauge(text, "nova_worker_in_use", host: hostA, resource: resource) == 0, "\(resource)")
      #expect(gauge(text, "nova_worker_capacity", host: hostB, resource: resource) == first[1].capacity[resource], "\(resource)")
      #expect(gauge(text, "nova_worker_in_use", host: hostB, resource: resource) == first[1].inUse[resource], "\(resource)")
    }
    #expect(text.split(separator: "\n").map(String.init).contains(#"nova_worker_capacity{host="\#(hostA)",resource="gpus"} 0.0"#))
  }
}
