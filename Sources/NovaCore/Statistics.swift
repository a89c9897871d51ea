/// The one definition of medians and percentiles that every figure in Nova uses: KPI summaries,
/// queue wait percentiles, the alert SLA report and every benchmark.
public enum Statistics {
  /// The nearest-rank percentile (`p` in 0...1) of values sorted ascending; nil when empty.
  ///
  /// Nearest rank returns a value that was observed (never an interpolation), which is what an
  /// SLA figure or a latency quantile should report.
  public static func percentile(sorted values: [Double], _ p: Double) -> Double? {
    guard !values.isEmpty else { return nil }
    let rank = Int((p * Double(values.count)).rounded(.up)) - 1
    return values[min(max(rank, 0), values.count - 1)]
  }

  /// The median of values in any order: the middle one, or the mean of the middle two; nil when empty.
  public static func median(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
  }

  /// The median of integers (rounded down when it falls between two).
  public static func median(_ values: [Int]) -> Int? {
    median(values.map(Double.init)).map { Int($0) }
  }
}
