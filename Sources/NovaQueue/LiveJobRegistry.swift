import Foundation
import Synchronization

/// A job registry that can be replaced while workers run (a reloaded `nova-jobs.yaml`): each
/// claim and each job reads the registry in force at that moment.
public final class LiveJobRegistry: Sendable {
  /// The registry and the kinds it runs, made once per registry (every claim asks for them).
  private let value: Mutex<(registry: JobRegistry, kinds: JobKindFilter)>

  public init(_ registry: JobRegistry) { value = Mutex((registry, JobKindFilter(exactly: registry.handledKinds))) }

  /// The registry in force.
  public var current: JobRegistry { value.withLock { $0.registry } }

  /// The kinds the registry in force has handlers for (external kinds are not among them).
  public var kinds: JobKindFilter { value.withLock { $0.kinds } }

  /// Puts `registry` in force; jobs already running finish with their handler.
  public func replace(with registry: JobRegistry) {
    let kinds = JobKindFilter(exactly: registry.handledKinds)
    value.withLock { $0 = (registry, kinds) }
  }
}
