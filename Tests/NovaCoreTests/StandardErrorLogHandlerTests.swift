import Logging
import NovaCore
import Synchronization
import Testing

@Suite struct StandardErrorLogHandlerTests {
  /// The lines a handler wrote.
  final class Lines: Sendable {
    let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
  }

  private func logger(_ lines: Lines, provider: Logger.MetadataProvider? = nil) -> Logger {
    Logger(label: "nova.test") { label in
      StandardErrorLogHandler(label: label, metadataProvider: provider) { line in lines.lines.withLock { $0.append(line) } }
    }
  }

  @Test func writesStreamLogHandlersFormatWithMetadataSortedAtLogTime() throws {
    let lines = Lines()
    var log = logger(lines)
    log[metadataKey: "zeta"] = "last"
    log[metadataKey: "alpha"] = "first"
    log.info("started", metadata: ["job": "j-1", "alpha": "overridden"])
    log.debug("below the level")
    let line = try #require(lines.all.only)
    // "2026-12-07T19:23:44+0000 info nova.test: alpha=overridden job=j-1 zeta=last [NovaCoreTests] started\n"
    let match = try #require(line.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (.*)\n/))
    #expect(match.1 == "info nova.test: alpha=overridden job=j-1 zeta=last [NovaCoreTests] started")
  }

  @Test func aLoggerWithoutMetadataWritesNone() throws {
    let lines = Lines()
    var log = logger(lines)
    log.logLevel = .debug
    log.debug("plain")
    let line = try #require(lines.all.only)
    #expect(line.hasSuffix(" debug nova.test: [NovaCoreTests] plain\n"))
  }

  @Test func providedMetadataAndErrorsAreWritten() throws {
    struct Broken: Error, CustomStringConvertible { var description: String { "disk full" } }
    let lines = Lines()
    let log = logger(lines, provider: Logger.MetadataProvider { ["trace": "t-7"] })
    log.error("could not write", error: Broken())
    let line = try #require(lines.all.only)
    #expect(line.contains(" error nova.test: error.message=disk full error.type="))
    #expect(line.contains("Broken trace=t-7 [NovaCoreTests] could not write\n"))
  }

  @Test func metadataIsKeptPerLoggerCopy() {
    let lines = Lines()
    var first = logger(lines)
    first[metadataKey: "request"] = "1"
    var second = first
    second[metadataKey: "request"] = "2"
    first.info("a")
    second.info("b")
    #expect(lines.all.map { $0.contains("request=1") } == [true, false])
    #expect(lines.all.map { $0.contains("request=2") } == [false, true])
    #expect(first[metadataKey: "request"] == "1")
  }
}

extension Array {
  fileprivate var only: Element? { count == 1 ? first : nil }
}
