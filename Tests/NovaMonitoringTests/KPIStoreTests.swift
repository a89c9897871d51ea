import Foundation
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaQueue
import NovaSecurity
import NovaTestSupport
import Testing

@Suite("KPI store", .timeLimit(.minutes(5)))
struct KPIStoreTests {
  func makeStore() throws -> (KPIStore, URL) {
    let directory = try TemporaryDirectory.make("nova-kpi")
    let queue = try SQLiteJobQueue(
      configuration: .init(path: directory.appendingPathComponent("nova.sqlite").path, journal: AuditJournal()))
    // Samples are dated around 2027-01-15: the store's now is later, so none is in the future.
    return (try KPIStore(database: queue.database, clock: TestClock(Date(timeIntervalSince1970: 1_800_000_000 + 30 * 86_400))), directory)
  }

  @Test func samplesAreStoredQueriedByNameTimeAndLabelsAndSummarised() async throws {
    let (store, _) = try makeStore()
    let base: Int64 = 1_800_000_000_000
    var samples: [KPISample] = []
    for index in 0..<100 {
      samples.append(
        KPISample(
          name: "queue.wait_p99", labels: ["queue": index % 2 == 0 ? "gpu" : "cpu", "note": "a,b=c\"d"],
          value: Double(index), unit: "ms", time: base + Int64(index) * 1000, source: "test"))
    }
    samples.append(KPISample(name: "other", value: 1, time: base, source: "test"))
    try await store.record(samples)
    let all = try await store.query(name: "queue.wait_p99", since: base, until: base + 99_000)
    #expect(all.count == 100 && all.first?.value == 0 && all.last?.value == 99)
    #expect(all.first?.labels == ["queue": "gpu", "note": "a,b=c\"d"] && all.first?.unit == "ms" && all.first?.source == "test")
    let gpu = try await store.query(name: "queue.wait_p99", since: base, until: base + 99_000, labels: ["queue": "gpu"])
    #expect(gpu.count == 50 && gpu.allSatisfy { Int($0.value) % 2 == 0 })
    let window = try await store.query(name: "queue.wait_p99", since: base + 10_000, until: base + 19_000, limit: 5)
    #expect(window.map(\.value) == [10, 11, 12, 13, 14])
    let summary = try await store.summary(name: "queue.wait_p99", since: base, until: base + 99_000)
    #expect(summary.count == 100 && summary.min == 0 && summary.max == 99 && summary.p50 == 49 && summary.p99 == 98 && summary.mean == 49.5)
    // Nearest rank (Statistics.percentile): the 50th and 99th of the 100 values 0...99.
    let empty = try await store.summary(name: "nothing", since: 0)
    #expect(empty.count == 0 && empty.mean == nil)
    #expect(try await store.purge(before: base + 50_000) == 51)
    #expect(try await store.query(name: "queue.wait_p99", since: 0).count == 50)
  }

  @Test func badSamplesAreRefusedWholeAndNamed() async throws {
    let (store, _) = try makeStore()
    let good = KPISample(name: "ok", value: 1, time: 0, source: "t")
    let cases: [(KPISample, String)] = [
      (KPISample(name: "9lives", value: 1, time: 0, source: "t"), "name"),
      (KPISample(name: "a b", value: 1, time: 0, source: "t"), "name"),
      (KPISample(name: "ok", labels: ["bad key": "v"], value: 1, time: 0, source: "t"), "label 'bad key'"),
      (KPISample(name: "ok", value: .nan, time: 0, source: "t"), "value"),
      (KPISample(name: "ok", value: 1, unit: String(repeating: "u", count: 40), time: 0, source: "t"), "unit"),
    ]
    for (sample, field) in cases {
      do {
        try await store.record([good, sample])
        Issue.record("accepted \(sample)")
      } catch let error as NovaError {
        guard case .invalidInput(let named, _) = error else {
          Issue.record("\(error)")
          continue
        }
        #expect(named == field)
      }
    }
    #expect(try await store.query(name: "ok", since: -1).isEmpty)
    await #expect(throws: NovaError.self) { _ = try await store.query(name: "bad name", since: 0) }
  }

  @Test func deploymentsRecordTheirDuration() async throws {
    let (store, _) = try makeStore()
    let start: Int64 = 1_800_000_000_000
    try await store.deploymentStarted(service: "api", version: "1.2", at: start, source: "test")
    #expect(try await store.deploymentFinished(service: "api", version: "1.2", at: start + 42_500, source: "test") == 42.5)
    let durations = try await store.query(name: "deploy.duration", since: start, until: start + 60_000)
    #expect(durations.count == 1 && durations[0].value == 42.5 && durations[0].labels == ["service": "api", "version": "1.2"])
    await #expect(throws: NovaError.self) {
      try await store.deploymentFinished(service: "api", version: "9.9", at: start + 50_000, source: "test")
    }
  }

  @Test func dailySummariesCoverEveryKPIOfTheDay() async throws {
    let (store, directory) = try makeStore()
    let day = KPIStore.dayStart(1_800_000_000_000)
    #expect(day % 86_400_000 == 0 && KPIStore.dayStart(day + 5) == day && KPIStore.dayStart(-1) == -86_400_000)
    try await store.record([
      KPISample(name: "b.metric", value: 2, time: day + 10, source: "t"),
      KPISample(name: "a.metric", value: 1, time: day + 20, source: "t"),
      KPISample(name: "a.metric", value: 3, time: day + 30, source: "t"),
      KPISample(name: "a.metric", value: 99, time: day + 86_400_000, source: "t"),
    ])
    let summaries = try await store.dailySummary(day: day)
    #expect(summaries.map(\.name) == ["a.metric", "b.metric"] && summaries[0].count == 2 && summaries[0].mean == 2)
    let path = try await store.writeDailySummary(day: day, dataDirectory: directory.path, generatedAt: day + 1000)
    #expect(path.hasSuffix("/kpi/summary-2027-01-15.json"))
    let written = try JSONDecoder().decode(DailyKPISummary.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    #expect(written.day == "2027-01-15" && written.kpis == summaries)
  }

  @Test func timesAreDurationsOrRFC3339() throws {
    let now: Int64 = 1_800_000_000_000
    #expect(try KPITime.parse("90s", now: now, flag: "--since") == now - 90_000)
    #expect(try KPITime.parse("30m", now: now, flag: "--since") == now - 1_800_000)
    #expect(try KPITime.parse("1h", now: now, flag: "--since") == now - 3_600_000)
    #expect(try KPITime.parse("7d", now: now, flag: "--since") == now - 604_800_000)
    #expect(try KPITime.parse("2026-11-01T00:00:00Z", now: now, flag: "--since") == 1_793_491_200_000)
    #expect(throws: NovaError.self) { _ = try KPITime.parse("yesterday", now: now, flag: "--since") }
  }

}
