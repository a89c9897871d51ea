import Foundation
import NovaApplication
import NovaCore
import NovaQueue
import Testing

/// What `nova jobs logs` and the logs route show of stored output (issue #21 point 8).
@Suite("Job log rendering")
struct JobLogRendererTests {
  let job = JobID("01a2b3c4-0000-7000-8000-000000000001")

  func chunk(_ stream: JobLogStream, _ bytes: [UInt8], attempt: Int = 1) -> JobLogChunk {
    JobLogChunk(job: job, queue: "gpu", attempt: attempt, stream: stream, data: Data(bytes), time: Date())
  }

  func chunk(_ stream: JobLogStream, _ text: String, attempt: Int = 1) -> JobLogChunk {
    chunk(stream, Array(text.utf8), attempt: attempt)
  }

  /// Everything the renderer shows of `chunks`, handed over in pages of `page`.
  func rendered(_ chunks: [JobLogChunk], _ options: JobLogRenderer.Options = .init(), headers: Bool = false, page: Int = 1) -> [UInt8] {
    var renderer = JobLogRenderer(options, headers: headers)
    var out: [UInt8] = []
    var rest = chunks[...]
    while !rest.isEmpty {
      out += renderer.render(Array(rest.prefix(page)))
      rest = rest.dropFirst(page)
    }
    out += renderer.finish()
    return out
  }

  func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

  @Test func controlCharactersAndBytesThatAreNotUTF8AreEscaped() {
    // Not UTF-8: a stray byte, a lead byte without its continuation, a surrogate's encoding.
    let invalid: [UInt8] = [0xFF, 0xC3, 0x28, 0xED, 0xA0, 0x80]
    let line = Array("\u{1B}[31mred\u{1B}[0m bell\u{07} cr\r tab\tdel\u{7F} ".utf8) + invalid + Array(" é 日本 🚀\n".utf8)
    #expect(
      text(rendered([chunk(.stdout, line)]))
        == #"\x1b[31mred\x1b[0m bell\x07 cr\x0d tab"# + "\t" + #"del\x7f \xff\xc3(\xed\xa0\x80 é 日本 🚀"# + "\n")
    // A C1 control, well-formed UTF-8 (U+009B is a CSI to some terminals).
    #expect(text(rendered([chunk(.stderr, [0x41, 0xC2, 0x9B, 0x32, 0x4A, 0x0A])])) == #"A\u{9b}2J"# + "\n")
    // A character split over two chunks of its stream is still one character.
    #expect(text(rendered([chunk(.stdout, [0x61, 0xE6, 0x97]), chunk(.stdout, [0xA5, 0x0A])])) == "a日\n")
  }

  @Test func rawWritesTheBytesAsStored() {
    let chunks = [chunk(.stdout, "\u{1B}[31mpartial "), chunk(.stderr, [0xFF, 0x0A]), chunk(.stdout, "red\u{1B}[0m\n")]
    let stored: [UInt8] = Array("\u{1B}[31mpartial ".utf8) + [0xFF, 0x0A] + Array("red\u{1B}[0m\n".utf8)
    #expect(rendered(chunks, .init(raw: true)) == stored)
    // With prefixes lines are put together, but nothing is escaped.
    let prefixed: [UInt8] = Array("stderr: ".utf8) + [0xFF, 0x0A] + Array("stdout: \u{1B}[31mpartial red\u{1B}[0m\n".utf8)
    #expect(rendered(chunks, .init(prefix: true, raw: true)) == prefixed)
  }

  /// A line one stream left unended is not continued by the other stream's output: each line
  /// shows once it ends, whole, whatever the chunks and pages.
  @Test func unendedLinesOfTheTwoStreamsAreNotGlued() {
    let chunks = [
      chunk(.stdout, "step 1 of"), chunk(.stderr, "warning: slow"), chunk(.stdout, " 2\nstep 2"),
      chunk(.stderr, " disk\nerror: "), chunk(.stdout, " of 2\n"), chunk(.stderr, "gone"),
    ]
    for page in [1, 2, 6] {
      #expect(text(rendered(chunks, page: page)) == "step 1 of 2\nwarning: slow disk\nstep 2 of 2\nerror: gone\n", "pages of \(page)")
      #expect(
        text(rendered(chunks, .init(prefix: true), page: page))
          == "stdout: step 1 of 2\nstderr: warning: slow disk\nstdout: step 2 of 2\nstderr: error: gone\n")
    }
    // An unended line is held until it ends, then shown at once.
    var renderer = JobLogRenderer(headers: false)
    #expect(renderer.render([chunk(.stdout, "loading"), chunk(.stderr, "note\n")]) == Data("note\n".utf8))
    #expect(renderer.render([chunk(.stdout, "... done\n")]) == Data("loading... done\n".utf8))
    #expect(renderer.finish().isEmpty)
  }

  @Test func attemptsAreHeadedAndEndTheirLines() {
    let chunks = [
      chunk(.stdout, "one", attempt: 1), chunk(.stderr, "err", attempt: 1), chunk(.stdout, "two\n", attempt: 2),
    ]
    #expect(text(rendered(chunks, headers: true)) == "==> attempt 1 <==\none\nerr\n==> attempt 2 <==\ntwo\n")
    #expect(text(rendered(chunks)) == "one\nerr\ntwo\n")
    #expect(text(rendered(chunks, .init(raw: true), headers: true)) == "==> attempt 1 <==\noneerr\n==> attempt 2 <==\ntwo\n")
  }

  /// A line longer than `maxLine` is shown in pieces, each cut between characters.
  @Test func aVeryLongLineIsShownInPieces() {
    // Offset by one byte, so that the limit falls inside a character.
    let long = "a" + String(repeating: "é", count: JobLogRenderer.maxLine)
    var renderer = JobLogRenderer(headers: false)
    let first = renderer.render([chunk(.stdout, long)])
    let pieces = first.split(separator: UInt8(ascii: "\n"))
    #expect(!pieces.isEmpty && pieces.allSatisfy { $0.count <= JobLogRenderer.maxLine })
    let all = first + renderer.render([chunk(.stdout, "!\n")]) + renderer.finish()
    #expect(String(decoding: all, as: UTF8.self).replacingOccurrences(of: "\n", with: "") == long + "!")
  }
}
