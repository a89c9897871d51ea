import Foundation
import NovaCore

/// A job kind declared in `nova-jobs.yaml`: a program to run or an HTTP endpoint to call.
public struct JobKindDefinition: Sendable, Equatable {
  /// The kind's name, as jobs name it.
  public var name: String
  /// How long one attempt may run before it is stopped and failed.
  public var timeout: Duration
  public var action: Action
  /// What each job of the kind asks of its host unless it gives its own `resources`.
  public var resources: JobResources?
  /// Where each job of the kind may run unless it gives its own `constraints`.
  public var constraints: JobConstraints?
  /// What the kind's jobs with one concurrency key share (`max_running_per_key`, `rate_per_key`).
  public var keyLimits: KeyLimits?

  /// What running a job of the kind does.
  public enum Action: Sendable, Equatable {
    case command(CommandKind)
    case http(HTTPKind)
    /// `type: external`: declared so that jobs of the kind are accepted; workers in any language
    /// claim and run them over HTTP (`POST /v1/workers/claim`), never this process.
    case external(description: String?)
  }

  public init(name: String, timeout: Duration, action: Action, resources: JobResources? = nil, constraints: JobConstraints? = nil) {
    self.name = name
    self.timeout = timeout
    self.action = action
    self.resources = resources
    self.constraints = constraints
  }

  /// `command`, `http` or `external`.
  public var type: String {
    switch action {
    case .command: "command"
    case .http: "http"
    case .external: "external"
    }
  }
}

/// `type: command`: a program run without a shell, the payload on its standard input.
public struct CommandKind: Sendable, Equatable {
  /// The program and its arguments (the first is looked up in `PATH` unless it holds a `/`).
  public var command: [String]
  /// Working directory; nil keeps the worker's.
  public var cwd: String?
  /// Fixed environment variables.
  public var env: [String: String]
  /// Variables copied from the worker's environment when set there (besides `PATH`, `HOME`,
  /// `LANG`, which always are).
  public var envPass: [String]
  /// Kept per stream and attempt; the rest is counted and dropped, with a marker.
  public var maxOutputBytes: Int
  /// Exit codes that fail the attempt to be retried (with backoff).
  public var retryExitCodes: Set<Int32>
  /// Exit codes that dead-letter the job at once.
  public var deadExitCodes: Set<Int32>
  /// Between SIGTERM and SIGKILL to every process of the attempt.
  public var killGrace: Duration
  /// The account the program runs as (name or number); nil keeps the worker's. Another account
  /// cannot read the data directory, the signing key or the worker's memory.
  public var user: String?
  /// The program's group (name or number); nil takes the user's primary group.
  public var group: String?

  public init(
    command: [String], cwd: String? = nil, env: [String: String] = [:], envPass: [String] = [],
    maxOutputBytes: Int = 1 << 20, retryExitCodes: Set<Int32> = [75], deadExitCodes: Set<Int32> = [],
    killGrace: Duration = .seconds(10), user: String? = nil, group: String? = nil
  ) {
    self.user = user
    self.group = group
    self.command = command
    self.cwd = cwd
    self.env = env
    self.envPass = envPass
    self.maxOutputBytes = maxOutputBytes
    self.retryExitCodes = retryExitCodes
    self.deadExitCodes = deadExitCodes
    self.killGrace = killGrace
  }
}

/// `type: http`: a call to an agent's endpoint with the payload as the JSON body.
public struct HTTPKind: Sendable, Equatable {
  public var url: String
  public var method: String
  /// Fixed header values.
  public var headers: [String: String]
  /// Header values read from the worker's environment when a job runs: header → variable.
  public var headersEnv: [String: String]
  /// The variable holding the secret that signs each call (Standard Webhooks: `webhook-id`,
  /// `webhook-timestamp`, `webhook-signature`); a `whsec_` secret is a base64 key.
  public var secretEnv: String?
  /// The most calls of the kind one process makes at once (1...1024); the others wait for a slot,
  /// outside the timeout. Nil: no limit beyond the worker's own (`--workers`).
  public var maxConcurrency: Int?

  public init(
    url: String, method: String = "POST", headers: [String: String] = [:], headersEnv: [String: String] = [:], secretEnv: String? = nil,
    maxConcurrency: Int? = nil
  ) {
    self.url = url
    self.method = method
    self.headers = headers
    self.headersEnv = headersEnv
    self.secretEnv = secretEnv
    self.maxConcurrency = maxConcurrency
  }
}
