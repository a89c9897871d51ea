import Foundation
import GRDB
import GRDBSQLite
import NovaCore
import NovaDatabase
import Synchronization

/// The embedded queue backend: its tables in a `NovaDatabase` (WAL mode, written through the
/// database's group-commit writer, read concurrently). Several processes may share the file.
public final class SQLiteJobQueue: JobQueue, JobStateListing, JobLogStore {
  /// How SQLite syncs the WAL: `normal` survives process crashes, `full` also power loss.
  public typealias Synchronous = NovaDatabase.Synchronous

  /// Settings for opening a queue together with its own database.
  public struct Configuration: Sendable {
    /// Path of the database file; its folder must exist and be writable.
    public var path: String
    public var synchronous: Synchronous
    public var retryPolicy: RetryPolicy
    /// How long a writer waits for another process's write lock before failing.
    public var busyTimeout: TimeInterval
    /// Most operations grouped into one transaction.
    public var maxBatchSize: Int
    public var clock: any NovaClock
    /// Records every job transition in the transaction that makes it (the audit log); nil
    /// records nothing.
    public var journal: (any JobTransitionJournal)?

    public init(
      path: String, synchronous: Synchronous = .normal, retryPolicy: RetryPolicy = RetryPolicy(),
      busyTimeout: TimeInterval = 10, maxBatchSize: Int = 1024,
      clock: any NovaClock = SystemClock(), journal: (any JobTransitionJournal)? = nil
    ) {
      self.path = path
      self.synchronous = synchronous
      self.retryPolicy = retryPolicy
      self.busyTimeout = busyTimeout
      self.maxBatchSize = maxBatchSize
      self.clock = clock
      self.journal = journal
    }
  }

  /// The database the queue's tables live in, shared with the application's other stores.
  public let database: NovaDatabase
  private let journal: (any JobTransitionJournal)?
  /// Backoff of failed attempts.
  public let retryPolicy: RetryPolicy
  /// Dates jobs, leases and backoff.
  public let clock: any NovaClock
  /// Signalled by whatever may make jobs claimable (waits for jobs end).
  private let wake = WakeSignal()
  /// Signalled by what may make jobs claimable besides an enqueue (parked claims, which an
  /// enqueue serves itself, are told to claim again).
  private let news = WakeSignal()
  private let parked = ParkedClaims()
  private let pendingEnqueues = PendingEnqueues()
  /// Ids strictly increase in enqueue order (claims take equal priorities by id).
  private let ids = JobID.Generator()
  private let knownQueues = Mutex<Set<String>>([])

  /// The queue in `database` (its tables created on first use), recording transitions in
  /// `journal` when given.
  public init(
    database: NovaDatabase, retryPolicy: RetryPolicy = RetryPolicy(), clock: any NovaClock = SystemClock(),
    journal: (any JobTransitionJournal)? = nil
  ) throws {
    self.database = database
    self.retryPolicy = retryPolicy
    self.clock = clock
    self.journal = journal
    try database.migrate("queue") { Self.registerMigrations(in: &$0) }
    try journal?.prepare(database)
    database.addWaiterService { [weak self] db, resumers in
      guard let self else { return }
      // Enqueues first: the claims parked then take what they stored.
      try self.storePendingEnqueues(db, &resumers)
      self.serveParked(db, &resumers)
    }
  }

  /// Opens (and creates or migrates) a database of its own at `configuration.path`.
  public convenience init(configuration: Configuration) throws {
    let database = try NovaDatabase(
      configuration: .init(
        path: configuration.path, synchronous: configuration.synchronous, busyTimeout: configuration.busyTimeout,
        maxBatchSize: configuration.maxBatchSize))
    try self.init(database: database, retryPolicy: configuration.retryPolicy, clock: configuration.clock, journal: configuration.journal)
  }

  /// Opens a queue at a path with default settings.
  public convenience init(path: String) throws {
    try self.init(configuration: Configuration(path: path))
  }

  private static func registerMigrations(in migrator: inout DatabaseMigrator) {
    migrator.registerMigration("v1-jobs") { db in
      try db.execute(
        sql: """
          CREATE TABLE nova_jobs (
            id TEXT PRIMARY KEY NOT NULL,
            queue TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload BLOB NOT NULL,
            priority INTEGER NOT NULL,
            state TEXT NOT NULL,
            run_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            idempotency_key TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER,
            result BLOB,
            last_error TEXT,
            lease_owner TEXT,
            lease_expires_at INTEGER,
            fencing_token INTEGER NOT NULL DEFAULT 0
          );
          CREATE INDEX nova_jobs_available ON nova_jobs(queue, priority DESC, id)
            WHERE state = 'available';
          CREATE INDEX nova_jobs_waiting ON nova_jobs(run_at) WHERE state IN ('scheduled', 'failed');
          CREATE INDEX nova_jobs_leases ON nova_jobs(lease_expires_at) WHERE state = 'running';
          -- Listing by state: the hot states have their own indexes (available, running) or
          -- are the bulk of recent rows (succeeded); the rest share this one.
          CREATE INDEX nova_jobs_listing ON nova_jobs(state, id)
            WHERE state NOT IN ('available', 'running', 'succeeded');
          CREATE UNIQUE INDEX nova_jobs_idempotency ON nova_jobs(queue, idempotency_key)
            WHERE idempotency_key IS NOT NULL;
          CREATE TABLE nova_queues (name TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;
          """)
    }
    migrator.registerMigration("v9-job-started") { db in
      // 0 while a claimed job waits in its worker's buffer: its attempt counts once it starts.
      try db.execute(sql: "ALTER TABLE nova_jobs ADD COLUMN started INTEGER NOT NULL DEFAULT 1")
    }
    migrator.registerMigration("v10-job-finished-index") { db in
      // The purge walks finished jobs by when they finished, never every old row.
      try db.execute(
        sql: "CREATE INDEX nova_jobs_finished ON nova_jobs(state, finished_at) WHERE finished_at IS NOT NULL")
    }
    migrator.registerMigration("v11-workers") { db in
      try db.execute(
        sql: "CREATE TABLE nova_workers (worker TEXT PRIMARY KEY NOT NULL, presence BLOB NOT NULL, expires_at INTEGER NOT NULL)")
    }
    migrator.registerMigration("v12-job-returns") { db in
      // Attempts given back because a lease expired before its start mark landed (bounded by
      // `JobQueue.freeReturns`).
      try db.execute(sql: "ALTER TABLE nova_jobs ADD COLUMN returns INTEGER NOT NULL DEFAULT 0")
    }
    migrator.registerMigration("v13-job-logs") { db in
      try db.execute(
        sql: """
          CREATE TABLE nova_job_logs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            stream TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at INTEGER NOT NULL);
          CREATE INDEX nova_job_logs_job ON nova_job_logs(job_id, seq);
          -- Retention follows the jobs': whichever way a job is deleted, its output goes with it.
          CREATE TRIGGER nova_job_logs_follow_jobs AFTER DELETE ON nova_jobs
          BEGIN DELETE FROM nova_job_logs WHERE job_id = OLD.id; END;
          """)
    }
    migrator.registerMigration("v14-job-placement") { db in
      // What a job asks of its host (JSON; NULL asks for nothing) and where its attempt was
      // placed. Claims walk the jobs that ask for something only while some wait: the partial
      // index finds them without touching the rest.
      try db.execute(
        sql: """
          ALTER TABLE nova_jobs ADD COLUMN requirements TEXT;
          ALTER TABLE nova_jobs ADD COLUMN placement TEXT;
          CREATE INDEX nova_jobs_placed ON nova_jobs(queue) WHERE state = 'available' AND requirements IS NOT NULL;
          """)
    }
    migrator.registerMigration("v15-queue-controls") { db in
      // Each queue's flow control (`QueueControls`) and the state its claims keep: the rate's
      // token bucket and the jobs handed out, which weights share by.
      try db.execute(
        sql: """
          ALTER TABLE nova_queues ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
          ALTER TABLE nova_queues ADD COLUMN max_running INTEGER;
          ALTER TABLE nova_queues ADD COLUMN rate REAL;
          ALTER TABLE nova_queues ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;
          ALTER TABLE nova_queues ADD COLUMN tokens REAL NOT NULL DEFAULT 0;
          ALTER TABLE nova_queues ADD COLUMN refilled_at INTEGER NOT NULL DEFAULT 0;
          ALTER TABLE nova_queues ADD COLUMN served INTEGER NOT NULL DEFAULT 0;
          """)
    }
    migrator.registerMigration("v16-concurrency-keys") { db in
      // A job's concurrency key and its kind's per-key limits; the queue's own per-key limits;
      // the per-key rate buckets. Claims walk the jobs that carry a key as they do those that
      // ask for something, and count a key's running jobs by the second index.
      try db.execute(
        sql: """
          ALTER TABLE nova_jobs ADD COLUMN concurrency_key TEXT;
          ALTER TABLE nova_jobs ADD COLUMN key_max_running INTEGER;
          ALTER TABLE nova_jobs ADD COLUMN key_rate REAL;
          ALTER TABLE nova_queues ADD COLUMN max_running_per_key INTEGER;
          ALTER TABLE nova_queues ADD COLUMN rate_per_key REAL;
          DROP INDEX nova_jobs_placed;
          CREATE INDEX nova_jobs_placed ON nova_jobs(queue)
            WHERE state = 'available' AND (requirements IS NOT NULL OR concurrency_key IS NOT NULL);
          CREATE INDEX nova_jobs_running_keys ON nova_jobs(queue, concurrency_key)
            WHERE state = 'running' AND concurrency_key IS NOT NULL;
          CREATE TABLE nova_key_buckets (
            queue TEXT NOT NULL, key TEXT NOT NULL, tokens REAL NOT NULL, refilled_at INTEGER NOT NULL,
            PRIMARY KEY (queue, key)) WITHOUT ROWID;
          """)
    }
    migrator.registerMigration("v17-reservations") { db in
      // The worker that reserved its host for a starving job, until its lease-long hold lapses.
      try db.execute(
        sql: """
          ALTER TABLE nova_jobs ADD COLUMN reserved_by TEXT;
          ALTER TABLE nova_jobs ADD COLUMN reserved_until INTEGER;
          """)
    }
    migrator.registerMigration("v18-key-bucket-expiry") { db in
      // When each per-key rate bucket is full again: from then on it says nothing that its
      // absence does not, and purges delete it (a fleet whose keys are tenants or requests would
      // otherwise keep one row per key for ever). Buckets from before wait a day.
      try db.execute(
        sql: """
          ALTER TABLE nova_key_buckets ADD COLUMN full_at INTEGER NOT NULL DEFAULT 0;
          UPDATE nova_key_buckets SET full_at = refilled_at + 86400000;
          """)
    }
    migrator.registerMigration("v19-job-counts") { db in
      // Jobs per queue, kind and state, kept in the transaction of every change (by triggers
      // until v22): counts (the console, /v1/queues/stats, the collector) read a few rows, never
      // a million.
      try db.execute(
        sql: """
          CREATE TABLE nova_job_counts (
            queue TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (queue, kind, state)) WITHOUT ROWID;
          INSERT INTO nova_job_counts (queue, kind, state, n) SELECT queue, kind, state, COUNT(*) FROM nova_jobs GROUP BY 1, 2, 3;
          INSERT OR IGNORE INTO nova_job_counts (queue, kind, state, n)
            SELECT pairs.queue, pairs.kind, states.column1, 0 FROM (SELECT DISTINCT queue, kind FROM nova_jobs) AS pairs
            CROSS JOIN (VALUES ('scheduled'), ('available'), ('running'), ('succeeded'), ('failed'), ('dead'), ('cancelled')) AS states;
          CREATE TRIGGER nova_job_counts_insert AFTER INSERT ON nova_jobs BEGIN
            UPDATE nova_job_counts SET n = n + 1 WHERE queue = NEW.queue AND kind = NEW.kind AND state = NEW.state;
          END;
          CREATE TRIGGER nova_job_counts_delete AFTER DELETE ON nova_jobs BEGIN
            UPDATE nova_job_counts SET n = n - 1 WHERE queue = OLD.queue AND kind = OLD.kind AND state = OLD.state;
          END;
          CREATE TRIGGER nova_job_counts_update AFTER UPDATE OF state ON nova_jobs WHEN OLD.state IS NOT NEW.state BEGIN
            UPDATE nova_job_counts SET n = n - 1 WHERE queue = OLD.queue AND kind = OLD.kind AND state = OLD.state;
            UPDATE nova_job_counts SET n = n + 1 WHERE queue = NEW.queue AND kind = NEW.kind AND state = NEW.state;
          END;
          """)
    }
    migrator.registerMigration("v20-listing-by-state") { db in
      // Listing newest first by queue and state, deep into a million jobs (the old index left
      // out available, running and succeeded, and being partial it served no listing: they
      // scanned the table from the newest job down).
      try db.execute(
        sql: """
          DROP INDEX IF EXISTS nova_jobs_listing;
          CREATE INDEX nova_jobs_queue_state ON nova_jobs(queue, state, id);
          """)
    }
    migrator.registerMigration("v21-listing-by-key") { db in
      // A listing by concurrency key alone reads its own index, newest first (only keyed jobs
      // are in it). Kind has none: an index every enqueue pays for, where a listing by kind
      // alone reads the table by id a bounded number of rows per page.
      try db.execute(
        sql: "CREATE INDEX nova_jobs_key ON nova_jobs(concurrency_key, id) WHERE concurrency_key IS NOT NULL")
    }
    migrator.registerMigration("v22-job-counts-kept-by-operations") { db in
      // Each operation writes what it changed in the counters (`JobCountChanges`), summed: the
      // triggers ran two updates per row as a program of their own, a third of the writer's time.
      try db.execute(
        sql: """
          DROP TRIGGER IF EXISTS nova_job_counts_insert;
          DROP TRIGGER IF EXISTS nova_job_counts_delete;
          DROP TRIGGER IF EXISTS nova_job_counts_update;
          UPDATE nova_job_counts SET n = 0;
          INSERT INTO nova_job_counts (queue, kind, state, n)
            SELECT queue, kind, state, COUNT(*) FROM nova_jobs WHERE true GROUP BY 1, 2, 3
            ON CONFLICT (queue, kind, state) DO UPDATE SET n = excluded.n;
          """)
    }
    migrator.registerMigration("v23-listing-at-rest") { db in
      // The listing index holds the states a job rests in, not the two every job passes through
      // on its way (an entry moved on enqueue, claim and completion cost a third of the writer's
      // SQL per job): available jobs are listed from the claims' index, running ones from the
      // leases' (see `newestIDs`).
      try db.execute(
        sql: """
          DROP INDEX IF EXISTS nova_jobs_queue_state;
          CREATE INDEX nova_jobs_queue_state ON nova_jobs(queue, state, id) WHERE \(restingStates);
          """)
    }
    migrator.registerMigration("v24-purge-by-listing") { db in
      // Purges walk the listing index by id, up to the ids made by their cutoff: an index on
      // when jobs finished cost every completion an entry.
      try db.execute(sql: "DROP INDEX IF EXISTS nova_jobs_finished")
    }
  }

