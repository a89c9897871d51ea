import ArgumentParser
import Foundation
import NovaCore
import NovaPolicy
import Yams

struct PolicyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "policy",
    abstract: "Check, test and validate policy rules; approve them and watch for drift.",
    subcommands: [Check.self, Test.self, Validate.self, Show.self, Approve.self, Drift.self])

  struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the decision for one request and why (nothing is recorded).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "The subject's id (token:NAME, agent:NAME, cli:USER).") var subject: String
    @Option(help: "A role of the subject (repeatable).") var role: [String] = []
    @Option(help: "The action (read, submit, cancel, retry, tokens.manage, policy.reload, …).") var action: String
    @Option(help: "The resource's kind (job, token, queue, audit, evidence, policy).") var resourceKind: String
    @Option(help: "The resource's id.") var resourceID: String?
    @Option(help: ArgumentHelp("A resource attribute (repeatable): queue=gpu, job_kind=train.llama.", valueName: "key=value")) var attr: [String] = []

    func run() async throws {
      let engine = try store.loadPolicy()
      let request = PolicyRequest(
        subject: PolicySubject(id: subject, roles: role), action: action,
        resource: PolicyResource(kind: resourceKind, id: resourceID, attributes: try parseAttributes(attr)))
      let decision = await engine.evaluate(request)
      if output.json {
        try printJSON(DecisionOutput(decision))
      } else {
        print("\(decision.allowed ? "ALLOW" : "DENY"): \(decision.reason)")
        print("source \(decision.source.rawValue), policy \(decision.policyVersion)\(decision.enforced ? "" : " (shadow mode: not enforced)")")
      }
      if !decision.allowed { throw ExitCode(ExitStatus.denied) }
    }
  }

  struct Test: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Run a table of requests with expected decisions (for policy authors' CI).",
      discussion: """
        FIXTURES.yaml: a list of cases, each with name, subject, roles, action, resource (kind, id,
        attributes) and expect (allow or deny). Exit 0 when every case holds, 5 otherwise.
        """)
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The fixtures file.") var fixtures: String

    func run() async throws {
      let cases = try PolicyFixture.load(path: fixtures)
      let engine = try store.loadPolicy()
      var failures: [String] = []
      for fixture in cases {
        let decision = await engine.evaluate(fixture.request)
        if decision.allowed != fixture.expectAllow {
          failures.append(
            "\(fixture.name) (\(fixtures):\(fixture.line)): expected \(fixture.expectAllow ? "allow" : "deny"), got \(decision.allowed ? "allow" : "deny"): \(decision.reason)"
          )
        } else if !output.json {
          print("ok   \(fixture.name): \(decision.allowed ? "allow" : "deny") (\(decision.reason))")
        }
      }
      if output.json {
        try printJSON(TestOutput(cases: cases.count, failed: failures.count, failures: failures, policy_version: engine.version))
      } else {
        for failure in failures { print("FAIL \(failure)") }
        print("\(cases.count - failures.count) passed, \(failures.count) failed (policy \(engine.version))")
      }
      if !failures.isEmpty { throw ExitCode(ExitStatus.verificationFailed) }
    }
  }

  struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a policy file; errors name file, line and column.")
    @Argument(help: "The policy file.") var file: String

    func run() async throws {
      do {
        let document = try PolicyDocument.load(path: file)
        print(
          "\(file): \(document.rules.count) rules, version \(document.version)\(document.opa.map { ", OPA \(Redaction.url("\($0.url)/v1/data/\($0.path)")) (\($0.onError.rawValue))" } ?? "")"
        )
      } catch {
        throw NovaError.invalidInput(field: "policy", message: error.description)
      }
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the policy in effect: file, version, rules.")
    @OptionGroup var store: StoreOptions

    func run() async throws {
      let engine = try store.loadPolicy()
      let document = engine.document
      print("policy \(engine.version) from \(engine.path ?? "the built-in role rules")\(document.enforce ? "" : " (shadow mode)")")
      for rule in document.rules {
        var parts: [String] = []
        if let subjects = rule.subjects { parts.append("subjects \(subjects.joined(separator: ","))") }
        if let roles = rule.roles { parts.append("roles \(roles.joined(separator: ","))") }
        if let actions = rule.actions { parts.append("actions \(actions.joined(separator: ","))") }
        if let kinds = rule.resourceKinds { parts.append("kind \(kinds.joined(separator: ","))") }
        for (key, values) in rule.resourceAttributes.sorted(by: { $0.key < $1.key }) { parts.append("\(key) \(values.joined(separator: ","))") }
        print("  \(rule.effect.rawValue)\t\(rule.name)\t\(parts.isEmpty ? "everything" : parts.joined(separator: "; "))")
      }
      if let opa = document.opa { print("  otherwise OPA \(Redaction.url("\(opa.url)/v1/data/\(opa.path)")), on error \(opa.onError.rawValue)") }
    }
  }

  struct Approve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the policy in effect as the approved baseline for drift checks.")
    @OptionGroup var store: StoreOptions
    @Option(help: ArgumentHelp("Baseline file to write.", valueName: "file")) var out: String
    @Option(help: "The OPA bundle revision to approve too.") var opaRevision: String?

    func run() async throws {
      let engine = try store.loadPolicy()
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
      try encoder.encode(PolicyBaseline(policyVersion: engine.version, opaRevision: opaRevision)).write(to: URL(fileURLWithPath: out))
      print("approved policy \(engine.version)\(opaRevision.map { " and OPA revision \($0)" } ?? "") in \(out)")
    }
  }

  struct Drift: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Compare the policy in effect (and OPA's revision) with an approved baseline; exit 5 on drift.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var output: OutputOptions
    @Option(help: ArgumentHelp("The approved baseline (from nova policy approve).", valueName: "file")) var approved: String

    func run() async throws {
      let baseline = try loadBaseline(approved)
      let engine = try store.loadPolicy()
      if baseline.opaRevision != nil, engine.document.opa != nil {
        // Ask OPA once so that its current revision is known.
        _ = await engine.evaluate(
          PolicyRequest(subject: PolicySubject(id: "nova:drift-check"), action: "drift.check", resource: PolicyResource(kind: "policy")))
      }
      let drift = engine.drift(from: baseline)
      if output.json {
        try printJSON(
          DriftOutput(drifted: drift.drifted, differences: drift.differences, policy_version: engine.version, opa_revision: engine.opaRevision))
      } else if drift.drifted {
        for difference in drift.differences { print("DRIFT: \(difference)") }
      } else {
        print("no drift: policy \(engine.version)\(engine.opaRevision.map { ", OPA revision \($0)" } ?? "") as approved")
      }
      if drift.drifted { throw ExitCode(ExitStatus.verificationFailed) }
    }
  }
}

