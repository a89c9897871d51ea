import ArgumentParser
import Foundation
import NovaApplication
import NovaCore
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaServer

struct AuditCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "audit",
    abstract: "Inspect, checkpoint and verify the tamper-evident audit log.",
    subcommands: [List.self, Checkpoint.self, Verify.self, Prove.self, Consistency.self, Key.self, Coverage.self])

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print audit entries in order.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "First entry to print.") var from: Int64 = 1
    @Option(help: "At most this many entries.") var limit: Int64 = 100

    func validate() throws {
      guard from >= 1 else { throw ValidationError("--from must be at least 1") }
      guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
      let entries = try await store.openSecurityUpToDate().audit.entries(from: from, through: from + limit - 1)
      if output.json {
        try printJSON(entries.map(EntryResource.init))
        return
      }
      for entry in entries {
        print("\(entry.seq)\t\(AuditTime.string(entry.time))\t\(entry.actor)\t\(entry.event)\t\(entry.subject ?? "-")\t\(entry.payload)")
      }
    }
  }

  struct Checkpoint: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Sign a checkpoint of the log now and print it (C2SP signed note).")
    @OptionGroup var store: StoreOptions
    @Option(
      help: ArgumentHelp(
        "A checkpoint directory to check first (it must all still be in the database) and to add the new checkpoint to.",
        valueName: "dir"))
    var checkpointMirror: String?

    func run() async throws {
      let security = try await store.openSecurityUpToDate()
      try await store.authorize("audit.checkpoint", PolicyResource(kind: "audit"))
      let mirror = checkpointMirror.map(CheckpointDirectory.init(path:))
      let checkpoint: StoredCheckpoint
      do {
        if let mirror { try await security.audit.synchronize(mirror: mirror) }
        checkpoint = try await security.audit.checkpoint(signer: security.signer, origin: security.origin)
        if let mirror { try await security.audit.synchronize(mirror: mirror) }
      } catch NovaError.storage(let message) {
        // The log does not match what was signed or mirrored before: a verification failure.
        NovaCommand.fail(message, code: ExitStatus.verificationFailed)
      }
      print(checkpoint.note, terminator: "")
    }
  }

  struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Recompute every entry's hash and the tree's root at every checkpoint.",
      discussion: """
        Checks the stored checkpoints' signatures, origin and chain, every --checkpoint and every checkpoint of \
        --checkpoint-dir (each must still be in the database, and the log must be consistent with the latest by an \
        RFC 6962 proof). Exit 0 when everything matches, 5 when anything does not (each problem is named), 8 when the \
        log has entries but no signed checkpoint anchors them.
        """)
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(
      name: .customLong("checkpoint"), help: ArgumentHelp("A signed checkpoint kept outside Nova to check too (repeatable).", valueName: "file"))
    var checkpoints: [String] = []
    @Option(
      help: ArgumentHelp("A checkpoint mirror (the directory `nova serve --checkpoint-mirror` writes) to check the log against.", valueName: "dir"))
    var checkpointDir: String?
    @Option(
      help: ArgumentHelp("Verifier key to trust (name+id+base64, as `nova audit key` prints; default: the data directory's key).", valueName: "key"))
    var key: String?

    func run() async throws {
      let security = try await store.openSecurityUpToDate()
      let verifier = try key.map { try NoteVerifier(verifierKey: try readKeyArgument($0)) } ?? security.signer.verifier
      let notes = try checkpoints.map { path -> String in
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
          throw NovaError.invalidInput(field: "--checkpoint", message: "cannot read \(path)")
        }
        return text
      }
      let mirrored = try await mirroredCheckpoints(in: checkpointDir)
      let report = try await security.audit.verify(verifier: verifier, origin: verifier.name, extraCheckpoints: notes, mirrored: mirrored)
      if output.json {
        try printJSON(
          VerifyOutput(
            passed: report.passed, entries: report.entries, checkpoints_checked: report.checkpointsChecked,
            mirrored_checked: report.mirroredChecked, consistency_proofs: report.consistencyProofs, unanchored: report.unanchored,
            root: Data(report.root).base64EncodedString(), problems: report.problems.map(\.message),
            first_bad_entry: report.problems.compactMap(\.seq).first))
      } else if report.passed && report.unanchored {
        FileHandle.standardError.write(
          Data(
            "WARNING: unanchored: the log has \(report.entries) entries but no signed checkpoint, so a rewrite of the database cannot be detected; sign one (`nova audit checkpoint`) and keep a mirror (`nova serve --checkpoint-mirror`)\n"
              .utf8))
      } else if report.passed {
        let mirror = checkpointDir == nil ? "" : ", \(report.mirroredChecked) mirrored (\(report.consistencyProofs) consistency proof)"
        print(
          "ok: \(report.entries) entries, \(report.checkpointsChecked) signed checkpoints match\(mirror); root \(Data(report.root).base64EncodedString())"
        )
      } else {
        for problem in report.problems { FileHandle.standardError.write(Data("FAIL: \(problem.message)\n".utf8)) }
        if report.problemCount > report.problems.count {
          FileHandle.standardError.write(Data("… and \(report.problemCount - report.problems.count) more\n".utf8))
        }
      }
      if !report.passed { throw ExitCode(ExitStatus.verificationFailed) }
      if report.unanchored { throw ExitCode(ExitStatus.unanchored) }
    }
  }

  struct Prove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the inclusion proof of one entry.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The entry's sequence number.") var seq: Int64
    @Option(help: "Tree size to prove against (default: the first checkpoint that covers the entry, else the whole log).")
    var treeSize: Int64?

    func run() async throws {
      let proof = try await store.openSecurity().audit.inclusionProof(seq: seq, treeSize: treeSize)
      let result = ProofOutput(
        seq: proof.entry.seq, tree_size: proof.treeSize, entry: String(decoding: proof.entry.canonicalBytes, as: UTF8.self),
        leaf_hash: Data(proof.leafHash).base64EncodedString(), path: proof.path.map { Data($0).base64EncodedString() },
        root: Data(proof.root).base64EncodedString(), checkpoint: proof.checkpoint, valid: proof.isValid)
      if output.json {
        try printJSON(result)
      } else {
        print("entry \(result.seq) in the tree of \(result.tree_size): \(result.valid ? "proof verifies" : "PROOF DOES NOT VERIFY")")
        print("leaf hash: \(result.leaf_hash)")
        for (index, hash) in result.path.enumerated() { print("path[\(index)]: \(hash)") }
        print("root: \(result.root)")
        if let note = result.checkpoint { print("signed checkpoint:\n\(note)", terminator: "") }
      }
      if !proof.isValid { throw ExitCode(ExitStatus.verificationFailed) }
    }
  }

  struct Consistency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Prove the log of OLD entries is a prefix of the log of NEW entries.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The older tree size.") var old: Int64
    @Argument(help: "The newer tree size.") var new: Int64

    func run() async throws {
      let proof = try await store.openSecurity().audit.consistencyProof(oldSize: old, newSize: new)
      let result = ConsistencyOutput(
        old_size: proof.oldSize, new_size: proof.newSize, old_root: Data(proof.oldRoot).base64EncodedString(),
        new_root: Data(proof.newRoot).base64EncodedString(), path: proof.path.map { Data($0).base64EncodedString() },
        old_checkpoint: proof.oldCheckpoint, new_checkpoint: proof.newCheckpoint, valid: proof.isValid)
      if output.json {
        try printJSON(result)
      } else {
        print("\(result.old_size) → \(result.new_size): \(result.valid ? "consistent, proof verifies" : "PROOF DOES NOT VERIFY")")
        print("old root: \(result.old_root)\nnew root: \(result.new_root)")
        for (index, hash) in result.path.enumerated() { print("path[\(index)]: \(hash)") }
      }
      if !proof.isValid { throw ExitCode(ExitStatus.verificationFailed) }
    }
  }

  struct Key: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print the public key that verifies checkpoints and evidence (C2SP verifier key).")
    @OptionGroup var store: StoreOptions
    @Flag(help: "Print it as PEM (SubjectPublicKeyInfo) for openssl instead.") var pem = false

    func run() async throws {
      let verifier = try await store.openSecurity().signer.verifier
      print(pem ? verifier.pem : verifier.verifierKey, terminator: pem ? "" : "\n")
    }
  }

  struct Coverage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Audited job transitions over all of them, computed from the data (must be 100 %).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
      let application = try await store.open()
      let coverage = try await application.security.audit.coverage(of: application.jobStates)
      if output.json {
        try printJSON(
          CoverageOutput(
            ratio: coverage.ratio, audited_transitions: coverage.auditedTransitions, jobs: coverage.jobs,
            unaudited_jobs: Array(coverage.unauditedJobs.prefix(100))))
      } else {
        print(
          String(
            format: "audit coverage %.2f %% (%d audited transitions, %d jobs, %d unexplained)", coverage.ratio * 100, coverage.auditedTransitions,
            coverage.jobs, coverage.unauditedJobs.count))
        for id in coverage.unauditedJobs.prefix(20) { print("unaudited: job \(id)") }
      }
    }
  }
}

