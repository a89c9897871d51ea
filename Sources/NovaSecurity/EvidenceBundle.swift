import Crypto
import Foundation
import GRDB
import NovaCore
import NovaDatabase
import NovaQueue

/// Governance evidence as one deterministic `tar.gz`: the audit entries of a window, the tree
/// they continue and a signed checkpoint of it, the stored checkpoints, KPI, policy and alert
/// sections, a SHA-256 manifest (also as `SHA256SUMS`) and a DSSE envelope over an in-toto
/// statement naming every file. The same log and window give the same bytes.
public enum EvidenceBundle {
  public static let format = "nova-evidence/1"
  public static let entriesFile = "audit/entries.jsonl"
  public static let baseTreeFile = "audit/base-tree.json"
  public static let checkpointFile = "audit/checkpoint.note"
  /// The log's stored checkpoints the window touches, each with its consistency proof to the bundle's tree.
  public static let checkpointsFile = "audit/checkpoints.jsonl"
  public static let envelopeFile = "attestation.dsse.json"
  public static let sumsFile = "SHA256SUMS"
  public static let manifestFile = "manifest.json"

  /// What an export wrote.
  public struct ExportSummary: Sendable, Codable, Equatable {
    public var path: String
    public var sha256: String
    public var bytes: Int
    public var entries: Int64
    public var firstSeq: Int64
    public var lastSeq: Int64
    public var files: [String]
  }

