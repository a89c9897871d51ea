import Foundation
import GRDB
import NovaCore
import NovaDatabase

/// KPI samples in Nova's database, indexed by name and time; old samples purged by retention.
public final class KPIStore: Sendable {
  private let database: NovaDatabase
  /// Signalled after every write, so that the alert engine evaluates new samples at once.
  public let recorded = WakeSignal()

  /// How far in the future a sample may be dated when none is configured (clock skew).
  public static let defaultFutureTolerance: Duration = .seconds(300)
  /// What "now" is when samples are checked.
  public let clock: any NovaClock
  /// How far after now a sample may be dated; later ones are refused.
  public let futureTolerance: Duration

  /// The latest time (ms) a sample recorded now may have.
  public var latestAcceptedTime: Int64 { clock.now().millisecondsSince1970 + Int64(futureTolerance.seconds * 1000) }

  /// The store in `database` (the queue's SQLite database); creates its table on first use.
  public init(database: NovaDatabase, clock: any NovaClock = SystemClock(), futureTolerance: Duration = KPIStore.defaultFutureTolerance) throws {
    self.database = database
    self.clock = clock
    self.futureTolerance = futureTolerance
    try database.migrate("KPI") { migrator in
      migrator.registerMigration("v5-kpis") { db in
        try db.execute(
          sql: """
            CREATE TABLE nova_kpis (
              name TEXT NOT NULL,
              labels TEXT NOT NULL,
              value REAL NOT NULL,
              unit TEXT NOT NULL,
              time INTEGER NOT NULL,
              source TEXT NOT NULL
            );
            CREATE INDEX nova_kpis_name_time ON nova_kpis(name, time);
            """)
      }
    }
  }

  /// Stores samples (validated first: a bad one stores none), in the queue's shared transaction.
  public func record(_ samples: [KPISample]) async throws {
    let notAfter = latestAcceptedTime
    for sample in samples {
      do {
        try sample.validate(notAfter: notAfter)
      } catch {
        guard case .invalidInput("time", let message) = error else { throw error }
        throw NovaError.invalidInput(field: "time", message: "\(sample.name): \(message)")
      }
    }
    if samples.isEmpty { return }
    try await database.write { db in
      let insert = RawStatement(
        try db.cachedStatement(sql: "INSERT INTO nova_kpis (name, labels, value, unit, time, source) VALUES (?, ?, ?, ?, ?, ?)"),
        in: db)
      for sample in samples {
        insert.bind(1, sample.name)
        insert.bind(2, sample.labelText)
        insert.bind(3, sample.value)
        insert.bind(4, sample.unit)
        insert.bind(5, sample.time)
        insert.bind(6, sample.source)
        _ = try insert.run()
      }
    }
    recorded.signal()
  }

  /// Samples stored after row `row` whose time is at least `since` (and whose name is among
  /// `names`, when given), in the order they were stored; the last row read (the cursor for the
  /// next call) and how many rows were read (fewer than `limit`: nothing more is stored). Rows
  /// only grow, so a reader that keeps the latest value per series reads each sample once.
  public func samples(afterRow row: Int64, since: Int64, names: Set<String>? = nil, limit: Int = 100_000) async throws
    -> (samples: [KPISample], lastRow: Int64, rowsRead: Int)
  {
    try await database.read { db in
      let statement = RawStatement(
        try db.cachedStatement(
          sql: "SELECT rowid, name, labels, value, unit, time, source FROM nova_kpis WHERE rowid > ? ORDER BY rowid LIMIT ?"),
        in: db)
      statement.bind(1, row)
      statement.bind(2, limit)
      defer { statement.finish() }
      var samples: [KPISample] = []
      var last = row
      var read = 0
      var labelCache: [String: [String: String]] = [:]
      while try statement.step() {
        read += 1
        last = statement.int64(0)
        let time = statement.int64(5)
        guard time >= since else { continue }
        let name = statement.string(1)
        if let names, !names.contains(name) { continue }
        samples.append(
          KPISample(
            name: name, labels: Self.cachedLabels(statement.string(2), in: &labelCache), value: statement.double(3),
            unit: statement.string(4), time: time, source: statement.string(6)))
      }
      return (samples, last, read)
    }
  }

