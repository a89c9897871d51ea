import NIOCore
import NovaBenchmarks
import Testing

/// `nova bench http` finds where each answer ends without a full HTTP codec: every framing a
/// server may use arrives whole, byte by byte, or several answers at once.
@Suite("HTTP response scanner")
struct HTTPResponseScannerTests {
  /// Feeds `text` in pieces of `piece` bytes; returns the statuses of the answers found.
  private func scan(_ text: String, piece: Int) throws(HTTPResponseScanner.Malformed) -> [Int] {
    var scanner = HTTPResponseScanner()
    var pending = ByteBuffer()
    var statuses: [Int] = []
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
      let end = min(bytes.count, offset + piece)
      pending.writeBytes(bytes[offset..<end])
      statuses += try scanner.scan(&pending).map(\.status)
      pending.discardReadBytes()
      offset = end
    }
    #expect(pending.readableBytes == 0, "bytes left over")
    return statuses
  }

  @Test func findsTheEndOfEveryFramingInAnyPieces() throws {
    let sized = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\ncontent-length: 10\r\n\r\n{\"id\":\"x\"}"
    let chunked =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n"
    let empty = "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
    let noLength = "HTTP/1.0 401 Unauthorized\r\n\r\n"
    let all = sized + chunked + empty + noLength + sized
    for piece in [1, 2, 3, 7, 24, 1000] {
      #expect(try scan(sized, piece: piece) == [201], "piece \(piece)")
      #expect(try scan(chunked, piece: piece) == [200], "piece \(piece)")
      #expect(try scan(all, piece: piece) == [201, 200, 204, 401, 201], "piece \(piece)")
    }
  }

  @Test func namesWhatItCannotRead() {
    let cases: [(String, String)] = [
      ("HTTP/2 200 OK\r\n\r\n", "status line 'HTTP/2 200 OK'"),
      ("HTTP/1.1 20x OK\r\n\r\n", "status line 'HTTP/1.1 20x OK'"),
      ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length '-1'"),
      ("HTTP/1.1 200 OK\r\nContent-Length: 12ab\r\n\r\n", "Content-Length '12ab'"),
      ("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line 'no colon here'"),
      ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size 'zz'"),
      ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "a chunk not followed by CRLF"),
    ]
    for (text, reason) in cases {
      #expect(throws: HTTPResponseScanner.Malformed(reason: reason), "\(text)") { _ = try scan(text, piece: 1000) }
    }
    // A head that never ends is refused once it passes the limit, not buffered forever.
    var scanner = HTTPResponseScanner()
    var endless = ByteBuffer(string: "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Long: 1\r\n", count: HTTPResponseScanner.maxHeadBytes / 10))
    #expect(throws: HTTPResponseScanner.Malformed.self) { _ = try scanner.scan(&endless) }
  }
}
