import Foundation
import Logging

/// Writes log lines to standard error in `StreamLogHandler`'s format, formatting a logger's
/// metadata only when a line is written.
///
/// `StreamLogHandler` formats its whole metadata every time an entry is set: Hummingbird sets
/// the request id on every request's logger and the worker pool a job's fields on every job's,
/// so each request and each job paid for sorting and printing metadata that the log level then
/// left unwritten (2 % of `nova serve`'s CPU under single submissions).
public struct StandardErrorLogHandler: LogHandler {
  public var logLevel: Logger.Level = .info
  public var metadataProvider: Logger.MetadataProvider?
  public var metadata = Logger.Metadata()
  private let label: String
  private let write: @Sendable (String) -> Void

  /// A handler for `label` writing to standard error.
  public init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
    self.init(label: label, metadataProvider: metadataProvider) { line in
      var line = line
      line.withUTF8 { bytes in
        // One write per line (a line is shorter than a pipe's atomic size): lines of several
        // threads do not interleave. A write cut short goes on with the rest.
        var offset = 0
        while offset < bytes.count, let base = bytes.baseAddress {
          let written = Foundation.write(2, base + offset, bytes.count - offset)
          if written < 0, errno == EINTR { continue }
          if written <= 0 { return }
          offset += written
        }
      }
    }
  }

  /// A handler for `label` that gives each line to `write` (tests).
  package init(label: String, metadataProvider: Logger.MetadataProvider?, write: @escaping @Sendable (String) -> Void) {
    self.label = label
    self.metadataProvider = metadataProvider
    self.write = write
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var merged = metadata
    if let provided = metadataProvider?.get(), !provided.isEmpty {
      merged.merge(provided) { _, new in new }
    }
    if let explicit = event.metadata, !explicit.isEmpty {
      merged.merge(explicit) { _, new in new }
    }
    if let error = event.error {
      merged["error.message"] = "\(error)"
      merged["error.type"] = "\(String(reflecting: type(of: error)))"
    }
    write("\(Self.timestamp()) \(event.level)\(label.isEmpty ? "" : " ")\(label):\(Self.format(merged)) [\(event.source)] \(event.message)\n")
  }

  /// ` key=value key=value`, keys sorted, or nothing for no metadata.
  package static func format(_ metadata: Logger.Metadata) -> String {
    if metadata.isEmpty { return "" }
    return " " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
  }

  /// Local time to the second with its offset, as `StreamLogHandler` writes it.
  private static func timestamp() -> String {
    var now = time(nil)
    var local = tm()
    guard localtime_r(&now, &local) != nil else { return "<unknown>" }
    var buffer = [CChar](repeating: 0, count: 64)
    let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}
