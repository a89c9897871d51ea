import Foundation
import Testing

@testable import NovaCore

/// Issue #24: the fast path of `JSONValue.parse` gives what `JSONDecoder` gives, or gives up.
@Suite("JSON fast parser", .timeLimit(.minutes(2)))
struct JSONFastParserTests {
  static func decoded(_ text: [UInt8]) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: Data(text)) }

  static let corpus = [
    #"{"kind":"echo","payload":{"n":1}}"#, #"{"a":[1,2,{"b":null}],"c":true,"d":false,"e":"x\ny\t\"q\" \\ \/"}"#,
    "0", "-0", "1", "-1", "123456789012345678", "-123456789012345678", "1234567890123456789", "1.5", "1e3", "1E-2", "-0.0",
    "01", "-", "--1", "+1", "1.", ".5", "[]", "{}", " [ ] ", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{\"a\":1 \"b\":2}",
    "{\"a\":1,\"a\":2}", "\"\"", "\"abc", "\"a\\u0041\"", "\"\\ud83d\\ude00\"", "\"é\"", "\"\u{7f}\"", "\"\\x\"", "\"tab\there\"",
    "true", "false", "null", "truex", "nul", "[true false]", "{\"k\":[[[[[]]]]]}", "", " ", "[1] [2]", "{\"a\":{}}x",
    "{\"payload\":{\"prompt\":\"summarize\\nthis\",\"max_tokens\":256,\"temperature\":0.7,\"tags\":[\"a\",\"b\"]}}",
  ]

  @Test func givesWhatJSONDecoderGivesOrGivesUp() {
    var parsedFast = 0
    for text in Self.corpus {
      let bytes = Array(text.utf8)
      let reference = Self.decoded(bytes)
      if let fast = JSONFastParser.parse(Data(bytes)) {
        parsedFast += 1
        #expect(fast == reference, "\(text)")
      }
    }
    #expect(parsedFast >= 15)
    // The usual submission takes the fast path.
    #expect(JSONFastParser.parse(Data(#"{"kind":"echo","payload":{"n":1}}"#.utf8)) != nil)
  }

  @Test func nestingPastTheLimitIsLeftToJSONDecoder() throws {
    let deep = String(repeating: "[", count: JSONFastParser.maxDepth + 1) + String(repeating: "]", count: JSONFastParser.maxDepth + 1)
    #expect(JSONFastParser.parse(Data(deep.utf8)) == nil)
    #expect(try JSONValue.parse(Data(deep.utf8)) == Self.decoded(Array(deep.utf8)))
    let shallow = String(repeating: "[", count: 10) + String(repeating: "]", count: 10)
    #expect(JSONFastParser.parse(Data(shallow.utf8)) == Self.decoded(Array(shallow.utf8)))
  }

  /// Mutated inputs (bytes changed, dropped, repeated): whatever the fast path accepts, the
  /// reference accepts as the same value; what the reference refuses, the fast path refuses.
  @Test func mutatedInputsAgreeWithJSONDecoder() {
    var generator = SystemRandomNumberGenerator()
    let alphabet = Array(#"{}[]",:01-9.eE\"ntrufals "#.utf8) + [0x0A, 0x80, 0xC3, 0x00]
    var accepted = 0
    for _ in 0..<20_000 {
      var bytes = Array(Self.corpus.randomElement(using: &generator)!.utf8)
      for _ in 0..<Int.random(in: 1...3, using: &generator) {
        let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &generator)
        switch Int.random(in: 0..<3, using: &generator) {
        case 0 where !bytes.isEmpty: bytes[position] = alphabet.randomElement(using: &generator)!
        case 1 where !bytes.isEmpty: bytes.remove(at: position)
        default: bytes.insert(alphabet.randomElement(using: &generator)!, at: position)
        }
      }
      let reference = Self.decoded(bytes)
      if let fast = JSONFastParser.parse(Data(bytes)) {
        accepted += 1
        #expect(fast == reference, "\(String(decoding: bytes, as: UTF8.self))")
        if fast != reference { return }
      }
    }
    #expect(accepted > 100)
  }
}