  /// Writes the bundle for entries whose time lies in `since...until` (milliseconds; the ends
  /// widen to whole sequence runs) to `path`, atomically, with the audit coverage of `jobs`
  /// (the queue). `sections` add or replace files
  /// (`kpi/summary.json`, `policy/status.json`, `alerts/history.jsonl`). File times are
  /// `sourceDateEpoch` (seconds) or else the window's end.
  ///
  /// Nothing is signed over history that does not verify: the whole log is first checked against
  /// its stored checkpoints and `mirrored` ones (``UnverifiedHistory`` names what failed).
  public static func export(
    log: AuditLog, jobs: any JobStateListing, signer: NoteSigner, origin: String, to path: String, since: Int64? = nil,
    until: Int64? = nil, sections: [String: [UInt8]] = [:], sourceDateEpoch: Int64? = nil, mirrored: [MirroredCheckpoint] = []
  ) async throws -> ExportSummary {
    let check = try await log.verify(verifier: signer.verifier, origin: origin, mirrored: mirrored)
    guard check.passed else { throw UnverifiedHistory(problems: check.problems, count: check.problemCount) }
    let coverage = try await log.coverage(of: jobs)
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
    let staging = directory.appendingPathComponent(".\(URL(fileURLWithPath: path).lastPathComponent).\(getpid()).tmp")
    guard FileManager.default.createFile(atPath: staging.path, contents: nil) else {
      throw NovaError.storage("cannot write in \(directory.path)")
    }
    defer { try? FileManager.default.removeItem(at: staging) }
    let entriesHandle = try FileHandle(forWritingTo: staging)

    // Pass 1 (one read transaction): the window, the tree before it, and the entries, written
    // to a staging file while their digest and the tree are computed.
    struct Window: Sendable {
      var first: Int64 = 1
      var last: Int64 = 0
      var lastTime: Int64 = 0
      var base: MerkleAccumulator = MerkleAccumulator()
      var tree: MerkleAccumulator = MerkleAccumulator()
      var digest: [UInt8] = []
      var bytes = 0
      /// The stored checkpoints from the last one before the window on, each with its RFC 6962
      /// consistency proof to the bundle's tree.
      var checkpoints: [(size: Int64, note: String, proof: [MerkleTree.Hash])] = []
    }
    let window = try await log.database.read { db -> Window in
      var window = Window()
      let size = try AuditJournal.lastSequence(db)
      if let since {
        window.first = try Int64.fetchOne(db, sql: "SELECT MIN(seq) FROM nova_audit WHERE time >= ?", arguments: [since]) ?? size + 1
      }
      if let until {
        window.last = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM nova_audit WHERE time <= ?", arguments: [until]) ?? 0
      } else {
        window.last = size
      }
      window.last = max(window.last, window.first - 1)
      let checkpoints: [(size: Int64, note: String)] = try Row.fetchAll(
        db,
        sql: """
          SELECT size, note FROM nova_audit_checkpoints WHERE size BETWEEN
            COALESCE((SELECT MAX(size) FROM nova_audit_checkpoints WHERE size < ?), ?) AND ? ORDER BY size
          """,
        arguments: [window.first, window.first, window.last]
      ).map { ($0[0], $0[1]) }
      // The nodes of the bundle's tree the consistency proofs need, collected in the one pass.
      let last = Int(window.last)
      let needed = Set(
        checkpoints.filter { $0.size >= 1 && $0.size < window.last }.flatMap { MerkleTree.consistencyRanges(oldSize: Int($0.size), newSize: last) })
      var nodes: [Range<Int>: MerkleTree.Hash] = [:]
      let keep: (Range<Int>, MerkleTree.Hash) -> Void = { range, hash in if needed.contains(range) { nodes[range] = hash } }
      try AuditLog.scanHashes(db, through: window.first - 1) { window.base.append(leafHash: $0, node: keep) }
      window.tree = window.base
      var hasher = SHA256()
      var pending: [UInt8] = []
      pending.reserveCapacity(1 << 20)
      var expected = window.first
      var failure: (any Error)?
      try AuditLog.scan(db, from: window.first, through: window.last) { entry, storedHash in
        guard failure == nil else { return }
        let line = entry.canonicalBytes
        let hash = MerkleTree.leafHash(line)
        guard entry.seq == expected, hash == storedHash else {
          failure = NovaError.storage(
            "audit entry \(expected) is missing or does not match its hash; run `nova audit verify` before exporting")
          return
        }
        expected += 1
        window.tree.append(leafHash: hash, node: keep)
        window.lastTime = entry.time
        pending += line
        pending.append(0x0A)
        if pending.count >= 1 << 20 {
          hasher.update(data: pending)
          window.bytes += pending.count
          try entriesHandle.write(contentsOf: pending)
          pending.removeAll(keepingCapacity: true)
        }
      }
      if let failure { throw failure }
      guard expected == window.last + 1 else {
        throw NovaError.storage("audit entries \(expected)...\(window.last) are missing; run `nova audit verify`")
      }
      hasher.update(data: pending)
      window.bytes += pending.count
      try entriesHandle.write(contentsOf: pending)
      window.digest = Array(hasher.finalize())
      for (range, hash) in window.tree.rightEdge where needed.contains(range) { nodes[range] = hash }
      window.checkpoints = checkpoints.map { checkpoint in
        let ranges =
          checkpoint.size >= 1 && checkpoint.size < window.last ? MerkleTree.consistencyRanges(oldSize: Int(checkpoint.size), newSize: last) : []
        return (checkpoint.size, checkpoint.note, ranges.map { nodes[$0]! })
      }
      return window
    }
    try entriesHandle.close()

    let mtime = sourceDateEpoch ?? (until ?? window.lastTime) / 1000
    var files: [String: [UInt8]] = [:]
    files[baseTreeFile] = try CanonicalJSON.encode(
      .object([
        "frontier": .array(window.base.frontier.map { .string(Data($0).base64EncodedString()) }),
        "size": .int(Int64(window.base.count)),
      ]))
    let checkpoint = Checkpoint(origin: origin, size: Int(window.last), rootHash: window.tree.root)
    files[checkpointFile] = Array(try checkpoint.signed(by: signer).utf8)
    files[checkpointsFile] = try window.checkpoints.flatMap {
      try CanonicalJSON.encode(
        .object([
          "consistency": .array($0.proof.map { .string(Data($0).base64EncodedString()) }), "note": .string($0.note), "size": .int($0.size),
        ])) + [0x0A]
    }
    files["kpi/summary.json"] = try CanonicalJSON.encode(
      .object([
        "audit_coverage": .object([
          "audited_transitions": .int(Int64(coverage.auditedTransitions)), "jobs": .int(Int64(coverage.jobs)),
          "ratio": .double(coverage.ratio), "unaudited_jobs": .int(Int64(coverage.unauditedJobs.count)),
        ])
      ]))
    files["policy/status.json"] = try CanonicalJSON.encode(
      .object(["drift": .null, "status": .string("no policy engine in this version"), "version": .null]))
    files["alerts/history.jsonl"] = []
    files["keys/signing-key.pem"] = Array(signer.verifier.pem.utf8)
    files["keys/verifier-key.txt"] = Array((signer.verifier.verifierKey + "\n").utf8)
    for (name, content) in sections { files[name] = content }

    var digests: [String: (sha256: String, size: Int)] = [entriesFile: (hex(window.digest), window.bytes)]
    for (name, content) in files { digests[name] = (hex(Array(SHA256.hash(data: content))), content.count) }
    let windowJSON: JSONValue = .object([
      "first_seq": .int(window.first), "last_seq": .int(window.last),
      "since": since.map { .string(AuditTime.string($0)) } ?? .null,
      "until": until.map { .string(AuditTime.string($0)) } ?? .null,
    ])
    let listed = digests.keys.sorted()
    files[manifestFile] = try CanonicalJSON.encode(
      .object([
        "files": .array(
          listed.map { .object(["path": .string($0), "sha256": .string(digests[$0]!.sha256), "size": .int(Int64(digests[$0]!.size))]) }),
        "format": .string(format),
        "log": .object(["origin": .string(origin), "root": .string(Data(window.tree.root).base64EncodedString()), "size": .int(window.last)]),
        "window": windowJSON,
      ]))
    digests[manifestFile] = (hex(Array(SHA256.hash(data: files[manifestFile]!))), files[manifestFile]!.count)
    let summed = digests.keys.sorted()
    files[sumsFile] = Array(summed.map { "\(digests[$0]!.sha256)  \($0)\n" }.joined().utf8)
    digests[sumsFile] = (hex(Array(SHA256.hash(data: files[sumsFile]!))), files[sumsFile]!.count)
    let statement = try CanonicalJSON.encode(
      .object([
        "_type": .string("https://in-toto.io/Statement/v1"),
        "predicateType": .string("https://nova.dev/evidence/v1"),
        "predicate": .object([
          "format": .string(format), "log_root": .string(Data(window.tree.root).base64EncodedString()), "log_size": .int(window.last),
          "window": windowJSON,
        ]),
        "subject": .array(digests.keys.sorted().map { .object(["digest": .object(["sha256": .string(digests[$0]!.sha256)]), "name": .string($0)]) }),
      ]))
    let envelope = try DSSEEnvelope.sign(payload: statement, signer: signer)
    files[envelopeFile] = try CanonicalJSON.encode(
      .object([
        "payload": .string(envelope.payload), "payloadType": .string(envelope.payloadType),
        "signatures": .array(envelope.signatures.map { .object(["keyid": .string($0.keyid), "sig": .string($0.sig)]) }),
      ]))

    // Pass 2: the archive, entries sorted by name, to a temporary file renamed into place.
    let temporary = directory.appendingPathComponent(".\(URL(fileURLWithPath: path).lastPathComponent).\(getpid()).part")
    guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
      throw NovaError.storage("cannot write \(temporary.path)")
    }
    var renamed = false
    defer { if !renamed { try? FileManager.default.removeItem(at: temporary) } }
    let output = try FileHandle(forWritingTo: temporary)
    let gzip = try GzipWriter(output: output)
    let names = (Array(files.keys) + [entriesFile]).sorted()
    for name in names {
      if name == entriesFile {
        try gzip.write(try TarArchive.header(name: name, size: window.bytes, mtime: mtime))
        let input = try FileHandle(forReadingFrom: staging)
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty { try gzip.write(chunk) }
        try input.close()
        try gzip.write(TarArchive.padding(for: window.bytes))
      } else {
        let content = files[name]!
        try gzip.write(try TarArchive.header(name: name, size: content.count, mtime: mtime))
        try gzip.write(content)
        try gzip.write(TarArchive.padding(for: content.count))
      }
    }
    try gzip.write(TarArchive.trailer)
    try gzip.finish()
    try output.synchronize()
    try output.close()
    guard rename(temporary.path, path) == 0 else {
      throw NovaError.storage("cannot move the bundle to \(path): \(String(cString: strerror(errno)))")
    }
    renamed = true
    // Read back in chunks (not mapped whole), so memory stays flat however large the bundle.
    var digest = SHA256()
    var size = 0
    let reread = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    while let chunk = try reread.read(upToCount: 1 << 20), !chunk.isEmpty {
      digest.update(data: chunk)
      size += chunk.count
    }
    try reread.close()
    return ExportSummary(
      path: path, sha256: hex(Array(digest.finalize())), bytes: size, entries: window.last - window.first + 1,
      firstSeq: window.first, lastSeq: window.last, files: names)
  }

  /// Lower-case hexadecimal of `bytes`.
  public static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
}

/// Evidence was not exported because the audit log does not verify against its checkpoints.
public struct UnverifiedHistory: Error, CustomStringConvertible {
  public var problems: [AuditProblem]
  public var count: Int
  public var description: String {
    let more = count > 1 ? " (and \(count - 1) more problems)" : ""
    return
      "refusing to sign evidence over history that does not verify: \(problems.first?.message ?? "unknown problem")\(more); run `nova audit verify`"
  }
}
