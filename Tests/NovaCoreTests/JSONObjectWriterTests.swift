import Foundation
import NovaCore
import Testing

@Suite("JSON object writer")
struct JSONObjectWriterTests {
  @Test("members in the order given, nil ones left out, strings escaped canonically, an empty object closed")
  func writesMembers() throws {
    var empty = JSONObjectWriter()
    #expect(String(decoding: empty.finish(), as: UTF8.self) == "{}")
    var nothing = JSONObjectWriter()
    nothing.string("absent", nil)
    nothing.bool("absent", nil)
    #expect(String(decoding: nothing.finish(), as: UTF8.self) == "{}")

    var out = JSONObjectWriter(capacity: 8)
    out.bool("a", false)
    out.integer("b", -42)
    out.string("c", "line\nquote\"\u{1}")
    out.key("d")
    out.bytes += Array("[1,2]".utf8)
    out.bool("e", true)
    let text = String(decoding: out.finish(), as: UTF8.self)
    #expect(text == #"{"a":false,"b":-42,"c":"line\nquote\"\u0001","d":[1,2],"e":true}"#)
    let parsed = try JSONValue.parse(Data(text.utf8))
    #expect(parsed.objectValue?["c"] == .string("line\nquote\"\u{1}"))
  }
}
