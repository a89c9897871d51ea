import Foundation

extension Date {
  /// Milliseconds since 1970, rounded: the form Nova stores and hashes times in.
  public var millisecondsSince1970: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }

  /// The date `milliseconds` after 1970.
  public init(millisecondsSince1970 milliseconds: Int64) {
    self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
  }
}