/// A verifier key given inline or as a file that holds one.
func readKeyArgument(_ value: String) throws -> String {
  if FileManager.default.fileExists(atPath: value) {
    guard let text = try? String(contentsOfFile: value, encoding: .utf8) else {
      throw NovaError.invalidInput(field: "--key", message: "cannot read \(value)")
    }
    return text.trimmingCharacters(in: .whitespacesAndNewlines)
  }
  return value
}

struct VerifyOutput: Encodable {
  var passed: Bool
  var entries: Int64
  var checkpoints_checked: Int
  var mirrored_checked: Int
  var consistency_proofs: Int
  var unanchored: Bool
  var root: String
  var problems: [String]
  var first_bad_entry: Int64?
}

struct ProofOutput: Encodable {
  var seq: Int64
  var tree_size: Int64
  var entry: String
  var leaf_hash: String
  var path: [String]
  var root: String
  var checkpoint: String?
  var valid: Bool
}

struct ConsistencyOutput: Encodable {
  var old_size: Int64
  var new_size: Int64
  var old_root: String
  var new_root: String
  var path: [String]
  var old_checkpoint: String?
  var new_checkpoint: String?
  var valid: Bool
}

struct CoverageOutput: Encodable {
  var ratio: Double
  var audited_transitions: Int
  var jobs: Int
  var unaudited_jobs: [String]
}