  /// The condition of the listing index: a query names it word for word, so that SQLite sees
  /// that the index holds every row the query may want.
  package static let restingStates = "state NOT IN ('available', 'running')"

  // MARK: - Columns

  private static let columns =
    "id, queue, kind, payload, priority, state, run_at, attempts, max_attempts, idempotency_key, created_at, updated_at, started_at, finished_at, result, last_error, lease_owner, lease_expires_at, fencing_token, requirements, placement, concurrency_key, key_max_running, key_rate"

  private static func job(from row: Row) throws -> Job {
    let stateText: String = row[5]
    guard let state = JobState(rawValue: stateText) else {
      throw NovaError.storage("job \(row[0] as String) has unknown state '\(stateText)'")
    }
    return Job(
      id: JobID(row[0]), queue: row[1], kind: row[2], payload: row[3], priority: row[4],
      state: state, runAt: date(row[6]), attempts: row[7], maxAttempts: row[8],
      idempotencyKey: row[9], createdAt: date(row[10]), updatedAt: date(row[11]),
      startedAt: (row[12] as Int64?).map(date), finishedAt: (row[13] as Int64?).map(date),
      result: row[14], lastError: row[15], leaseOwner: row[16],
      leaseExpiresAt: (row[17] as Int64?).map(date), fencingToken: row[18],
      requirements: try (row[19] as String?).map { text throws(NovaError) in try JobRequirements.decoded(text) },
      placement: try (row[20] as String?).map { text throws(NovaError) in try JobPlacement.decoded(text) }, concurrencyKey: row[21],
      keyLimits: Self.keyLimits(row[22], row[23]))
  }

  private static func keyLimits(_ maxRunning: Int?, _ rate: Double?) -> KeyLimits? {
    maxRunning == nil && rate == nil ? nil : KeyLimits(maxRunning: maxRunning, ratePerSecond: rate)
  }

  private static func job(from raw: RawStatement) throws -> Job {
    let stateText = raw.string(5)
    guard let state = JobState(rawValue: stateText) else {
      throw NovaError.storage("job \(raw.string(0)) has unknown state '\(stateText)'")
    }
    return Job(
      id: JobID(raw.string(0)), queue: raw.string(1), kind: raw.string(2), payload: raw.data(3),
      priority: raw.int(4), state: state, runAt: date(raw.int64(6)), attempts: raw.int(7),
      maxAttempts: raw.int(8), idempotencyKey: raw.optionalString(9), createdAt: date(raw.int64(10)),
      updatedAt: date(raw.int64(11)), startedAt: raw.optionalInt64(12).map(date),
      finishedAt: raw.optionalInt64(13).map(date), result: raw.optionalData(14),
      lastError: raw.optionalString(15), leaseOwner: raw.optionalString(16),
      leaseExpiresAt: raw.optionalInt64(17).map(date), fencingToken: raw.int64(18),
      requirements: try raw.optionalString(19).map { text throws(NovaError) in try JobRequirements.decoded(text) },
      placement: try raw.optionalString(20).map { text throws(NovaError) in try JobPlacement.decoded(text) },
      concurrencyKey: raw.optionalString(21),
      keyLimits: keyLimits(raw.isNull(22) ? nil : raw.int(22), raw.isNull(23) ? nil : raw.double(23)))
  }

  private static func millis(_ date: Date) -> Int64 { date.millisecondsSince1970 }
  private static func date(_ millis: Int64) -> Date { Date(millisecondsSince1970: millis) }

  private var nowMillis: Int64 { Self.millis(clock.now()) }

  // MARK: - Enqueue

  public func enqueue(_ request: JobRequest) async throws -> EnqueueResult {
    try await enqueue(batch: [request])[0]
  }

  public func enqueue(batch requests: [JobRequest]) async throws -> [EnqueueResult] {
    if requests.isEmpty { return [] }
    return try await enqueue(requests, readBack: false).results
  }

  /// With a journal (the audit log in this database), held audit events are written with the job.
  public var writesHeldAuditEvents: Bool { journal != nil }

  /// Read back in the enqueue's own transaction: a single submission over HTTP answers with
  /// the stored job without a second trip to a reader.
  public func enqueueReadingBack(_ request: JobRequest) async throws -> (job: Job, existing: Bool) {
    let stored = try await enqueue([request], readBack: true)
    guard let job = stored.job else { throw NovaError.jobNotFound(stored.results[0].id) }
    return (job, stored.results[0].existing)
  }

  /// Hands `requests` to the writer, which stores them with every other enqueue waiting then,
  /// in one operation at the end of its next transaction (`PendingEnqueues`).
  private func enqueue(_ requests: [JobRequest], readBack: Bool) async throws -> PendingEnqueues.Stored {
    // A submission's policy decision, held to be written before its job in one transaction.
    let held = journal == nil ? nil : AuditContext.held
    let heldEvents = held?.events ?? []
    let actor = AuditContext.actor
    do {
      return try await withCheckedThrowingContinuation { continuation in
        let entry = PendingEnqueues.Entry(
          requests: requests, readBack: readBack, actor: actor, held: held, heldEvents: heldEvents, continuation: continuation)
        if pendingEnqueues.add(entry) {
          let pendingEnqueues = pendingEnqueues
          database.requestWaiterService { pendingEnqueues.failAll($0) }
        }
      }
    } catch {
      throw database.translate(error)
    }
  }

