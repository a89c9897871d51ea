import NovaCore

/// The policy engine reads its clock in nanoseconds (cache lifetimes, the breaker's cooldown).
extension NovaClock {
  func nanoseconds() -> UInt64 { uptime().nanoseconds }
}

extension Duration {
  var nanoseconds: UInt64 {
    let (seconds, attoseconds) = components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
  }
}
