import Foundation
import NovaCore
import NovaJobKinds
import NovaQueue
import Testing

/// `nova-jobs.yaml` is read strictly: every error names the file, line, column and field.
@Suite("Job kinds file")
struct JobKindsFileTests {
  @Test func readsCommandAndHTTPKinds() throws {
    let file = try JobKindsFile.parse(
      """
      kinds:
        summarise:
          type: command
          command: [python3, -m, agents.summarise]
          cwd: /srv/agents
          env: {MODEL: small}
          env_pass: [OPENAI_API_KEY]
          timeout: 5m
          max_output_bytes: 4096
          retry_exit_codes: [75, 69]
          dead_exit_codes: [2]
          kill_grace: 2s
        notify:
          type: http
          url: http://127.0.0.1:8080/run
          headers: {X-Team: ml}
          headers_env: {Authorization: AGENT_TOKEN}
          secret_env: AGENT_SECRET
      """, file: "nova-jobs.yaml")
    #expect(file.kinds.map(\.name) == ["summarise", "notify"])
    let summarise = try #require(file.kinds.first)
    #expect(summarise.timeout == .seconds(300))
    #expect(
      summarise.action
        == .command(
          CommandKind(
            command: ["python3", "-m", "agents.summarise"], cwd: "/srv/agents", env: ["MODEL": "small"], envPass: ["OPENAI_API_KEY"],
            maxOutputBytes: 4096, retryExitCodes: [75, 69], deadExitCodes: [2], killGrace: .seconds(2))))
    #expect(
      file.kinds[1].action
        == .http(
          HTTPKind(
            url: "http://127.0.0.1:8080/run", headers: ["X-Team": "ml"], headersEnv: ["Authorization": "AGENT_TOKEN"],
            secretEnv: "AGENT_SECRET")))
    #expect(file.kinds[1].timeout == .seconds(30))
  }

  /// Issue #21 point 4: how many calls of an HTTP kind one process makes at once.
  @Test func readsMaxConcurrency() throws {
    let file = try JobKindsFile.parse(
      """
      kinds:
        notify: {type: http, url: "http://127.0.0.1:8080/run", max_concurrency: 16}
        bulk:
          type: http
          url: http://127.0.0.1:8080/bulk
          max_concurrency: 1024
        plain: {type: http, url: "http://127.0.0.1:8080/run"}
      """, file: "nova-jobs.yaml")
    let expected: [JobKindDefinition.Action] = [
      .http(HTTPKind(url: "http://127.0.0.1:8080/run", maxConcurrency: 16)),
      .http(HTTPKind(url: "http://127.0.0.1:8080/bulk", maxConcurrency: 1024)),
      .http(HTTPKind(url: "http://127.0.0.1:8080/run")),
    ]
    #expect(file.kinds.map(\.action) == expected)
  }

  @Test func externalKindsAreAcceptedButRunByHTTPWorkersOnly() throws {
    let file = try JobKindsFile.parse(
      """
      kinds:
        train.step:
          type: external
          description: one optimiser step, run by the GPU hosts' Python workers
        ping: {type: external, timeout: 90s}
      """, file: "nova-jobs.yaml")
    #expect(file.kinds.map(\.type) == ["external", "external"])
    #expect(file.kinds.map(\.timeout) == [.zero, .seconds(90)])
    #expect(file.kinds[0].action == .external(description: "one optimiser step, run by the GPU hosts' Python workers"))
    var registry = BuiltinJobs.registry
    file.register(into: &registry)
    // Submissions of the kinds are accepted (any object as payload); this process runs none of them.
    try registry.validate(kind: "train.step", payload: Data(#"{"lr": 0.1}"#.utf8))
    #expect(registry.kinds.contains("train.step") && registry.kinds.contains("ping"))
    #expect(!registry.handledKinds.contains("train.step"))
    #expect(registry.isExternal("ping") && !registry.isExternal("echo"))
    #expect(registry.externalTimeout("ping") == .seconds(90) && registry.externalTimeout("train.step") == nil)
    #expect(LiveJobRegistry(registry).kinds.patterns == BuiltinJobs.registry.kinds)
    #expect(throws: NovaError.unknownJobKind("train.nope")) { try registry.validate(kind: "train.nope", payload: Data("{}".utf8)) }
    // A kind declared in-process again later runs here.
    registry.registerRaw("ping") { _, _ in nil }
    #expect(registry.handledKinds.contains("ping") && !registry.isExternal("ping"))

    do {
      _ = try JobKindsFile.parse("kinds:\n  a: {type: external, command: [x]}\n", file: "f.yaml")
      Issue.record("an external kind took a command")
    } catch {
      #expect(error.description.hasPrefix("f.yaml:2:"))
      #expect(error.description.contains("unknown key 'command'"))
    }
  }

  @Test(arguments: [
    ("kinds:\n  a:\n    type: command\n    command: [x]\n    shell: true\n", "5:5", "kinds.a: unknown key 'shell'"),
    ("kinds:\n  a:\n    type: command\n    command: \"python3 x.py\"\n", "4:14", "kinds.a.command: expected a list"),
    ("kinds:\n  a:\n    type: command\n", "3:5", "'command' is required"),
    ("kinds:\n  a: {type: cron}\n", "2:13", "kinds.a.type: 'cron' is not command, http or external"),
    ("kinds:\n  echo: {type: command, command: [x]}\n", "2:3", "kinds.echo: is a built-in kind"),
    ("kinds:\n  a b: {type: command, command: [x]}\n", "2:3", "may hold only letters"),
    ("kinds:\n  a: {type: command, command: [x], timeout: 0s}\n", "2:45", "kinds.a.timeout: '0s' is not a duration"),
    ("kinds:\n  a: {type: command, command: [x], retry_exit_codes: [1], dead_exit_codes: [1]}\n", "2:6", "exit code 1 is in both"),
    ("kinds:\n  a: {type: command, command: [x], dead_exit_codes: [256]}\n", "2:54", "expected a number in 1.0...255.0"),
    ("kinds:\n  a: {type: command, command: [x], env_pass: [\"1X\"]}\n", "2:46", "'1X' is not an environment variable name"),
    ("kinds:\n  a: {type: http, url: ftp://x/}\n", "2:24", "is not an http:// or https:// URL"),
    ("kinds:\n  a: {type: http, url: \"http://x/\", method: GET}\n", "2:45", "'GET' is not POST, PUT or PATCH"),
    ("kinds:\n  a: {type: http, url: \"http://x/\", max_concurrency: 0}\n", "2:54", "expected a whole number from 1 to 1024"),
    ("kinds:\n  a:\n    type: http\n    url: http://x/\n    max_concurrency: 1025\n", "5:22", "a.max_concurrency: expected a whole number"),
    ("kinds:\n  a: {type: http, url: \"http://x/\", max_concurrency: 2.5}\n", "2:54", "max_concurrency: expected a whole number"),
    ("kinds:\n  a: {type: http, url: \"http://x/\", max_concurrency: [8]}\n", "2:54", "max_concurrency: expected a whole number"),
    ("kinds:\n  a: {type: command, command: [x], max_concurrency: 8}\n", "2:36", "kinds.a: unknown key 'max_concurrency'"),
    ("kinds:\n  a: {type: external, resources: {gpus: -1}}\n", "2:34", "invalid kinds.a.resources.gpus: -1 is out of range 0...64"),
    ("kinds:\n  a:\n    type: external\n    resources: [1]\n", "4:16", "invalid kinds.a.resources: must be an object"),
    ("kinds:\n  a:\n    type: command\n    command: [x]\n    constraints: {model: x}\n", "5:18", "invalid kinds.a.constraints.model: unknown"),
    ("kinds:\n  a: {type: http, url: \"http://x/\", resources: {gpu_memory_mib: 100}}\n", "2:48", "kinds.a.resources.gpu_memory_mib: asks for"),
    ("kinds:\n  a: [x\n", "3:1", "YAML syntax"),
    ("jobs: {}\n", "1:1", "file: unknown key 'jobs'"),
  ])
  func refusesBadFilesWithTheirPosition(text: String, position: String, message: String) {
    do {
      _ = try JobKindsFile.parse(text, file: "nova-jobs.yaml", builtins: ["echo"])
      Issue.record("accepted \(text)")
    } catch {
      #expect(error.description.hasPrefix("nova-jobs.yaml:\(position): "), "\(error)")
      #expect(error.description.contains(message), "\(error)")
    }
  }

  /// Issue #22 points 1 and 4: a kind's `resources` and `constraints` are what its jobs ask for
  /// unless they give their own, read as strictly as a job's.
  @Test func readsResourcesAndConstraintsAsTheDefaultsOfTheKindsJobs() throws {
    let file = try JobKindsFile.parse(
      """
      kinds:
        train.step:
          type: external
          resources: {gpus: 1, memory_mib: 2048}
          constraints: {gpu_model: "*H100*", labels: {zone: b}}
        render:
          type: command
          command: [/bin/true]
          resources:
            cpus: 4
        notify: {type: http, url: "http://127.0.0.1:8080/run", constraints: {host: "spark-*"}}
        plain: {type: external}
      """, file: "nova-jobs.yaml")
    let resources = JobResources(gpus: 1, memory_mib: 2048)
    let constraints = JobConstraints(gpu_model: "*H100*", labels: ["zone": "b"])
    #expect(file.kinds.map(\.name) == ["train.step", "render", "notify", "plain"])
    #expect(file.kinds.map(\.resources) == [resources, JobResources(cpus: 4), nil, nil])
    #expect(file.kinds.map(\.constraints) == [constraints, nil, JobConstraints(host: "spark-*"), nil])
    #expect(file.kinds[0].action == .external(description: nil))

    var registry = BuiltinJobs.registry
    file.register(into: &registry)
    let defaulted = registry.withDefaults(JobRequest(kind: "train.step"))
    #expect(defaulted.resources == resources && defaulted.constraints == constraints)
    #expect(defaulted.requirements == JobRequirements(resources: resources, constraints: constraints))
    // A job's own resources replace the kind's; the kind's constraints still apply.
    var own = JobRequest(kind: "train.step")
    own.resources = JobResources(gpus: 2)
    let kept = registry.withDefaults(own)
    #expect(kept.resources == JobResources(gpus: 2) && kept.constraints == constraints)
    var ownConstraints = JobRequest(kind: "train.step")
    ownConstraints.constraints = JobConstraints(host: "spark-*")
    #expect(registry.withDefaults(ownConstraints).constraints == JobConstraints(host: "spark-*"))
    #expect(registry.withDefaults(ownConstraints).resources == resources)
    #expect(registry.withDefaults(JobRequest(kind: "render")).requirements == JobRequirements(resources: JobResources(cpus: 4)))
    #expect(registry.withDefaults(JobRequest(kind: "notify")).requirements == JobRequirements(constraints: JobConstraints(host: "spark-*")))
    // Kinds without defaults, and built-in kinds, are left as they are.
    #expect(registry.withDefaults(JobRequest(kind: "plain")) == JobRequest(kind: "plain"))
    #expect(registry.withDefaults(JobRequest(kind: "echo")) == JobRequest(kind: "echo"))
  }

  @Test func aKindsBadResourcesAreAnErrorAtTheLineOfTheirMapping() {
    do {
      _ = try JobKindsFile.parse("kinds:\n  train.step:\n    type: external\n    resources: {gpus: -1}\n", file: "nova-jobs.yaml")
      Issue.record("a kind asking for -1 GPUs was accepted")
    } catch {
      #expect(error.file == "nova-jobs.yaml")
      #expect(error.line == 4 && error.column == 16, "\(error)")
      #expect(error.message == "invalid kinds.train.step.resources.gpus: -1 is out of range 0...64", "\(error)")
    }
  }

  @Test func anEmptyFileDeclaresNothing() throws {
    #expect(try JobKindsFile.parse("", file: "f").kinds.isEmpty)
  }
}
