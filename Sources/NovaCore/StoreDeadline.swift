/// How long a store call may take, retries included, for the task that makes it.
///
/// Request paths (an HTTP request, `/readyz`) set a short deadline so that a store that is down
/// is reported within it as `NovaError.unavailable`; background loops set none and let the store
/// retry for as long as its own settings allow.
public enum StoreDeadline {
  /// The instant by which store calls on this task give up; nil means no bound but the store's own.
  @TaskLocal public static var current: ContinuousClock.Instant?

  /// Runs `body` with store calls bounded to `duration` from now (or the enclosing deadline, if sooner).
  public static func within<T>(_ duration: Duration, _ body: () async throws -> T) async rethrows -> T {
    var deadline = ContinuousClock.now.advanced(by: duration)
    if let outer = current, outer < deadline { deadline = outer }
    return try await $current.withValue(deadline) { try await body() }
  }

  /// Time left before the deadline (zero when passed); nil without a deadline.
  public static var remaining: Duration? {
    guard let current else { return nil }
    let left = current - ContinuousClock.now
    return left < .zero ? .zero : left
  }
}
