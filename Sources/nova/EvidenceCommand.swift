import ArgumentParser
import Foundation
import NovaAlerting
import NovaApplication
import NovaCore
import NovaDatabase
import NovaMonitoring
import NovaPolicy
import NovaQueue
import NovaSecurity
import NovaServer

struct EvidenceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "evidence",
    abstract: "Export and verify signed, deterministic evidence bundles for governance reviews.",
    subcommands: [Export.self, Verify.self])

  struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write the evidence of a time window to a .tar.gz (same log and window, same bytes).",
      discussion: "File times in the archive are SOURCE_DATE_EPOCH when set, else the window's end.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(help: ArgumentHelp("Bundle to write.", valueName: "file.tar.gz")) var out: String
    @Option(help: ArgumentHelp("Window start, RFC 3339 (2026-11-01T00:00:00Z).", valueName: "time")) var since: String?
    @Option(help: ArgumentHelp("Window end, RFC 3339.", valueName: "time")) var until: String?
    @Option(help: ArgumentHelp("Approved policy baseline (from nova policy approve) for the drift status.", valueName: "file"))
    var policyBaseline: String?
    @OptionGroup var thresholds: ThresholdsOptions
    @Option(
      help: ArgumentHelp("A checkpoint mirror (`nova serve --checkpoint-mirror DIR`) the log must also verify against.", valueName: "dir"))
    var checkpointDir: String?

    func run() async throws {
      let sinceMillis = try since.map { try parseTime($0, flag: "--since") }
      let untilMillis = try until.map { try parseTime($0, flag: "--until") }
      if let sinceMillis, let untilMillis, sinceMillis > untilMillis {
        throw NovaError.invalidInput(field: "--since", message: "\(since!) is after --until \(until!)")
      }
      var epoch: Int64?
      if let text = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"], !text.isEmpty {
        guard let value = Int64(text), value >= 0 else {
          throw NovaError.invalidInput(field: "SOURCE_DATE_EPOCH", message: "'\(text)' is not a count of seconds")
        }
        epoch = value
      }
      let application = try await store.open()
      try await application.importTransitions()
      let security = application.security
      let jobs = application.jobStates
      try await store.authorize("evidence.export", PolicyResource(kind: "evidence"))
      let policy = try store.loadPolicy()
      let sections = try await EvidenceSections.build(
        journal: application.journal, alertStore: application.alertStore, policy: policy, baseline: try policyBaseline.map { try loadBaseline($0) },
        alertSettings: try thresholds.load(dataDir: store.dataDir)?.settings ?? AlertSettings(), since: sinceMillis, until: untilMillis)
      let mirrored = try await mirroredCheckpoints(in: checkpointDir)
      let summary: EvidenceBundle.ExportSummary
      do {
        summary = try await EvidenceBundle.export(
          log: security.audit, jobs: jobs, signer: security.signer, origin: security.origin, to: out, since: sinceMillis,
          until: untilMillis, sections: sections, sourceDateEpoch: epoch, mirrored: mirrored)
      } catch let error as UnverifiedHistory {
        NovaCommand.fail(error.description, code: ExitStatus.verificationFailed)
      }
      if output.json {
        try printJSON(summary)
      } else {
        print(
          "wrote \(summary.path): \(summary.bytes) bytes, entries \(summary.firstSeq)…\(summary.lastSeq) (\(summary.entries)), sha256 \(summary.sha256)"
        )
      }
    }
  }

  struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Check a bundle's files, signature and Merkle root against a key you trust; exit 5 naming what failed.",
      discussion: "Read-only: it opens no data directory and writes nothing.")
    @OptionGroup var output: OutputOptions
    @Argument(help: "The bundle.") var bundle: String
    @Option(
      help: ArgumentHelp(
        "Verifier key to trust, as the operator's `nova audit key` prints it, or a file holding it (or NOVA_VERIFIER_KEY).",
        valueName: "key"))
    var key: String?

    func run() async throws {
      // The key comes from whoever is trusted, never from a data directory next to the bundle.
      let given = key ?? ProcessInfo.processInfo.environment["NOVA_VERIFIER_KEY"].flatMap { $0.isEmpty ? nil : $0 }
      guard let given else {
        throw NovaError.invalidInput(
          field: "--key",
          message: "no verifier key: pass --key with the key the operator's `nova audit key` prints (or a file holding it), or set NOVA_VERIFIER_KEY")
      }
      let verifier = try NoteVerifier(verifierKey: try readKeyArgument(given))
      let result = try EvidenceBundle.verify(path: bundle, verifier: verifier)
      if output.json {
        try printJSON(EvidenceVerifyOutput(passed: result.passed, entries: result.entries, checks: result.checks, problems: result.problems))
      } else {
        for check in result.checks { print("ok: \(check)") }
        for problem in result.problems { FileHandle.standardError.write(Data("FAIL: \(problem)\n".utf8)) }
      }
      if !result.passed { throw ExitCode(ExitStatus.verificationFailed) }
    }
  }
}

func parseTime(_ text: String, flag: String) throws -> Int64 {
  guard let millis = AuditTime.parse(text) else {
    throw NovaError.invalidInput(field: flag, message: "'\(text)' is not an RFC 3339 time such as 2026-11-01T00:00:00Z")
  }
  return millis
}

struct EvidenceVerifyOutput: Encodable {
  var passed: Bool
  var entries: Int64
  var checks: [String]
  var problems: [String]
}
