// libFuzzer target for the RESP decoder (see scripts/fuzz-resp.sh). Compiled together with
// Sources/NovaRedis/RESPDecoder.swift and RESPValue.swift, which depend on nothing else.

/// Decodes the input as a RESP stream; the decoder must never crash, must always make progress,
/// and must name an offset inside the input when it rejects it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESPDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  var decoder = RESPDecoder(limits: RESPLimits(maxBulkLength: 4096, maxAggregateCount: 1024, maxDepth: 16, maxLineLength: 1024))
  var offset = 0
  while offset < size {
    do {
      guard let result = try decoder.decode(UnsafeRawBufferPointer(rebasing: bytes[offset...])) else { break }
      precondition(result.consumed > 0, "decoder made no progress")
      offset += result.consumed
    } catch {
      precondition(error.offset >= 0 && error.offset <= size, "error offset \(error.offset) outside the input")
      break
    }
  }
  return 0
}