  /// The newest sample of every series of `names` from `since` up to `until`, every sample dated
  /// after `until` (a reader keeps them for later), and the last row stored then (to go on from
  /// with `samples(afterRow:)`). Two indexed queries per name.
  public func latestSamples(names: Set<String>, since: Int64, until: Int64 = .max) async throws -> (samples: [KPISample], lastRow: Int64) {
    try await database.read { db in
      let last = try Int64.fetchOne(db, sql: "SELECT MAX(rowid) FROM nova_kpis") ?? 0
      // SQLite takes the other columns of an aggregate query with MAX() from the row holding the maximum.
      let statement = RawStatement(
        try db.cachedStatement(
          sql: """
            SELECT labels, value, unit, MAX(time), source FROM nova_kpis
            WHERE name = ? AND time >= ? AND time <= ? AND rowid <= ? GROUP BY labels
            UNION ALL
            SELECT labels, value, unit, time, source FROM nova_kpis WHERE name = ? AND time > ? AND rowid <= ?
            """),
        in: db)
      defer { statement.finish() }
      var samples: [KPISample] = []
      var labelCache: [String: [String: String]] = [:]
      for name in names.sorted() {
        statement.bind(1, name)
        statement.bind(2, since)
        statement.bind(3, until)
        statement.bind(4, last)
        statement.bind(5, name)
        statement.bind(6, until)
        statement.bind(7, last)
        while try statement.step() {
          samples.append(
            KPISample(
              name: name, labels: Self.cachedLabels(statement.string(0), in: &labelCache), value: statement.double(1),
              unit: statement.string(2), time: statement.int64(3), source: statement.string(4)))
        }
        statement.finish()
      }
      return (samples, last)
    }
  }

  private static func cachedLabels(_ text: String, in cache: inout [String: [String: String]]) -> [String: String] {
    if let cached = cache[text] { return cached }
    let labels = parseLabels(text)
    cache[text] = labels
    return labels
  }

  /// Samples of `name` from `since` through `until` (ms), oldest first, whose labels include
  /// every pair of `labels`; at most `limit`.
  public func query(name: String, since: Int64, until: Int64 = .max, labels: [String: String] = [:], limit: Int = 10_000) async throws -> [KPISample]
  {
    try KPISample.validateName(name, field: "name")
    return try await database.read { db in
      let rows = try Row.fetchCursor(
        db.cachedStatement(
          sql: "SELECT labels, value, unit, time, source FROM nova_kpis WHERE name = ? AND time BETWEEN ? AND ? ORDER BY time LIMIT ?"),
        arguments: [name, since, until, labels.isEmpty ? limit : Int.max])
      var samples: [KPISample] = []
      while let row = try rows.next(), samples.count < limit {
        let text: String = row[0]
        let parsed = Self.parseLabels(text)
        guard labels.allSatisfy({ parsed[$0.key] == $0.value }) else { continue }
        samples.append(KPISample(name: name, labels: parsed, value: row[1], unit: row[2], time: row[3], source: row[4]))
      }
      return samples
    }
  }

  /// Count, minimum, maximum, mean and percentiles of `name` over a window.
  public func summary(name: String, since: Int64, until: Int64 = .max, labels: [String: String] = [:]) async throws -> KPISummary {
    let values = try await query(name: name, since: since, until: until, labels: labels, limit: .max).map(\.value).sorted()
    return KPISummary(name: name, values: values)
  }

  /// Deletes samples older than `before` (ms); returns how many.
  @discardableResult
  public func purge(before: Int64) async throws -> Int {
    try await database.write { db in
      try db.execute(sql: "DELETE FROM nova_kpis WHERE time < ?", arguments: [before])
      return db.changesCount
    }
  }