  /// Stores every pending enqueue (on the writer, at the end of a transaction). Each caller's
  /// jobs go in all or none (a savepoint where more than one statement could be undone); one
  /// caller's refusal (an idempotency conflict) leaves the others'.
  private func storePendingEnqueues(_ db: Database, _ resumers: inout [@Sendable ((any Error)?) -> Void]) throws {
    let entries = pendingEnqueues.takeAll()
    if entries.isEmpty { return }
    let now = clock.now()
    let time = Self.millis(now)
    let (journal, ids) = (journal, ids)
    let newQueues = knownQueues.withLock { known -> Set<String> in
      var fresh = Set<String>()
      for entry in entries { for request in entry.requests where !known.contains(request.queue) { fresh.insert(request.queue) } }
      return fresh
    }
    var counts = JobCountChanges()
    var stored = 0
    var answers: [(PendingEnqueues.Entry, Result<PendingEnqueues.Stored, any Error>)] = []
    answers.reserveCapacity(entries.count)
    var submissions: [JournalSubmission] = []
    submissions.reserveCapacity(entries.count)
    // Answered after the commit (or with its error), however this ends.
    defer {
      resumers.append { [answers] commitError in
        for (entry, answer) in answers {
          if let commitError {
            entry.continuation.resume(throwing: commitError)
          } else {
            if case .success = answer { entry.held?.written(entry.heldEvents.count) }
            entry.continuation.resume(with: answer)
          }
        }
      }
    }
    for queue in newQueues {
      try db.cachedStatement(sql: "INSERT OR IGNORE INTO nova_queues(name) VALUES (?)").execute(arguments: [queue])
    }
    for entry in entries {
      // A single job is one statement, undone by itself if it fails. The audit records of every
      // submission stored follow the loop.
      let savepoint = entry.requests.count > 1
      var entryCounts = JobCountChanges()
      // Without a savepoint, a failure after the job's row was written cannot be undone for
      // this caller alone: the whole transaction is.
      var wrote = false
      var fatal: (any Error)?
      func store() throws -> PendingEnqueues.Stored {
        var results: [EnqueueResult] = []
        results.reserveCapacity(entry.requests.count)
        var inserted: Job?
        for request in entry.requests {
          let (result, made) = try Self.insert(request, now: now, db: db, ids: ids, makingJob: entry.readBack)
          if let made { inserted = made }
          wrote = true
          if !result.existing { entryCounts.add(queue: request.queue, kind: request.kind, state: result.state) }
          results.append(result)
        }
        var job = inserted
        if entry.readBack, job == nil, let id = results.first?.id {
          let read = RawStatement(try db.cachedStatement(sql: "SELECT \(Self.columns) FROM nova_jobs WHERE id = ?"), in: db)
          defer { read.finish() }
          read.bind(1, id.rawValue)
          if try read.step() { job = try Self.job(from: read) }
        }
        return PendingEnqueues.Stored(results: results, job: job)
      }
      let answer = Result { () throws -> PendingEnqueues.Stored in
        if savepoint { return try Self.enqueueSavepoint.run(in: db, store) }
        do {
          return try store()
        } catch {
          if wrote { fatal = error }
          throw error
        }
      }
      if case .success(let done) = answer {
        counts.merge(entryCounts)
        stored += done.results.count
        if journal != nil {
          let transitions = zip(entry.requests, done.results).compactMap { request, result -> JobTransition? in
            result.existing
              ? nil
              : JobTransition(
                event: .enqueued, job: result.id, queue: request.queue, kind: request.kind, from: nil,
                to: result.state, attempt: 0, time: time)
          }
          submissions.append(JournalSubmission(held: entry.heldEvents, transitions: transitions, actor: entry.actor))
        }
      }
      answers.append((entry, answer))
      if let fatal { throw fatal }
      // SQLite rolled the whole transaction back itself (I/O, full disk): nobody's jobs stay.
      if !db.isInsideTransaction, case .failure(let error) = answer { throw error }
    }
    // Every stored submission's records in one append, each caller's decision before its jobs'
    // transitions. Failing here fails the whole transaction, every caller in it (before, a
    // multi-job submission's failing record undid that submission alone): no job commits
    // without its record.
    if let journal, !submissions.isEmpty { try journal.record(submissions: submissions, in: DatabaseTransaction(db)) }
    try counts.save(db)
    resumers.append { [stored] commitError in
      guard commitError == nil, stored > 0 else { return }
      if !newQueues.isEmpty { self.knownQueues.withLock { $0.formUnion(newQueues) } }
      self.wake.signal()
    }
  }

  /// Inserts a job unless its idempotency key names one already; `makingJob`, also returns the
  /// job as written (nil for an existing one): what reading its row back gives, without the read.
  private static func insert(
    _ request: JobRequest, now: Date, db: Database, ids: JobID.Generator, makingJob: Bool = false
  ) throws -> (EnqueueResult, Job?) {
    if let key = request.idempotencyKey {
      let existing = try Row.fetchOne(
        db.cachedStatement(sql: "SELECT id, state, kind, payload FROM nova_jobs WHERE queue = ? AND idempotency_key = ?"),
        arguments: [request.queue, key])
      if let existing {
        // The same key for another job is a mistake the caller must hear about, not a success.
        guard existing[2] as String == request.kind, (existing[3] as Data?) ?? Data() == request.payload else {
          throw NovaError.idempotencyConflict(key: key, existing: JobID(existing[0]))
        }
        return (EnqueueResult(id: JobID(existing[0]), state: JobState(rawValue: existing[1]) ?? .available, existing: true), nil)
      }
    }
    let runAt = max(request.runAt ?? now, now)
    let state: JobState = runAt > now ? .scheduled : .available
    let id = ids.next(now: now)
    let nowMillis = millis(now)
    let insert = RawStatement(
      try db.cachedStatement(
        sql: """
          INSERT INTO nova_jobs (id, queue, kind, payload, priority, state, run_at, max_attempts,
            idempotency_key, created_at, updated_at, requirements, concurrency_key, key_max_running, key_rate)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """), in: db)
    insert.bind(1, id.rawValue)
    insert.bind(2, request.queue)
    insert.bind(3, request.kind)
    insert.bind(4, request.payload)
    insert.bind(5, request.priority)
    insert.bind(6, state.rawValue)
    insert.bind(7, millis(runAt))
    insert.bind(8, request.maxAttempts)
    insert.bind(9, request.idempotencyKey)
    insert.bind(10, nowMillis)
    insert.bind(11, nowMillis)
    insert.bind(12, request.requirements?.encoded())
    insert.bind(13, request.concurrencyKey)
    let limits = request.concurrencyKey == nil ? nil : request.keyLimits
    if let maxRunning = limits?.maxRunning { insert.bind(14, maxRunning) } else { insert.bind(14, nil as String?) }
    if let rate = limits?.ratePerSecond { insert.bind(15, rate) } else { insert.bind(15, nil as String?) }
    _ = try insert.run()
    let result = EnqueueResult(id: id, state: state, existing: false)
    guard makingJob else { return (result, nil) }
    return (
      result,
      Job(
        id: id, queue: request.queue, kind: request.kind, payload: request.payload, priority: request.priority, state: state,
        runAt: date(millis(runAt)), attempts: 0, maxAttempts: request.maxAttempts, idempotencyKey: request.idempotencyKey,
        createdAt: date(nowMillis), updatedAt: date(nowMillis),
        requirements: request.requirements,
        concurrencyKey: request.concurrencyKey, keyLimits: keyLimits(limits?.maxRunning, limits?.ratePerSecond))
    )
  }

  // MARK: - Claim

  /// Due jobs made available per claim: a burst of due jobs is promoted over several claims,
  /// so no transaction holds the writer long (heartbeats and completions wait on it). With every
  /// promotion audited, 1,000 a transaction let a concurrent heartbeat wait up to 105 ms
  /// (`nova bench promotion`, 200,000 jobs due at once); 500 keeps it well under 100 ms.
  public static let promotionBatch = 500

  public func claim(_ request: ClaimRequest) async throws -> [JobLease] {
    guard request.limit > 0 else { return [] }
    let (journal, actor, clock) = (journal, AuditContext.actor, clock)
    return try await database.write { db -> [JobLease] in
      try Self.claim(request, now: Self.millis(clock.now()), journal: journal, actor: actor, db: db)
    }
  }

  /// Claims; with nothing to take, the claim parks at the writer in the same transaction, and
  /// the next transaction that enqueues serves it before its commit (`ParkedClaims`). It waits
  /// up to `timeout`, or until news an enqueue does not bring (a release, a retry, another
  /// process's commit), and then answers with nothing.
  public func claim(_ request: ClaimRequest, waitingUpTo timeout: Duration) async throws -> [JobLease] {
    guard request.limit > 0 else { return [] }
    let (journal, clock, parked) = (journal, clock, parked)
    let claim = parked.make(request, actor: AuditContext.actor)
    let leases: [JobLease]
    do {
      leases = try await database.write { db -> [JobLease] in
        let leases = try Self.claim(request, now: Self.millis(clock.now()), journal: journal, actor: claim.actor, db: db)
        if leases.isEmpty { parked.park(claim, heldBack: try Self.hasAvailableJobs(request.queues, db)) }
        return leases
      }
    } catch {
      // A commit that failed after the claim parked: the claim may have been served since.
      guard parked.giveUp(claim) else { throw error }
      let answer = try await claim.wait().get()
      if answer.isEmpty { throw error }
      return answer
    }
    if !leases.isEmpty { return leases }
    // Another process's commit from now on ends the wait (its jobs are not served here).
    let mark = database.foreignCommits
    let watcher = Task {
      await self.waitForNews(timeout: timeout, since: mark)
      parked.giveUp(claim)
    }
    defer { watcher.cancel() }
    return try await withTaskCancellationHandler {
      try await claim.wait().get()
    } onCancel: {
      parked.giveUp(claim)
    }
  }

  /// Claims parked now, waiting for a job.
  package var parkedClaimCount: Int { parked.count }

  /// Enqueues waiting for the writer to store them together.
  package var pendingEnqueueCount: Int { pendingEnqueues.count }

  /// Each caller's jobs in a shared store of enqueues, and each parked claim served at a
  /// commit, go in all or none.
  private static let enqueueSavepoint = CachedSavepoint("nova_enqueue")
  private static let parkedClaimSavepoint = CachedSavepoint("nova_parked_claim")

  /// Serves the parked claims at the end of a transaction that enqueued (on the writer), each
  /// in a savepoint of its own; adds the resumers of those it leased jobs to (or failed).
  private func serveParked(_ db: Database, _ resumers: inout [@Sendable ((any Error)?) -> Void]) {
    let claims = parked.takeAll()
    if claims.isEmpty { return }
    let now = nowMillis
    for claim in claims {
      let result = Result { () throws -> [JobLease] in
        try Self.parkedClaimSavepoint.run(in: db) {
          try Self.claim(claim.request, now: now, journal: journal, actor: claim.actor, db: db)
        }
      }
      if case .success(let leases) = result, leases.isEmpty {
        parked.servedNothing(claim, heldBack: (try? Self.hasAvailableJobs(claim.request.queues, db)) ?? true)
      } else {
        resumers.append(parked.servedResumer(claim, result))
      }
    }
  }

