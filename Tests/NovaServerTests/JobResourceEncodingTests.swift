import Foundation
import NovaCore
import NovaQueue
import Testing

@testable import NovaServer

/// A job's answer is written without `JSONEncoder` on the submission path: the bytes must be the
/// ones `JSONEncoder` writes, for every shape of job that path takes, and the jobs it does not
/// take must be left to `JSONEncoder`.
@Suite("Job resource encoding")
struct JobResourceEncodingTests {
  static let base = Date(millisecondsSince1970: 1_796_000_000_001)

  func job(payload: String, result: String? = nil, configure: (inout Job) -> Void = { _ in }) -> Job {
    var job = Job(
      id: JobID.generate(now: Self.base), queue: "default", kind: "echo", payload: Data(payload.utf8), priority: 3,
      state: .available, runAt: Self.base, attempts: 0, maxAttempts: 5, idempotencyKey: nil, createdAt: Self.base,
      updatedAt: Self.base, result: result.map { Data($0.utf8) })
    configure(&job)
    return job
  }

  @Test("the direct bytes are JSONEncoder's for payloads, results and optional fields of every kind")
  func directBytesAreJSONEncoders() throws {
    let payloads = [
      #"{"n":1}"#,
      #"{}"#,
      #"{"b":[1,-2,true,false,null,"x"],"a":{"z":{},"y":[]},"é":"ü","a10":1,"a9":2,"A":3,"_":4}"#,
      #"{"text":"quote \" back \\ slash / tab \t nl \n cr \r bs \b ff \f ctl \u0001 \u001f del \u007f ls \u2028 😀"}"#,
      #"{"big":999999999999999999,"neg":-999999999999999999,"zero":0}"#,
      #"{"deep":{"a":{"b":{"c":{"d":[[[{"e":"f"}]]]}}}}}"#,
      #"{"e\u0301":1,"ê":2}"#,
    ]
    var checked = 0
    for payload in payloads {
      for variant in 0..<4 {
        let job = job(payload: payload, result: variant == 1 ? #"{"ok":true,"items":[1,2]}"# : nil) { job in
          if variant >= 2 {
            job.state = .running
            job.attempts = 2
            job.idempotencyKey = "key \"1\""
            job.startedAt = Self.base.addingTimeInterval(1.234)
            job.leaseOwner = "host-1/worker"
            job.leaseExpiresAt = Self.base.addingTimeInterval(30.5)
            job.concurrencyKey = "tenant-7"
          }
          if variant == 3 {
            job.state = .dead
            job.finishedAt = Self.base.addingTimeInterval(2.007)
            job.lastError = "exit 1\nstderr: \u{1}boom"
            job.result = Data("[1,\"two\",{\"3\":null}]".utf8)
          }
        }
        let resource = JobResource(job)
        let direct = try #require(resource.encodedDirectly(), "payload \(payload), variant \(variant)")
        let encoded = [UInt8](try NovaJSON.encode(resource))
        #expect(String(decoding: direct, as: UTF8.self) == String(decoding: encoded, as: UTF8.self))
        checked += 1
      }
    }
    #expect(checked == payloads.count * 4)
  }

  @Test("jobs with fractional numbers, resources, constraints or placement are left to JSONEncoder")
  func otherJobsAreLeftToJSONEncoder() throws {
    #expect(JobResource(job(payload: #"{"x":1.5}"#)).encodedDirectly() == nil)
    #expect(JobResource(job(payload: #"{"x":1}"#, result: #"{"loss":0.25}"#)).encodedDirectly() == nil)
    let placed = job(payload: "{}") { job in
      job.requirements = JobRequirements.make(resources: JobResources(gpus: 1), constraints: nil)
    }
    #expect(JobResource(placed).encodedDirectly() == nil)
    var waiting = JobResource(job(payload: "{}"))
    waiting.waiting_for = WaitingFor(.queuePaused, "the queue is paused")
    #expect(waiting.encodedDirectly() == nil)
  }

  @Test("times are the stored millisecond (Foundation's style read half of them a millisecond early)")
  func timesAreTheStoredMillisecond() {
    // 1_796_000_000_001 ms read "…20.000Z" through the ISO 8601 format style.
    #expect(JobResource.timestamp(Self.base) == "2026-11-30T00:53:20.001Z")
    for millis in Int64(1_796_000_000_000)..<1_796_000_002_000 {
      #expect(JobResource.timestamp(Date(millisecondsSince1970: millis)) == AuditTime.string(millis))
    }
    #expect(JobResource(job(payload: "{}")).created_at == "2026-11-30T00:53:20.001Z")
  }
}
