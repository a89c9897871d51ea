import Crypto
import Foundation
import NovaCore

extension EvidenceBundle {
  /// The outcome of checking a bundle.
  public struct Verification: Sendable {
    /// What was checked and held.
    public var checks: [String] = []
    /// What failed, each naming the file (and entry) concerned.
    public var problems: [String] = []
    public var entries: Int64 = 0
    public var passed: Bool { problems.isEmpty }
  }

  /// Checks a bundle: archive integrity, every file against `SHA256SUMS` and the manifest, the
  /// DSSE signature and its statement's subjects, the entries against the base tree and the
  /// signed checkpoint. `verifier` is the key the reviewer trusts.
  public static func verify(path: String, verifier: NoteVerifier) throws -> Verification {
    guard let input = FileHandle(forReadingAtPath: path) else {
      throw NovaError.malformedInput(field: path, message: "cannot read \(path)")
    }
    defer { try? input.close() }
    let gzip = try GzipReader(input: input, path: path)
    var reader = TarReader { try gzip.read() }
    var result = Verification()
    var digests: [String: String] = [:]
    var small: [String: [UInt8]] = [:]
    var order: [String] = []
    var tree: MerkleAccumulator?
    var nextSeq: Int64 = 0
    var entryProblem: String?
    var partial: [UInt8] = []

    func takeLine(_ line: ArraySlice<UInt8>) {
      guard entryProblem == nil else { return }
      guard var accumulator = tree else {
        entryProblem = "\(entriesFile) comes before \(baseTreeFile), or the base tree is missing"
        return
      }
      guard let seq = Self.seq(inEntry: line), seq == nextSeq else {
        entryProblem =
          "\(entriesFile) line \(result.entries + 1): expected entry \(nextSeq), found \(Self.seq(inEntry: line).map(String.init) ?? "no seq")"
        return
      }
      accumulator.append(leafHash: MerkleTree.leafHash(line))
      tree = accumulator
      nextSeq += 1
      result.entries += 1
    }

    var keptBytes = 0
    do {
      try reader.forEachFile { name, size in
        if digests[name] != nil { result.problems.append("\(name) appears twice in the archive") }
        order.append(name)
        var hasher = SHA256()
        var kept: [UInt8] = []
        var seen = 0
        let isEntries = name == entriesFile
        // Only the entries are streamed; the other files are kept, 64 MiB at most in all.
        let keep = !isEntries && keptBytes + size <= 64 << 20
        if !isEntries && !keep { result.problems.append("\(name) is \(size) bytes; only \(entriesFile) may be large") }
        if keep { keptBytes += size }
        if isEntries && tree == nil {
          entryProblem = "\(entriesFile) comes before \(baseTreeFile), or the base tree is missing"
        }
        return { chunk in
          hasher.update(data: chunk)
          seen += chunk.count
          if isEntries {
            var start = chunk.startIndex
            for index in chunk.indices where chunk[index] == 0x0A {
              if partial.isEmpty {
                takeLine(chunk[start..<index])
              } else {
                partial += chunk[start..<index]
                takeLine(partial[...])
                partial.removeAll(keepingCapacity: true)
              }
              start = index + 1
            }
            partial += chunk[start...]
          } else if keep {
            kept += chunk
          }
          if seen == size {
            digests[name] = hex(Array(hasher.finalize()))
            if !isEntries { small[name] = kept }
            if name == baseTreeFile {
              do {
                tree = try Self.baseTree(kept)
                nextSeq = Int64(tree!.count) + 1
              } catch {
                result.problems.append("\(baseTreeFile): \(error)")
              }
            }
          }
        }
      }
    } catch let error as TarError {
      throw NovaError.malformedInput(field: path, message: error.description)
    }
    // Read to the end: the gzip trailer's checksum covers the end blocks too, and nothing but
    // zero padding may follow them.
    while let rest = try reader.remainder() {
      if rest.contains(where: { $0 != 0 }) {
        result.problems.append("the archive has data after its end blocks (byte \(reader.position))")
        break
      }
    }
    // Empty files never see a chunk.
    for name in order where digests[name] == nil {
      digests[name] = hex(Array(SHA256.hash(data: [UInt8]())))
      small[name] = []
    }
    if !partial.isEmpty { entryProblem = entryProblem ?? "\(entriesFile) does not end with a newline" }
    result.checks.append("archive: gzip checksum and \(order.count) tar entries read")
    if order != order.sorted() { result.problems.append("archive entries are not sorted by name (not a Nova bundle)") }

    // SHA256SUMS: every other file but the envelope, with its digest.
    if let sums = small[sumsFile] {
      var listed = Set<String>()
      for (number, line) in String(decoding: sums, as: UTF8.self).split(separator: "\n").enumerated() {
        let parts = line.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[1].hasPrefix(" ") else {
          result.problems.append("\(sumsFile) line \(number + 1) is not '<sha256>  <file>'")
          continue
        }
        let file = String(parts[1].dropFirst())
        listed.insert(file)
        if digests[file] == nil {
          result.problems.append("\(sumsFile) lists \(file), which is not in the bundle")
        } else if digests[file] != String(parts[0]) {
          result.problems.append("\(file): SHA-256 does not match \(sumsFile) (the file was changed)")
        }
      }
      for name in order where name != sumsFile && name != envelopeFile && !listed.contains(name) {
        result.problems.append("\(name) is in the bundle but not in \(sumsFile)")
      }
      result.checks.append("\(sumsFile): \(listed.count) files")
    } else {
      result.problems.append("\(sumsFile) is missing")
    }

    // Manifest.
    var manifestRoot: String?
    var manifestSize: Int64?
    if let manifest = small[manifestFile] {
      do {
        guard case .object(let members) = try JSONValue.parse(Data(manifest)), case .array(let entries)? = members["files"] else {
          throw NovaError.malformedInput(field: path, message: "no files list")
        }
        for entry in entries {
          guard case .object(let file) = entry, case .string(let name)? = file["path"], case .string(let sum)? = file["sha256"] else {
            throw NovaError.malformedInput(field: path, message: "a files entry lacks path or sha256")
          }
          if digests[name] != sum { result.problems.append("\(name): SHA-256 does not match \(manifestFile)") }
        }
        if case .object(let log)? = members["log"] {
          if case .string(let root)? = log["root"] { manifestRoot = root }
          if case .int(let size)? = log["size"] { manifestSize = size }
        }
        result.checks.append("\(manifestFile): \(entries.count) files")
      } catch {
        result.problems.append("\(manifestFile) is not a valid manifest: \(error)")
      }
    } else {
      result.problems.append("\(manifestFile) is missing")
    }

    // The DSSE envelope and its in-toto statement.
    if let envelopeBytes = small[envelopeFile] {
      do {
        let envelope = try JSONDecoder().decode(DSSEEnvelope.self, from: Data(envelopeBytes))
        guard envelope.payloadType == DSSEEnvelope.inTotoPayloadType else {
          throw NovaError.malformedInput(field: path, message: "payloadType is \(envelope.payloadType), not \(DSSEEnvelope.inTotoPayloadType)")
        }
        let statement = try envelope.verifiedPayload(verifier: verifier)
        guard case .object(let members) = try JSONValue.parse(Data(statement)), case .array(let subjects)? = members["subject"] else {
          throw NovaError.malformedInput(field: path, message: "the statement has no subject list")
        }
        var named = Set<String>()
        for subject in subjects {
          guard case .object(let fields) = subject, case .string(let name)? = fields["name"],
            case .object(let digest)? = fields["digest"], case .string(let sum)? = digest["sha256"]
          else { throw NovaError.malformedInput(field: path, message: "a subject lacks name or digest.sha256") }
          named.insert(name)
          if digests[name] != sum { result.problems.append("\(name): SHA-256 does not match the signed statement") }
        }
        for name in order where name != envelopeFile && !named.contains(name) {
          result.problems.append("\(name) is not named in the signed statement")
        }
        result.checks.append(
          "\(envelopeFile): Ed25519 signature by key \(DSSEEnvelope.keyID(verifier).prefix(16))… verifies; \(subjects.count) subjects")
      } catch {
        result.problems.append("\(envelopeFile): \(error)")
      }
    } else {
      result.problems.append("\(envelopeFile) is missing")
    }

    // The entries against the base tree and the signed checkpoint.
    if let entryProblem { result.problems.append(entryProblem) }
    if let note = small[checkpointFile] {
      do {
        let checkpoint = try Checkpoint.verify(note: String(decoding: note, as: UTF8.self), verifier: verifier)
        if let tree, entryProblem == nil {
          if checkpoint.size != tree.count {
            result.problems.append("\(checkpointFile) is for \(checkpoint.size) entries; the bundle's tree has \(tree.count)")
          } else if checkpoint.rootHash != tree.root {
            result.problems.append(
              "\(entriesFile): the Merkle root of the entries does not match the signed checkpoint (an entry was changed, added or removed)")
          } else {
            result.checks.append(
              "\(checkpointFile): signed root of \(checkpoint.size) entries matches the \(result.entries) entries and the base tree")
          }
          if let manifestRoot, manifestRoot != Data(tree.root).base64EncodedString() || manifestSize != Int64(tree.count) {
            result.problems.append("\(manifestFile): log root or size differs from the entries")
          }
          checkStoredCheckpoints(small[checkpointsFile], against: checkpoint, verifier: verifier, into: &result)
        }
      } catch {
        result.problems.append("\(checkpointFile): \(error)")
      }
    } else {
      result.problems.append("\(checkpointFile) is missing")
    }
    return result
  }