  /// Whether `queues` (every queue when empty) hold an available job: a claim that took none
  /// of them was held back (by a kind, a limit, its host's free devices), and a job that ends
  /// may free what it waits for.
  private static func hasAvailableJobs(_ queues: [String], _ db: Database) throws -> Bool {
    if queues.isEmpty {
      return try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM nova_jobs WHERE state = 'available')")) ?? true
    }
    let any = try db.cachedStatement(
      sql: "SELECT EXISTS (SELECT 1 FROM nova_jobs INDEXED BY nova_jobs_available WHERE state = 'available' AND queue = ?)")
    for queue in queues where try Bool.fetchOne(any, arguments: [queue]) ?? true { return true }
    return false
  }

  /// One claim, in the writer's transaction.
  private static func claim(
    _ request: ClaimRequest, now: Int64, journal: (any JobTransitionJournal)?, actor: String, db: Database
  ) throws -> [JobLease] {
    let (queues, worker, limit, starting) = (request.queues, request.worker, request.limit, request.starting)
    let expires = now + Int64(request.leaseDuration.seconds * 1000)
    // Kinds the worker does not run are passed over (see `claimSQL(for:)`).
    let patterns = request.kinds.patterns
    let sql = Self.claimSQL(for: patterns)
    let candidateKindClause = sql.candidateKindClause
    // Due delayed and retrying jobs become available. A failed job has run at least once, a
    // scheduled one never (retry resets attempts but makes the job available at once).
    // Run on every claim, nearly always to find nothing: read without GRDB's row machinery.
    let promote = RawStatement(
      try db.cachedStatement(
        sql: """
          UPDATE nova_jobs SET state = 'available', updated_at = ?1
          WHERE id IN (
            SELECT id FROM nova_jobs WHERE state IN ('scheduled', 'failed') AND run_at <= ?1 ORDER BY run_at LIMIT ?2)
          RETURNING id, queue, kind, attempts
          """), in: db)
    var transitions: [JobTransition] = []
    var counts = JobCountChanges()
    do {
      defer { promote.finish() }
      promote.bind(1, now)
      promote.bind(2, Self.promotionBatch)
      while try promote.step() {
        let (queue, kind, attempts) = (promote.string(1), promote.string(2), promote.int(3))
        let from: JobState = attempts > 0 ? .failed : .scheduled
        counts.move(queue: queue, kind: kind, from: from, to: .available)
        if journal != nil {
          transitions.append(
            JobTransition(
              event: .promoted, job: JobID(promote.string(0)), queue: queue, kind: kind,
              from: from, to: .available, attempt: attempts, time: now))
        }
      }
    }
    let requested = queues.isEmpty ? try Self.queueNames(db) : queues
    // Queues under flow control take at most their allowance (none while paused).
    let states = try Self.controlStates(requested, db: db)
    let controlled = states.filter { !$0.value.controls.isDefault }
    var caps: [String: Int] = [:]
    for (name, control) in controlled {
      var running = 0
      if control.controls.maxRunning != nil {
        running =
          try Int.fetchOne(
            db.cachedStatement(sql: "SELECT COALESCE(SUM(n), 0) FROM nova_job_counts WHERE queue = ? AND state = 'running'"),
            arguments: [name]) ?? 0
      }
      caps[name] = control.allowance(running: running, at: now)
    }
    let names = requested.filter { caps[$0] != 0 }
    let weighted = names.count > 1 && names.contains { (controlled[$0]?.controls.weight ?? 1) != 1 }
    // While jobs that ask for something wait in these queues, the claim walks the queues'
    // first jobs in order and places each that fits; otherwise every job fits any worker.
    // (Named: the planner otherwise took the listing index's (queue, state) range and read
    // every available job of the queue on every claim, which halved `bench queue`.)
    let placedWaiting = try db.cachedStatement(sql: Self.placedWaitingSQL)
    var leases: [JobLease] = []
    // Shared by weight: how many each has (up to the limit) decides nothing but the bound.
    var shares: [String: Int]?
    if weighted {
      var queues: [(name: String, weight: Int, served: Int64, available: Int)] = []
      let count = try db.cachedStatement(
        sql: "SELECT COUNT(*) FROM (SELECT 1 FROM nova_jobs WHERE state = 'available' AND queue = ?\(candidateKindClause) LIMIT ?)")
      for name in names {
        let values: [(any DatabaseValueConvertible)?] = [name] + patterns + [limit]
        let available = try Int.fetchOne(count, arguments: StatementArguments(values)) ?? 0
        let state = states[name]
        queues.append((name, state?.controls.weight ?? 1, state?.served ?? 0, min(available, caps[name] ?? available)))
      }
      shares = WeightedShare.split(limit: limit, queues: queues)
    }
    let placed = RawStatement(placedWaiting, in: db)
    let placing = try names.contains { name in
      defer { placed.finish() }
      placed.bind(1, name)
      return try placed.step()
    }
    if placing {
      // A placing claim keeps to the weights' shares as its per-queue bounds.
      var bounds = caps
      for (name, share) in shares ?? [:] { bounds[name] = min(bounds[name] ?? share, share) }
      for name in names where shares != nil && shares?[name] == nil { bounds[name] = 0 }
      leases = try Self.claimPlacing(
        request, queues: names, kinds: patterns, kindClause: candidateKindClause, caps: bounds,
        keyLimits: names.reduce(into: [String: KeyLimits]()) { $0[$1] = states[$1]?.controls.keyLimits }, now: now, expires: expires, db: db)
    } else {
      // How many to take from each queue: one queue takes all; several are merged by priority
      // first, since `queue IN (...)` would sort every available job of those queues.
      var counts: [(queue: String, count: Int)] = []
      if names.count == 1 {
        counts = [(names[0], min(limit, caps[names[0]] ?? limit))]
      } else if let shares {
        counts = shares.map { ($0.key, $0.value) }
      } else {
        var candidates: [(queue: String, id: String, priority: Int)] = []
        let select = try db.cachedStatement(
          sql: """
            SELECT id, priority FROM nova_jobs WHERE state = 'available' AND queue = ?\(candidateKindClause)
            ORDER BY priority DESC, id LIMIT ?
            """)
        for name in names {
          let values: [(any DatabaseValueConvertible)?] = [name] + patterns + [limit]
          let rows = try Row.fetchCursor(select, arguments: StatementArguments(values))
          while let row = try rows.next() { candidates.append((name, row[0], row[1])) }
        }
        candidates.sort { $0.priority != $1.priority ? $0.priority > $1.priority : $0.id < $1.id }
        var perQueue: [String: Int] = [:]
        var taken = 0
        for candidate in candidates where taken < limit && perQueue[candidate.queue, default: 0] < caps[candidate.queue] ?? limit {
          perQueue[candidate.queue, default: 0] += 1
          taken += 1
        }
        counts = perQueue.map { ($0.key, $0.value) }
      }
      let update = try db.cachedStatement(sql: sql.update)
      let expiresAt = Self.date(expires)
      for (name, count) in counts {
        let raw = RawStatement(update, in: db)
        // Reset however this ends: a job that fails to decode leaves the UPDATE half-stepped.
        defer { raw.finish() }
        raw.bind(1, worker)
        raw.bind(2, expires)
        raw.bind(3, now)
        raw.bind(4, name)
        raw.bind(5, count)
        raw.bind(6, starting >= limit ? 1 : 0)
        for (index, pattern) in patterns.enumerated() { raw.bind(Int32(index + 7), pattern) }
        while try raw.step() {
          let job = try Self.job(from: raw)
          leases.append(JobLease(job: job, token: job.fencingToken, worker: worker, expiresAt: expiresAt))
        }
      }
    }
    if !controlled.isEmpty {
      // The rate's bucket loses what was taken; weights count what each queue handed out
      // (every queue of a claim that shares by weight, the default weight's included).
      let update = try db.cachedStatement(
        sql: "UPDATE nova_queues SET tokens = coalesce(?, tokens), refilled_at = coalesce(?, refilled_at), served = served + ? WHERE name = ?")
      for name in weighted ? names : Array(controlled.keys) {
        let taken = leases.lazy.filter { $0.job.queue == name }.count
        let tokens = controlled[name]?.tokens(at: now) ?? .infinity
        try update.execute(arguments: [tokens.isFinite ? tokens - Double(taken) : nil, tokens.isFinite ? now : nil, taken, name])
      }
    }
    for lease in leases { counts.move(queue: lease.job.queue, kind: lease.job.kind, from: .available, to: .running) }
    try counts.save(db)
    if let journal {
      for lease in leases {
        transitions.append(
          JobTransition(
            event: .claimed, job: lease.id, queue: lease.job.queue, kind: lease.job.kind, from: .available,
            to: .running, attempt: lease.job.attempts, time: now, detail: worker))
      }
      try journal.record(transitions, actor: actor, in: DatabaseTransaction(db))
    }
    leases.sort {
      $0.job.priority != $1.job.priority ? $0.job.priority > $1.job.priority : $0.job.id < $1.job.id
    }
    if starting < limit {
      // Only the first `starting` run at once; the rest wait in the worker's buffer.
      let mark = try db.cachedStatement(sql: "UPDATE nova_jobs SET started = 1 WHERE id = ?")
      for index in leases.indices {
        leases[index].started = index < starting
        if index < starting { try mark.execute(arguments: [leases[index].id.rawValue]) }
      }
    }
    return leases
  }

  /// A claim's SQL for a kind filter: the kinds as a clause with plain parameters (for the
  /// candidate reads), and the claim's UPDATE (its kinds numbered from ?7).
  private struct ClaimSQL: Sendable {
    let candidateKindClause: String
    let update: String
  }

  /// Built once per filter shape (which patterns hold `*`), not on every claim: building the
  /// texts was a twentieth of a claim's time.
  private static let claimSQLByShape = Mutex<[[Bool]: ClaimSQL]>([:])

  private static func claimSQL(for patterns: [String]) -> ClaimSQL {
    let shape = patterns.map { $0.contains("*") }
    if let cached = claimSQLByShape.withLock({ $0[shape] }) { return cached }
    // Kinds the worker does not run are passed over (GLOB's `*` is the filter's `*`; kind names
    // hold no other GLOB character). A name without `*` is compared with `=`: SQLite prepares a
    // statement again whenever a GLOB's pattern is bound (the pattern may change its plan), and
    // that was a sixth of the writer's time at a steady 8,000 jobs a second.
    func match(_ glob: Bool, _ parameter: String) -> String { glob ? "kind GLOB \(parameter)" : "kind = \(parameter)" }
    let kindClause =
      shape.isEmpty ? "" : " AND (" + shape.enumerated().map { match($1, "?\($0 + 7)") }.joined(separator: " OR ") + ")"
    let built = ClaimSQL(
      candidateKindClause: shape.isEmpty ? "" : " AND (" + shape.map { match($0, "?") }.joined(separator: " OR ") + ")",
      update: """
        UPDATE nova_jobs SET state = 'running', attempts = attempts + 1, started = ?6,
          fencing_token = fencing_token + 1, lease_owner = ?1, lease_expires_at = ?2,
          started_at = ?3, updated_at = ?3
        WHERE id IN (SELECT id FROM nova_jobs WHERE state = 'available' AND queue = ?4\(kindClause)
          ORDER BY priority DESC, id LIMIT ?5)
        RETURNING \(columns)
        """)
    // Filters come from configuration: a handful of shapes in a process.
    claimSQLByShape.withLock { if $0.count < 256 { $0[shape] = built } }
    return built
  }

  /// Every queue's name (a claim from every queue reads them each time).
  private static func queueNames(_ db: Database) throws -> [String] {
    let read = RawStatement(try db.cachedStatement(sql: "SELECT name FROM nova_queues"), in: db)
    defer { read.finish() }
    var names: [String] = []
    while try read.step() { names.append(read.string(0)) }
    return names
  }

  /// How many of each queue's first available jobs a placing claim looks at beyond its limit:
  /// jobs that fit nowhere near the front do not hide those behind them that fit.
  public static let placementScan = 500

  /// A claim that places: the queues' first available jobs merged by priority then age, each
  /// taken when it fits what is still free (jobs that ask for nothing always fit).
  private static func claimPlacing(
    _ request: ClaimRequest, queues: [String], kinds: [String], kindClause: String, caps: [String: Int], keyLimits: [String: KeyLimits],
    now: Int64, expires: Int64, db: Database
  ) throws -> [JobLease] {
    // Most claims are settled by the first few jobs in order: a short look first, and the long
    // one only when that one ran out of jobs before it had enough.
    var walk = try walkPlacing(
      request, queues: queues, kinds: kinds, kindClause: kindClause, caps: caps, keyLimits: keyLimits, now: now, db: db,
      look: request.limit + request.limit / 4 + 16, short: true)
    if !walk.settled {
      walk = try walkPlacing(
        request, queues: queues, kinds: kinds, kindClause: kindClause, caps: caps, keyLimits: keyLimits, now: now, db: db,
        look: request.limit + placementScan, short: false)
    }
    let (picked, reserved, keys) = (walk.picked, walk.reserved, walk.keys)
    try keys.save()
    // The reservation is held as long as a lease: a worker that stops claiming lets it lapse.
    let reserve = try db.cachedStatement(sql: "UPDATE nova_jobs SET reserved_by = ?, reserved_until = ? WHERE id = ? AND state = 'available'")
    for id in reserved { try reserve.execute(arguments: [request.worker, expires, id]) }
    let update = try db.cachedStatement(
      sql: """
        UPDATE nova_jobs SET state = 'running', attempts = attempts + 1, started = ?6,
          fencing_token = fencing_token + 1, lease_owner = ?1, lease_expires_at = ?2,
          started_at = ?3, updated_at = ?3, placement = ?5, reserved_by = NULL, reserved_until = NULL
        WHERE id = ?4 AND state = 'available'
        RETURNING \(columns)
        """)
    var leases: [JobLease] = []
    // Those placed nowhere (they ask for nothing) in one statement; the others one by one, each
    // with its placement.
    let unplaced = picked.filter { $0.placement == nil }.map(\.id)
    if !unplaced.isEmpty {
      let batch = try db.cachedStatement(
        sql: """
          UPDATE nova_jobs SET state = 'running', attempts = attempts + 1, started = ?5,
            fencing_token = fencing_token + 1, lease_owner = ?1, lease_expires_at = ?2,
            started_at = ?3, updated_at = ?3, placement = NULL, reserved_by = NULL, reserved_until = NULL
          WHERE id IN (SELECT value FROM json_each(?4)) AND state = 'available'
          RETURNING \(columns)
          """)
      let raw = RawStatement(batch, in: db)
      defer { raw.finish() }
      raw.bind(1, request.worker)
      raw.bind(2, expires)
      raw.bind(3, now)
      raw.bind(4, String(decoding: try JSONEncoder().encode(unplaced), as: UTF8.self))
      raw.bind(5, request.starting >= request.limit ? 1 : 0)
      while try raw.step() {
        let job = try job(from: raw)
        leases.append(JobLease(job: job, token: job.fencingToken, worker: request.worker, expiresAt: date(expires)))
      }
    }
    for (id, placement) in picked where placement != nil {
      let raw = RawStatement(update, in: db)
      defer { raw.finish() }
      raw.bind(1, request.worker)
      raw.bind(2, expires)
      raw.bind(3, now)
      raw.bind(4, id)
      raw.bind(5, placement?.encoded())
      raw.bind(6, request.starting >= request.limit ? 1 : 0)
      while try raw.step() {
        let job = try job(from: raw)
        leases.append(JobLease(job: job, token: job.fencingToken, worker: request.worker, expiresAt: date(expires)))
      }
    }
    return leases
  }

  /// One walk of a placing claim over each queue's first `look` available jobs. A short one is
  /// settled when it took all it may, or saw every job that could come before one it has not.
  private static func walkPlacing(
    _ request: ClaimRequest, queues: [String], kinds: [String], kindClause: String, caps: [String: Int], keyLimits: [String: KeyLimits],
    now: Int64, db: Database, look: Int, short: Bool
  ) throws -> (picked: [(id: String, placement: JobPlacement?)], reserved: [String], keys: KeyGate, settled: Bool) {
    let select = try db.cachedStatement(
      sql: """
        SELECT id, priority, requirements, concurrency_key, key_max_running, key_rate, run_at, reserved_by, reserved_until
        FROM nova_jobs WHERE state = 'available' AND queue = ?\(kindClause)
        ORDER BY priority DESC, id LIMIT ?
        """)
    var candidates:
      [(id: String, queue: String, priority: Int, requirements: String?, key: String?, limits: KeyLimits, starving: Bool, reservable: Bool)] =
        []
    // The last job looked at in each queue that has more: past it, jobs of that queue are unseen.
    var edges: Set<String> = []
    let starvingSince = request.reserveAfter.map { now - Int64($0.seconds * 1000) }
    for name in queues {
      let values: [(any DatabaseValueConvertible)?] = [name] + kinds + [look]
      let rows = try Row.fetchCursor(select, arguments: StatementArguments(values))
      var count = 0
      while let row = try rows.next() {
        let reservedBy: String? = row[7]
        let reservable = reservedBy == nil || reservedBy == request.worker || (row[8] as Int64? ?? 0) <= now
        candidates.append(
          (
            row[0], name, row[1], row[2], row[3], KeyLimits(maxRunning: row[4], ratePerSecond: row[5]),
            starvingSince.map { (row[6] as Int64) <= $0 } ?? false, reservable
          ))
        count += 1
      }
      if short, count == look, let last = candidates.last { edges.insert(last.id) }
    }
    var keys = KeyGate(now: now, db: db)
    candidates.sort { $0.priority != $1.priority ? $0.priority > $1.priority : $0.id < $1.id }
    var walk = PlacementWalk(free: request.capacity, total: request.reserveAfter == nil ? nil : request.totalCapacity)
    var picked: [(id: String, placement: JobPlacement?)] = []
    var reserved: [String] = []
    var perQueue: [String: Int] = [:]
    for candidate in candidates {
      if picked.count >= request.limit { break }
      if edges.contains(candidate.id) { return (picked, reserved, keys, false) }
      if let cap = caps[candidate.queue], perQueue[candidate.queue, default: 0] >= cap { continue }
      let limits = candidate.limits.tightened(by: keyLimits[candidate.queue])
      if let key = candidate.key, !limits.isEmpty, try !keys.admits(queue: candidate.queue, key: key, limits: limits) { continue }
      switch try walk.admit(stored: candidate.requirements, starving: candidate.starving, reservable: candidate.reservable) {
      case .take(let placement):
        picked.append((candidate.id, placement))
        perQueue[candidate.queue, default: 0] += 1
        if let key = candidate.key, !limits.isEmpty { keys.take(queue: candidate.queue, key: key, limits: limits) }
      case .reserve: reserved.append(candidate.id)
      case .pass: break
      }
    }
    return (picked, reserved, keys, true)
  }

  /// The per-key limits of one claim: running jobs per key counted once, rate buckets read once
  /// and written back with what the claim took.
  struct KeyGate {
    let now: Int64
    let db: Database
    var running: [[String]: Int] = [:]
    var buckets: [[String]: (tokens: Double, rate: Double)] = [:]

    init(now: Int64, db: Database) {
      self.now = now
      self.db = db
    }

    /// Whether one more job of `key` may start now.
    mutating func admits(queue: String, key: String, limits: KeyLimits) throws -> Bool {
      let id = [queue, key]
      if let maxRunning = limits.maxRunning {
        if running[id] == nil {
          running[id] =
            try Int.fetchOne(
              db.cachedStatement(sql: "SELECT COUNT(*) FROM nova_jobs WHERE state = 'running' AND queue = ? AND concurrency_key = ?"),
              arguments: [queue, key]) ?? 0
        }
        if running[id, default: 0] >= maxRunning { return false }
      }
      if let rate = limits.ratePerSecond {
        if buckets[id] == nil {
          let burst = max(1, rate)
          let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT tokens, refilled_at FROM nova_key_buckets WHERE queue = ? AND key = ?"), arguments: [queue, key])
          let tokens = row.map { min(burst, ($0[0] as Double) + Double(max(0, now - ($0[1] as Int64))) / 1000 * rate) } ?? burst
          buckets[id] = (tokens, rate)
        }
        if (buckets[id]?.tokens ?? 0) < 1 { return false }
      }
      return true
    }

    /// Counts one job of `key` taken.
    mutating func take(queue: String, key: String, limits: KeyLimits) {
      let id = [queue, key]
      if limits.maxRunning != nil { running[id, default: 0] += 1 }
      if limits.ratePerSecond != nil { buckets[id]?.tokens -= 1 }
    }

    /// Writes the buckets back, each with when it is full again.
    func save() throws {
      let upsert = try db.cachedStatement(
        sql: "INSERT OR REPLACE INTO nova_key_buckets (queue, key, tokens, refilled_at, full_at) VALUES (?, ?, ?, ?, ?)")
      for (id, bucket) in buckets {
        let full = now + Int64((max(1, bucket.rate) - bucket.tokens) / bucket.rate * 1000) + 1
        try upsert.execute(arguments: [id[0], id[1], bucket.tokens, now, full])
      }
    }
  }

  /// The flow control of each of `queues` (one lookup each by name).
  private static func controlStates(_ queues: [String], db: Database) throws -> [String: QueueControlState] {
    var states: [String: QueueControlState] = [:]
    let select = try db.cachedStatement(
      sql: """
        SELECT paused, max_running, rate, weight, tokens, refilled_at, served, max_running_per_key, rate_per_key
        FROM nova_queues WHERE name = ?
        """)
    // Read on every claim: without GRDB's row machinery.
    let raw = RawStatement(select, in: db)
    defer { raw.finish() }
    for name in queues {
      raw.finish()
      raw.bind(1, name)
      guard try raw.step() else { continue }
      states[name] = QueueControlState(
        controls: QueueControls(
          paused: raw.int(0) == 1, maxRunning: raw.isNull(1) ? nil : raw.int(1), ratePerSecond: raw.isNull(2) ? nil : raw.double(2),
          weight: raw.int(3), maxRunningPerKey: raw.isNull(7) ? nil : raw.int(7), ratePerKey: raw.isNull(8) ? nil : raw.double(8)),
        tokens: raw.double(4), refilledAt: raw.int64(5), served: raw.int64(6))
    }
    return states
  }

  public func controls() async throws -> [String: QueueControls] {
    try await database.read { db in
      var all: [String: QueueControls] = [:]
      let rows = try Row.fetchCursor(
        db, sql: "SELECT name, paused, max_running, rate, weight, max_running_per_key, rate_per_key FROM nova_queues")
      while let row = try rows.next() {
        all[row[0]] = QueueControls(
          paused: row[1] as Int == 1, maxRunning: row[2], ratePerSecond: row[3], weight: row[4], maxRunningPerKey: row[5], ratePerKey: row[6])
      }
      return all
    }
  }

  public func setControls(_ controls: QueueControls, queue: String) async throws {
    try controls.validate()
    try JobRequest.validateName(queue, field: "queue")
    try await database.write(servesWaiters: true) { db in
      try db.execute(sql: "INSERT OR IGNORE INTO nova_queues(name) VALUES (?)", arguments: [queue])
      // A new rate starts with a full bucket.
      try db.execute(
        sql: """
          UPDATE nova_queues SET paused = ?, max_running = ?, weight = ?,
            tokens = CASE WHEN rate IS ? THEN tokens ELSE 0 END, refilled_at = CASE WHEN rate IS ? THEN refilled_at ELSE 0 END,
            rate = ?, max_running_per_key = ?, rate_per_key = ?
          WHERE name = ?
          """,
        arguments: [
          controls.paused ? 1 : 0, controls.maxRunning, controls.weight, controls.ratePerSecond, controls.ratePerSecond,
          controls.ratePerSecond, controls.maxRunningPerKey, controls.ratePerKey, queue,
        ])
    }
    knownQueues.withLock { _ = $0.insert(queue) }
    signalNews()
  }

  // MARK: - Leases

  public func heartbeat(_ leases: [JobLease], leaseDuration: Duration) async throws -> [JobID: HeartbeatOutcome] {
    if leases.isEmpty { return [:] }
    let now = nowMillis
    let expires = now + Int64(leaseDuration.seconds * 1000)
    return try await database.write(savepoint: false) { db -> [JobID: HeartbeatOutcome] in
      let update = try db.cachedStatement(
        sql: """
          UPDATE nova_jobs SET lease_expires_at = ?, updated_at = ?
          WHERE id = ? AND state = 'running' AND fencing_token = ?
          """)
      var outcomes: [JobID: HeartbeatOutcome] = [:]
      for lease in leases {
        try update.execute(arguments: [expires, now, lease.id.rawValue, lease.token])
        if db.changesCount > 0 {
          outcomes[lease.id] = .extended(Self.date(expires))
        } else {
          let state = try String.fetchOne(
            db.cachedStatement(sql: "SELECT state FROM nova_jobs WHERE id = ?"), arguments: [lease.id.rawValue])
          outcomes[lease.id] = state == JobState.cancelled.rawValue ? .cancelled : .lost
        }
      }
      return outcomes
    }
  }

  public func complete(batch: [JobCompletion]) async throws -> [Bool] {
    if batch.isEmpty { return [] }
    let now = nowMillis
    let journal = journal
    let actor = AuditContext.actor
    // In a savepoint: the counters (and the journal's records) are written after the updates.
    defer { freedSlots() }
    return try await database.write { db -> [Bool] in
      let update = try db.cachedStatement(sql: Self.completeSQL)
      var recorded: [Bool] = []
      var transitions: [JobTransition] = []
      var counts = JobCountChanges()
      recorded.reserveCapacity(batch.count)
      for entry in batch {
        let raw = RawStatement(update, in: db)
        raw.bind(1, entry.result)
        raw.bind(2, now)
        raw.bind(3, now)
        raw.bind(4, entry.lease.id.rawValue)
        raw.bind(5, entry.lease.token)
        if try raw.run() > 0 {
          recorded.append(true)
          counts.move(queue: entry.lease.job.queue, kind: entry.lease.job.kind, from: .running, to: .succeeded)
          if journal != nil {
            let job = entry.lease.job
            transitions.append(
              JobTransition(
                event: .completed, job: job.id, queue: job.queue, kind: job.kind, from: .running,
                to: .succeeded, attempt: job.attempts, time: now))
          }
        } else {
          // Recorded before under the same lease (a retried call) counts as recorded.
          let again = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM nova_jobs WHERE id = ? AND state = 'succeeded' AND fencing_token = ?"),
            arguments: [entry.lease.id.rawValue, entry.lease.token])
          recorded.append(again != nil)
        }
      }
      try counts.save(db)
      try journal?.record(transitions, actor: actor, in: DatabaseTransaction(db))
      return recorded
    }
  }

  private static let completeSQL = """
    UPDATE nova_jobs SET state = 'succeeded', result = ?, finished_at = ?, updated_at = ?,
      lease_expires_at = NULL
    WHERE id = ? AND state = 'running' AND fencing_token = ?
    """

  public func fail(_ lease: JobLease, error message: String, retryable: Bool, retryIn: Duration?) async throws -> FailOutcome {
    let now = clock.now()
    let policy = retryPolicy
    let journal = journal
    let actor = AuditContext.actor
    defer { freedSlots() }
    let outcome = try await database.write { db -> FailOutcome in
      guard
        let row = try Row.fetchOne(
          db.cachedStatement(
            sql: "SELECT attempts, max_attempts FROM nova_jobs WHERE id = ? AND state = 'running' AND fencing_token = ?"),
          arguments: [lease.id.rawValue, lease.token])
      else { throw NovaError.leaseLost(lease.id) }
      let attempts: Int = row[0]
      let maxAttempts: Int = row[1]
      let nowMillis = Self.millis(now)
      if retryable && attempts < maxAttempts {
        let runAt = now.addingTimeInterval(retryIn?.seconds ?? policy.delay(afterAttempt: attempts))
        try db.cachedStatement(
          sql: """
            UPDATE nova_jobs SET state = 'failed', run_at = ?, last_error = ?, updated_at = ?,
              lease_owner = NULL, lease_expires_at = NULL WHERE id = ?
            """
        ).execute(arguments: [Self.millis(runAt), message, nowMillis, lease.id.rawValue])
        var counts = JobCountChanges()
        counts.move(queue: lease.job.queue, kind: lease.job.kind, from: .running, to: .failed)
        try counts.save(db)
        try journal?.record(
          [Self.transition(.failed, lease.job, from: .running, to: .failed, attempt: attempts, time: nowMillis, detail: message)],
          actor: actor, in: DatabaseTransaction(db))
        return .retryScheduled(runAt)
      }
      try db.cachedStatement(
        sql: """
          UPDATE nova_jobs SET state = 'dead', last_error = ?, finished_at = ?, updated_at = ?,
            lease_owner = NULL, lease_expires_at = NULL WHERE id = ?
          """
      ).execute(arguments: [message, nowMillis, nowMillis, lease.id.rawValue])
      var counts = JobCountChanges()
      counts.move(queue: lease.job.queue, kind: lease.job.kind, from: .running, to: .dead)
      try counts.save(db)
      try journal?.record(
        [Self.transition(.dead, lease.job, from: .running, to: .dead, attempt: attempts, time: nowMillis, detail: message)],
        actor: actor, in: DatabaseTransaction(db))
      return .dead
    }
    return outcome
  }

  public func start(_ leases: [JobLease]) async throws {
    if leases.isEmpty { return }
    try await database.write { db in
      let mark = try db.cachedStatement(sql: "UPDATE nova_jobs SET started = 1 WHERE id = ? AND state = 'running' AND fencing_token = ?")
      for lease in leases { try mark.execute(arguments: [lease.id.rawValue, lease.token]) }
    }
  }

  public func release(batch leases: [JobLease]) async throws -> Int {
    if leases.isEmpty { return 0 }
    let now = nowMillis
    let journal = journal
    let actor = AuditContext.actor
    let released = try await database.write(servesWaiters: true) { db -> Int in
      // A started attempt given back too often (a hung handler released on every restart of its
      // worker) counts, and the job goes dead when it was the last: otherwise it never would.
      let counted = "(started = 1 AND returns >= \(Self.freeReturns))"
      let update = try db.cachedStatement(
        sql: """
          UPDATE nova_jobs SET
            state = CASE WHEN \(counted) AND attempts >= max_attempts THEN 'dead' ELSE 'available' END,
            finished_at = CASE WHEN \(counted) AND attempts >= max_attempts THEN ? ELSE NULL END,
            attempts = CASE WHEN \(counted) THEN attempts ELSE MAX(attempts - 1, 0) END,
            last_error = CASE WHEN \(counted) THEN 'released ' || (returns + 1) || ' times after it started' ELSE last_error END,
            returns = CASE WHEN started = 1 THEN returns + 1 ELSE returns END,
            updated_at = ?, lease_owner = NULL, lease_expires_at = NULL
          WHERE id = ? AND state = 'running' AND fencing_token = ? RETURNING state, attempts
          """)
      var transitions: [JobTransition] = []
      var counts = JobCountChanges()
      for lease in leases {
        guard let row = try Row.fetchOne(update, arguments: [now, now, lease.id.rawValue, lease.token]) else { continue }
        let dead = (row[0] as String) == JobState.dead.rawValue
        counts.move(queue: lease.job.queue, kind: lease.job.kind, from: .running, to: dead ? .dead : .available)
        transitions.append(
          Self.transition(dead ? .dead : .released, lease.job, from: .running, to: dead ? .dead : .available, attempt: row[1], time: now))
      }
      try counts.save(db)
      try journal?.record(transitions, actor: actor, in: DatabaseTransaction(db))
      return transitions.count
    }
    if released > 0 { signalNews() }
    return released
  }

  public func release(_ lease: JobLease) async throws {
    if try await release(batch: [lease]) != 1 { throw NovaError.leaseLost(lease.id) }
  }

  // MARK: - Operator actions

  public func cancel(_ id: JobID) async throws -> Job {
    let now = nowMillis
    let journal = journal
    let actor = AuditContext.actor
    defer { freedSlots() }
    return try await database.write { db -> Job in
      let job = try Self.fetchJob(id, db: db)
      switch job.state {
      case .cancelled:
        return job
      case .succeeded, .dead:
        throw NovaError.invalidState(id, job.state, "cancel")
      case .scheduled, .available, .running, .failed:
        try db.cachedStatement(
          sql: """
            UPDATE nova_jobs SET state = 'cancelled', finished_at = ?, updated_at = ?,
              lease_owner = NULL, lease_expires_at = NULL WHERE id = ?
            """
        ).execute(arguments: [now, now, id.rawValue])
        var counts = JobCountChanges()
        counts.move(queue: job.queue, kind: job.kind, from: job.state, to: .cancelled)
        try counts.save(db)
        try journal?.record(
          [Self.transition(.cancelled, job, from: job.state, to: .cancelled, attempt: job.attempts, time: now)],
          actor: actor, in: DatabaseTransaction(db))
        return try Self.fetchJob(id, db: db)
      }
    }
  }

  private static func transition(
    _ event: JobTransition.Event, _ job: Job, from: JobState, to: JobState, attempt: Int, time: Int64,
    detail: String? = nil
  ) -> JobTransition {
    JobTransition(
      event: event, job: job.id, queue: job.queue, kind: job.kind, from: from, to: to, attempt: attempt, time: time,
      detail: detail)
  }

  public func retry(_ id: JobID) async throws -> Job {
    let now = nowMillis
    let journal = journal
    let actor = AuditContext.actor
    let job = try await database.write(servesWaiters: true) { db -> Job in
      let job = try Self.fetchJob(id, db: db)
      switch job.state {
      case .dead, .cancelled, .failed:
        try db.cachedStatement(
          sql: """
            UPDATE nova_jobs SET state = 'available', attempts = 0, returns = 0, run_at = ?, finished_at = NULL,
              updated_at = ? WHERE id = ?
            """
        ).execute(arguments: [now, now, id.rawValue])
        var counts = JobCountChanges()
        counts.move(queue: job.queue, kind: job.kind, from: job.state, to: .available)
        try counts.save(db)
        try journal?.record(
          [Self.transition(.retried, job, from: job.state, to: .available, attempt: 0, time: now)], actor: actor, in: DatabaseTransaction(db))
        return try Self.fetchJob(id, db: db)
      case .scheduled, .available, .running, .succeeded:
        throw NovaError.invalidState(id, job.state, "retry")
      }
    }
    signalNews()
    return job
  }

  private static func fetchJob(_ id: JobID, db: Database) throws -> Job {
    guard
      let row = try Row.fetchOne(
        db.cachedStatement(sql: "SELECT \(columns) FROM nova_jobs WHERE id = ?"), arguments: [id.rawValue])
    else { throw NovaError.jobNotFound(id) }
    return try job(from: row)
  }

  // MARK: - Maintenance

  public func reapExpiredLeases() async throws -> ReapResult {
    let now = nowMillis
    let journal = journal
    let actor = AuditContext.actor
    let result = try await database.write(servesWaiters: true) { db -> ReapResult in
      let rows = try Row.fetchAll(
        db.cachedStatement(
          sql: """
            UPDATE nova_jobs SET
              state = CASE WHEN \(Self.countsAttempt) AND attempts >= max_attempts THEN 'dead' ELSE 'available' END,
              finished_at = CASE WHEN \(Self.countsAttempt) AND attempts >= max_attempts THEN ? ELSE NULL END,
              -- A job claimed ahead but never started gives its attempt back (a bounded number
              -- of times: see `JobQueue.freeReturns`).
              attempts = CASE WHEN \(Self.countsAttempt) THEN attempts ELSE MAX(attempts - 1, 0) END,
              returns = CASE WHEN \(Self.countsAttempt) THEN returns ELSE returns + 1 END,
              last_error = CASE WHEN \(Self.countsAttempt) THEN 'lease expired: the worker stopped heartbeating' ELSE last_error END,
              started = CASE WHEN \(Self.countsAttempt) THEN 1 ELSE 0 END,
              lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
            WHERE state = 'running' AND lease_expires_at < ? RETURNING id, state, queue, kind, attempts, started
            """), arguments: [now, now, now])
      var result = ReapResult()
      var transitions: [JobTransition] = []
      var counts = JobCountChanges()
      for row in rows {
        let id = JobID(row[0] as String)
        let dead = (row[1] as String) == JobState.dead.rawValue
        if dead { result.dead.append(id) } else { result.requeued.append(id) }
        counts.move(queue: row[2], kind: row[3], from: .running, to: dead ? .dead : .available)
        transitions.append(
          JobTransition(
            event: dead ? .dead : .requeued, job: id, queue: row[2], kind: row[3], from: .running,
            to: dead ? .dead : .available, attempt: row[4], time: now,
            detail: (row[5] as Int) == 0 ? "lease expired before the job started" : "lease expired"))
      }
      try counts.save(db)
      try journal?.record(transitions, actor: actor, in: DatabaseTransaction(db))
      return result
    }
    if !result.requeued.isEmpty { signalNews() }
    return result
  }

  /// Whether a reaped lease's attempt counts: its job started, or it was given back too often.
  private static let countsAttempt = "(started = 1 OR returns >= \(freeReturns))"

  public func purgeFinished(before: Date, deadBefore: Date?) async throws -> Int {
    var total = 0
    var targets: [(state: JobState, cutoff: Int64)] = [(.succeeded, Self.millis(before)), (.cancelled, Self.millis(before))]
    if let deadBefore { targets.append((.dead, Self.millis(deadBefore))) }
    let queues = try await database.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT queue FROM nova_job_counts") }
    for target in targets {
      // Each queue's range of the listing index for the state, oldest first, up to the ids made
      // by the cutoff (a job finishes after it is made), 5,000 rows a transaction: the writer is
      // never held long, and rows made after the cutoff are never read. (An index on when jobs
      // finished cost every completion.)
      let madeBy = JobID.upperBound(madeBy: Date(millisecondsSince1970: target.cutoff)).rawValue
      for queue in queues {
        while true {
          let deleted = try await database.write { db -> Int in
            let rows = try Row.fetchAll(
              db,
              sql: """
                DELETE FROM nova_jobs WHERE id IN (
                  SELECT id FROM nova_jobs INDEXED BY nova_jobs_queue_state
                  WHERE queue = ? AND state = ? AND \(Self.restingStates) AND id < ? AND finished_at < ? LIMIT 5000)
                RETURNING queue, kind
                """,
              arguments: [queue, target.state.rawValue, madeBy, target.cutoff])
            var counts = JobCountChanges()
            for row in rows { counts.add(queue: row[0], kind: row[1], state: target.state, count: -1) }
            try counts.save(db)
            return rows.count
          }
          total += deleted
          if deleted < 5000 { break }
        }
      }
    }
    // Per-key rate buckets that are full again (as good as absent).
    let now = nowMillis
    try await database.write { db in
      try db.execute(sql: "DELETE FROM nova_key_buckets WHERE full_at < ?", arguments: [now])
    }
    return total
  }

  // MARK: - Reads

  public func stats() async throws -> QueueStats {
    let now = nowMillis
    return try await database.read { db in
      var counts: [String: [JobState: Int]] = [:]
      var byKind: [String: [String: Int]] = [:]
      // The counters the operations keep (a few rows per queue), not a count over every job.
      let rows = try Row.fetchCursor(db, sql: "SELECT queue, kind, state, n FROM nova_job_counts WHERE n > 0")
      while let row = try rows.next() {
        guard let state = JobState(rawValue: row[2]) else { continue }
        let n: Int = row[3]
        counts[row[0], default: [:]][state, default: 0] += n
        if state == .available { byKind[row[0], default: [:]][row[1], default: 0] += n }
      }
      for name in try String.fetchAll(db, sql: "SELECT name FROM nova_queues") where counts[name] == nil {
        counts[name] = [:]
      }
      let workers = try Data.fetchAll(
        db, sql: "SELECT presence FROM nova_workers WHERE expires_at > ? ORDER BY worker", arguments: [now]
      ).compactMap(WorkerPresence.decoded)
      return QueueStats(counts: counts, availableByKind: byKind, workers: workers)
    }
  }

  public func announce(_ presence: WorkerPresence) async throws {
    let now = nowMillis
    let data = try presence.encoded()
    try await database.write { db in
      // Announcements lapsed longer than the registry keeps them go here, so the table holds
      // only about as many rows as workers.
      try db.execute(
        sql: "DELETE FROM nova_workers WHERE expires_at <= ?", arguments: [now - Int64(WorkerPresence.retention * 1000)])
      try db.execute(
        sql: "INSERT OR REPLACE INTO nova_workers (worker, presence, expires_at) VALUES (?, ?, ?)",
        arguments: [presence.worker, data, Self.millis(presence.expiresAt)])
    }
  }

  public func withdraw(worker: String) async throws {
    try await database.write { db in
      try db.execute(sql: "DELETE FROM nova_workers WHERE worker = ?", arguments: [worker])
    }
  }

  public func workers() async throws -> [WorkerPresence] {
    let since = nowMillis - Int64(WorkerPresence.retention * 1000)
    return try await database.read { db in
      try Data.fetchAll(db, sql: "SELECT presence FROM nova_workers WHERE expires_at > ? ORDER BY worker", arguments: [since])
        .compactMap(WorkerPresence.decoded)
    }
  }

  public func appendLogs(_ chunks: [JobLogChunk]) async throws {
    if chunks.isEmpty { return }
    try await database.write { db in
      let insert = try db.cachedStatement(
        sql: "INSERT INTO nova_job_logs (job_id, attempt, stream, data, created_at) VALUES (?, ?, ?, ?, ?)")
      for chunk in chunks {
        try insert.execute(arguments: [chunk.job.rawValue, chunk.attempt, chunk.stream.rawValue, chunk.data, Self.millis(chunk.time)])
      }
    }
  }

  public func logs(of id: JobID, attempt: Int?, after sequence: Int64, limit: Int) async throws -> [JobLogChunk] {
    try await database.read { db in
      var sql = "SELECT seq, attempt, stream, data, created_at FROM nova_job_logs WHERE job_id = ? AND seq > ?"
      var arguments: StatementArguments = [id.rawValue, sequence]
      if let attempt {
        sql += " AND attempt = ?"
        arguments += [attempt]
      }
      sql += " ORDER BY seq LIMIT ?"
      arguments += [limit]
      return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
        JobLogChunk(
          job: id, queue: "", attempt: row[1], stream: JobLogStream(rawValue: row[2]) ?? .stdout, sequence: row[0], data: row[3],
          time: Self.date(row[4]))
      }
    }
  }

  /// Whether a queue has an available job that asks for resources or has a concurrency key.
  package static let placedWaitingSQL = """
    SELECT 1 FROM nova_jobs INDEXED BY nova_jobs_placed
    WHERE state = 'available' AND (requirements IS NOT NULL OR concurrency_key IS NOT NULL) AND queue = ? LIMIT 1
    """

  /// SQLite's plan for `sql` on this database, one line per step (for tests of the hot paths).
  package func queryPlan(_ sql: String) async throws -> [String] {
    try await database.read { db in
      try Row.fetchAll(
        db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: StatementArguments(Array(repeating: "q", count: sql.filter { $0 == "?" }.count))
      )
      .map { $0["detail"] as String }
    }
  }

  public func get(_ id: JobID) async throws -> Job? {
    try await database.readStatement { db in
      try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.columns) FROM nova_jobs WHERE id = ?"), arguments: [id.rawValue])
        .map(Self.job(from:))
    }
  }

  public func delete(_ jobs: [(id: JobID, queue: String)]) async throws -> Int {
    guard !jobs.isEmpty else { return 0 }
    let ids = String(decoding: try JSONEncoder().encode(jobs.map(\.id.rawValue)), as: UTF8.self)
    return try await database.write { db in
      // Output rows go with their job (the trigger on nova_jobs).
      let rows = try Row.fetchAll(
        db,
        sql: """
          DELETE FROM nova_jobs WHERE id IN (SELECT value FROM json_each(?)) AND state IN ('succeeded', 'dead', 'cancelled')
          RETURNING queue, kind, state
          """,
        arguments: [ids])
      var counts = JobCountChanges()
      for row in rows {
        guard let state = JobState(rawValue: row[2]) else { continue }
        counts.add(queue: row[0], kind: row[1], state: state, count: -1)
      }
      try counts.save(db)
      return rows.count
    }
  }

  public func list(_ filter: JobFilter) async throws -> JobPage {
    try filter.validate()
    // Conditions on ids (the cursor, and a time window: ids begin with their creation time, or a
    // little later when the clock stepped back), which every index below ends with.
    var idConditions: [(String, DatabaseValue)] = []
    if let cursor = filter.cursor { idConditions.append(("id < ?", cursor.databaseValue)) }
    if let after = filter.createdAfter { idConditions.append(("id >= ?", JobID.lowerBound(for: after).rawValue.databaseValue)) }
    if let before = filter.createdBefore {
      idConditions.append(("id < ?", JobID.lowerBound(for: before.addingTimeInterval(3600)).rawValue.databaseValue))
    }
    // Conditions inside jobs, checked on the rows the index range gives.
    var inside: [(String, DatabaseValue)] = []
    if let kind = filter.kind { inside.append(("kind = ?", kind.databaseValue)) }
    if let key = filter.concurrencyKey { inside.append(("concurrency_key = ?", key.databaseValue)) }
    if let worker = filter.worker { inside.append(("lease_owner = ?", worker.databaseValue)) }
    if let key = filter.idempotencyKey { inside.append(("idempotency_key = ?", key.databaseValue)) }
    if let after = filter.createdAfter { inside.append(("created_at >= ?", after.millisecondsSince1970.databaseValue)) }
    if let before = filter.createdBefore { inside.append(("created_at < ?", before.millisecondsSince1970.databaseValue)) }
    let limit = filter.limit + 1
    let (insideJobs, byID) = (inside, idConditions)
    let (jobs, floor) = try await database.read { db -> ([Job], String?) in
      // Each (queue, state) pair is read newest first from an index (`newestIDs`): a filter on
      // both reads one pair; on one of them, a pair per queue or per state, merged; on neither,
      // the table (or the key's index) by id.
      let queues: [String?] =
        if let queue = filter.queue { [queue] } else if filter.state != nil || filter.idempotencyKey != nil {
          try String.fetchAll(db, sql: "SELECT DISTINCT queue FROM nova_job_counts")
        } else { [nil] }
      let states: [JobState?] =
        if let state = filter.state { [state] } else if filter.queue != nil && filter.idempotencyKey == nil {
          JobState.allCases
        } else { [nil] }
      // A filter inside jobs looks at about 2,000 rows of the index per page, spread over the
      // ranges: a page that finds fewer matches ends at the deepest row looked at (its cursor
      // goes on from there), so no page scans a million rows for a rare match.
      let budget = insideJobs.isEmpty ? nil : max(limit, 2000 / max(1, queues.count * states.count))
      var found: [Job] = []
      var floor: String?
      for queue in queues {
        for state in states {
          var drive = byID
          // An idempotency key is unique in its queue: its index finds the job at once.
          if let key = filter.idempotencyKey, queue != nil, state == nil { drive.append(("idempotency_key = ?", key.databaseValue)) }
          if queue == nil, state == nil, let key = filter.concurrencyKey {
            // No pair to read: the key's index leads.
            drive.append(("concurrency_key = ?", key.databaseValue))
          }
          let looked = try Self.newestIDs(db, queue: queue, state: state, where: drive, limit: budget ?? limit)
          if let budget, looked.count == budget, let deepest = looked.last, floor.map({ deepest > $0 }) ?? true { floor = deepest }
          guard !looked.isEmpty else { continue }
          let ids = String(decoding: try JSONEncoder().encode(looked), as: UTF8.self)
          let conditions = [("id IN (SELECT value FROM json_each(?))", ids.databaseValue)] + insideJobs
          let sql = "SELECT \(Self.columns) FROM nova_jobs WHERE \(conditions.map(\.0).joined(separator: " AND ")) ORDER BY id DESC LIMIT \(limit)"
          found += try Row.fetchAll(db, sql: sql, arguments: StatementArguments(conditions.map(\.1))).map(Self.job(from:))
        }
      }
      if let floor { found.removeAll { $0.id.rawValue < floor } }
      if queues.count * states.count > 1 { found.sort { $0.id.rawValue > $1.id.rawValue } }
      return (Array(found.prefix(limit)), floor)
    }
    if let floor, jobs.count < limit { return JobPage(jobs: jobs, nextCursor: floor) }
    return JobPage(newestFirst: jobs, limit: filter.limit)
  }

  /// The ids of up to `limit` jobs of `queue` in `state` that meet `conditions`, newest first,
  /// each pair read from an index that holds it: resting states from the listing index,
  /// available jobs from the claims' index by priority (merged), running ones from
  /// the leases' index (as many as run, sorted). Without a queue or a state, the table by id.
  package static func newestIDs(
    _ db: Database, queue: String?, state: JobState?, where conditions: [(String, DatabaseValue)], limit: Int
  ) throws -> [String] {
    func newest(_ from: String, _ lead: [String], _ values: [DatabaseValue], limit: Int) throws -> [String] {
      let all = lead + conditions.map(\.0)
      let clause = all.isEmpty ? "" : "WHERE " + all.joined(separator: " AND ")
      return try String.fetchAll(
        db, sql: "SELECT id FROM \(from) \(clause) ORDER BY id DESC LIMIT \(limit)",
        arguments: StatementArguments(values + conditions.map(\.1)))
    }
    guard let queue, let state else {
      var lead: [String] = []
      var values: [DatabaseValue] = []
      if let queue {
        lead.append("queue = ?")
        values.append(queue.databaseValue)
      }
      if let state {
        lead.append("state = ?")
        values.append(state.rawValue.databaseValue)
      }
      return try newest("nova_jobs", lead, values, limit: limit)
    }
    switch state {
    case .available:
      // The claims' index orders by priority first: each priority's range is read newest first,
      // a chunk at a time, and the ranges merged. A page reads about `limit` rows and a chunk per
      // priority present, however many priorities hold how many jobs.
      let chunk = min(limit, 32)
      func read(_ priority: Int, below last: String?) throws -> [String] {
        var lead = ["state = 'available'", "queue = ?", "priority = ?"]
        var values = [queue.databaseValue, priority.databaseValue]
        if let last {
          lead.append("id < ?")
          values.append(last.databaseValue)
        }
        return try newest("nova_jobs INDEXED BY nova_jobs_available", lead, values, limit: chunk)
      }
      var ranges: [(priority: Int, ids: ArraySlice<String>)] = []
      var below = Int.max
      let next = try db.cachedStatement(
        sql: """
          SELECT priority FROM nova_jobs INDEXED BY nova_jobs_available
          WHERE state = 'available' AND queue = ? AND priority < ? ORDER BY priority DESC LIMIT 1
          """)
      while let priority = try Int.fetchOne(next, arguments: [queue, below]) {
        ranges.append((priority, try read(priority, below: nil)[...]))
        below = priority
      }
      var ids: [String] = []
      while ids.count < limit {
        var pick: (index: Int, id: String)?
        for (index, range) in ranges.enumerated() {
          if let first = range.ids.first, pick.map({ first > $0.id }) ?? true { pick = (index, first) }
        }
        guard let pick else { break }
        ids.append(pick.id)
        ranges[pick.index].ids.removeFirst()
        if ranges[pick.index].ids.isEmpty { ranges[pick.index].ids = try read(ranges[pick.index].priority, below: pick.id)[...] }
      }
      return ids
    case .running:
      return try newest("nova_jobs INDEXED BY nova_jobs_leases", ["state = 'running'", "queue = ?"], [queue.databaseValue], limit: limit)
    default:
      return try newest(
        "nova_jobs INDEXED BY nova_jobs_queue_state", ["queue = ?", "state = ?", restingStates],
        [queue.databaseValue, state.rawValue.databaseValue], limit: limit)
    }
  }

  /// News an enqueue does not bring: waits for jobs and parked claims both hear it.
  private func signalNews() {
    wake.signal()
    news.signal()
  }

  /// A job that ends frees what held others back (a queue's or a key's running limit, devices):
  /// claims parked in this process that were held back are answered at once and try again, each
  /// directly (a shared signal could reach a claim before its wait began). Enqueues serve the
  /// others themselves.
  private func freedSlots() {
    parked.releaseHeldBack()
  }

  /// A parked claim's wait: until `timeout`, news, or another process's commit since `mark`
  /// (this process's own commits serve the claim themselves), whichever first.
  private func waitForNews(timeout: Duration, since mark: Int) async {
    await wait(on: news, timeout: timeout) { database.hasForeignCommits(since: mark) }
  }

  /// Waits for `signal`, `timeout`, or `changed` (looked at every `crossProcessTick`: what other
  /// processes did), whichever first.
  private func wait(on signal: WakeSignal, timeout: Duration, orUntil changed: () -> Bool) async {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      let tick = min(Self.crossProcessTick, deadline - ContinuousClock.now)
      if await signal.wait(timeout: tick) { return }
      if Task.isCancelled || changed() { return }
    }
  }

  public func waitForJobs(timeout: Duration) async {
    // Jobs enqueued by this process wake the wait at once. Another process's commit changes the
    // WAL file's size or modification time, which a look at it every few milliseconds sees (one
    // `fstat`; a read of the database would cost a transaction): a `nova worker` beside `nova
    // serve` or `nova enqueue` then starts a job within that tick, not the pool's poll interval.
    let before = database.walStamp()
    await wait(on: wake, timeout: timeout) { database.walStamp() != before }
  }

  /// How often an idle wait looks for other processes' commits.
  static let crossProcessTick: Duration = .milliseconds(10)

  public func jobStates() async throws -> [(id: JobID, state: JobState)] {
    try await database.read { db in try Self.jobStates(db) }
  }

  /// Write transactions committed and the operations they grouped (group commit's effect).
  public var writeStatistics: (transactions: Int, operations: Int, busy: Duration) { database.writeStatistics }

  /// Every job and its state, read in `db`'s snapshot (for checks that must see the jobs at the
  /// same moment as other tables of the database).
  package static func jobStates(_ db: Database) throws -> [(id: JobID, state: JobState)] {
    var states: [(id: JobID, state: JobState)] = []
    let rows = try Row.fetchCursor(db, sql: "SELECT id, state FROM nova_jobs")
    while let row = try rows.next() {
      guard let state = JobState(rawValue: row[1]) else { continue }
      states.append((JobID(row[0]), state))
    }
    return states
  }

  /// The SQLite version linked into this process.
  public func sqliteVersion() async throws -> String { try await database.sqliteVersion() }

}
