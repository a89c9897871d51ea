import NovaCore
import Testing

@Suite("RFC 3339 audit time", .timeLimit(.minutes(1)))
struct AuditTimeTests {
  @Test func writesAndParsesMillisecondsInUTC() {
    #expect(AuditTime.string(0) == "1970-01-01T00:00:00.000Z")
    #expect(AuditTime.string(951_782_400_000) == "2000-02-29T00:00:00.000Z")
    #expect(AuditTime.string(-1) == "1969-12-31T23:59:59.999Z")
    #expect(AuditTime.parse("2000-02-29T00:00:00.000Z") == 951_782_400_000)
    #expect(AuditTime.parse("2000-02-29T01:00:00+01:00") == 951_782_400_000)
    #expect(AuditTime.parse("2000-02-29") == nil)
  }
}
