// libFuzzer target for the tar reader of evidence bundles (see scripts/fuzz-tar.sh). Compiled
// together with Sources/NovaSecurity/TarReader.swift, which depends on nothing else.

/// Reads the input as a tar stream, handed over in chunks of sizes taken from its first byte;
/// the reader must never crash, never hand over more bytes than an entry's size or than the
/// input holds, and must name an offset inside the input when it refuses it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTarReader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  let chunk = max(1, Int(bytes.first ?? 1) * 7)
  var cursor = 0
  var reader = TarReader(limits: TarReader.Limits(maxEntries: 16, maxTotalBytes: 1 << 20)) {
    guard cursor < bytes.count else { return nil }
    let end = min(bytes.count, cursor + chunk)
    defer { cursor = end }
    return Array(bytes[cursor..<end])
  }
  var handed = 0
  do {
    try reader.forEachFile { _, entrySize in
      precondition(entrySize >= 0, "negative entry size")
      var seen = 0
      return { piece in
        seen += piece.count
        handed += piece.count
        precondition(seen <= entrySize, "more bytes than the entry's size")
      }
    }
    while try reader.remainder() != nil {}
  } catch let error as TarError {
    precondition(error.offset >= 0 && error.offset <= size, "error offset \(error.offset) outside the input")
  } catch {
    preconditionFailure("unexpected error \(error)")
  }
  precondition(handed <= size && reader.position <= size, "read past the input")
  return 0
}
