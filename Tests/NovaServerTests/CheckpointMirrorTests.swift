import Foundation
import Logging
import NovaBenchmarks
import NovaCore
import NovaQueue
import NovaSecurity
import NovaServer
import NovaTestSupport
import Testing

@Suite("Checkpoint mirrors", .timeLimit(.minutes(2)))
struct CheckpointMirrorTests {
  @Test func aURLMirrorReceivesEachSignedCheckpointByPOST() async throws {
    let receiver = try await LocalHTTPReceiver()
    let directory = try TemporaryDirectory.make()
    let queue = try SQLiteJobQueue(configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    let security = try SecurityContext(database: queue.database, keyPath: directory.appendingPathComponent("key").path)
    let mirror = try HTTPCheckpointMirror(url: "http://anchor:s3cret@127.0.0.1:\(receiver.port)/checkpoints?token=abc")
    #expect(mirror.location == "http://redacted@127.0.0.1:\(receiver.port)/checkpoints?redacted")
    let checkpointer = AuditCheckpointer(security: security, jobs: queue, logger: Logger(label: "test"), mirror: mirror)
    for _ in 0..<2 {
      _ = try await queue.enqueue(JobRequest(kind: "echo"))
      try await checkpointer.tick()
    }
    let stored = try await security.audit.checkpoints()
    let requests = receiver.requests
    #expect(requests.count == 2)
    #expect(requests.map(\.method) == ["POST", "POST"] && requests.map(\.text) == stored.map(\.note))
    #expect(requests.map { $0.header("Nova-Checkpoint-Size") } == stored.map { String($0.size) })
    #expect(requests.first?.header("Authorization")?.hasPrefix("Basic ") == true)

    // A receiver that refuses is an error of the pass (retried at the next one).
    receiver.script([(500, "no")])
    _ = try await queue.enqueue(JobRequest(kind: "echo"))
    await #expect(throws: NovaError.self) { try await checkpointer.tick() }
    try await checkpointer.tick()
    let latest = try await security.audit.latestCheckpoint()
    #expect(receiver.requests.count == 4 && receiver.requests.last?.text == latest?.note)
    #expect(throws: NovaError.self) { try HTTPCheckpointMirror(url: "ftp://x/y") }
  }

  @Test func aDirectoryMirrorNeverReplacesAKeptCheckpoint() async throws {
    let directory = try TemporaryDirectory.make()
    let mirror = CheckpointDirectory(path: directory.appendingPathComponent("mirror").path)
    let checkpoint = StoredCheckpoint(size: 3, root: [], note: "a\n3\nx\n\n— k sig\n", createdAt: 0, frontier: [])
    try await mirror.publish(checkpoint)
    try await mirror.publish(checkpoint)
    var other = checkpoint
    other.note = "b\n3\nx\n\n— k sig\n"
    await #expect { try await mirror.publish(other) } throws: { "\($0)".contains("holds another checkpoint of size 3") }
    #expect(try await mirror.checkpoints() == [MirroredCheckpoint(name: CheckpointDirectory.fileName(size: 3), note: checkpoint.note)])
  }
}