  /// Checks each of the log's stored checkpoints the bundle carries: its signature and origin,
  /// its chain to the one before, and its RFC 6962 consistency proof to the bundle's signed tree.
  static func checkStoredCheckpoints(
    _ bytes: [UInt8]?, against bundle: Checkpoint, verifier: NoteVerifier, into result: inout Verification
  ) {
    guard let bytes else {
      result.problems.append("\(checkpointsFile) is missing")
      return
    }
    var previous: (sequence: Int64, note: String)?
    var checked = 0
    for (index, line) in bytes.split(separator: 0x0A).enumerated() {
      let place = "\(checkpointsFile) line \(index + 1)"
      guard case .object(let fields)? = try? JSONValue.parse(Data(line)), case .string(let note)? = fields["note"],
        case .array(let hashes)? = fields["consistency"]
      else {
        result.problems.append("\(place) is not {\"consistency\": [...], \"note\": ..., \"size\": N}")
        continue
      }
      let parsed: Checkpoint
      do {
        parsed = try Checkpoint.verify(note: note, verifier: verifier)
      } catch {
        result.problems.append("\(place): stored checkpoint: \(error)")
        continue
      }
      let what = "\(place) (stored checkpoint at size \(parsed.size)\(parsed.sequence.map { " #\($0)" } ?? ""))"
      if parsed.origin != bundle.origin {
        result.problems.append("\(what) is for log '\(parsed.origin)', not '\(bundle.origin)'")
        continue
      }
      let proof = hashes.compactMap { value -> MerkleTree.Hash? in
        guard case .string(let text) = value, let data = Data(base64Encoded: text), data.count == 32 else { return nil }
        return Array(data)
      }
      if proof.count != hashes.count || parsed.size > bundle.size
        || !MerkleTree.verifyConsistency(
          oldSize: parsed.size, newSize: bundle.size, oldRoot: parsed.rootHash, newRoot: bundle.rootHash, proof: proof)
      {
        result.problems.append("\(what): its consistency proof to the bundle's tree of \(bundle.size) fails (the history was rewritten)")
        continue
      }
      if let sequence = parsed.sequence, let before = previous {
        if sequence != before.sequence + 1 {
          result.problems.append("\(what) follows checkpoint #\(before.sequence): the ones between were left out")
        } else if parsed.previous != Checkpoint.noteHash(before.note) {
          result.problems.append("\(what) does not chain to the checkpoint before it")
        }
      }
      previous = parsed.sequence.map { ($0, note) }
      checked += 1
    }
    result.checks.append("\(checkpointsFile): \(checked) stored checkpoints verify and are consistent with the bundle's tree")
  }

