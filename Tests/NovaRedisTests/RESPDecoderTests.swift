import NovaRedis
import NovaTestSupport
import Testing

@Suite("RESP decoder", .timeLimit(.minutes(5)))
struct RESPDecoderTests {
  func decodeOne(_ text: String, limits: RESPLimits = RESPLimits()) throws -> RESPValue? {
    var decoder = RESPDecoder(limits: limits)
    return try decoder.decodeAll(Array(text.utf8)).values.first
  }

  @Test func decodesRESP2Replies() throws {
    #expect(try decodeOne("+OK\r\n") == .simpleString("OK"))
    #expect(try decodeOne("-ERR wrong\r\n") == .error("ERR wrong"))
    #expect(try decodeOne(":-42\r\n") == .integer(-42))
    #expect(try decodeOne("$5\r\nhello\r\n") == .bulkString(Array("hello".utf8)))
    #expect(try decodeOne("$0\r\n\r\n") == .bulkString([]))
    #expect(try decodeOne("$-1\r\n") == .bulkString(nil))
    #expect(try decodeOne("*-1\r\n") == .array(nil))
    #expect(try decodeOne("*2\r\n:1\r\n$1\r\na\r\n") == .array([.integer(1), .bulkString([97])]))
    #expect(try decodeOne("$4\r\na\r\nb\r\n") == .bulkString(Array("a\r\nb".utf8)))
  }

  @Test func decodesRESP3Replies() throws {
    #expect(try decodeOne("_\r\n") == .null)
    #expect(try decodeOne("#t\r\n") == .boolean(true))
    #expect(try decodeOne(",3.5\r\n") == .double(3.5))
    #expect(try decodeOne(",inf\r\n") == .double(.infinity))
    #expect(try decodeOne("(12345678901234567890\r\n") == .bigNumber("12345678901234567890"))
    #expect(try decodeOne("!5\r\nERR x\r\n") == .error("ERR x"))
    #expect(try decodeOne("=7\r\ntxt:abc\r\n") == .verbatim(format: "txt", text: "abc"))
    #expect(try decodeOne("%1\r\n+a\r\n:1\r\n") == .map([RESPPair(key: .simpleString("a"), value: .integer(1))]))
    #expect(try decodeOne("~2\r\n:1\r\n:2\r\n") == .set([.integer(1), .integer(2)]))
    #expect(try decodeOne(">2\r\n+message\r\n+x\r\n") == .push([.simpleString("message"), .simpleString("x")]))
    #expect(try decodeOne("|1\r\n+key\r\n+value\r\n:7\r\n") == .integer(7))
    #expect(RESPValue.map([RESPPair(key: .simpleString("a"), value: .integer(1))]).elements?.count == 2)
  }

  @Test func partialInputAsksForMoreAndStreamsAcrossChunks() throws {
    let message = Array("*3\r\n$3\r\nfoo\r\n:12\r\n+bar\r\n".utf8)
    for cut in 0..<message.count {
      var decoder = RESPDecoder()
      let first = try decoder.decodeAll(Array(message[..<cut]))
      #expect(first.values.isEmpty)
      #expect(first.consumed == 0)
    }
    var decoder = RESPDecoder()
    let all = try decoder.decodeAll(message + message)
    #expect(all.values.count == 2)
    #expect(all.consumed == message.count * 2)
  }

