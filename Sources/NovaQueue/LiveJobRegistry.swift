import Foundation
import Synchronization

/// A job registry that can be replaced while workers run (a reloaded `nova-jobs.yaml`): each
/// claim and each job reads the registry in force at that moment.
public final class LiveJobRegistry: Sendable {
  private let value: Mutex<JobRegistry>

  public init(_ registry: JobRegistry) { value = Mutex(registry) }

  /// The registry in force.
  public var current: JobRegistry { value.withLock { $0 } }

  /// Puts `registry` in force; jobs already running finish with their handler.
  public func replace(with registry: JobRegistry) { value.withLock { $0 = registry } }
}