  private static func baseTree(_ bytes: [UInt8]) throws -> MerkleAccumulator {
    guard case .object(let members) = try JSONValue.parse(Data(bytes)), case .int(let size)? = members["size"],
      case .array(let frontier)? = members["frontier"]
    else { throw NovaError.malformedInput(field: baseTreeFile, message: "expected {\"frontier\": [...], \"size\": N}") }
    let hashes = try frontier.map { value -> MerkleTree.Hash in
      guard case .string(let text) = value, let data = Data(base64Encoded: text), data.count == 32 else {
        throw NovaError.malformedInput(field: baseTreeFile, message: "a frontier hash is not base64 of 32 bytes")
      }
      return Array(data)
    }
    guard let tree = MerkleAccumulator(count: Int(size), frontier: hashes) else {
      throw NovaError.malformedInput(field: baseTreeFile, message: "\(hashes.count) frontier hashes do not fit a tree of \(size)")
    }
    return tree
  }

  /// The top-level `seq` of a canonical entry line. In JCS order `payload` precedes `seq` and
  /// the keys after it (`subject`, `time`) hold strings, where `,"seq":` cannot appear unescaped;
  /// so the last occurrence is the entry's own.
  static func seq(inEntry line: ArraySlice<UInt8>) -> Int64? {
    let key = Array(#","seq":"#.utf8)
    guard line.count > key.count else { return nil }
    var index = line.endIndex - key.count
    while index >= line.startIndex {
      if line[index] == key[0] && line[index..<index + key.count].elementsEqual(key) {
        var value: Int64 = 0
        var cursor = index + key.count
        var digits = 0
        while cursor < line.endIndex, line[cursor] >= 0x30, line[cursor] <= 0x39, digits < 18 {
          value = value * 10 + Int64(line[cursor] - 0x30)
          cursor += 1
          digits += 1
        }
        return digits > 0 ? value : nil
      }
      index -= 1
    }
    return nil
  }
}
