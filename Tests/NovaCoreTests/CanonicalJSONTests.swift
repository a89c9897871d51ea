import Foundation
import NovaCore
import Testing

@Suite("RFC 8785 canonical JSON", .timeLimit(.minutes(5)))
struct CanonicalJSONTests {
  @Test func sortsKeysByUTF16AndDropsWhitespace() throws {
    let value = try JSONValue.parse(Data(#"{ "b": [1, 2, {"z": null, "a": true}], "a": "x", "\u20ac": 1, "\ud83d\ude00": 2, "1": false }"#.utf8))
    #expect(try CanonicalJSON.string(value) == #"{"1":false,"a":"x","b":[1,2,{"a":true,"z":null}],"€":1,"😀":2}"#)
  }

  /// Strings that need no escape are copied whole, whether stored inline (up to 15 bytes), on
  /// the heap, or made from a substring; an escape found late still escapes from the start.
  @Test func copiesCleanStringsWholeInEveryStorage() {
    let long = String(repeating: "job-0193a7c2-", count: 8) + "é€😀"
    let cases = ["", "job.enqueued", long, String(long.dropFirst(4).prefix(40)), String(repeating: "a", count: 300) + "\n"]
    let expected = [
      "\"\"", "\"job.enqueued\"", "\"" + long + "\"", "\"" + String(long.dropFirst(4).prefix(40)) + "\"",
      "\"" + String(repeating: "a", count: 300) + "\\n\"",
    ]
    for (text, want) in zip(cases, expected) {
      var out: [UInt8] = [UInt8(ascii: "[")]
      CanonicalJSON.writeString(text, into: &out)
      #expect(String(decoding: out, as: UTF8.self) == "[" + want)
    }
  }

  @Test func escapesOnlyWhatItMust() throws {
    let value = JSONValue.string("q\"b\\s/\u{08}\u{0C}\n\r\t\u{01}\u{1F}é€")
    #expect(try CanonicalJSON.string(value) == "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001fé€\"")
  }

  @Test func printsNumbersAsECMAScriptDoes() throws {
    let cases: [(Double, String)] = [
      (0, "0"), (-0.0, "0"), (1, "1"), (-1.5, "-1.5"), (100, "100"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
      (1.2345678901234568e20, "123456789012345680000"), (0.000001, "0.000001"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"),
      (Double.leastNonzeroMagnitude, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"), (0.1, "0.1"), (1e16, "10000000000000000"),
      (4.35, "4.35"), (333333333.33333329, "333333333.3333333"), (-1e-10, "-1e-10"),
    ]
    for (number, text) in cases {
      #expect(try CanonicalJSON.string(.double(number)) == text, "\(number)")
    }
    #expect(try CanonicalJSON.string(.int(-42)) == "-42")
    #expect(throws: CanonicalJSON.InvalidNumber.self) { try CanonicalJSON.encode(.double(.nan)) }
    #expect(throws: CanonicalJSON.InvalidNumber.self) { try CanonicalJSON.encode(.array([.double(.infinity)])) }
  }
}