  static func parseLabels(_ text: String) -> [String: String] {
    if text == "{}" { return [:] }
    return (try? JSONDecoder().decode([String: String].self, from: Data(text.utf8))) ?? [:]
  }
}

/// A window of one KPI at a glance.
public struct KPISummary: Sendable, Codable, Equatable {
  public var name: String
  public var count: Int
  public var min: Double?
  public var max: Double?
  public var mean: Double?
  public var p50: Double?
  public var p95: Double?
  public var p99: Double?

  init(name: String, values sorted: [Double]) {
    self.name = name
    count = sorted.count
    min = sorted.first
    max = sorted.last
    mean = sorted.isEmpty ? nil : sorted.reduce(0, +) / Double(sorted.count)
    func at(_ q: Double) -> Double? { Statistics.percentile(sorted: sorted, q) }
    p50 = at(0.5)
    p95 = at(0.95)
    p99 = at(0.99)
  }
}

extension KPIStore {
  /// Records the start of a deployment (`deploy.started`, labels service and version).
  public func deploymentStarted(service: String, version: String, at time: Int64, source: String) async throws {
    try await record([
      KPISample(name: "deploy.started", labels: ["service": service, "version": version], value: 1, time: time, source: source)
    ])
  }

  /// Records the end of a deployment and its duration since the latest matching start
  /// (`deploy.duration`, seconds); throws when no start was recorded within `lookback` ms.
  @discardableResult
  public func deploymentFinished(service: String, version: String, at time: Int64, source: String, lookback: Int64 = 7 * 86_400_000) async throws
    -> Double
  {
    let labels = ["service": service, "version": version]
    guard let start = try await query(name: "deploy.started", since: time - lookback, until: time, labels: labels, limit: .max).last else {
      throw NovaError.notFound(
        "no deployment of \(service) \(version) was started in the last \(lookback / 86_400_000) days; run `nova kpi deploy start` first")
    }
    let seconds = Double(time - start.time) / 1000
    try await record([KPISample(name: "deploy.duration", labels: labels, value: seconds, unit: "s", time: time, source: source)])
    return seconds
  }
}

extension KPIStore {
  /// Every KPI's summary over one UTC day (`day` is its first millisecond), names sorted.
  public func dailySummary(day: Int64) async throws -> [KPISummary] {
    let end = day + 86_400_000 - 1
    let names = try await database.read { db in
      try String.fetchAll(db, sql: "SELECT DISTINCT name FROM nova_kpis WHERE time BETWEEN ? AND ? ORDER BY name", arguments: [day, end])
    }
    var summaries: [KPISummary] = []
    for name in names { summaries.append(try await summary(name: name, since: day, until: end)) }
    return summaries
  }

  /// Writes the day's summaries to `kpi/summary-YYYY-MM-DD.json` under `dataDirectory`; returns the path.
  @discardableResult
  public func writeDailySummary(day: Int64, dataDirectory: String, generatedAt: Int64) async throws -> String {
    let summaries = try await dailySummary(day: day)
    let date = String(AuditTime.string(day).prefix(10))
    let folder = URL(fileURLWithPath: dataDirectory).appendingPathComponent("kpi")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let url = folder.appendingPathComponent("summary-\(date).json")
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
    try encoder.encode(DailyKPISummary(day: date, generated_at: AuditTime.string(generatedAt), kpis: summaries))
      .write(to: url, options: .atomic)
    return url.path
  }

  /// The first millisecond of the UTC day holding `time`.
  public static func dayStart(_ time: Int64) -> Int64 { time - ((time % 86_400_000) + 86_400_000) % 86_400_000 }
}

/// `kpi/summary-YYYY-MM-DD.json`: every KPI of a UTC day at a glance.
public struct DailyKPISummary: Codable, Sendable, Equatable {
  public var day: String
  public var generated_at: String
  public var kpis: [KPISummary]
}
