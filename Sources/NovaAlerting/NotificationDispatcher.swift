import Foundation
import Logging
import Metrics
import NovaCore
import NovaMonitoring

/// Sends what the outbox holds: due deliveries, a few at a time, retrying 429, 5xx and network
/// failures with exponential backoff and never a rejected request (a 400 is journaled instead).
public struct NotificationDispatcher: Sendable {
  public static let notificationsMetric = "nova_alert_notifications_total"

  public let store: AlertStore
  public let sender: NotificationSender
  public let journal: OrchestrationJournal?
  public let clock: any NovaClock
  /// The first retry's delay; each next one doubles, up to `maxDelay`.
  public var baseDelay: Duration
  public var maxDelay: Duration
  public var maxAttempts: Int
  public let logger: Logger

  public init(
    store: AlertStore, sender: NotificationSender, journal: OrchestrationJournal?, clock: any NovaClock = SystemClock(),
    baseDelay: Duration = .seconds(1), maxDelay: Duration = .seconds(300), maxAttempts: Int = 12, logger: Logger
  ) {
    self.store = store
    self.sender = sender
    self.journal = journal
    self.clock = clock
    self.baseDelay = baseDelay
    self.maxDelay = maxDelay
    self.maxAttempts = maxAttempts
    self.logger = logger
  }

  /// The delay before attempt `attempts + 1`.
  public func delay(afterAttempts attempts: Int) -> Duration {
    let factor = pow(2, Double(max(attempts - 1, 0)))
    return min(maxDelay, baseDelay * factor)
  }

  /// Sends every due delivery once; returns how many were sent.
  @discardableResult
  public func deliverDue() async throws -> Int {
    let due = try await store.dueDeliveries(now: clock.now().millisecondsSince1970)
    if due.isEmpty { return 0 }
    let outcomes = await withTaskGroup(of: (Delivery, NotificationSender.Outcome).self) { group in
      var running = 0
      var outcomes: [(Delivery, NotificationSender.Outcome)] = []
      for delivery in due {
        if running == 8, let next = await group.next() {
          outcomes.append(next)
          running -= 1
        }
        group.addTask { (delivery, await sender.send(delivery)) }
        running += 1
      }
      for await next in group { outcomes.append(next) }
      return outcomes
    }
    var sent = 0
    for (delivery, outcome) in outcomes {
      let receiver = delivery.request.receiver
      switch outcome {
      case .sent:
        sent += 1
        try await store.record(delivery.id, status: .sent)
        Counter(label: Self.notificationsMetric, dimensions: [("receiver", receiver), ("result", "sent")]).increment()
      case .retry(let reason):
        let attempts = delivery.attempts + 1
        if attempts >= maxAttempts {
          try await giveUp(delivery, reason: "\(attempts) attempts failed; last: \(reason)")
        } else {
          let retryAt = clock.now().millisecondsSince1970 + Int64(delay(afterAttempts: attempts).seconds * 1000)
          try await store.record(delivery.id, status: .pending, retryAt: retryAt, error: reason)
          Counter(label: Self.notificationsMetric, dimensions: [("receiver", receiver), ("result", "retry")]).increment()
          logger.warning("notification to \(receiver) will be retried", metadata: ["attempt": "\(attempts)", "error": "\(reason)"])
        }
      case .rejected(let reason):
        try await giveUp(delivery, reason: reason)
      }
    }
    return sent
  }

  /// Delivers until cancelled: when `signal` says the outbox grew, and every second for retries
  /// and for requests other processes stored (the CLI's acknowledgements).
  public func runDeliveries(signal: WakeSignal) async {
    while !Task.isCancelled {
      do {
        try await deliverDue()
      } catch {
        logger.error("alert notification delivery failed", metadata: ["error": "\(error)"])
      }
      await signal.wait(timeout: .seconds(1), clock: clock)
    }
  }

  private func giveUp(_ delivery: Delivery, reason: String) async throws {
    try await store.record(delivery.id, status: .failed, error: reason)
    Counter(label: Self.notificationsMetric, dimensions: [("receiver", delivery.request.receiver), ("result", "failed")]).increment()
    logger.error("notification to \(delivery.request.receiver) failed", metadata: ["error": "\(reason)"])
    try await journal?.append(
      kind: "notification.failed", subject: delivery.request.receiver,
      payload: .object([
        "delivery": .int(delivery.id), "action": .string(delivery.request.action.rawValue), "url": .string(Redaction.url(delivery.request.url)),
        "error": .string(reason), "alert_ids": .array(delivery.request.alertIDs.map(JSONValue.int)),
      ]), actor: "alerts")
  }
}
