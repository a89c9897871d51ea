extension Duration {
  /// The duration in seconds as a floating-point number.
  public var seconds: Double {
    let (s, attoseconds) = components
    return Double(s) + Double(attoseconds) / 1e18
  }

  /// A duration from a floating-point number of seconds.
  public static func seconds(fractional value: Double) -> Duration {
    .nanoseconds(Int64((value * 1e9).rounded()))
  }
}