func loadBaseline(_ path: String) throws -> PolicyBaseline {
  guard let data = FileManager.default.contents(atPath: path) else {
    throw NovaError.invalidInput(field: "baseline", message: "cannot read \(path)")
  }
  do {
    return try JSONDecoder().decode(PolicyBaseline.self, from: data)
  } catch {
    throw NovaError.malformedInput(field: path, message: "expected {\"policy_version\": …, \"opa_revision\": …}: \(JSONErrorText.describe(error))")
  }
}

func parseAttributes(_ pairs: [String]) throws -> [String: String] {
  var attributes: [String: String] = [:]
  for pair in pairs {
    guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
      throw NovaError.invalidInput(field: "--attr", message: "'\(pair)' is not key=value")
    }
    attributes[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
  }
  return attributes
}

struct DecisionOutput: Encodable {
  var allowed: Bool
  var reason: String
  var source: String
  var rule: String?
  var policy_version: String
  var opa_revision: String?
  var fallback: String?
  var enforced: Bool

  init(_ decision: PolicyDecision) {
    allowed = decision.allowed
    reason = decision.reason
    source = decision.source.rawValue
    rule = decision.rule
    policy_version = decision.policyVersion
    opa_revision = decision.opaRevision
    fallback = decision.fallback
    enforced = decision.enforced
  }
}

struct TestOutput: Encodable {
  var cases: Int
  var failed: Int
  var failures: [String]
  var policy_version: String
}

struct DriftOutput: Encodable {
  var drifted: Bool
  var differences: [String]
  var policy_version: String
  var opa_revision: String?
}