  @Test func malformedInputNamesTheByteOffset() {
    let cases: [(String, Int, String)] = [
      ("?what\r\n", 0, "unknown type byte"),
      (":12x\r\n", 1, "not an integer"),
      ("$5\r\nhelloXY", 9, "CRLF"),
      ("$-5\r\n", 1, "negative"),
      ("+ok\rX", 4, "LF"),
      ("+ok\n", 3, "LF without CR"),
      ("#x\r\n", 0, "boolean"),
      ("*1\r\n:99999999999999999999\r\n", 5, "not an integer"),
      (":1\r\n?\r\n", 4, "unknown type byte"),
    ]
    for (input, offset, text) in cases {
      var decoder = RESPDecoder()
      #expect {
        _ = try decoder.decodeAll(Array(input.utf8))
      } throws: { error in
        guard let error = error as? RESPDecodingError else { return false }
        return error.offset == offset && error.message.contains(text)
      }
    }
  }

  @Test func oversizedInputIsRejectedBeforeAllocating() {
    let limits = RESPLimits(maxBulkLength: 1024, maxAggregateCount: 16, maxDepth: 4, maxLineLength: 64)
    let cases = [
      "$1025\r\n", "*17\r\n", "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", "+" + String(repeating: "a", count: 100) + "\r\n",
      "$9223372036854775807\r\n", "*2147483648\r\n",
    ]
    for input in cases {
      var decoder = RESPDecoder(limits: limits)
      #expect(throws: RESPDecodingError.self, "\(input.prefix(20))") { _ = try decoder.decodeAll(Array(input.utf8)) }
    }
  }

  /// Property: random bytes never crash the decoder, and any error points inside the input.
  @Test func randomBytesNeverCrash() {
    var generator = SeededGenerator(seed: 0x5EED)
    let alphabet = Array("+-:$*_#,(!=%~>|\r\n0123456789-abc".utf8)
    for _ in 0..<20_000 {
      let count = Int.random(in: 0...48, using: &generator)
      let bytes = (0..<count).map { _ in
        Bool.random(using: &generator) ? alphabet.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
      }
      var decoder = RESPDecoder(limits: RESPLimits(maxBulkLength: 256, maxAggregateCount: 64, maxDepth: 8, maxLineLength: 128))
      do {
        let result = try decoder.decodeAll(bytes)
        #expect(result.consumed <= bytes.count)
      } catch {
        #expect(error.offset >= 0 && error.offset <= bytes.count)
      }
    }
  }

  /// Property: every prefix of a valid stream decodes to a prefix of its values; values split at
  /// any point come out the same.
  @Test func truncatedAndSplitStreamsDecodeConsistently() throws {
    var generator = SeededGenerator(seed: 42)
    for _ in 0..<300 {
      let values = (0..<Int.random(in: 1...4, using: &generator)).map { _ in RandomRESP.value(depth: 0, using: &generator) }
      let bytes = values.flatMap(RandomRESP.encode)
      var whole = RESPDecoder()
      #expect(try whole.decodeAll(bytes).values == values)
      let cut = Int.random(in: 0...bytes.count, using: &generator)
      var partial = RESPDecoder()
      let prefix = try partial.decodeAll(Array(bytes[..<cut]))
      #expect(Array(values.prefix(prefix.values.count)) == prefix.values)
      var rest = Array(bytes[prefix.consumed...])
      let more = try partial.decodeAll(rest)
      rest.removeFirst(more.consumed)
      #expect(rest.isEmpty)
      #expect(prefix.values + more.values == values)
    }
  }
}

/// Random RESP values and their encoding, for property tests.
enum RandomRESP {
  static func value(depth: Int, using generator: inout SeededGenerator) -> RESPValue {
    switch Int.random(in: 0..<(depth > 2 ? 6 : 9), using: &generator) {
    case 0: return .simpleString(String(repeating: "s", count: Int.random(in: 0...8, using: &generator)))
    case 1: return .error("ERR " + String(Int.random(in: 0...999, using: &generator)))
    case 2: return .integer(Int64.random(in: -1_000_000...1_000_000, using: &generator))
    case 3: return .bulkString((0..<Int.random(in: 0...20, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
    case 4: return .bulkString(nil)
    case 5: return .boolean(Bool.random(using: &generator))
    case 6: return .array((0..<Int.random(in: 0...3, using: &generator)).map { _ in value(depth: depth + 1, using: &generator) })
    case 7: return .set((0..<Int.random(in: 0...3, using: &generator)).map { _ in value(depth: depth + 1, using: &generator) })
    default:
      return .map(
        (0..<Int.random(in: 0...2, using: &generator)).map { _ in
          RESPPair(key: value(depth: depth + 1, using: &generator), value: value(depth: depth + 1, using: &generator))
        })
    }
  }

  static func encode(_ value: RESPValue) -> [UInt8] {
    func line(_ prefix: String, _ text: String) -> [UInt8] { Array("\(prefix)\(text)\r\n".utf8) }
    switch value {
    case .simpleString(let text): return line("+", text)
    case .error(let text): return line("-", text)
    case .integer(let number): return line(":", String(number))
    case .bulkString(let bytes?): return line("$", String(bytes.count)) + bytes + [13, 10]
    case .bulkString(nil): return line("$", "-1")
    case .boolean(let flag): return line("#", flag ? "t" : "f")
    case .array(let values?): return line("*", String(values.count)) + values.flatMap(encode)
    case .set(let values): return line("~", String(values.count)) + values.flatMap(encode)
    case .map(let pairs): return line("%", String(pairs.count)) + pairs.flatMap { encode($0.key) + encode($0.value) }
    default: return line("_", "")
    }
  }
}

/// A small deterministic generator (SplitMix64), so property tests repeat exactly.
struct SeededGenerator: RandomNumberGenerator {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
